"""One device switch (`auto|cpu|cuda`) and the Lightning Fabric that carries it."""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import sys

import torch

from ..defaults import switched_on
from ..errors import InputError


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is a clear error."""
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                "--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto"
            )
        return device
    if device == "cpu":
        return "cpu"
    raise InputError(f"unknown device {device!r}; use auto, cpu or cuda")


def make_fabric(
    device: str = "auto",
    *,
    mixed_precision: bool | None = False,
    entries: int = 0,
    devices: int | str = 1,
    strategy="auto",
):
    """A Lightning Fabric on the resolved device (one process unless ``devices`` says otherwise).

    ``mixed_precision`` trains in bf16 autocast, on CUDA and on CPUs; None decides by
    :func:`bf16_pays` for batches of ``entries`` values (cells × genes).
    """
    from lightning.fabric import Fabric
    from lightning_utilities.core import rank_zero

    resolved = resolve_device(device)
    accelerator = "cuda" if resolved.startswith("cuda") else "cpu"
    if mixed_precision is None:
        mixed_precision = bf16_pays(accelerator, entries)
    precision = "bf16-mixed" if mixed_precision else "32-true"
    if accelerator == "cuda" and ":" in resolved and devices == 1:
        devices = [int(resolved.split(":")[1])]
    if accelerator == "cpu":
        keep_freed_buffers()
    # Lightning announces mixed precision at every Fabric (several a fit) through the logger its packages
    # last set; the model's fit record says it
    announcer = rank_zero.log
    level = announcer.level
    announcer.setLevel(logging.WARNING)
    try:
        return Fabric(accelerator=accelerator, devices=devices, precision=precision, strategy=strategy)
    finally:
        announcer.setLevel(level)


#: the narrowest batch (cells × genes) that ``mixed_precision`` null trains in bfloat16
BF16_MIN_ENTRIES = 1 << 20


def bf16_pays(accelerator: str, entries: int) -> bool:
    """Whether ``mixed_precision`` null trains a batch of ``entries`` values in bf16 autocast: on a CPU
    with native bf16 products (AVX512-BF16 or AMX), for batches of at least :data:`BF16_MIN_ENTRIES`
    values, where the products of the genes' layers take most of a step and run faster in bf16
    (docs/benchmarks.md, "A training step of the default model"). Narrower batches (small gene panels,
    the tests) and CPUs without native bf16 (where it is emulated, slower than float32) train in
    float32; on CUDA bf16 is not measured, so it stays explicit there."""
    if accelerator != "cpu" or entries < BF16_MIN_ENTRIES:
        return False
    cpu = torch.cpu
    return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())


#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: buffers up to this size come from the heap, not from a mapping of their own (glibc's largest setting)
MMAP_THRESHOLD = 32 << 20
#: freed memory at the heap's top is handed back to the system only beyond this size
TRIM_THRESHOLD = 512 << 20


@functools.cache
def keep_freed_buffers() -> bool:
    """Have glibc's allocator keep the freed buffers of CPU training steps for the next step.

    A whole-transcriptome batch's tensors (128 cells × 15,000 genes: 7.5 MB; the decoder's last weight
    gradient, 15 MB) lie above glibc's starting thresholds, so by default many of them are mapped fresh
    from the system or handed back to it every step, and each of their pages faults when first written
    (docs/benchmarks.md, "A training step of the default model"). Fixed thresholds keep them in the
    process's heap. What is kept stays at most the step's peak; the setting holds for the process.
    ``CELLSYNTH_MALLOPT=0`` leaves the allocator as it is; elsewhere than Linux with glibc nothing is
    changed. Returns whether the thresholds were set.
    """
    if not switched_on("CELLSYNTH_MALLOPT"):
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mapped = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # 1 where the parameter was taken, else 0
    return bool(mapped and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
