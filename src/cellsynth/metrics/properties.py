"""Data properties (SimBench, Cao et al., Nat Commun 2021): do the compared cells look like real data?

Thirteen summaries of a dataset, each compared between REAL and the compared set by a two-sample
statistic, within each cell type, then averaged over the types with REAL's type proportions as weights
(the types with at least ``settings["min_cells_per_type"]`` cells on both sides; the weights are
renormalised over the types where the property could be computed).

Per cell: library size, detected genes, zero fraction, and the pair library size–zero fraction. Per
gene: mean, variance, scaled variance, zero fraction, and the pairs mean–variance and mean–zero
fraction. Pairs of genes and of cells: the distributions of gene–gene and of cell–cell correlations.

- Statistic: the Kolmogorov–Smirnov statistic for one value per cell or gene (0: the same
  distribution; 1: no overlap); for a pair of values, Peacock's two-dimensional KS statistic
  (:func:`ks_2d`). Every statistic here is unchanged by a monotone transform of a value (counts or
  their logarithms give the same result).
- Values: raw counts over the evaluated genes when both sides have counts (library size: the total
  counts over all of the input's genes); otherwise the log values of the common space, and the two
  count-only properties (library size and library size–zero fraction) are left out. Input used as is
  (e.g. scaled, with negative values) has no zeros to count and no dispersion: the zero-based
  properties and the scaled variance are left out too.
- Scaled variance: SimBench's, i.e. Seurat's ``disp`` method: each gene's dispersion
  ``log(variance / mean)`` of the expression values (counts, or ``expm1`` of log1p data), z-scored
  among the genes of similar mean (20 equal-width bins of ``log1p(mean)``; a gene alone in its bin
  scores 0; genes never expressed have none).
- Correlations: Spearman (as SimBench), on the log-normalised values of the top
  ``settings["n_properties_genes"]`` highly variable genes of REAL (the same genes on both sides); the
  gene–gene ones over the type's cells, the cell–cell ones between at most
  ``settings["max_cells_correlation"]`` cells per side. A constant gene or cell has no correlation.
  Spearman is used on the log-normalised values rather than on counts, where every pair of genes would
  correlate through the library size.
- Subsampling (seeded): at most ``settings["max_cells_properties"]`` cells per type and side, the same
  number on both sides (per-gene estimates depend on the number of cells), and at most
  ``settings["max_points_2d"]`` points per side in a two-dimensional statistic (the same genes on both
  sides for the per-gene pairs).

Metrics: ``prop_<property>`` for each property and ``properties_mean``, the mean of the available ones;
all are minimised. The per-type table gets ``properties_mean`` per type; the full per-type, per-property
values are kept in ``ctx.cache["properties:per_type"]`` (``{type: {metric: value}}``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp

from .base import EvalContext, Space, family, metric, register_settings


class Property(NamedTuple):
    """One data property: a short ``label`` (for figures), what is compared (``what``, for the metric's
    description) and the values it ``needs``: ``"counts"`` (library sizes), ``"zeros"`` (non-negative
    values, where zeros mean no expression) or ``"any"``."""

    label: str
    what: str
    needs: str


PROPERTIES: dict[str, Property] = {
    "prop_library_size": Property("Library size", "library size (total counts per cell)", "counts"),
    "prop_detected_genes": Property("Genes detected per cell", "genes detected (non-zero) per cell", "zeros"),
    "prop_cell_zero_fraction": Property("Zero fraction per cell", "zero fraction per cell", "zeros"),
    "prop_gene_zero_fraction": Property("Zero fraction per gene", "zero fraction per gene", "zeros"),
    "prop_gene_mean": Property("Mean per gene", "mean per gene", "any"),
    "prop_gene_variance": Property("Variance per gene", "variance per gene", "any"),
    "prop_scaled_variance": Property(
        "Scaled variance per gene",
        "scaled variance per gene (Seurat dispersion z-score, as SimBench)",
        "zeros",
    ),
    "prop_mean_variance": Property("Mean vs variance (genes)", "per-gene mean against variance", "any"),
    "prop_mean_zero_fraction": Property(
        "Mean vs zero fraction (genes)", "per-gene mean against zero fraction", "zeros"
    ),
    "prop_library_size_zero_fraction": Property(
        "Library size vs zero fraction (cells)", "per-cell library size against zero fraction", "counts"
    ),
    "prop_gene_correlation": Property(
        "Gene–gene correlations", "gene–gene Spearman correlations of REAL's top HVGs", "any"
    ),
    "prop_cell_correlation": Property(
        "Cell–cell correlations", "cell–cell Spearman correlations over REAL's top HVGs", "any"
    ),
}
TWO_D = {"prop_mean_variance", "prop_mean_zero_fraction", "prop_library_size_zero_fraction"}
PER_GENE_2D = {"prop_mean_variance", "prop_mean_zero_fraction"}

for _name, _prop in PROPERTIES.items():
    metric(
        _name,
        "properties",
        "minimize",
        f"{'2-D KS' if _name in TWO_D else 'KS'} statistic of the {_prop.what}, real vs compared, per type "
        f"weighted by REAL's proportions{'; counts input only' if _prop.needs == 'counts' else ''}.",
    )
metric(
    "properties_mean",
    "properties",
    "minimize",
    "Mean of the prop_* statistics computed (SimBench data properties); 0: the same distributions.",
    per_type=True,
)

#: Options of this family and their defaults.
PROPERTIES_SETTINGS: dict[str, Any] = {
    "max_cells_properties": 500,  # cells per type and side
    "max_cells_correlation": 200,  # cells per type and side in the cell–cell correlations
    "max_points_2d": 1000,  # points per side in a 2-D KS statistic
    "n_properties_genes": 100,  # REAL's top HVGs in the correlations
}
register_settings(PROPERTIES_SETTINGS)
N_DISPERSION_BINS = 20


# ------------------------------------------------------------------------------ statistics
def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov–Smirnov statistic ``max |F_a - F_b|`` (non-finite values dropped).

    The same value as ``scipy.stats.ks_2samp(a, b).statistic``, without the p-value; NaN when a side
    is empty.
    """
    a = np.sort(_finite(a))
    b = np.sort(_finite(b))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def ks_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Peacock's two-dimensional two-sample KS statistic of two sets of points (rows ``(x, y)``).

    The largest difference, over every quadrant around every origin ``(x_i, y_j)`` whose coordinates
    are observed values of the pooled sample (``x <= x_i`` or ``>``, ``y <= y_j`` or ``>``), between the
    fractions of the two samples that fall in it. Computed exactly with two cumulative sums over the
    grid of distinct pooled values: O(n²) time and memory for n pooled points (subsample first).
    Symmetric; 0 for identical samples; 1 for samples with no overlap in a quadrant split; NaN when a
    side has no finite point.
    """
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    a = a[np.isfinite(a).all(axis=1)]
    b = b[np.isfinite(b).all(axis=1)]
    if not len(a) or not len(b):
        return float("nan")
    pooled = np.concatenate([a, b])
    xs, xi = np.unique(pooled[:, 0], return_inverse=True)
    ys, yi = np.unique(pooled[:, 1], return_inverse=True)
    # signed weights: the difference of the two empirical distributions
    w = np.concatenate([np.full(len(a), 1.0 / len(a)), np.full(len(b), -1.0 / len(b))])
    grid = np.bincount(xi * len(ys) + yi, weights=w, minlength=len(xs) * len(ys)).reshape(len(xs), len(ys))
    low_low = np.cumsum(np.cumsum(grid, axis=0), axis=1)  # x <= x_i and y <= y_j
    x_low = low_low[:, -1:]  # x <= x_i, any y
    y_low = low_low[-1:, :]  # any x, y <= y_j
    # the other quadrants follow (each distribution sums to 1, so their difference sums to 0)
    best = float(np.abs(low_low).max())
    for quadrant in (x_low - low_low, y_low - low_low, low_low - x_low - y_low):
        best = max(best, float(np.abs(quadrant).max()))
    return min(best, 1.0)


# ------------------------------------------------------------------------------ the values
def property_values(
    space: Space,
    idx: np.ndarray | None = None,
    *,
    mode: str = "counts",
    top_genes: np.ndarray | None = None,
    corr_idx: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The values each property compares, for the cells ``idx`` of one set.

    Parameters
    ----------
    space
        One compared set in the common space.
    idx
        The cells (default: all).
    mode
        ``"counts"`` (per-cell and per-gene values from ``space.counts``, library size from
        ``space.library_size``), ``"log"`` (from the non-negative log values ``space.X``) or
        ``"as_is"`` (from ``space.X``; no zero-based values, no scaled variance).
    top_genes
        Column indices of the genes of the correlations (default: none, no correlations).
    corr_idx
        The cells of the cell–cell correlations (default: ``idx``).

    Returns
    -------
    dict
        ``{metric name: values}``: 1-D arrays, or ``(n, 2)`` arrays for the 2-D properties. Properties
        that ``mode`` does not allow are absent.
    """
    idx = np.arange(len(space)) if idx is None else np.asarray(idx)
    out: dict[str, np.ndarray] = {}
    if mode == "counts":
        M = sp.csr_matrix(space.counts[idx], dtype=np.float64)
        M.eliminate_zeros()
        n_cells, n_genes = M.shape
        detected = np.diff(M.indptr).astype(np.float64)
        gene_nonzero = np.bincount(M.indices, minlength=n_genes).astype(np.float64)
        mean = np.asarray(M.sum(axis=0)).ravel() / max(n_cells, 1)
        sumsq = np.bincount(M.indices, weights=M.data**2, minlength=n_genes)
        var = _variance(sumsq, mean, n_cells)
        expression_mean, expression_var = mean, var  # the dispersion of counts
        library = np.asarray(space.library_size, dtype=np.float64)[idx]
    else:
        X = np.asarray(space.X[idx], dtype=np.float64)
        n_cells, n_genes = X.shape
        detected = (X != 0).sum(axis=1).astype(np.float64)
        gene_nonzero = (X != 0).sum(axis=0).astype(np.float64)
        mean = X.mean(axis=0) if n_cells else np.full(n_genes, np.nan)
        var = _variance((X**2).sum(axis=0), mean, n_cells)
        library = None
        if mode == "log":  # the dispersion of the normalised expression values
            E = np.expm1(X)
            expression_mean = E.mean(axis=0) if n_cells else np.full(n_genes, np.nan)
            expression_var = _variance((E**2).sum(axis=0), expression_mean, n_cells)
    zero_cell = 1.0 - detected / max(n_genes, 1)
    zero_gene = 1.0 - gene_nonzero / max(n_cells, 1)

    if library is not None:
        out["prop_library_size"] = library
    if mode != "as_is":
        out["prop_detected_genes"] = detected
        out["prop_cell_zero_fraction"] = zero_cell
        out["prop_gene_zero_fraction"] = zero_gene
    out["prop_gene_mean"] = mean
    out["prop_gene_variance"] = var
    if mode != "as_is":
        out["prop_scaled_variance"] = scaled_dispersion(expression_mean, expression_var)
    out["prop_mean_variance"] = np.column_stack([mean, var])
    if mode != "as_is":
        out["prop_mean_zero_fraction"] = np.column_stack([mean, zero_gene])
    if library is not None:
        out["prop_library_size_zero_fraction"] = np.column_stack([library, zero_cell])
    if top_genes is not None and len(top_genes) >= 2:
        top = np.asarray(top_genes)
        out["prop_gene_correlation"] = spearman_upper(space.X[idx][:, top], axis=0)
        cells = idx if corr_idx is None else np.asarray(corr_idx)
        out["prop_cell_correlation"] = spearman_upper(space.X[cells][:, top], axis=1)
    return out


def _variance(sumsq: np.ndarray, mean: np.ndarray, n: int) -> np.ndarray:
    """Sample variance (ddof=1) per gene from the sums of squares and the means; NaN below 2 cells."""
    if n < 2:
        return np.full(mean.shape, np.nan)
    return np.maximum((np.asarray(sumsq, dtype=np.float64) - n * mean**2) / (n - 1), 0.0)


def scaled_dispersion(mean: np.ndarray, var: np.ndarray, n_bins: int = N_DISPERSION_BINS) -> np.ndarray:
    """Seurat's scaled dispersion per gene: ``log(var / mean)`` z-scored within bins of mean expression.

    Genes with a positive mean are put in ``n_bins`` equal-width bins of ``log1p(mean)``; in each bin the
    log dispersions are centred on their mean and divided by their standard deviation (ddof=1). A gene
    alone in its bin, or in a bin of equal dispersions, scores 0; a gene with no positive mean or
    variance has no value (NaN).
    """
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    out = np.full(mean.shape, np.nan)
    ok = (mean > 0) & (var > 0) & np.isfinite(var)
    if not ok.any():
        return out
    disp = np.log(var[ok] / mean[ok])
    level = np.log1p(mean[ok])
    span = level.max() - level.min()
    if span == 0:
        bins = np.zeros(len(level), dtype=np.int64)
    else:
        bins = np.minimum(((level - level.min()) / span * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    sums = np.bincount(bins, weights=disp, minlength=n_bins)
    centre = sums / np.maximum(counts, 1)
    dev = disp - centre[bins]
    ss = np.bincount(bins, weights=dev**2, minlength=n_bins)
    sd = np.sqrt(ss / np.maximum(counts - 1, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        z = np.where((counts[bins] > 1) & (sd[bins] > 0), dev / sd[bins], 0.0)
    out[ok] = z
    return out


def spearman_upper(X: np.ndarray, axis: int = 0) -> np.ndarray:
    """Spearman correlations between the columns (``axis=0``) or rows (``axis=1``) of ``X``: the upper
    triangle without the diagonal, pairs with a constant column (row) left out. Ties get average ranks."""
    from scipy.stats import rankdata

    X = np.asarray(X, dtype=np.float64)
    R = rankdata(X, axis=axis)
    if axis == 1:
        R = R.T
    if R.shape[1] < 2 or R.shape[0] < 2:
        return np.array([], dtype=np.float64)
    R = R - R.mean(axis=0)
    norm = np.sqrt((R**2).sum(axis=0))
    keep = norm > 0
    R = R[:, keep] / norm[keep]
    corr = R.T @ R
    return corr[np.triu_indices_from(corr, k=1)]


def compare_values(
    real: dict[str, np.ndarray],
    synth: dict[str, np.ndarray],
    *,
    rng: np.random.Generator | None = None,
    max_points_2d: int | None = 1000,
) -> dict[str, float]:
    """The statistic of every property both sides have: KS, or :func:`ks_2d` for the 2-D ones.

    A 2-D property with more than ``max_points_2d`` points on a side is subsampled (seeded by ``rng``):
    per-gene pairs keep the same genes on both sides when both have the same genes.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    out: dict[str, float] = {}
    for name in PROPERTIES:
        if name not in real or name not in synth:
            continue
        a, b = real[name], synth[name]
        if name not in TWO_D:
            out[name] = ks_statistic(a, b)
            continue
        if max_points_2d:
            if name in PER_GENE_2D and len(a) == len(b) and len(a) > max_points_2d:
                keep = rng.choice(len(a), size=int(max_points_2d), replace=False)
                a, b = a[keep], b[keep]
            else:
                a, b = (_cap(v, int(max_points_2d), rng) for v in (a, b))
        out[name] = ks_2d(a, b)
    return out


def weighted_mean(values: dict[str, float], weights: dict[str, float]) -> float:
    """``sum(w * v) / sum(w)`` over the keys with a finite value; NaN when there is none."""
    keys = [k for k, v in values.items() if np.isfinite(v)]
    total = sum(weights[k] for k in keys)
    if not keys or total <= 0:
        return float("nan")
    return float(sum(weights[k] * values[k] for k in keys) / total)


# ------------------------------------------------------------------------------ the family
@family("properties")
def properties(ctx: EvalContext) -> dict[str, float]:
    """The SimBench data properties per type, weighted by REAL's type proportions; ``properties_mean``
    per type."""
    s = {key: ctx.settings.setdefault(key, value) for key, value in PROPERTIES_SETTINGS.items()}
    mode = _mode(ctx)
    if ctx.kind == "control":
        # the synthetic set's properties where TRAIN allows them, so that the two means compare
        mode = min(mode, ctx.shared.get("properties:mode", mode), key=_MODES.index)
    ctx.shared.setdefault("properties:mode", mode)
    ctx.note("properties_values", mode)
    top = np.asarray(ctx.hvg[: int(s["n_properties_genes"])], dtype=np.int64)
    real_labels = np.asarray(ctx.real.labels).astype(str)
    synth_labels = np.asarray(ctx.synth.labels).astype(str)
    per_type: dict[str, dict[str, float]] = {}
    weights: dict[str, float] = {}
    for t in ctx.types():
        ri, si = ctx.equal_subsample(
            np.flatnonzero(real_labels == t),
            np.flatnonzero(synth_labels == t),
            int(s["max_cells_properties"]),
            f"properties:{t}",
        )
        rc, sc = ctx.equal_subsample(ri, si, int(s["max_cells_correlation"]), f"properties_corr:{t}")
        real_values = _real_values(ctx, t, ri, rc, mode, top)
        synth_values = property_values(ctx.synth, si, mode=mode, top_genes=top, corr_idx=sc)
        per_type[t] = compare_values(
            real_values, synth_values, rng=ctx.rng(f"properties_2d:{t}"), max_points_2d=s["max_points_2d"]
        )
        weights[t] = float(np.sum(real_labels == t)) / len(real_labels)
    ctx.cache["properties:per_type"] = per_type
    ctx.cache["properties:weights"] = weights
    names = [n for n in PROPERTIES if _allowed(n, mode)]
    out = {n: weighted_mean({t: v.get(n, np.nan) for t, v in per_type.items()}, weights) for n in names}
    finite = [v for v in out.values() if np.isfinite(v)]
    out["properties_mean"] = float(np.mean(finite)) if finite else float("nan")
    ctx.add_per_type("properties_mean", {t: _mean(v.values()) for t, v in per_type.items()})
    return out


def _real_values(ctx: EvalContext, t: str, ri, rc, mode: str, top: np.ndarray) -> dict[str, np.ndarray]:
    """REAL's values of type ``t``, kept in ``ctx.shared`` when the control uses the same cells."""
    key = ("properties:real", t, mode, ri.tobytes(), rc.tobytes())
    if key not in ctx.shared:
        ctx.shared[key] = property_values(ctx.real, ri, mode=mode, top_genes=top, corr_idx=rc)
    return ctx.shared[key]


_MODES = ("as_is", "log", "counts")  # fewer properties first


def _mode(ctx: EvalContext) -> str:
    r, s = ctx.real, ctx.synth
    if (
        r.counts is not None
        and s.counts is not None
        and r.library_size is not None
        and s.library_size is not None
    ):
        return "counts"
    if {r.representation, s.representation} <= {"counts", "log1p"}:
        return "log"
    return "as_is"


def _allowed(name: str, mode: str) -> bool:
    needs = PROPERTIES[name].needs
    return (
        needs == "any" or (needs == "zeros" and mode != "as_is") or (needs == "counts" and mode == "counts")
    )


def _mean(values) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _finite(values) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64).ravel()
    return values[np.isfinite(values)]


def _cap(values: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(values) <= cap:
        return values
    return values[np.sort(rng.choice(len(values), size=cap, replace=False))]
