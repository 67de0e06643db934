"""Figures of the report: each function draws one figure from the compared sets and returns it.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot state,
no window, nothing to close, and nothing global changes when a report is written (so it is safe inside a
notebook or a server). :func:`png_base64` turns one into the text of a ``data:`` URI.
"""

from __future__ import annotations

import base64
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

REAL_COLOR = "#3b6fb6"
SYNTH_COLOR = "#e4772b"
BACKGROUND_COLOR = "#d9d9d9"
UMAP_EPOCHS = 200

# Loss curves drawn when present in a training history, in this order (other ``*_loss`` keys follow).
LOSS_KEYS = ("d_loss", "g_loss", "class_loss_real", "class_loss_fake", "sparsity_loss")


def png_base64(fig: Figure, *, dpi: int = 100) -> str:
    """The figure as a base64-encoded PNG (the payload of a ``data:image/png;base64,`` URI)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two vectors, NaN when either is constant (instead of a warning)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def type_order(real_labels: np.ndarray, synth_labels: np.ndarray) -> list[str]:
    """Cell types, largest in REAL first; types only the synthetic set has come last."""
    names, counts = np.unique(np.asarray(real_labels, dtype=str), return_counts=True)
    order = [str(n) for n in names[np.lexsort((names, -counts))]]
    extra = sorted(set(np.asarray(synth_labels, dtype=str)) - set(order))
    return order + extra


# ---------------------------------------------------------------------------------------------- UMAP


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


def type_palette(n: int) -> list[str]:
    """``n`` distinct colours for cell types, avoiding the blue and orange that mean real and synthetic."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tab20 = [to_hex(c) for c in colormaps["tab20"].colors]
    # tab20 pairs a dark and a light shade of each hue; drop the blue and orange pairs, darks first
    base = [tab20[i] for i in (4, 8, 6, 10, 12, 14, 16, 18, 5, 9, 7, 11, 13, 15, 17, 19)]
    if n <= len(base):
        return base[:n]
    from scanpy.plotting.palettes import default_102

    return (base + [c for c in default_102 if c not in base])[:n]


def umap_overview(emb: Embedding) -> Figure:
    """Two UMAP panels of the same map: coloured by source, and by cell type (scanpy)."""
    import scanpy as sc

    n_types = len(emb.adata.obs["cell_type"].cat.categories)
    legend_cols = 1 if n_types <= 16 else 2
    fig = Figure(figsize=(15 + 1.6 * (legend_cols - 1), 6.2))
    ax_src, ax_type = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.15 + 0.2 * (legend_cols - 1)]})
    size = _point_size(emb.adata.n_obs)
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
    bg = _point_size(len(coords)) / 40
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
        ax.set_title(f"{_short(t, 28)}\n{n_r} real · {n_s} synthetic", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_color("#bbbbbb")
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    handles = [
        _dot(REAL_COLOR, "real cells of the type"),
        _dot(SYNTH_COLOR, "synthetic cells of the type"),
        _dot(BACKGROUND_COLOR, "all other cells"),
    ]
    fig.legend(
        handles=handles, loc="upper center", ncol=3, frameon=False, fontsize=10, bbox_to_anchor=(0.5, 1.0)
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return fig


# --------------------------------------------------------------------------------------------- genes


def gene_statistics(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene mean, variance and fraction of zero values of a cells × genes matrix."""
    X = np.asarray(X)
    mean = X.mean(axis=0, dtype=np.float64)
    var = X.var(axis=0, dtype=np.float64)
    zero = (X == 0).mean(axis=0)
    return {"mean": mean, "variance": var, "zero fraction": zero}


def gene_scatter(
    real_X: np.ndarray, synth_X: np.ndarray, *, scale: str = "log1p scale"
) -> tuple[Figure, dict[str, float]]:
    """Per-gene mean, variance and zero fraction, real (x) against synthetic (y), with y = x.

    ``scale`` names the values' scale on the mean and variance axes. Returns the figure and the
    Pearson r of each panel.
    """
    real, synth = gene_statistics(real_X), gene_statistics(synth_X)
    titles = {
        "mean": "Mean expression per gene",
        "variance": "Variance per gene",
        "zero fraction": "Fraction of cells with zero expression",
    }
    fig = Figure(figsize=(15, 4.9))
    axes = fig.subplots(1, 3)
    rs = {}
    for ax, key in zip(axes, titles, strict=True):
        x, y = real[key], synth[key]
        r = pearson(x, y)
        rs[key] = r
        ax.scatter(x, y, s=7, alpha=0.55, c=SYNTH_COLOR, linewidths=0, rasterized=True)
        finite = np.concatenate([x[np.isfinite(x)], y[np.isfinite(y)]])
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        pad = 0.03 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="#444444", lw=1, ls="--", label="y = x")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        unit = "" if key == "zero fraction" or not scale else f" ({scale})"
        ax.set_xlabel(f"real: {key}{unit}")
        ax.set_ylabel(f"synthetic: {key}{unit}")
        ax.set_title(f"{titles[key]}\nPearson r = {_fmt_r(r)}  ({len(x)} genes)", fontsize=11)
        ax.legend(loc="upper left", frameon=False, fontsize=9)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig, rs


def top_variable(X: np.ndarray, candidates: np.ndarray | None, n: int) -> np.ndarray:
    """The ``n`` genes of ``candidates`` (all genes if None or empty) with the largest variance in ``X``."""
    cand = np.arange(X.shape[1]) if candidates is None or len(candidates) == 0 else np.asarray(candidates)
    var = np.asarray(X[:, cand]).var(axis=0, dtype=np.float64)
    keep = np.argsort(-var, kind="stable")[: min(n, len(cand))]
    return cand[keep]


def gene_correlation(X: np.ndarray) -> np.ndarray:
    """Gene–gene Pearson correlation of the columns of ``X``; a constant gene correlates 0 with all."""
    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)
    norm = np.sqrt((X * X).sum(axis=0))
    norm[norm == 0] = np.inf
    Z = X / norm
    C = Z.T @ Z
    np.fill_diagonal(C, 1.0)
    return np.clip(C, -1.0, 1.0)


def correlation_heatmaps(
    real_X: np.ndarray, synth_X: np.ndarray, gene_names: np.ndarray, genes: np.ndarray
) -> tuple[Figure, float]:
    """Gene–gene correlation of ``genes`` in real | synthetic | difference, in the real clustering's order.

    Returns the figure and the Pearson r of the two matrices' upper triangles.
    """
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    c_real = gene_correlation(real_X[:, genes])
    c_synth = gene_correlation(synth_X[:, genes])
    if len(genes) > 2:
        dist = squareform(1.0 - c_real, checks=False)
        order = leaves_list(linkage(np.clip(dist, 0, None), method="average"))
    else:
        order = np.arange(len(genes))
    iu = np.triu_indices(len(genes), k=1)
    r = pearson(c_real[iu], c_synth[iu])
    names = [_short(str(g), 14) for g in np.asarray(gene_names)[genes][order]]
    fontsize = 7 if len(names) <= 40 else 6
    fig = Figure(figsize=(17, 5.9), layout="constrained")
    fig.get_layout_engine().set(wspace=0.04)
    axes = fig.subplots(1, 3)
    panels = (
        (c_real, "Real cells", "RdBu_r"),
        (c_synth, "Synthetic cells (same gene order)", "RdBu_r"),
        (c_synth - c_real, "Difference: synthetic − real", "PuOr_r"),
    )
    ticks = np.arange(len(names))
    for i, (ax, (C, title, cmap)) in enumerate(zip(axes, panels, strict=True)):
        im = ax.imshow(C[np.ix_(order, order)], cmap=cmap, vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=12)
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, rotation=90, fontsize=fontsize)
        ax.set_yticks(ticks)
        ax.set_yticklabels(names if i == 0 else [], fontsize=fontsize)
        ax.tick_params(length=0)
        if i >= 1:
            label = "difference in Pearson r" if i == 2 else "Pearson r (both left panels)"
            fig.colorbar(im, ax=ax if i == 2 else axes[:2], shrink=0.8, pad=0.01).set_label(label, fontsize=9)
    fig.suptitle(
        f"Gene–gene correlation of {len(genes)} highly variable genes, clustered on the real cells; "
        f"agreement of the two matrices r = {_fmt_r(r)}",
        fontsize=12,
    )
    return fig, r


# ------------------------------------------------------------------------------------- library sizes


def library_histograms(
    real_size: np.ndarray,
    synth_size: np.ndarray,
    real_detected: np.ndarray,
    synth_detected: np.ndarray,
    *,
    size_label: str,
    log_scale: bool,
) -> Figure:
    """Overlaid histograms of a per-cell size (library size or sum of log values) and of genes detected."""
    fig = Figure(figsize=(13, 4.4))
    ax_size, ax_det = fig.subplots(1, 2)
    for ax, (r, s, label, log) in zip(
        (ax_size, ax_det),
        (
            (real_size, synth_size, size_label, log_scale),
            (real_detected, synth_detected, "genes detected per cell", False),
        ),
        strict=True,
    ):
        r = np.asarray(r, dtype=np.float64)
        s = np.asarray(s, dtype=np.float64)
        both = np.concatenate([r, s])
        both = both[np.isfinite(both)]
        if log:
            pos = both[both > 0]
            lo, hi = (pos.min(), pos.max()) if len(pos) else (1.0, 10.0)
            bins = np.geomspace(lo, max(hi, lo * 1.01), 50)
            ax.set_xscale("log")
        else:
            lo, hi = (both.min(), both.max()) if len(both) else (0.0, 1.0)
            bins = np.linspace(lo, max(hi, lo + 1e-9), 50)
        ax.hist(
            r,
            bins=bins,
            color=REAL_COLOR,
            alpha=0.55,
            label=f"real (median {np.median(r):.4g})",
            density=True,
        )
        ax.hist(
            s,
            bins=bins,
            color=SYNTH_COLOR,
            alpha=0.55,
            label=f"synthetic (median {np.median(s):.4g})",
            density=True,
        )
        ax.set_xlabel(label)
        ax.set_ylabel("density of cells")
        ax.set_title(label[0].upper() + label[1:], fontsize=11)
        ax.legend(frameon=False, fontsize=9)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ per type


def type_counts(
    types: Sequence[str],
    n_real: Sequence[int],
    n_synth: Sequence[int],
    score: Sequence[float] | None = None,
    score_name: str | None = None,
    score_ideal: float | None = None,
    score_colors: Sequence[str] | None = None,
    score_range: tuple[float, float] | None = None,
) -> Figure:
    """Cells per type on each side (horizontal bars) and, when given, one per-type score beside it."""
    k = len(types)
    height = max(2.6, 0.32 * k + 1.3)
    fig = Figure(figsize=(13 if score is not None else 7.5, height))
    axes = fig.subplots(1, 2 if score is not None else 1, squeeze=False)[0]
    y = np.arange(k)
    ax = axes[0]
    ax.barh(y - 0.2, n_real, height=0.4, color=REAL_COLOR, label="real")
    ax.barh(y + 0.2, n_synth, height=0.4, color=SYNTH_COLOR, label="synthetic")
    ax.set_yticks(y)
    ax.set_yticklabels([_short(t, 30) for t in types], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("cells")
    ax.set_title("Cells per type", fontsize=11)
    ax.legend(frameon=False, fontsize=9, loc="lower right")
    ax.grid(axis="x", alpha=0.25)
    if score is not None:
        ax2 = axes[1]
        vals = np.asarray(score, dtype=np.float64)
        ok = np.isfinite(vals)
        colors = np.asarray(score_colors if score_colors is not None else ["#7f7f7f"] * k, dtype=object)
        ax2.barh(y[ok], vals[ok], color=list(colors[ok]), height=0.6)
        for yi in y[~ok]:
            ax2.text(
                0.01,
                yi,
                "too few cells",
                va="center",
                fontsize=7,
                color="#888888",
                transform=ax2.get_yaxis_transform(),
            )
        if score_range is not None:
            ax2.set_xlim(*score_range)
        if score_ideal is not None:
            ax2.axvline(score_ideal, color="#2e7d32", ls="--", lw=1, label=f"ideal ({score_ideal:g})")
            ax2.legend(frameon=False, fontsize=9, loc="lower right")
        ax2.set_yticks(y)
        ax2.set_yticklabels([])
        ax2.set_ylim(k - 0.5, -0.5)  # all types, also those without a bar (too few cells)
        ax2.set_xlabel(score_name or "")
        ax2.set_title(f"{score_name} per type", fontsize=11)
        ax2.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------ training


def _loss_keys(history: Sequence[dict[str, Any]]) -> list[str]:
    keys = [k for k in LOSS_KEYS if any(_number(h.get(k)) for h in history)]
    return keys + sorted(
        {k for h in history for k in h if k.endswith("loss") and k not in keys and _number(h.get(k))}
    )


def has_curves(history: Sequence[dict[str, Any]]) -> bool:
    """Whether a training history holds anything :func:`training_curves` can draw."""
    return bool(_loss_keys(history)) or any(_number(h.get("val_mmd")) for h in history)


def training_curves(history: Sequence[dict[str, Any]]) -> Figure:
    """Losses against epoch and, when recorded, the validation MMD against epoch.

    Raises
    ------
    ValueError
        Nothing to draw (see :func:`has_curves`).
    """
    if not has_curves(history):
        raise ValueError("the training history holds no losses and no validation MMD")
    epochs = np.array([h.get("epoch", i + 1) for i, h in enumerate(history)], dtype=np.float64)
    keys = _loss_keys(history)
    has_mmd = any(_number(h.get("val_mmd")) for h in history)
    n = int(bool(keys)) + int(has_mmd)
    fig = Figure(figsize=(6.5 * n, 4.3))
    axes = list(np.atleast_1d(fig.subplots(1, n)))
    if keys:
        ax = axes.pop(0)
        for k in keys:
            v = np.array([h.get(k) if _number(h.get(k)) else np.nan for h in history], dtype=np.float64)
            ax.plot(epochs, v, lw=1.5, marker="." if len(epochs) <= 60 else None, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (mean over the epoch)")
        ax.set_title("Training losses", fontsize=11)
        ax.legend(frameon=False, fontsize=8)
        ax.grid(alpha=0.25)
    if has_mmd:
        ax = axes.pop(0)
        pts = [(e, h["val_mmd"]) for e, h in zip(epochs, history, strict=True) if _number(h.get("val_mmd"))]
        e, v = np.array(pts, dtype=np.float64).T
        ax.plot(e, v, color="#6a3d9a", lw=1.5, marker="o", ms=3)
        best = int(np.argmin(v))
        ax.plot(
            [e[best]], [v[best]], marker="*", ms=14, color="#2e7d32", ls="none", label=f"best {v[best]:.4g}"
        )
        if np.all(v > 0):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation MMD (lower is better)")
        ax.set_title("Validation MMD", fontsize=11)
        ax.legend(frameon=False, fontsize=9)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- helpers


def _number(v: Any) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) and np.isfinite(v)
    )


def _point_size(n: int) -> float:
    """Scanpy's default marker size for ``n`` cells, a little larger (the panels are small)."""
    return float(min(60.0, 1.4 * 120000 / max(n, 1)))


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _fmt_r(r: float) -> str:
    return "n/a" if not np.isfinite(r) else f"{r:.3f}"


def _dot(color: str, label: str):
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", ls="none", color=color, markersize=7, label=label)
