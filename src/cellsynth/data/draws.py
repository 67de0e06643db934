"""Large random draws on the CPU spread over torch's threads, the same numbers for any thread count.

torch draws Poisson and normal variates on the CPU on one thread: for a training batch of a whole
transcriptome (128 cells × 15,000 genes) the Poisson draw alone is a fifth of a generator step. Here a
draw is split into a fixed number of row blocks, each drawn with its own generator seeded from the caller's
and run on a thread pool as wide as torch's threads (torch's operators release the GIL). The blocks and
their seeds do not depend on the number of threads, so a seed gives the same cells on every machine; on
other devices and for small draws, torch's own single call. A training step's Poisson draw of a large CPU
batch goes instead by inversion of uniform numbers, in one compiled pass for the small rates that most of
a transcriptome's entries have (:func:`poisson`'s ``by_inversion``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

from .fused import Fused

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


def _split(draw: Draw, x: torch.Tensor, gen: torch.Generator | None, min_split: int = MIN_SPLIT):
    """``draw(block, generator)`` over ``x``'s row blocks, concatenated (no gradient); ``x`` only gives
    shapes when ``draw`` ignores its values."""
    x = x.detach()
    if x.device.type != "cpu" or x.numel() < min_split or x.dim() == 0 or len(x) < PARTS:
        return draw(x, gen)
    blocks = x.chunk(PARTS)
    seeds = torch.randint(0, 2**62, (len(blocks),), generator=gen).tolist()
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    workers = min(len(blocks), torch.get_num_threads())
    if workers <= 1:
        return torch.cat([draw(b, g) for b, g in zip(blocks, gens, strict=True)])
    return torch.cat(list(_pool(workers).map(draw, blocks, gens)))


def poisson(rate: torch.Tensor, generator: torch.Generator | None = None, *, by_inversion: bool = False):
    """``torch.poisson(rate)``, split over the CPU's threads when large. ``by_inversion`` (a training step's
    draw, whose shape is compiled for): on a large CPU batch, each count is found from a uniform number by
    the inversion of its Poisson distribution, in one compiled pass for the rates up to
    :data:`INVERSION_LIMIT`, and drawn by torch's sampler above it (the same distribution, other
    numbers)."""
    if by_inversion and (inverse := _INVERSION.compiled_for(rate, rate)) is not None:
        u = rand_like(rate, generator)
        return _the_rest(inverse(u, rate), u, rate, generator)
    return _split(lambda r, g: torch.poisson(r, generator=g), rate, generator)


#: rates up to this are drawn by inversion (by_inversion); a sparse transcriptome's entries mostly are
INVERSION_LIMIT = 2.0
#: the counts the compiled pass tells apart (0 to TERMS - 1); the few uniforms beyond (P ≈ 1e-6 at the
#: limit) are inverted further by :func:`_the_rest`
TERMS = 12


def _inverse_poisson(u: torch.Tensor, rate: torch.Tensor) -> torch.Tensor:
    """The Poisson(rate) counts of the uniforms ``u`` by inversion, counted against the tail probabilities
    ``P(X > k)`` (from ``-expm1(-rate)``: exact for tiny rates; in float32, as ``u`` is: a tail probability
    is off by about 1e-7 at most, the resolution of ``u`` near 1); -1 where they are still to be found
    (rates above the limit, counts of at least ``TERMS``). (One output: a second, boolean one made the
    compiled loop three times slower.)"""
    v = 1.0 - u  # in (0, 1]: X is the number of k with v < P(X > k)
    lam = rate.clamp_max(INVERSION_LIMIT)
    p = torch.exp(-lam)
    tail = -torch.expm1(-lam)
    counts = (v < tail).to(rate.dtype)
    for k in range(1, TERMS):
        p = p * lam / k
        tail = tail - p
        counts = counts + (v < tail).to(rate.dtype)
    return torch.where((rate > INVERSION_LIMIT) | (v < tail), -1.0, counts)


_INVERSION = Fused(_inverse_poisson, grad_only=False)


def _the_rest(counts, u, rate, generator) -> torch.Tensor:
    """``counts`` with the entries still to be found (-1) found: above the limit by torch's sampler (split
    over the threads), the others by the inversion continued (in float64) until their uniform is passed."""
    flat = counts.view(-1)
    where = torch.nonzero(flat < 0).ravel()
    if not len(where):
        return counts
    lam = rate.reshape(-1)[where]
    large = lam > INVERSION_LIMIT
    # a few tens of thousands of rates in a whole-transcriptome batch: split over the threads from 2**14
    flat[where[large]] = _split(lambda r, g: torch.poisson(r, generator=g), lam[large], generator, 1 << 14)
    tail = where[~large]
    if len(tail):
        lam, v = lam[~large].double(), 1.0 - u.reshape(-1)[tail].double()
        p, above = torch.exp(-lam), -torch.expm1(-lam)
        n = torch.zeros_like(lam)
        for k in range(1, 1000):  # rates under the limit: a few dozen terms at most
            below = v < above
            if not bool(below.any()):
                break
            n += below
            p = p * lam / k
            above = above - p
        flat[tail] = n.to(flat.dtype)
    return counts


def randn_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal numbers of ``x``'s shape, dtype and device, split over the CPU's threads when large."""
    return _split(
        lambda b, g: torch.randn(b.shape, generator=g, device=b.device, dtype=b.dtype), x, generator
    )


def rand_like(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform numbers in [0, 1) of ``x``'s shape, dtype and device, split over the CPU's threads when
    large."""
    return _split(lambda b, g: torch.rand(b.shape, generator=g, device=b.device, dtype=b.dtype), x, generator)
