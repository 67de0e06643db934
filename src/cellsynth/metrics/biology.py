"""Biology: do the compared cells carry the cell-type structure of the real ones?

Four views of the same question, each with scikit-learn or scanpy doing the work:

- classification: a classifier trained on REAL labels the compared cells (TRTS), one trained on the
  compared cells labels REAL (TSTR; and, with TRAIN, one trained on TRAIN: TRTR, its reference);
- clustering: a Leiden clustering of the compared cells against their labels (ARI, NMI), beside the
  same on REAL;
- markers and differential expression: the top marker genes of each type
  (``scanpy.tl.rank_genes_groups``) on both sides, and the correlation of each type's log fold changes
  against the other cells;
- feature selection: the top genes by CV² on both sides.

The gene sets of the last two views are drawn in :mod:`cellsynth.metrics.gene_sets`.

The classifier is one and the same everywhere: a multinomial logistic regression (lbfgs, L2, C = 1)
on a PCA of REAL's highly variable genes (``settings["n_pcs"]`` components, fitted on REAL only, so
that the features mean the same for every training set). Things that depend on REAL alone (the PCA,
the classifier trained on REAL, REAL's clustering and markers) are computed once per evaluation and
kept in ``ctx.shared`` for the control context.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import EvalContext, Space, family, metric, register_settings
from .gene_sets import (
    cv2_top_genes,
    jaccard,
    log_fold_changes,
    logfc_correlations,
    marker_genes,
    marker_overlap,
    types_with,
)

TRTS_ACCURACY = metric(
    "trts_accuracy",
    "biology",
    "maximize",
    "Train on real, test on synthetic: share of compared cells a REAL-trained classifier calls their type.",
    per_type=True,
)
TSTR_MACRO_F1 = metric(
    "tstr_macro_f1",
    "biology",
    "maximize",
    "Train on synthetic, test on real: macro F1 over REAL's types of a classifier fitted on compared cells.",
)
TRTR_MACRO_F1 = metric(
    "trtr_macro_f1",
    "biology",
    "maximize",
    "Train on TRAIN, test on real: the same classifier fitted on TRAIN (the reference for TSTR).",
    needs_train=True,
)
TSTR_RARE_MACRO_F1 = metric(
    "tstr_rare_macro_f1",
    "biology",
    "maximize",
    "TSTR macro F1 over the rare types only (< 5% of REAL, else the four smallest with >= 2 cells).",
)
ARI = metric(
    "ari",
    "biology",
    "maximize",
    "Adjusted Rand index of a Leiden clustering of the compared cells against their labels.",
)
NMI = metric(
    "nmi",
    "biology",
    "maximize",
    "Normalised mutual information of a Leiden clustering of the compared cells against their labels.",
)
ARI_REAL = metric(
    "ari_real",
    "biology",
    "maximize",
    "Reference: adjusted Rand index of the same Leiden clustering run on REAL against its labels.",
    reference=True,
)
NMI_REAL = metric(
    "nmi_real",
    "biology",
    "maximize",
    "Reference: normalised mutual information of the same Leiden clustering run on REAL.",
    reference=True,
)
MARKER_OVERLAP = metric(
    "marker_overlap",
    "biology",
    "maximize",
    "Mean Jaccard over types of the top-20 marker genes (rank_genes_groups) on real vs compared cells.",
)
DE_LOGFC_CORRELATION = metric(
    "de_logfc_correlation",
    "biology",
    "maximize",
    "Mean over types of the Pearson r, across genes, of the type-vs-rest log fold change (difference of "
    "mean log1p expression) on real vs compared cells.",
    per_type=True,
)
CV2_FEATURE_OVERLAP = metric(
    "cv2_feature_overlap",
    "biology",
    "maximize",
    "Jaccard of the top-100 genes by CV² (variance / mean², LSH-GAN/GARAGE selection) on real vs compared.",
)

#: Options of this family and their defaults (read with ``setdefault`` so the values used are recorded).
BIOLOGY_SETTINGS: dict[str, Any] = {
    "max_cells_biology": 5000,  # cells per classifier training set; cells per side for Leiden, markers
    "leiden_resolution": 1.0,
    "leiden_n_neighbors": 15,
    "marker_method": "wilcoxon",
    "n_marker_genes": 20,
    "min_cells_markers": 3,  # types with at least this many cells on both sides get markers compared
    "n_cv2_genes": 100,
}
register_settings(BIOLOGY_SETTINGS)
CLASSIFIER = "multinomial logistic regression (lbfgs, L2, C=1) on a PCA of REAL's HVGs"


# ------------------------------------------------------------------------------ public helpers
def rare_types(
    labels: Sequence[str] | np.ndarray, *, fraction: float = 0.05, n_smallest: int = 4
) -> list[str]:
    """The rare cell types of a labelled set, as the evaluation suite defines them.

    Rare are the types with fewer than ``fraction`` (5%) of the cells. When no type is that small,
    the ``n_smallest`` (four) smallest types with at least 2 cells are taken instead.

    Parameters
    ----------
    labels
        Cell type of each cell (REAL's labels, for the TSTR rare macro F1).
    fraction
        A type is rare below this share of the cells (strictly).
    n_smallest
        How many of the smallest types (with ≥ 2 cells) to take when none is below ``fraction``.

    Returns
    -------
    list[str]
        The rare types, smallest first (ties by name).
    """
    labels = np.asarray(labels).astype(str)
    if labels.size == 0:
        return []
    types, counts = np.unique(labels, return_counts=True)  # sorted by name
    order = np.argsort(counts, kind="stable")  # smallest first, ties by name
    rare = [str(types[i]) for i in order if counts[i] < fraction * labels.size]
    if not rare:
        rare = [str(types[i]) for i in order if counts[i] >= 2][:n_smallest]
    return rare


def leiden_labels(
    Z: np.ndarray, *, n_neighbors: int = 15, resolution: float = 1.0, seed: int = 0
) -> np.ndarray:
    """Leiden clusters of cells in a (PCA) embedding: scanpy ``neighbors`` (exact, scikit-learn kNN,
    Gaussian-kernel connectivities) then ``leiden`` (``flavor="igraph"``, ``n_iterations=2``, undirected).

    The Gaussian kernel (``method="gauss"``), not UMAP's connectivities: those are numba kernels compiled
    anew in every process (8–16 s before the first clustering of an evaluation), for clusters that agree
    with the cell types as well (docs/benchmarks.md, "Evaluation speed").
    """
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(np.asarray(Z, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(
            adata,
            n_neighbors=int(min(n_neighbors, adata.n_obs - 1)),
            use_rep="X",
            transformer="sklearn",
            method="gauss",
            random_state=seed,
        )
        sc.tl.leiden(
            adata,
            resolution=resolution,
            flavor="igraph",
            n_iterations=2,
            directed=False,
            random_state=seed,
        )
    return adata.obs["leiden"].to_numpy().astype(str)


# ------------------------------------------------------------------------------ the family
@family("biology")
def biology(ctx: EvalContext) -> dict[str, float]:
    """TRTS/TSTR(/TRTR) classification, Leiden ARI/NMI, marker and CV² overlaps, log fold change
    correlation; per type: ``tstr_f1``, ``trts_accuracy`` and ``de_logfc_correlation``."""
    s = {key: ctx.settings.setdefault(key, value) for key, value in BIOLOGY_SETTINGS.items()}
    ctx.settings.setdefault("biology_classifier", CLASSIFIER)
    out: dict[str, float] = {}
    out.update(_classification(ctx, int(s["max_cells_biology"])))
    out.update(_clustering(ctx, s))
    out["marker_overlap"] = _marker_overlap(ctx, s)
    out["de_logfc_correlation"] = _logfc_correlation(ctx, s)
    n_cv2 = int(s["n_cv2_genes"])
    if "biology:real_cv2" not in ctx.shared:
        log1p = ctx.real.representation != "as_is"
        ctx.shared["biology:real_cv2"] = cv2_top_genes(ctx.real.X, n_cv2, log1p=log1p)
    log1p = ctx.synth.representation != "as_is"
    out["cv2_feature_overlap"] = jaccard(
        ctx.shared["biology:real_cv2"], cv2_top_genes(ctx.synth.X, n_cv2, log1p=log1p)
    )
    return out


def _classification(ctx: EvalContext, cap: int) -> dict[str, float]:
    from sklearn.metrics import f1_score

    nan = float("nan")
    real_y = _labels(ctx.real)
    synth_y = _labels(ctx.synth)
    real_types = sorted(set(real_y))
    if len(real_y) == 0 or len(synth_y) == 0:
        return {"trts_accuracy": nan, "tstr_macro_f1": nan, "tstr_rare_macro_f1": nan}
    pca = _real_pca(ctx, cap)
    real_Z = ctx.shared["biology:real_Z"]
    synth_Z = pca.transform(ctx.synth.X[:, _hvg(ctx)])

    # TRTS: the classifier trained on REAL (shared with the control) labels the compared cells
    if "biology:trts_model" not in ctx.shared:
        idx = _subsample(len(real_y), cap, ctx.rng("trts_accuracy"))
        ctx.shared["biology:trts_model"] = _fit(real_Z[idx], real_y[idx], ctx.random_state("trts_accuracy"))
    called = ctx.shared["biology:trts_model"](synth_Z)
    hit = called == synth_y
    out = {"trts_accuracy": float(hit.mean())}
    ctx.add_per_type("trts_accuracy", {t: float(hit[synth_y == t].mean()) for t in np.unique(synth_y)})

    # TSTR: trained on the compared cells, tested on REAL
    idx = _subsample(len(synth_y), cap, ctx.rng("tstr_macro_f1"))
    called = _fit(synth_Z[idx], synth_y[idx], ctx.random_state("tstr_macro_f1"))(real_Z)
    f1 = f1_score(real_y, called, labels=real_types, average=None, zero_division=0)
    out["tstr_macro_f1"] = float(np.mean(f1))
    ctx.add_per_type("tstr_f1", dict(zip(real_types, f1.tolist(), strict=True)))
    rare = rare_types(real_y)
    ctx.note("biology_rare_types", rare)
    out["tstr_rare_macro_f1"] = float(np.mean([f1[real_types.index(t)] for t in rare])) if rare else nan

    # TRTR: the same classifier and cap, trained on TRAIN
    if ctx.train is not None and len(ctx.train) > 0:
        train_y = _labels(ctx.train)
        idx = _subsample(len(train_y), cap, ctx.rng("trtr_macro_f1"))
        train_Z = pca.transform(ctx.train.X[idx][:, _hvg(ctx)])
        called = _fit(train_Z, train_y[idx], ctx.random_state("trtr_macro_f1"))(real_Z)
        out["trtr_macro_f1"] = float(
            f1_score(real_y, called, labels=real_types, average="macro", zero_division=0)
        )
    return out


def _clustering(ctx: EvalContext, s: dict[str, Any]) -> dict[str, float]:
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    cap = int(s["max_cells_biology"])
    opts = {
        "n_neighbors": int(s["leiden_n_neighbors"]),
        "resolution": float(s["leiden_resolution"]),
        "seed": ctx.random_state("leiden"),
    }
    out: dict[str, float] = {}
    if "biology:real_clustering" not in ctx.shared:
        real_y = _labels(ctx.real)
        if len(real_y) < 3:
            ctx.shared["biology:real_clustering"] = (float("nan"), float("nan"))
        else:
            _real_pca(ctx, cap)
            idx = _subsample(len(real_y), cap, ctx.rng("leiden_real"))
            clusters = leiden_labels(ctx.shared["biology:real_Z"][idx], **opts)
            ctx.shared["biology:real_clustering"] = (
                float(adjusted_rand_score(real_y[idx], clusters)),
                float(normalized_mutual_info_score(real_y[idx], clusters)),
            )
    out["ari_real"], out["nmi_real"] = ctx.shared["biology:real_clustering"]

    synth_y = _labels(ctx.synth)
    if len(synth_y) < 3:
        return {**out, "ari": float("nan"), "nmi": float("nan")}
    idx = _subsample(len(synth_y), cap, ctx.rng("leiden"))
    X = ctx.synth.X[idx][:, _hvg(ctx)]
    k = int(min(ctx.settings.get("n_pcs", 50), X.shape[0] - 1, X.shape[1]))
    Z = PCA(n_components=k, random_state=ctx.random_state("leiden_pca")).fit_transform(X)
    clusters = leiden_labels(Z, **opts)
    out["ari"] = float(adjusted_rand_score(synth_y[idx], clusters))
    out["nmi"] = float(normalized_mutual_info_score(synth_y[idx], clusters))
    return out


def _marker_overlap(ctx: EvalContext, s: dict[str, Any]) -> float:
    cap = int(s["max_cells_biology"])
    opts = {"n_genes": int(s["n_marker_genes"]), "method": str(s["marker_method"])}
    min_cells = int(s["min_cells_markers"])
    if "biology:real_markers" not in ctx.shared:
        idx = _subsample(len(ctx.real), cap, ctx.rng("marker_overlap_real"))
        y = _labels(ctx.real)[idx]
        ctx.shared["biology:real_markers"] = marker_genes(
            ctx.real.X[idx], y, types_with(y, min_cells), **opts
        )
    idx = _subsample(len(ctx.synth), cap, ctx.rng("marker_overlap"))
    return marker_overlap(
        None,
        None,
        ctx.synth.X[idx],
        _labels(ctx.synth)[idx],
        min_cells=min_cells,
        real_markers=ctx.shared["biology:real_markers"],
        **opts,
    )


def _logfc_correlation(ctx: EvalContext, s: dict[str, Any]) -> float:
    """Mean over the types with ``min_cells_markers`` cells on both sides of the Pearson r of their log
    fold changes (REAL vs compared, each on at most ``max_cells_biology`` cells); per type too."""
    cap = int(s["max_cells_biology"])
    min_cells = int(s["min_cells_markers"])
    if "biology:real_logfc" not in ctx.shared:
        idx = _subsample(len(ctx.real), cap, ctx.rng("de_logfc_real"))
        y = _labels(ctx.real)[idx]
        ctx.shared["biology:real_logfc"] = log_fold_changes(ctx.real.X[idx], y, types_with(y, min_cells))
    real = ctx.shared["biology:real_logfc"]
    idx = _subsample(len(ctx.synth), cap, ctx.rng("de_logfc"))
    y = _labels(ctx.synth)[idx]
    groups = [t for t in types_with(y, min_cells) if t in real]
    per_type = logfc_correlations(real, log_fold_changes(ctx.synth.X[idx], y, groups))
    ctx.add_per_type("de_logfc_correlation", per_type)
    finite = [v for v in per_type.values() if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


# ------------------------------------------------------------------------------ internals
def _labels(space: Space) -> np.ndarray:
    return np.asarray(space.labels).astype(str)


def _hvg(ctx: EvalContext) -> np.ndarray:
    hvg = np.sort(np.asarray(ctx.hvg, dtype=int))
    return hvg if hvg.size else np.arange(len(ctx.genes))


def _real_pca(ctx: EvalContext, cap: int):
    """The PCA of REAL's HVGs the classifiers (and REAL's clustering) work in; REAL projected into it
    is ``ctx.shared["biology:real_Z"]``."""
    if "biology:real_pca" not in ctx.shared:
        from sklearn.decomposition import PCA

        X = ctx.real.X[:, _hvg(ctx)]
        fit = X[_subsample(len(X), cap, ctx.rng("biology_pca"))]
        k = int(min(ctx.settings.get("n_pcs", 50), fit.shape[0] - 1, fit.shape[1]))
        pca = PCA(n_components=max(k, 1), random_state=ctx.random_state("biology_pca")).fit(fit)
        ctx.shared["biology:real_pca"] = pca
        ctx.shared["biology:real_Z"] = pca.transform(X)
    return ctx.shared["biology:real_pca"]


def _fit(Z: np.ndarray, y: np.ndarray, random_state: int):
    """Fit the classifier; return its ``predict``. A single class is predicted as such."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y)
    if len(classes) == 1:
        return lambda Z_test: np.full(len(Z_test), str(classes[0]))
    clf = LogisticRegression(max_iter=1000, random_state=random_state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(Z, y)
    return lambda Z_test: clf.predict(Z_test).astype(str)


def _subsample(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    """All of ``range(n)`` when ``n <= cap``, else ``cap`` indices drawn uniformly (sorted)."""
    if not cap or n <= cap:
        return np.arange(n)
    return np.sort(rng.choice(n, size=int(cap), replace=False))
