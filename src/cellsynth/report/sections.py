"""Sections of the report that show figures: the map of cells, genes, library sizes, data properties,
types, training.

Each function returns one :class:`Section` (an id for the page's links, a heading and its HTML); a
figure is rendered through :func:`figure`, which embeds it as a PNG or, when it cannot be drawn,
puts a visible note in its place.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..metrics.base import EvalContext, Metrics
from ..metrics.verdicts import CHECKS, check_level, finite
from .tables import esc, frame_table

_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}
_BAR_COLORS = {"good": "#5aa469", "warn": "#e0b341", "bad": "#d0544b"}


class Section(NamedTuple):
    """One section of the page: ``id`` (its anchor), ``title`` (its heading) and ``html`` (its body)."""

    id: str
    title: str
    html: str


def figure(make: Callable[[], Any], alt: str, caption: str) -> str:
    """``make()``'s figure as an embedded PNG with a caption (``caption`` is HTML).

    A figure that cannot be drawn becomes a visible note and a warning, so that one broken figure does
    not cost the whole report.
    """
    import matplotlib

    from .plots import png_base64

    try:
        with matplotlib.rc_context(_RC):
            payload = png_base64(make())
    except Exception as e:  # noqa: BLE001 - one broken figure should not cost the whole report
        msg = f"{alt}: could not be drawn ({type(e).__name__}: {e})"
        warnings.warn(msg, stacklevel=2)
        return f'<p class="note bad">{esc(msg)}</p>'
    return (
        f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{payload}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


# ---------------------------------------------------------------------------------------------- UMAP


def umap_sections(
    ctx: EvalContext, types: Sequence[str], *, cap: int, max_panels: int
) -> tuple[list[Section], Any]:
    """The map of all cells and, when it could be computed, one panel per cell type.

    Returns the sections and the :class:`~cellsynth.report.umap_plots.Embedding` (``None`` when the
    map could not be computed).
    """
    from . import umap_plots

    held: dict[str, Any] = {}

    def overview():
        held["emb"] = umap_plots.umap_embedding(
            ctx.real.X,
            ctx.real.labels,
            ctx.synth.X,
            ctx.synth.labels,
            genes=ctx.hvg,
            cap=cap,
            types=types,
            rng=ctx.rng(90210),
            seed=ctx.seed,
        )
        return umap_plots.umap_overview(held["emb"])

    body = figure(
        overview,
        "UMAP of real and synthetic cells",
        "Real and synthetic cells placed in one map. Good synthetic data mixes with the real cells "
        "everywhere (left) and each type lands where its real counterpart is (right); islands of one "
        "colour only are cells the other side lacks.",
    )
    emb = held.get("emb")
    if emb is None:
        return [Section("umap", "Real and synthetic cells in one map (UMAP)", body)], None
    sub = (
        f"{emb.n_real:,} of {emb.total_real:,} real and {emb.n_synth:,} of {emb.total_synth:,} synthetic "
        f"cells (seeded subsample, at most {cap:,} per side); PCA ({emb.n_pcs} components) on "
        f"{emb.n_genes:,} highly variable genes fitted on both sides together, 15-neighbour graph, "
        f"UMAP ({umap_plots.UMAP_EPOCHS} epochs), seed {ctx.seed}."
    )
    body = f'<p class="small">{esc(sub)}</p>' + body

    present = set(emb.adata.obs["cell_type"].astype(str))
    shown = [t for t in types if t in present]
    more = f" Showing the {max_panels} largest of {len(shown)} types." if len(shown) > max_panels else ""
    panels = figure(
        lambda: umap_plots.umap_per_type(emb, shown, max_panels=max_panels),
        "UMAP per cell type",
        "One panel per cell type, in the same map: its real (blue) and synthetic (orange) cells "
        "over all other cells in grey. The two colours should cover the same place." + esc(more),
    )
    return [
        Section("umap", "Real and synthetic cells in one map (UMAP)", body),
        Section("types-umap", "Each cell type in the map", panels),
    ], emb


# --------------------------------------------------------------------------------------------- genes


def genes_section(ctx: EvalContext) -> Section:
    """Per-gene mean, variance and zero fraction, real against synthetic."""
    from .gene_plots import gene_scatter

    body = figure(
        lambda: gene_scatter(ctx.real.X, ctx.synth.X, scale=_scale(ctx))[0],
        "Per-gene statistics, real against synthetic",
        "Each dot is a gene, real value on the x axis and synthetic on the y axis; the dashed line is "
        "perfect agreement. These correlations stay high even for poor synthetic data (noise built from "
        "the same statistics scores above 0.94), so read them with the detection and biology metrics.",
    )
    return Section("genes", "Per-gene means, variances and zeros", body)


def correlation_section(ctx: EvalContext, n_genes: int) -> Section:
    """Gene–gene correlation heatmaps of the top highly variable genes."""
    from .gene_plots import correlation_heatmaps, top_variable

    # ctx.hvg is ranked (most variable first, as chosen on REAL), the same ranking gene_corr_pearson uses
    hvg = np.asarray(ctx.hvg, dtype=np.int64)
    genes = hvg[:n_genes] if len(hvg) >= 2 else top_variable(ctx.real.X, None, n_genes)
    body = figure(
        lambda: correlation_heatmaps(ctx.real.X, ctx.synth.X, ctx.genes, genes)[0],
        "Gene–gene correlation heatmaps",
        f"Correlation between the {len(genes)} top highly variable genes (ranked on the real cells), "
        "clustered on the real cells; the synthetic matrix uses the same gene "
        "order, so the same blocks should appear. The right panel shows where they differ.",
    )
    return Section("correlation", "Gene–gene correlations", body)


def library_section(ctx: EvalContext) -> Section:
    """Histograms of library sizes (or per-cell sums without counts) and of genes detected per cell."""
    from .gene_plots import library_histograms

    size_real, size_synth, size_label, log_scale, size_note = _library_sizes(ctx)
    body = figure(
        lambda: library_histograms(
            size_real,
            size_synth,
            (ctx.real.X > 0).sum(axis=1),
            (ctx.synth.X > 0).sum(axis=1),
            size_label=size_label,
            log_scale=log_scale,
        ),
        "Library size histograms",
        esc(size_note) + " Right: number of genes with a non-zero value per cell, over the matched genes.",
    )
    return Section("library", "Library sizes", body)


def _library_sizes(ctx: EvalContext) -> tuple[np.ndarray, np.ndarray, str, bool, str]:
    r, s = ctx.real, ctx.synth
    if r.library_size is not None and s.library_size is not None:
        return (
            np.asarray(r.library_size),
            np.asarray(s.library_size),
            "library size (total counts per cell)",
            True,
            "Left: library size, the total counts per cell over all of each input's genes (log axis).",
        )
    if r.counts is not None and s.counts is not None:
        return (
            _row_sums(r.counts),
            _row_sums(s.counts),
            "total counts per cell (matched genes)",
            True,
            "Left: total counts per cell over the matched genes (log axis).",
        )
    return (
        ctx.real.X.sum(axis=1, dtype=np.float64),
        ctx.synth.X.sum(axis=1, dtype=np.float64),
        f"sum of {_scale(ctx, 'values')} per cell",
        False,
        "No counts were available on both sides, so the left panel shows the per-cell sum of the "
        f"{_scale(ctx, 'values')} instead of the library size.",
    )


def _scale(ctx: EvalContext, noun: str = "scale") -> str:
    """What the values of ``ctx.*.X`` are: log-normalised unless an input was used as is (e.g. scaled)."""
    reps = {getattr(sp_, "representation", "log1p") for sp_ in (ctx.real, ctx.synth)}
    if reps <= {"counts", "log1p"}:
        return "log1p scale" if noun == "scale" else "log-normalised values"
    return "values as given"


def _row_sums(M: Any) -> np.ndarray:
    """Per-row sums of a dense or scipy.sparse matrix, as a flat float64 array."""
    return np.asarray(M.sum(axis=1), dtype=np.float64).ravel()


# ---------------------------------------------------------------------------------------- properties

_PROPERTY_VALUES = {
    "counts": "Computed on the raw counts (library size: total counts over all of each input's genes).",
    "log": "Computed on the log-normalised values: without counts on both sides, the library-size "
    "properties are left out.",
    "as_is": "Computed on the values as given: without counts or zeros, only the means, variances and "
    "correlations are compared.",
}


def properties_section(metrics: Metrics) -> Section | None:
    """The SimBench data properties: each statistic of the synthetic set beside its control; ``None``
    when the properties family did not run."""
    from ..metrics.properties import PROPERTIES
    from .plots import property_dots

    names = [n for n in PROPERTIES if n in metrics.overall]
    if not names:
        return None
    names.append("properties_mean")
    table = metrics.table()
    level = dict(zip(table["metric"], table["level"], strict=True)) if len(table) else {}
    labels = [PROPERTIES[n].label if n in PROPERTIES else "Mean of the above" for n in names]
    values = [_or_nan(metrics.overall.get(n)) for n in names]
    controls = [_or_nan(metrics.control.get(n)) for n in names] if metrics.control else None
    levels = [level.get(n, "none") for n in names]
    diagnostics = metrics.settings.get("diagnostics") or {}
    where = _PROPERTY_VALUES.get(str(diagnostics.get("properties_values")), "")
    caption = (
        "Each row compares one property of the data, cell type by cell type, and averages over the types "
        "weighted by their share of the real cells: 0 means the synthetic and the real distributions "
        "match, 1 that they do not overlap at all (two-sample Kolmogorov–Smirnov statistics; 2-D for the "
        "pairs). The filled dot is the synthetic set (green: as good as the control; red: worse); the "
        "open circle is the control, two samples of real cells, i.e. what sampling noise alone gives. "
        "Good synthetic data sits on its circle; a dot far to the right of its circle is a property the "
        "generator gets wrong. " + where
    )
    body = figure(
        lambda: property_dots(labels, values, controls, levels),
        "Data properties, synthetic against the real-vs-real control",
        esc(caption),
    )
    return Section("properties", "Data properties (SimBench)", body)


def _or_nan(value: Any) -> float:
    v = finite(value)
    return float("nan") if v is None else v


# ------------------------------------------------------------------------------------------ per type


# the per-type score drawn beside the counts: the first of these with a value, and its ideal
_TYPE_SCORES = (("detection_auc", 0.5), ("trts_accuracy", 1.0), ("tstr_f1", 1.0))


def per_type_section(metrics: Metrics, ctx: EvalContext, types: list[str]) -> Section:
    """Cells per type on each side beside one per-type score, and the per-type table."""
    from .plots import type_counts

    lab_r = np.asarray(ctx.real.labels, dtype=str)
    lab_s = np.asarray(ctx.synth.labels, dtype=str)
    n_real = [int(np.sum(lab_r == t)) for t in types]
    n_synth = [int(np.sum(lab_s == t)) for t in types]
    pt = metrics.per_type
    score = score_name = ideal = colors = span = None
    if pt is not None and len(pt):
        for col, best in _TYPE_SCORES:
            if col in pt.columns:
                vals = pt[col].reindex(types).to_numpy(dtype=np.float64)
                if np.isfinite(vals).any():
                    score, score_name, ideal = vals, col, best
                    break
        if score_name in CHECKS:
            colors = [_BAR_COLORS[check_level(score_name, v)] for v in np.nan_to_num(score, nan=0.5)]
        span = (0.0, 1.0) if score_name is not None else None
    caption = "Cells of each type in the real and synthetic sets"
    if score_name is not None:
        caption += f", and the per-type <code>{esc(score_name)}</code> (dashed line: ideal)"
    out = [
        figure(
            lambda: type_counts(types, n_real, n_synth, score, score_name, ideal, colors, span),
            "Cells per type",
            caption + ".",
        )
    ]
    if pt is None or not len(pt):
        out.append('<p class="note">No per-type metrics were computed.</p>')
    else:
        det = CHECKS["detection_auc"]
        out.append(frame_table(pt))
        out.append(
            '<p class="small">Per-type detection and MMD need at least 20 cells of the type on both sides '
            f"(— otherwise). A per-type detection AUC above {det.bad:g} is shaded red, at most "
            f"{det.good:g} green.</p>"
        )
    return Section("per-type", "Cell types", "\n".join(out))


# ------------------------------------------------------------------------------------------ training


def training_section(history: Sequence[dict[str, Any]]) -> Section:
    """The model's training curves, or a note when its history holds nothing to draw."""
    from .training_plots import (
        VALIDATION_KEYS,
        has_curves,
        has_val_mmd,
        loss_keys,
        training_curves,
        validation_key,
    )

    hist = list(history)
    if has_curves(hist):
        losses, mmd = loss_keys(hist), has_val_mmd(hist)
        parts = [f"{len(hist)} epochs."]
        if losses:
            names = ", ".join(f"<code>{esc(k)}</code>" for k in losses)
            parts.append(f"{'Left' if mmd else 'Losses'}: {names}, each averaged over an epoch.")
        if mmd:
            what = (
                "the MMD between generated and held-out real cells"
                if validation_key(hist) == "val_mmd"
                else f"the {VALIDATION_KEYS[validation_key(hist)]} of held-out real cells"
            )
            parts.append(
                f"{'Right' if losses else 'Validation'}: {what} measured during training (lower is better; "
                "the star marks the weights that were kept)."
            )
        body = figure(lambda: training_curves(hist), "Training curves", " ".join(parts))
    else:
        body = '<p class="note">The model recorded no losses or validation score to draw.</p>'
    return Section("training", "Training curves", body)
