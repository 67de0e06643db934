"""Datasets: scanpy's bundled pbmc68k (the demo's default data) and seeded simulated counts for tests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def pbmc68k() -> ad.AnnData:
    """700 PBMCs with 10 cell types (``obs["bulk_labels"]``), as raw UMI counts over 765 genes.

    Scanpy ships ``pbmc68k_reduced``; its ``.raw.X`` holds log-normalised values (target sum 1e4), from
    which the counts are rebuilt as ``round(expm1(raw.X) * n_counts / 1e4)``. The genes are the 765
    highly variable ones of ``.X``; no network access is needed.
    """
    import scanpy as sc

    src = sc.datasets.pbmc68k_reduced()
    raw = src.raw.to_adata()
    raw = raw[:, src.var_names]
    lognorm = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    n_counts = src.obs["n_counts"].to_numpy(dtype=np.float64)
    counts = np.rint(np.expm1(lognorm.astype(np.float64)) * n_counts[:, None] / 1e4).astype(np.float32)
    obs = src.obs[["bulk_labels", "n_genes", "n_counts"]].copy()
    obs["bulk_labels"] = obs["bulk_labels"].astype("category")
    out = ad.AnnData(sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=src.var_names.copy()))
    out.uns["cellsynth_read"] = {"format": "pbmc68k_reduced", "counts": "rebuilt from .raw"}
    return out


def simulate(
    type_sizes: Mapping[str, int] | Sequence[int] = (300, 200, 100, 20),
    *,
    n_genes: int = 200,
    n_markers: int = 15,
    marker_fold: float = 6.0,
    dispersion: float = 0.5,
    mean_library: float = 600.0,
    covariates: Mapping[str, int] | None = None,
    programs: int = 0,
    program_sd: float = 0.5,
    seed: int = 0,
) -> ad.AnnData:
    """Seeded negative-binomial counts with cell types of chosen sizes (rare ones too).

    Each type gets ``n_markers`` marker genes up-regulated ``marker_fold``-fold over a shared
    log-normal baseline; each cell a log-normal library size; counts are NB(mean, ``dispersion``).

    Parameters
    ----------
    type_sizes
        Cells per type, as a mapping ``{"name": n}`` or a sequence (types named ``type_0``...).
    covariates
        Extra categorical obs columns with that many levels each, e.g. ``{"donor": 2}``; each level
        scales a random tenth of the genes, so the covariate is learnable.
    programs
        Gene programs that vary continuously within every type (0: none, genes independent given the
        type). Each program loads on a random tenth of the genes with normal weights of sd
        ``program_sd``; each cell has a standard-normal activity per program, and its expected profile
        is scaled by ``exp(activities @ loadings)``: genes co-vary within types, as in real cells.
    seed
        Seed of the generator that draws everything.
    """
    rng = np.random.default_rng(seed)
    if not isinstance(type_sizes, Mapping):
        type_sizes = {f"type_{i}": int(n) for i, n in enumerate(type_sizes)}
    names = list(type_sizes)
    labels = np.repeat(names, [type_sizes[t] for t in names])
    n = len(labels)
    base = rng.lognormal(mean=-0.5, sigma=1.5, size=n_genes)
    base /= base.sum()
    profiles = np.tile(base, (len(names), 1))
    for t in range(len(names)):
        markers = rng.choice(n_genes, size=min(n_markers, n_genes), replace=False)
        profiles[t, markers] *= marker_fold
    profiles /= profiles.sum(axis=1, keepdims=True)
    code = pd.Categorical(labels, categories=names).codes
    # cells × genes float64 arrays, updated in place: a few of them at a time, not one per step
    mu = profiles[code]
    obs = pd.DataFrame({"cell_type": pd.Categorical(labels, categories=names)})
    for key, levels in (covariates or {}).items():
        level = rng.integers(0, levels, size=n)
        effect = np.ones((levels, n_genes))
        for lv in range(levels):
            genes = rng.choice(n_genes, size=max(1, n_genes // 10), replace=False)
            effect[lv, genes] = rng.choice([0.33, 3.0], size=len(genes))
        mu *= effect[level]
        mu /= mu.sum(axis=1, keepdims=True)
        obs[key] = pd.Categorical([f"{key}_{lv}" for lv in level])
    if programs:
        mask = rng.random((programs, n_genes)) < 0.1
        loadings = rng.normal(0.0, program_sd, size=(programs, n_genes)) * mask
        activity = rng.standard_normal((n, programs))
        scale = activity @ loadings
        mu *= np.exp(scale, out=scale)
        del scale
        mu /= mu.sum(axis=1, keepdims=True)
    library = rng.lognormal(mean=np.log(mean_library), sigma=0.3, size=n)
    mu *= library[:, None]  # the mean
    r = 1.0 / dispersion
    mu /= r  # the gamma's scale
    rate = rng.gamma(shape=r, scale=mu)
    del mu
    counts = rng.poisson(rate).astype(np.float32)
    del rate
    perm = rng.permutation(n)
    obs = obs.iloc[perm].reset_index(drop=True)
    obs.index = [f"cell_{i}" for i in range(n)]
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(n_genes)])
    return ad.AnnData(sp.csr_matrix(counts)[perm], obs=obs, var=var)
