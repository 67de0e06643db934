"""Large random draws on the CPU spread over torch's threads, the same numbers for any thread count.

torch draws Poisson and normal variates on the CPU on one thread: for a training batch of a whole
transcriptome (128 cells × 15,000 genes) the Poisson draw alone is a fifth of a generator step. Here a
draw is split into a fixed number of row blocks, each drawn with its own generator seeded from the caller's
and run on a thread pool as wide as torch's threads (torch's operators release the GIL). The blocks and
their seeds do not depend on the number of threads, so a seed gives the same cells on every machine; on
other devices and for small draws, torch's own single call.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

#: row blocks of a split draw (fixed: the numbers drawn must not depend on the machine's threads)
PARTS = 4
#: draws smaller than this many numbers are not split (the threads' hand-over costs more than they save)
MIN_SPLIT = 1 << 17


def _pool(workers: int) -> ThreadPoolExecutor:
    return _process_pool(os.getpid(), workers)


@lru_cache(maxsize=4)
def _process_pool(pid: int, workers: int) -> ThreadPoolExecutor:
    """One pool per process (``pid``: a forked child does not inherit its parent's threads)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cellsynth-draw")


Draw = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _split(draw: Draw, x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """``draw(block, generator)`` over ``x``'s row blocks, concatenated (no gradient); ``x`` only gives
    shapes when ``draw`` ignores its values."""
    x = x.detach()
    if x.device.type != "cpu" or x.numel() < MIN_SPLIT or x.dim() == 0 or len(x) < PARTS:
        return draw(x, gen)
    blocks = x.chunk(PARTS)
    seeds = torch.randint(0, 2**62, (len(blocks),), generator=gen).tolist()
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    workers = min(len(blocks), torch.get_num_threads())
    if workers <= 1:
        return torch.cat([draw(b, g) for b, g in zip(blocks, gens, strict=True)])
    return torch.cat(list(_pool(workers).map(draw, blocks, gens)))


def poisson(rate: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """``torch.poisson(rate)``, split over the CPU's threads when large."""
    return _split(lambda r, g: torch.poisson(r, generator=g), rate, generator)


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal numbers of ``x``'s shape, dtype and device, split over the CPU's threads when large."""
    return _split(
        lambda b, g: torch.randn(b.shape, generator=g, device=b.device, dtype=b.dtype), x, generator
    )


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``x``'s shape, dtype and device, split over the CPU's threads when
    large."""
    return _split(lambda b, g: torch.rand(b.shape, generator=g, device=b.device, dtype=b.dtype), x, generator)
