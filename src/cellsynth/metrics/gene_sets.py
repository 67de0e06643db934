"""What characterises a set of cells gene by gene: the top genes by CV², each type's marker genes, and
each type's log fold changes against the other cells.

The biology family compares these between REAL and the compared cells (Jaccard indices of the gene
sets, correlations of the fold changes).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd


def cv2_top_genes(X: np.ndarray, n_genes: int = 100, *, log1p: bool = True) -> np.ndarray:
    """Indices of the ``n_genes`` genes of largest squared coefficient of variation.

    The rule (the CV²-dispersion selection of LSH-GAN/GARAGE, with the standard definition):
    on the normalised expression values ``E`` (``expm1(X)`` when ``X`` is log1p data, else ``X``),
    ``CV²_g = var(E_g) / mean(E_g)²`` with the sample variance (``ddof=1``) over cells; genes with a
    non-positive mean have no CV² and are never chosen; genes are ranked by decreasing CV², ties by
    gene index, and the first ``n_genes`` (or all genes with a CV², when fewer) are returned.

    Parameters
    ----------
    X
        Cells × genes.
    n_genes
        How many genes to select.
    log1p
        Whether ``X`` is log1p of normalised expression (undone with ``expm1``).
    """
    X = np.asarray(X, dtype=np.float32)
    E = np.expm1(X) if log1p else X
    if E.shape[0] < 2:
        return np.array([], dtype=int)
    mean = E.mean(axis=0, dtype=np.float64)
    var = E.var(axis=0, dtype=np.float64, ddof=1)
    ok = mean > 0
    cv2 = np.full(E.shape[1], -np.inf)
    cv2[ok] = var[ok] / mean[ok] ** 2
    order = np.argsort(-cv2, kind="stable")
    return order[: min(int(n_genes), int(ok.sum()))]


def cv2_feature_overlap(
    real: np.ndarray, synth: np.ndarray, n_genes: int = 100, *, log1p: bool = True
) -> float:
    """Jaccard index of the top-``n_genes`` CV² genes (:func:`cv2_top_genes`) of two sets."""
    return jaccard(cv2_top_genes(real, n_genes, log1p=log1p), cv2_top_genes(synth, n_genes, log1p=log1p))


def marker_genes(
    X: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str],
    *,
    n_genes: int = 20,
    method: str = "wilcoxon",
) -> dict[str, set[int]]:
    """Top ``n_genes`` marker genes (column indices) of each type in ``groups``, each type against all
    other cells (``scanpy.tl.rank_genes_groups``, ``reference="rest"``)."""
    import anndata as ad
    import scanpy as sc

    labels = np.asarray(labels).astype(str)
    groups = [str(g) for g in groups]
    if not groups or len(np.unique(labels)) < 2:
        return {}
    adata = ad.AnnData(np.asarray(X, dtype=np.float32))
    adata.var_names = [str(j) for j in range(adata.n_vars)]
    adata.obs["type"] = pd.Categorical(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log fold changes of all-zero genes, fragmented frames
        sc.tl.rank_genes_groups(
            adata,
            "type",
            groups=groups,
            reference="rest",
            method=method,
            n_genes=int(min(n_genes, adata.n_vars)),
            use_raw=False,
        )
    names = adata.uns["rank_genes_groups"]["names"]
    return {g: {int(j) for j in names[g]} for g in groups}


def marker_overlap(
    real: np.ndarray | None,
    real_labels: np.ndarray | None,
    synth: np.ndarray,
    synth_labels: np.ndarray,
    *,
    n_genes: int = 20,
    method: str = "wilcoxon",
    min_cells: int = 3,
    real_markers: dict[str, set[int]] | None = None,
) -> float:
    """Mean over types of the Jaccard index of their top marker genes on both sides.

    Types with at least ``min_cells`` cells on both sides count; markers are computed on each side
    separately with :func:`marker_genes`. NaN when no type qualifies.

    Parameters
    ----------
    real_markers
        REAL's markers when already computed (for the types with ≥ ``min_cells`` REAL cells); ``real``
        and ``real_labels`` are then not used.
    """
    synth_labels = np.asarray(synth_labels).astype(str)
    if real_markers is None:
        real_labels = np.asarray(real_labels).astype(str)
        real_markers = marker_genes(
            real, real_labels, types_with(real_labels, min_cells), n_genes=n_genes, method=method
        )
    groups = [t for t in types_with(synth_labels, min_cells) if t in real_markers]
    synth_markers = marker_genes(synth, synth_labels, groups, n_genes=n_genes, method=method)
    if not synth_markers:
        return float("nan")
    return float(np.mean([jaccard(real_markers[t], synth_markers[t]) for t in synth_markers]))


def log_fold_changes(X: np.ndarray, labels: np.ndarray, groups: Sequence[str]) -> dict[str, np.ndarray]:
    """Per type in ``groups``, the log fold change of every gene against all other cells.

    On log1p data the difference of means is a log fold change: ``mean(X[type]) - mean(X[rest])`` per
    gene (the mean log1p expression in the type minus that in the rest; natural log). A type with no
    cell, or with no other cell, is left out.

    Parameters
    ----------
    X
        Cells × genes, log1p of normalised expression.
    labels
        Cell type of each cell.
    groups
        The types to compute.

    Returns
    -------
    dict
        ``{type: float64 array over the genes}``.
    """
    X = np.asarray(X, dtype=np.float64)
    labels = np.asarray(labels).astype(str)
    total = X.sum(axis=0)
    out: dict[str, np.ndarray] = {}
    for g in map(str, groups):
        inside = labels == g
        n_in = int(inside.sum())
        n_out = len(labels) - n_in
        if n_in == 0 or n_out == 0:
            continue
        in_sum = X[inside].sum(axis=0)
        out[g] = in_sum / n_in - (total - in_sum) / n_out
    return out


def logfc_correlations(real: dict[str, np.ndarray], synth: dict[str, np.ndarray]) -> dict[str, float]:
    """Per type both sides have, the Pearson correlation across genes of the two log fold changes
    (:func:`log_fold_changes`); NaN where either is constant."""
    return {t: pearson(real[t], synth[t]) for t in real if t in synth}


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r of two vectors over the positions where both are finite; NaN when either is constant
    there or fewer than 2 positions remain."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a**2).sum() * (b**2).sum())
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def types_with(labels: np.ndarray, min_cells: int) -> list[str]:
    """The types (sorted by name) with at least ``min_cells`` cells."""
    types, counts = np.unique(labels, return_counts=True)
    return [str(t) for t, c in zip(types, counts, strict=True) if c >= min_cells]


def jaccard(a, b) -> float:
    """Jaccard index of two collections of genes; NaN when both are empty."""
    a, b = set(np.asarray(list(a)).tolist()), set(np.asarray(list(b)).tolist())
    union = a | b
    return float(len(a & b) / len(union)) if union else float("nan")
