"""Element-wise chains of a training step fused by ``torch.compile`` on the CPU, eager elsewhere.

A generated batch of a whole transcriptome (128 cells × 15,000 genes, 7.5 MB a tensor) does not stay in
the CPU's caches, so each element-wise operation of the count draw (rate, log-normal factor,
straight-through estimate, normalisation, zero probabilities) and of its backward pass is a trip through
memory: about fifteen of them forward and as many backward, 3–4 ms each on two threads. Compiled, each
chain is one loop forward and one backward (docs/benchmarks.md, "A training step of the default model").

:class:`Fused` wraps such a function: on CPU tensors of at least :data:`MIN_ENTRIES` entries, with gradients
recorded (a training step), it calls the version compiled for that shape (each fit's training batch, up to
:data:`MAX_SHAPES` in a process; validation and sampling under ``no_grad`` run eagerly; a function made with
``grad_only=False``, such as the training batch's count draw, is compiled where its caller asks);
the first compiled call is checked forward and backward, and if compiling fails (no C++ compiler, an
unsupported platform) the function runs eagerly from then on, after one warning. ``CELLSYNTH_COMPILE=0``
turns compiling off. The compiled and the eager chain compute the same arithmetic; their roundings may
differ in the last bit.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from ..defaults import switched_on

#: below this many entries the eager chain is as fast (and nothing is compiled: small data, the tests)
MIN_ENTRIES = 1 << 20
#: at most this many shapes are compiled (one per fit in a process: its training batch); others run eagerly
MAX_SHAPES = 4


def compiling_enabled() -> bool:
    return switched_on("CELLSYNTH_COMPILE")


class Fused:
    """``fn(*tensors, **constants)``, compiled for large CPU batches (see the module's notes)."""

    def __init__(self, fn: Callable, grad_only: bool = True):
        self.fn = fn
        # compiled only where gradients are recorded (validation and sampling under ``no_grad``: other
        # shapes, no backward to fuse); False: wherever asked, the caller deciding (a training step's
        # count draw, which runs under ``no_grad``)
        self.grad_only = grad_only
        self.compiled: Callable | None = None
        self.shapes: set[tuple] = set()  # the shapes compiled for (each fit's training batch)
        self.failed = False

    def _wanted(self, first: torch.Tensor) -> bool:
        if self.failed or first.device.type != "cpu" or first.numel() < MIN_ENTRIES:
            return False
        if self.grad_only and not torch.is_grad_enabled():
            return False
        if tuple(first.shape) in self.shapes:
            return True
        return len(self.shapes) < MAX_SHAPES and compiling_enabled()

    def __call__(self, *args, **kwargs):
        return (self.compiled_for(*args, **kwargs) or self.fn)(*args, **kwargs)

    def compiled_for(self, *args, **kwargs) -> Callable | None:
        """The compiled function for these arguments' shapes (compiled and checked at the first call with
        them), or None where it runs eagerly."""
        if not self._wanted(args[0]):
            return None
        shape = tuple(args[0].shape)
        if shape not in self.shapes:  # compiled (again) for this shape, and checked
            try:
                compiled = self.compiled or torch.compile(self.fn, dynamic=False)
                self._check(compiled, args, kwargs)
            except Exception as e:  # compiling is an optimisation: its failure must not stop training
                self.failed = True
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                warnings.warn(
                    f"cellsynth: compiling {self.fn.__name__} failed ({first[:200]}); running it eagerly "
                    "(slower, the same results)",
                    RuntimeWarning,
                    stacklevel=3,
                )
                return None
            self.compiled = compiled
            self.shapes.add(shape)
        return self.compiled

    @staticmethod
    def _check(compiled: Callable, args, kwargs) -> None:
        """One forward and backward pass of ``compiled`` on detached copies (the backward is compiled at
        its first call: a failure there would otherwise surface in the training step's backward)."""
        copies = [a.detach().clone().requires_grad_(a.requires_grad) if torch.is_tensor(a) else a
                  for a in args]  # fmt: skip
        out = compiled(*copies, **kwargs)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if isinstance(o, torch.Tensor)]
        loss = sum(o.float().sum() for o in outs if o.requires_grad)
        if isinstance(loss, torch.Tensor):
            loss.backward()
