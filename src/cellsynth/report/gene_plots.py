"""Genes and cells: per-gene statistics, gene–gene correlations and per-cell library sizes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .plots import REAL_COLOR, SYNTH_COLOR, format_r, pearson, shorten


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
        ax.set_title(f"{titles[key]}\nPearson r = {format_r(r)}  ({len(x)} genes)", fontsize=11)
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
    names = [shorten(str(g), 14) for g in np.asarray(gene_names)[genes][order]]
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
        f"agreement of the two matrices r = {format_r(r)}",
        fontsize=12,
    )
    return fig, r


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
        for values, color, side in ((r, REAL_COLOR, "real"), (s, SYNTH_COLOR, "synthetic")):
            ax.hist(
                values,
                bins=bins,
                color=color,
                alpha=0.55,
                label=f"{side} (median {np.median(values):.4g})",
                density=True,
            )
        ax.set_xlabel(label)
        ax.set_ylabel("density of cells")
        ax.set_title(label[0].upper() + label[1:], fontsize=11)
        ax.legend(frameon=False, fontsize=9)
        ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig
