"""Distribution distances between two sets of cells (in a shared low-dimensional space)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .base import EvalContext, family, metric

if TYPE_CHECKING:  # torch loads on first use: validating settings must not pay for it
    import torch


def mmd2(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
    cond_x: torch.Tensor | None = None,
    cond_y: torch.Tensor | None = None,
    paired: bool = False,
) -> torch.Tensor:
    """Unbiased squared MMD with a sum of RBF kernels at several bandwidths, as a differentiable tensor.

    The bandwidths are ``scales`` × the median pairwise distance of the pooled sample (treated as a
    constant). With ``cond_x``/``cond_y`` (condition weight rows, one-hot or mixed), the kernel is the
    product of the RBF kernel and the conditions' inner product, so cells are only compared with cells
    of the same type: a conditional MMD. ``paired``: ``x[i]`` was generated for ``y[i]``'s conditions,
    so the cross term leaves out the pairs (i, i), whose conditions match by construction (with them
    the estimate is biased below zero).
    """
    import torch

    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two cells on each side")
    if paired and n != m:
        raise ValueError(f"paired MMD needs as many cells on each side, got {n} and {m}")
    k = _pooled_kernel(torch.cat([x, y]), scales)
    if cond_x is not None and cond_y is not None:
        c = torch.cat([cond_x, cond_y]).to(k.dtype)
        k = k * (c @ c.T)
    cross = k[:n, n:]
    cross = (cross.sum() - cross.diagonal().sum()) / (n * (n - 1)) if paired else cross.mean()
    return k[:n, :n].sum() / (n * (n - 1)) + k[n:, n:].sum() / (m * (m - 1)) - 2 * cross


def _pooled_kernel(z: torch.Tensor, scales: Sequence[float]) -> torch.Tensor:
    """The sum of RBF kernels between the rows of ``z`` at ``scales`` × their median pairwise distance
    (treated as a constant), with a zero diagonal (no self-similarities: the unbiased estimate)."""
    import torch

    n = len(z)
    d2 = torch.cdist(z, z).pow(2)
    # the off-diagonal entries as a strided view (row i: the n entries after d2[i, i], less the last)
    off = d2.detach().reshape(-1)[1:].reshape(n - 1, n + 1)[:, :-1]
    med2 = off.median().clamp_min(1e-12)
    if d2.requires_grad:  # differentiable: out-of-place, as autograd needs
        mask = ~torch.eye(n, dtype=torch.bool, device=z.device)
        return sum(torch.exp(-d2 / (2 * (s * s) * med2)) for s in scales) * mask
    # a score (no gradient): the same arithmetic in place, two matrices written instead of one per
    # operation (at 4,000 pooled cells each is 128 MB in float64)
    k, term = torch.zeros_like(d2), torch.empty_like(d2)
    for s in scales:
        k.add_(torch.div(d2, 2 * (s * s) * med2, out=term).neg_().exp_())
    return k.fill_diagonal_(0.0)


def mmd_rbf(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
) -> float:
    """Unbiased squared MMD with a sum of RBF kernels at several bandwidths (see :func:`mmd2`).

    The bandwidths are ``scales`` × the median pairwise distance of the pooled sample: a single
    median-heuristic kernel barely separates real cells from a gene-independent fit in PCA space.
    """
    return float(mmd2(x.double(), y.double(), scales=scales))


def mmd_rbf_noise(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    draws: int = 32,
    seed: int = 0,
    scales: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
) -> tuple[float, float]:
    """:func:`mmd_rbf` and its noise: the standard deviation of the same estimate over ``draws`` random
    splits of the pooled cells into sets of the same two sizes (a permutation null, seeded by ``seed``).

    Two sets from one distribution give estimates of about that spread around zero; a difference between
    two estimates much smaller than it is not evidence that one set is closer to the reference.
    """
    import torch

    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("MMD needs at least two cells on each side")
    k = _pooled_kernel(torch.cat([x.double(), y.double()]), scales)
    gen = torch.Generator().manual_seed(int(seed))
    # column 0: the observed split; the others: random splits of the pooled cells
    order = torch.stack(
        [torch.arange(n + m)] + [torch.randperm(n + m, generator=gen) for _ in range(draws)], 1
    )
    a = (order < n).to(k.dtype).to(k.device)  # membership of the first set, one column per split
    b = 1 - a
    ka = k @ a
    within_a, cross = (a * ka).sum(0), (b * ka).sum(0)
    within_b = (b * (k @ b)).sum(0)
    est = within_a / (n * (n - 1)) + within_b / (m * (m - 1)) - 2 * cross / (n * m)
    return float(est[0]), float(est[1:].std()) if draws > 1 else 0.0


# ----------------------------------------------------------------------------------------- metrics
WASSERSTEIN = metric(
    "wasserstein",
    "distribution",
    "minimize",
    "Exact optimal-transport (earth mover's) distance between the sets in the union PCA space.",
)
WASSERSTEIN_GARAGE = metric(
    "wasserstein_garage",
    "distribution",
    "minimize",
    "GARAGE's formula: exact OT, each matrix divided by its row count, gene space (comparable to its table).",
)
SLICED_WASSERSTEIN = metric(
    "sliced_wasserstein",
    "distribution",
    "minimize",
    "Sliced Wasserstein distance (random 1-d projections) in the union PCA space.",
)
MMD = metric(
    "mmd",
    "distribution",
    "minimize",
    "Unbiased squared MMD, RBF kernels at several bandwidths around the median distance, in union PCA space.",
    per_type=True,
)


def exact_wasserstein(x: np.ndarray, y: np.ndarray, *, num_itermax: int = 10_000_000) -> tuple[float, bool]:
    """Exact OT cost between two point clouds (uniform weights, Euclidean cost) with POT's ``emd2``.

    Returns
    -------
    tuple
        ``(cost, converged)``; ``converged`` is False when the network simplex stopped on
        ``num_itermax`` (or another warning) before proving optimality.
    """
    import ot

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    cost_matrix = ot.dist(x, y, metric="euclidean")
    cost, log = ot.emd2([], [], cost_matrix, numItermax=int(num_itermax), log=True)
    converged = log.get("warning") is None and int(log.get("result_code", 1)) == 1
    return float(cost), bool(converged)


def _subsample(ctx: EvalContext, real_idx: np.ndarray, synth_idx: np.ndarray, cap: int, salt: str):
    rng = ctx.rng(salt)
    pick = [np.sort(rng.choice(ix, size=min(len(ix), cap), replace=False)) for ix in (real_idx, synth_idx)]
    return pick[0], pick[1]


def _record_ot(ctx: EvalContext, name: str, converged: bool) -> None:
    ctx.note(f"{name}_converged", converged)
    if not converged:
        ctx.warn(f"{name}: exact OT did not converge; raise the setting ot_num_itermax")


def mmd(ctx: EvalContext, real_idx: np.ndarray, synth_idx: np.ndarray, cap: int, salt: str) -> float:
    """:func:`mmd_rbf` between cells of the two sets in the union PCA (at most ``cap`` a side)."""
    pcs = ctx.union_pca()
    ri, si = _subsample(ctx, real_idx, synth_idx, cap, salt)
    if len(ri) < 2 or len(si) < 2:
        return float("nan")
    import torch

    return mmd_rbf(torch.from_numpy(pcs.real[ri]), torch.from_numpy(pcs.synth[si]))


@family("distribution")
def distribution(ctx: EvalContext) -> dict[str, float]:
    """Wasserstein (PCA and GARAGE's gene-space formula), sliced Wasserstein and MMD; MMD per type."""
    import ot

    out: dict[str, float] = {}
    pcs = ctx.union_pca()
    itermax = int(ctx.settings.get("ot_num_itermax", 10_000_000))

    ot_cap = int(ctx.settings.get("max_cells_ot", 2000))
    # the union PCA's fitted cells on both sides (see UnionPCA); all cells in gene space
    ri, si = _subsample(ctx, pcs.real_fit, pcs.synth_fit, ot_cap, "wasserstein")
    out["wasserstein"], converged = exact_wasserstein(pcs.real[ri], pcs.synth[si], num_itermax=itermax)
    _record_ot(ctx, "wasserstein", converged)

    # GARAGE divides each matrix by its own (full) row count before the OT in gene space; the OT itself
    # runs on the capped subsample, so the scale matches GARAGE's table while the cost stays bounded.
    ri, si = _subsample(
        ctx, np.arange(len(ctx.real)), np.arange(len(ctx.synth)), ot_cap, "wasserstein_garage"
    )
    cost, converged = exact_wasserstein(
        ctx.real.X[ri] / len(ctx.real), ctx.synth.X[si] / len(ctx.synth), num_itermax=itermax
    )
    out["wasserstein_garage"] = cost
    _record_ot(ctx, "wasserstein_garage", converged)
    ctx.note("ot_cells", [len(ri), len(si)])

    out["sliced_wasserstein"] = float(
        ot.sliced_wasserstein_distance(
            pcs.real[pcs.real_fit].astype(np.float64),
            pcs.synth[pcs.synth_fit].astype(np.float64),
            n_projections=int(ctx.settings.get("sliced_projections", 200)),
            seed=ctx.random_state("sliced_wasserstein"),
        )
    )
    out["mmd"] = mmd(ctx, pcs.real_fit, pcs.synth_fit, int(ctx.settings.get("max_cells_mmd", 1500)), "mmd")

    per_type = {}
    min_cells = int(ctx.settings.get("min_cells_per_type", 20))
    for t in ctx.types():
        rt, st = (
            pcs.real_fit[ctx.real.labels[pcs.real_fit] == t],
            pcs.synth_fit[ctx.synth.labels[pcs.synth_fit] == t],
        )
        if min(len(rt), len(st)) >= min_cells:
            per_type[t] = mmd(ctx, rt, st, int(ctx.settings.get("max_cells_per_type", 200)), f"mmd:{t}")
    ctx.add_per_type("mmd", per_type)
    return out
