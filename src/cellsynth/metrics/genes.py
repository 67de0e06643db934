"""Per-gene and per-cell summary statistics, real vs compared (SimBench-style KS statistics included).

These are computed on the log-normalised evaluated genes (zero fractions and library sizes are the same
on counts). They are easy to match, even by noise built from the real set's own statistics: report
them, but do not let them carry a verdict alone.
"""

from __future__ import annotations

import numpy as np

from .base import EvalContext, family, metric

metric(
    "gene_mean_pearson",
    "genes",
    "maximize",
    "Pearson r of per-gene mean expression (log-normalised), real vs compared.",
)
metric("gene_var_pearson", "genes", "maximize", "Pearson r of per-gene variances (log-normalised).")
metric("zero_fraction_pearson", "genes", "maximize", "Pearson r of per-gene fractions of zero values.")
metric(
    "gene_corr_pearson",
    "genes",
    "maximize",
    "Pearson r of the upper triangles of the gene–gene correlation matrices of the top-100 HVGs.",
)
metric("ks_gene_mean", "genes", "minimize", "KS statistic between the distributions of per-gene means.")
metric("ks_gene_var", "genes", "minimize", "KS statistic between the distributions of per-gene variances.")
metric(
    "ks_gene_zero_fraction",
    "genes",
    "minimize",
    "KS statistic between the per-gene zero-fraction distributions.",
)
metric(
    "ks_cell_zero_fraction",
    "genes",
    "minimize",
    "KS statistic between the per-cell zero-fraction distributions.",
)
metric(
    "ks_library_size",
    "genes",
    "minimize",
    "KS statistic between the library-size (total counts per cell) distributions; counts input only.",
)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import pearsonr

    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(pearsonr(a, b).statistic)


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic)


def gene_stats(X: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene mean, variance and zero fraction, and per-cell zero fraction, of a cells × genes matrix."""
    zero = X == 0
    return {
        "mean": X.mean(axis=0, dtype=np.float64),
        "var": X.var(axis=0, dtype=np.float64),
        "gene_zero": zero.mean(axis=0),
        "cell_zero": zero.mean(axis=1),
    }


def correlation_upper(X: np.ndarray) -> np.ndarray:
    """Upper triangle (without the diagonal) of the gene–gene Pearson correlation matrix; constant genes
    correlate 0 with everything."""
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(X, rowvar=False)
    corr = np.nan_to_num(corr, nan=0.0)
    return corr[np.triu_indices_from(corr, k=1)]


@family("genes")
def genes(ctx: EvalContext) -> dict[str, float]:
    """Pearson correlations of per-gene statistics and KS statistics of their distributions."""
    if "gene_stats_real" not in ctx.shared:
        ctx.shared["gene_stats_real"] = gene_stats(ctx.real.X)
    real = ctx.shared["gene_stats_real"]
    synth = gene_stats(ctx.synth.X)
    top = np.asarray(ctx.hvg[: int(ctx.settings.get("n_corr_genes", 100))])
    out = {
        "gene_mean_pearson": _pearson(real["mean"], synth["mean"]),
        "gene_var_pearson": _pearson(real["var"], synth["var"]),
        "zero_fraction_pearson": _pearson(real["gene_zero"], synth["gene_zero"]),
        "gene_corr_pearson": (
            _pearson(correlation_upper(ctx.real.X[:, top]), correlation_upper(ctx.synth.X[:, top]))
            if len(top) >= 3
            else float("nan")
        ),
        "ks_gene_mean": _ks(real["mean"], synth["mean"]),
        "ks_gene_var": _ks(real["var"], synth["var"]),
        "ks_gene_zero_fraction": _ks(real["gene_zero"], synth["gene_zero"]),
        "ks_cell_zero_fraction": _ks(real["cell_zero"], synth["cell_zero"]),
    }
    if ctx.real.library_size is not None and ctx.synth.library_size is not None:
        out["ks_library_size"] = _ks(ctx.real.library_size, ctx.synth.library_size)
    return out
