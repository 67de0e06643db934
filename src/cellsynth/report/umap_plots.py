"""The map of cells: real and synthetic cells in one UMAP, overall and per cell type."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .plots import BACKGROUND_COLOR, REAL_COLOR, SYNTH_COLOR, legend_dot, point_size, shorten, type_palette

UMAP_EPOCHS = 200


@dataclass
class Embedding:
    """Real and synthetic cells placed in one UMAP.

    Attributes
    ----------
    adata
        The subsampled cells (rows shuffled so that neither side is drawn on top of the other), with
        ``obs["source"]`` (real/synthetic), ``obs["cell_type"]`` and ``obsm["X_umap"]``.
    n_real, n_synth
        Cells of each side in the map, and ``total_real``, ``total_synth`` before subsampling.
    n_genes
        Genes the PCA was computed on (the highly variable ones).
    """

    adata: Any  # anndata.AnnData
    n_real: int
    n_synth: int
    total_real: int
    total_synth: int
    n_genes: int
    n_pcs: int


def umap_embedding(
    real_X: np.ndarray,
    real_labels: np.ndarray,
    synth_X: np.ndarray,
    synth_labels: np.ndarray,
    *,
    genes: np.ndarray | None,
    cap: int,
    types: Sequence[str],
    rng: np.random.Generator,
    seed: int,
) -> Embedding:
    """Concatenate both sets (each subsampled to ``cap`` cells), PCA on ``genes``, kNN graph, UMAP.

    The PCA is fitted on the union, like the metrics' PCA, so that neither side is privileged.
    """
    import anndata as ad
    import pandas as pd
    import scanpy as sc

    def take(n: int) -> np.ndarray:
        return np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)

    ir, is_ = take(len(real_X)), take(len(synth_X))
    cols = np.arange(real_X.shape[1]) if genes is None or len(genes) < 2 else np.asarray(genes)
    X = np.vstack([real_X[ir][:, cols], synth_X[is_][:, cols]]).astype(np.float32, copy=False)
    source = np.repeat(["real", "synthetic"], [len(ir), len(is_)])
    labels = np.concatenate(
        [np.asarray(real_labels, dtype=str)[ir], np.asarray(synth_labels, dtype=str)[is_]]
    )
    perm = rng.permutation(len(X))
    adata = ad.AnnData(X[perm])
    adata.obs_names = [f"c{i}" for i in range(len(perm))]
    adata.obs["source"] = pd.Categorical(source[perm], categories=["real", "synthetic"])
    present = [t for t in types if t in set(labels)]
    adata.obs["cell_type"] = pd.Categorical(labels[perm], categories=present)
    adata.uns["source_colors"] = [REAL_COLOR, SYNTH_COLOR]
    adata.uns["cell_type_colors"] = type_palette(len(present))
    n_pcs = int(max(2, min(50, X.shape[0] - 1, X.shape[1] - 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.pca(adata, n_comps=n_pcs, svd_solver="randomized", random_state=seed)
        sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", random_state=seed)
        # 200 epochs (umap-learn's choice above 10,000 cells) instead of 500: a 3x faster layout that
        # is as readable for a report
        sc.tl.umap(adata, random_state=seed, maxiter=UMAP_EPOCHS)
    return Embedding(adata, len(ir), len(is_), len(real_X), len(synth_X), len(cols), n_pcs)


def umap_overview(emb: Embedding) -> Figure:
    """Two UMAP panels of the same map: coloured by source, and by cell type (scanpy)."""
    import scanpy as sc

    n_types = len(emb.adata.obs["cell_type"].cat.categories)
    legend_cols = 1 if n_types <= 16 else 2
    fig = Figure(figsize=(15 + 1.6 * (legend_cols - 1), 6.2))
    ax_src, ax_type = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15 + 0.2 * (legend_cols - 1)]})
    size = point_size(emb.adata.n_obs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pl.umap(
            emb.adata,
            color="source",
            ax=ax_src,
            legend_loc="best",
            show=False,
            size=size,
            frameon=True,
            title="Real and synthetic cells",
            legend_fontsize=10,
        )
        sc.pl.umap(
            emb.adata,
            color="cell_type",
            ax=ax_type,
            show=False,
            size=size,
            frameon=True,
            title="Cell type (real and synthetic)",
            legend_fontsize=8,
        )
    if legend_cols > 1 and ax_type.get_legend() is not None:
        handles, names = ax_type.get_legend_handles_labels()
        ax_type.legend(
            handles,
            names,
            loc="center left",
            bbox_to_anchor=(1, 0.5),
            ncol=2,
            fontsize=7,
            frameon=False,
            markerscale=1.5,
        )
    fig.subplots_adjust(wspace=0.08)
    return fig


def umap_per_type(emb: Embedding, types: Sequence[str], *, max_panels: int, ncols: int = 5) -> Figure:
    """Small multiples: for each type, its real and synthetic cells highlighted over all cells in grey."""
    coords = emb.adata.obsm["X_umap"]
    source = emb.adata.obs["source"].to_numpy()
    labels = emb.adata.obs["cell_type"].astype(str).to_numpy()
    shown = list(types)[:max_panels]
    ncols = max(1, min(ncols, len(shown)))
    nrows = int(np.ceil(len(shown) / ncols))
    fig = Figure(figsize=(3.1 * ncols, 3.0 * nrows + 0.5))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    bg = point_size(len(coords)) / 40
    for ax, t in zip(axes, shown, strict=False):
        ax.scatter(coords[:, 0], coords[:, 1], s=bg, c=BACKGROUND_COLOR, linewidths=0, rasterized=True)
        in_type = labels == t
        n_r = int(np.sum(in_type & (source == "real")))
        n_s = int(np.sum(in_type & (source == "synthetic")))
        # a rare type's few cells must still be visible in a small panel
        fg = max(bg * 2.5, 3.0) if n_r + n_s >= 100 else 14.0
        for side, color in (("real", REAL_COLOR), ("synthetic", SYNTH_COLOR)):
            m = in_type & (source == side)
            ax.scatter(
                coords[m, 0],
                coords[m, 1],
                s=fg,
                c=color,
                linewidths=0.3 if fg > 10 else 0,
                edgecolors="white",
                alpha=0.75,
                rasterized=True,
            )
        ax.set_title(f"{shorten(t, 28)}\n{n_r} real · {n_s} synthetic", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#bbbbbb")
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    handles = [
        legend_dot(REAL_COLOR, "real cells of the type"),
        legend_dot(SYNTH_COLOR, "synthetic cells of the type"),
        legend_dot(BACKGROUND_COLOR, "all other cells"),
    ]
    fig.legend(
        handles=handles, loc="upper center", ncol=3, frameon=False, fontsize=10, bbox_to_anchor=(0.5, 1.0)
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig
