"""One device switch (`auto|cpu|cuda`) and the Lightning Fabric that carries it."""

from __future__ import annotations

import torch

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
    device: str = "auto", *, mixed_precision: bool = False, devices: int | str = 1, strategy="auto"
):
    """A Lightning Fabric on the resolved device (one process unless ``devices`` says otherwise).

    ``mixed_precision`` trains in bf16 autocast, on CUDA and on CPUs too (faster on CPUs with native
    bf16 instructions such as AVX512-BF16); off by default.
    """
    from lightning.fabric import Fabric

    resolved = resolve_device(device)
    accelerator = "cuda" if resolved.startswith("cuda") else "cpu"
    precision = "bf16-mixed" if mixed_precision else "32-true"
    if accelerator == "cuda" and ":" in resolved and devices == 1:
        devices = [int(resolved.split(":")[1])]
    fabric = Fabric(accelerator=accelerator, devices=devices, precision=precision, strategy=strategy)
    return fabric
