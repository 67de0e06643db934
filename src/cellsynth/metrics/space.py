"""The common space of an evaluation: REAL, SYNTH (and TRAIN) over the same genes, normalised the same way.

Genes are matched by name; each input's representation is detected as for training
(:mod:`cellsynth.data.preprocess`: integer non-negative → counts, normalised to 10,000 per cell and
log1p-transformed; non-negative non-integer → log1p data, used as is; negative values → used as is);
highly variable genes are chosen on REAL. Only the evaluated genes are densified.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.names import check_unique_names
from ..data.preprocess import (
    MAX_LOG,
    TARGET_SUM,
    beyond_log1p,
    cell_totals,
    detect_representation,
    normalize_log1p,
)
from ..errors import InputError
from .base import FAMILIES, FAMILY_ORDER, SETTINGS, EvalContext, Space

DEFAULT_SETTINGS: dict[str, Any] = {
    # common space
    "n_hvg": 2000,  # highly variable genes chosen on REAL (all genes when fewer)
    "max_genes": 5000,  # genes densified and evaluated: the most variable ones on REAL when more match
    "min_genes_overlap": 50,  # matched genes needed (or every gene of the smaller side, when fewer)
    "min_overlap_fraction": 0.5,  # ... and at least this fraction of the smaller side's genes
    "n_pcs": 50,
    "max_cells_pca": 2500,  # cells per set a PCA is fitted on (union PCA: per side; privacy: the reference)
    # distribution
    "max_cells_ot": 2000,  # cells per side in exact OT (wasserstein, wasserstein_garage)
    "ot_num_itermax": 10_000_000,
    "sliced_projections": 200,
    "max_cells_mmd": 1500,
    # detection
    "max_cells_detection": 1500,  # cells per side in the classifier two-sample tests
    "detection_trees": 100,
    "detection_folds": 5,
    "min_cells_per_type": 20,  # per-type metrics: types with at least this many cells on both sides
    "max_cells_per_type": 200,  # cells per side per type (per-type detection_auc and mmd)
    "per_type_trees": 50,
    # genes
    "n_corr_genes": 100,  # top HVGs of gene_corr_pearson
    # privacy
    "max_cells_privacy": 5000,  # query cells per set (DCR, MIA); the reference set is never subsampled
    "exact_copy_tolerance": 1e-4,  # largest absolute difference (log-normalised) of an exact copy
    # resources
    "n_jobs": -1,
}


def load_families() -> dict[str, Callable[[EvalContext], dict[str, float]]]:
    """Import every family module (registering its metrics) and return the registry.

    ``biology`` is optional while it is being written: a missing ``biology.py`` is skipped, but an
    import error inside an existing one is raised.
    """
    from . import detection, distribution, genes, privacy, properties  # noqa: F401  (registration)

    try:
        import_module(f"{__package__}.biology")
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.biology":
            raise
    order = {name: i for i, name in enumerate(FAMILY_ORDER)}
    return dict(sorted(FAMILIES.items(), key=lambda kv: order.get(kv[0], len(order))))


def resolve_settings(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_SETTINGS` and the options families declared (``register_settings``), updated with
    ``overrides``.

    Raises
    ------
    InputError
        A key that is not a setting.
    """
    load_families()  # the families declare their own settings (groundgan_trees, ...) when they load
    settings = {**DEFAULT_SETTINGS, **SETTINGS}
    for key, value in (overrides or {}).items():
        if key not in settings:
            known = ", ".join(sorted(settings))
            raise InputError(f"unknown evaluation setting {key!r}; known settings: {known}")
        settings[key] = value
    return settings


def _matrix(adata, layer: str | None, side: str):
    if layer is not None and layer not in adata.layers:
        raise InputError(
            f"{side}: layer {layer!r} not found (available: {list(adata.layers)}); fix the layer"
        )
    X = adata.layers[layer] if layer is not None else adata.X
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32)
    else:
        X = np.asarray(X.toarray() if hasattr(X, "toarray") else X, dtype=np.float32)
    values = X.data if sp.issparse(X) else X
    if not np.all(np.isfinite(values)):
        raise InputError(f"{side}: the expression matrix contains NaN or Inf values; remove or impute them")
    return X


def _check(adata, label_key: str, side: str) -> np.ndarray:
    import anndata as ad

    if not isinstance(adata, ad.AnnData):
        raise InputError(
            f"{side} must be an AnnData (read it with cellsynth.read), got {type(adata).__name__}"
        )
    if label_key not in adata.obs.columns:
        available = ", ".join(map(str, adata.obs.columns[:12])) or "none"
        raise InputError(
            f"{side}: obs column {label_key!r} not found (available: {available}); "
            f"pass the column that holds the cell type with --label-key"
        )
    labels = adata.obs[label_key]
    if labels.isna().any():
        raise InputError(
            f"{side}: obs[{label_key!r}] has {int(labels.isna().sum())} missing values; drop those cells"
        )
    if adata.n_obs < 2:
        raise InputError(f"{side} has {adata.n_obs} cells; need at least 2")
    check_unique_names(adata, side, fix="call adata.var_names_make_unique() first", axes=["var"])
    return np.asarray(labels.astype(str), dtype=object).astype(str)


def _match_genes(sides: dict[str, Any], settings: Mapping[str, Any]) -> pd.Index:
    names = list(sides)
    common = pd.Index(sides[names[0]].var_names)
    for name in names[1:]:
        common = common[common.isin(sides[name].var_names)]
    smallest = min(a.n_vars for a in sides.values())
    needed = max(
        min(int(settings["min_genes_overlap"]), smallest), settings["min_overlap_fraction"] * smallest
    )
    if len(common) < needed:
        sizes = ", ".join(f"{name} {sides[name].n_vars}" for name in names)
        example = ", ".join(map(str, sides[names[0]].var_names[:3]))
        other = ", ".join(map(str, sides[names[1]].var_names[:3]))
        raise InputError(
            f"only {len(common)} gene names are shared ({sizes} genes; "
            f"at least {int(np.ceil(needed))} needed): "
            f"the sets must use the same gene identifiers (e.g. {names[0]}: {example}; {names[1]}: {other}); "
            "convert the names (symbols vs Ensembl ids) before evaluating"
        )
    return common


def gene_rank(Xlog, representation: str) -> np.ndarray:
    """Gene indices, most variable first (scanpy's Seurat dispersion on log data; variance otherwise)."""
    import anndata as ad
    import scanpy as sc

    n_genes = Xlog.shape[1]
    if representation == "as_is":
        var = np.asarray(Xlog.power(2).mean(axis=0) if sp.issparse(Xlog) else (Xlog**2).mean(axis=0)).ravel()
        mean = np.asarray(Xlog.mean(axis=0)).ravel()
        return np.argsort(-(var - mean**2), kind="stable")
    tmp = ad.AnnData(sp.csr_matrix(Xlog) if not sp.issparse(Xlog) else Xlog)
    with warnings.catch_warnings():  # all genes are ranked: never-expressed ones come last
        warnings.filterwarnings("ignore", message=".*n_top_genes.*", category=UserWarning)
        sc.pp.highly_variable_genes(tmp, flavor="seurat", n_top_genes=n_genes, subset=False)
    disp = tmp.var["dispersions_norm"].to_numpy(dtype=np.float64)
    disp = np.where(np.isfinite(disp), disp, -np.inf)
    return np.argsort(-disp, kind="stable")


def _prepared(adata, layer: str | None, side: str) -> tuple[str, Any, Any, np.ndarray | None]:
    X = _matrix(adata, layer, side)
    representation = detect_representation(X)
    # real cells only: a generator's (or a transform's) log values may pass the bound of normalised data
    if side != "SYNTH" and representation == "log1p" and (top := beyond_log1p(X)) is not None:
        raise InputError(
            f"{side} holds non-integer values up to {top:.4g}, beyond log1p-normalised data (at most "
            f"{MAX_LOG:g}): pass counts (fractional counts rounded, e.g. numpy.rint) or log-normalised "
            "values (scanpy.pp.log1p)"
        )
    if representation != "counts":  # log data and other data are used as they are
        return representation, X, X, None
    totals = cell_totals(X)  # over every gene, as in training
    return representation, X, normalize_log1p(X, totals), totals


def _space(prepared, labels: np.ndarray, cols: np.ndarray) -> Space:
    representation, X, Xlog, totals = prepared
    dense = Xlog[:, cols]
    dense = dense.toarray() if sp.issparse(dense) else np.asarray(dense)
    counts = sp.csr_matrix(X[:, cols], dtype=np.float32) if representation == "counts" else None
    return Space(
        X=np.ascontiguousarray(dense, dtype=np.float32),
        labels=labels,
        counts=counts,
        library_size=totals,
        representation=representation,
    )


def build_context(
    real,
    synth,
    *,
    label_key: str,
    train=None,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    layer: str | None = None,
) -> EvalContext:
    """Put REAL, SYNTH and (optionally) TRAIN into a common space.

    Parameters
    ----------
    real
        Held-out real cells (AnnData).
    synth
        Synthetic cells (AnnData), generated by a model fitted on ``train``.
    label_key
        ``obs`` column with the cell type, in every set.
    train
        The model's training cells (AnnData), for the control and the privacy metrics.
    seed
        Seed of every random choice of the evaluation.
    settings
        Overrides of :data:`DEFAULT_SETTINGS`.
    layer
        Use ``adata.layers[layer]`` instead of ``adata.X`` in every set.

    Returns
    -------
    EvalContext
        ``settings`` holds the resolved settings plus what was found: each set's representation,
        cell and gene counts, the number of matched and evaluated genes.

    Raises
    ------
    InputError
        A missing label column, too few shared gene names, NaN/Inf values, duplicated gene names.
    """
    s = resolve_settings(settings)
    sides = {"REAL": real, "SYNTH": synth}
    if train is not None:
        sides["TRAIN"] = train
    labels = {side: _check(a, label_key, side) for side, a in sides.items()}
    common = _match_genes(sides, s)

    prepared = {side: _prepared(a, layer, side) for side, a in sides.items()}
    # HVGs on REAL, over the matched genes
    real_rep, _, real_log, _ = prepared["REAL"]
    rank = gene_rank(real_log[:, real.var_names.get_indexer(common)], real_rep)
    n_eval = min(len(common), int(s["max_genes"]))
    evaluated = np.sort(rank[:n_eval])  # evaluated genes, in REAL's order
    position = np.empty(len(common), dtype=np.int64)
    position[evaluated] = np.arange(n_eval)
    n_hvg = min(int(s["n_hvg"]), n_eval)
    hvg = position[rank[:n_hvg]]  # most variable first
    genes = np.asarray(common[evaluated], dtype=object).astype(str)

    spaces = {
        side: _space(prepared.pop(side), labels[side], a.var_names.get_indexer(genes))
        for side, a in sides.items()
    }
    s.update(
        {
            "label_key": label_key,
            "seed": seed,
            "layer": layer,
            "representation": {side.lower(): sp_.representation for side, sp_ in spaces.items()},
            "n_cells": {side.lower(): len(sp_) for side, sp_ in spaces.items()},
            "n_genes": {
                **{side.lower(): int(a.n_vars) for side, a in sides.items()},
                "matched": len(common),
                "evaluated": len(genes),
                "hvg": len(hvg),
            },
            "normalisation": f"counts: normalize_total {TARGET_SUM:g} + log1p; log data as is",
            "hvg_selection": "scanpy highly_variable_genes (seurat) on REAL",
        }
    )
    return EvalContext(
        real=spaces["REAL"],
        synth=spaces["SYNTH"],
        genes=genes,
        hvg=hvg,
        train=spaces.get("TRAIN"),
        settings=s,
        seed=seed,
    )


def control_context(ctx: EvalContext) -> EvalContext:
    """The real-vs-real control: a TRAIN subsample of SYNTH's size (TRAIN's type proportions) vs REAL.

    The subsample keeps each type's share of TRAIN (largest remainders), with at least one cell of
    each type when the size allows; all of TRAIN when SYNTH is larger.
    """
    if ctx.train is None:
        raise ValueError("the control needs TRAIN")
    train = ctx.train
    n = min(len(ctx.synth), len(train))
    rng = ctx.rng("control")
    types, codes = np.unique(train.labels, return_inverse=True)
    sizes = np.bincount(codes)
    quota = sizes * n / len(train)
    take = np.floor(quota).astype(int)
    if n >= len(types):
        take = np.maximum(take, np.minimum(sizes, 1))
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < n:
        t = order[i % len(order)]
        if take[t] < sizes[t]:
            take[t] += 1
        i += 1
    while take.sum() > n:  # the minimum of one cell per type overshot: trim the largest types
        t = int(np.argmax(take))
        take[t] -= 1
    idx = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(codes == t), size=int(k), replace=False) for t, k in enumerate(take)]
        )
    )
    control = Space(
        X=train.X[idx],
        labels=train.labels[idx],
        counts=None if train.counts is None else train.counts[idx],
        library_size=None if train.library_size is None else train.library_size[idx],
        representation=train.representation,
    )
    return EvalContext(
        real=ctx.real,
        synth=control,
        genes=ctx.genes,
        hvg=ctx.hvg,
        train=None,
        settings=ctx.settings,
        seed=ctx.seed,
        kind="control",
        shared=ctx.shared,
    )
