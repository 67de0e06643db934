"""Privacy: is the synthetic set closer to the model's training cells than held-out real cells are?

Distances are Euclidean in a PCA (``n_pcs`` components) of the highly variable genes, fitted on the
*reference* set of each nearest-neighbour search: TRAIN for the distance to the closest record (DCR),
SYNTH for membership inference. Both query sets of a search are then projected alike (neither was in
the fit): a PCA fitted on the queries too would capture the fitted cells' own noise and move them
away from everything, biasing the comparison on small sets. PCA rather than the full gene space
because there per-cell noise dominates nearest-neighbour distances, so that a smooth generator would
look closer to TRAIN than held-out cells are without copying anything. Exact copies are checked on the
log-normalised evaluated genes themselves. These metrics need TRAIN; without it the family returns
nothing.
"""

from __future__ import annotations

import numpy as np

from .base import EvalContext, family, metric

metric(
    "dcr_ratio",
    "privacy",
    "maximize",
    "Median distance to the closest TRAIN cell, synthetic over held-out real; ≈1 private, ≪1 copying.",
    needs_train=True,
)
metric(
    "exact_copy_fraction",
    "privacy",
    "minimize",
    "Fraction of synthetic cells identical to a TRAIN cell (log-normalised genes, tiny tolerance).",
    needs_train=True,
)
metric(
    "mia_auc",
    "privacy",
    "target",
    "Membership inference AUC: does closeness to synthetic cells tell TRAIN from held-out cells? 0.5 ideal.",
    target=0.5,
    needs_train=True,
)


def reference_pca(ctx: EvalContext, reference: str, queries: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Every cell of ``reference`` and ``queries`` (names of sets: ``"train"``, ``"real"``, ``"synth"``)
    projected by a PCA fitted on ``reference`` alone (at most ``max_cells_pca`` cells; cached)."""
    key = f"privacy_pca:{reference}"
    if key not in ctx.cache:
        from sklearn.decomposition import PCA

        ref = getattr(ctx, reference)
        hvg = np.sort(ctx.hvg)
        n = min(len(ref), int(ctx.settings.get("max_cells_pca", 2500)))
        fit = ref.X[np.sort(ctx.rng(key).choice(len(ref), size=n, replace=False))][:, hvg]
        k = int(min(ctx.settings.get("n_pcs", 50), n - 1, len(hvg)))
        pca = PCA(n_components=k, svd_solver="randomized", random_state=ctx.random_state(key))
        pca.fit(fit)
        ctx.cache[key] = (pca, {})
    pca, projected = ctx.cache[key]
    hvg = np.sort(ctx.hvg)
    for name in (reference, *queries):
        if name not in projected:
            projected[name] = pca.transform(getattr(ctx, name).X[:, hvg]).astype(np.float32)
    return projected


def _nearest(reference: np.ndarray, query: np.ndarray, k: int = 1, n_jobs: int | None = -1):
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=min(k, len(reference)), algorithm="brute", n_jobs=n_jobs)
    nn.fit(reference)
    return nn.kneighbors(query)


@family("privacy")
def privacy(ctx: EvalContext) -> dict[str, float]:
    """DCR ratio, exact-copy fraction and distance-based membership-inference AUC (needs TRAIN)."""
    if ctx.train is None:
        return {}
    from sklearn.metrics import roc_auc_score

    cap = int(ctx.settings.get("max_cells_privacy", 5000))
    n_jobs = ctx.settings.get("n_jobs", -1)
    rng = ctx.rng("privacy")
    synth_q = np.sort(rng.choice(len(ctx.synth), size=min(cap, len(ctx.synth)), replace=False))
    real_q = np.sort(rng.choice(len(ctx.real), size=min(cap, len(ctx.real)), replace=False))

    # distance to the closest TRAIN cell, from synthetic and from held-out real cells
    space = reference_pca(ctx, "train", ("synth", "real"))
    d_synth, nearest = _nearest(space["train"], space["synth"][synth_q], k=3, n_jobs=n_jobs)
    d_real, _ = _nearest(space["train"], space["real"][real_q], n_jobs=n_jobs)
    median_real = float(np.median(d_real[:, 0]))
    dcr = float(np.median(d_synth[:, 0])) / median_real if median_real > 0 else float("nan")
    ctx.note("dcr_median_synth", float(np.median(d_synth[:, 0])))
    ctx.note("dcr_median_real", median_real)

    # an exact copy: one of the 3 nearest TRAIN cells in PCA equals the synthetic cell on every gene
    tol = float(ctx.settings.get("exact_copy_tolerance", 1e-4))
    synth_X = ctx.synth.X[synth_q]
    copy = np.zeros(len(synth_q), dtype=bool)
    for j in range(nearest.shape[1]):
        diff = np.abs(ctx.train.X[nearest[:, j]] - synth_X).max(axis=1)
        copy |= diff <= tol

    # membership inference: TRAIN members vs REAL non-members, scored by closeness to a synthetic cell
    n = min(len(ctx.train), len(ctx.real), cap)
    members = rng.choice(len(ctx.train), size=n, replace=False)
    others = rng.choice(len(ctx.real), size=n, replace=False)
    space = reference_pca(ctx, "synth", ("train", "real"))
    d_members, _ = _nearest(space["synth"], space["train"][members], n_jobs=n_jobs)
    d_others, _ = _nearest(space["synth"], space["real"][others], n_jobs=n_jobs)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    mia = float(roc_auc_score(y, -np.concatenate([d_members[:, 0], d_others[:, 0]])))
    ctx.note("privacy_space", f"HVG PCA fitted on the reference set ({space['synth'].shape[1]} components)")
    return {"dcr_ratio": dcr, "exact_copy_fraction": float(copy.mean()), "mia_auc": mia}
