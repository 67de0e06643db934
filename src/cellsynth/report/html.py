"""The self-contained HTML report of an evaluation: one file, images embedded, no scripts, no network."""

from __future__ import annotations

import html
import os
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from ..metrics.base import CHECKS, METRICS, PRIVACY_FAMILY, VERDICT_LEVEL, EvalContext, Metrics

FAMILY_ORDER = ("distribution", "detection", "genes", "biology", "privacy")
FAMILY_TITLES = {
    "distribution": "Distribution: how far apart the two clouds of cells are",
    "detection": "Detection: can a classifier tell synthetic from real?",
    "genes": "Genes: per-gene statistics and gene–gene structure",
    "biology": "Biology: are the cell types right?",
    "privacy": "Privacy: were training cells copied?",
}


def write_report(
    path: str | os.PathLike[str],
    metrics: Metrics,
    ctx: EvalContext,
    history: Sequence[dict[str, Any]] | None = None,
    *,
    umap_cap: int = 5000,
    max_type_panels: int = 20,
    n_corr_genes: int = 50,
    title: str = "cellsynth evaluation report",
) -> Path:
    """Write the evaluation report as one self-contained HTML file.

    Figures are embedded as base64 PNG, the style sheet is inline, there are no scripts and no
    external resources, so the file opens offline in any browser and can be mailed as is. The file is
    written to a temporary name beside ``path`` and moved into place, so a reader never sees half a
    report.

    Parameters
    ----------
    path
        Where to write the report (parent directories are created).
    metrics
        The result of the evaluation (:class:`cellsynth.metrics.base.Metrics`).
    ctx
        The compared sets in their common space, as the metrics saw them.
    history
        Per-epoch training records of the model that produced the synthetic cells (dicts with keys
        such as ``epoch``, ``d_loss``, ``g_loss``, ``val_mmd``); adds the training curves.
    umap_cap
        At most this many cells of each side enter the UMAP (a seeded subsample; recorded in the report).
    max_type_panels
        At most this many per-type UMAP panels (the largest types).
    n_corr_genes
        Highly variable genes in the gene–gene correlation heatmaps.
    title
        Title of the page.

    Returns
    -------
    Path
        The path written.

    Notes
    -----
    A figure that cannot be drawn (e.g. degenerate data) is replaced by a visible note and a
    warning, so the rest of the report is still written.
    """
    import matplotlib

    from .. import __version__
    from . import plots

    t0 = time.perf_counter()
    path = Path(path)
    types = plots.type_order(ctx.real.labels, ctx.synth.labels)

    def figure(make: Callable[[], Any], alt: str, caption: str) -> str:
        try:
            with matplotlib.rc_context(_RC):
                fig = make()
                payload = plots.png_base64(fig)
        except Exception as e:  # noqa: BLE001 - one broken figure should not cost the whole report
            msg = f"{alt}: could not be drawn ({type(e).__name__}: {e})"
            warnings.warn(msg, stacklevel=3)
            return f'<p class="note bad">{_e(msg)}</p>'
        return (
            f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{payload}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )

    sections: list[tuple[str, str, str]] = []

    # ---- summary
    sections.append(("summary", "Summary of metrics", _summary_table(metrics)))

    # ---- UMAP
    emb_holder: dict[str, Any] = {}

    def umap_fig():
        emb = plots.umap_embedding(
            ctx.real.X,
            ctx.real.labels,
            ctx.synth.X,
            ctx.synth.labels,
            genes=ctx.hvg,
            cap=umap_cap,
            types=types,
            rng=ctx.rng(90210),
            seed=ctx.seed,
        )
        emb_holder["emb"] = emb
        return plots.umap_overview(emb)

    umap_html = figure(
        umap_fig,
        "UMAP of real and synthetic cells",
        "Real and synthetic cells placed in one map. Good synthetic data mixes with the real cells "
        "everywhere (left) and each type lands where its real counterpart is (right); islands of one "
        "colour only are cells the other side lacks.",
    )
    emb = emb_holder.get("emb")
    if emb is not None:
        sub = (
            f"{emb.n_real:,} of {emb.total_real:,} real and {emb.n_synth:,} of {emb.total_synth:,} synthetic "
            f"cells (seeded subsample, at most {umap_cap:,} per side); PCA ({emb.n_pcs} components) on "
            f"{emb.n_genes:,} highly variable genes fitted on both sides together, 15-neighbour graph, "
            f"UMAP ({plots.UMAP_EPOCHS} epochs), seed {ctx.seed}."
        )
        umap_html = f'<p class="small">{_e(sub)}</p>' + umap_html
    sections.append(("umap", "Real and synthetic cells in one map (UMAP)", umap_html))

    # ---- per-type panels
    if emb is not None:
        present = set(emb.adata.obs["cell_type"].astype(str))
        shown = [t for t in types if t in present]
        more = (
            f" Showing the {max_type_panels} largest of {len(shown)} types."
            if len(shown) > max_type_panels
            else ""
        )
        panels = figure(
            lambda: plots.umap_per_type(emb, shown, max_panels=max_type_panels),
            "UMAP per cell type",
            "One panel per cell type, in the same map: its real (blue) and synthetic (orange) cells "
            "over all other cells in grey. The two colours should cover the same place." + _e(more),
        )
        sections.append(("types-umap", "Each cell type in the map", panels))

    # ---- genes
    gene_html = figure(
        lambda: plots.gene_scatter(ctx.real.X, ctx.synth.X, scale=_scale(ctx))[0],
        "Per-gene statistics, real against synthetic",
        "Each dot is a gene, real value on the x axis and synthetic on the y axis; the dashed line is "
        "perfect agreement. These correlations stay high even for poor synthetic data (noise built from "
        "the same statistics scores above 0.94), so read them with the detection and biology metrics.",
    )
    sections.append(("genes", "Per-gene means, variances and zeros", gene_html))

    # ctx.hvg is ranked (most variable first, as chosen on REAL), the same ranking gene_corr_pearson uses
    hvg = np.asarray(ctx.hvg, dtype=np.int64)
    corr_genes = hvg[:n_corr_genes] if len(hvg) >= 2 else plots.top_variable(ctx.real.X, None, n_corr_genes)
    corr_html = figure(
        lambda: plots.correlation_heatmaps(ctx.real.X, ctx.synth.X, ctx.genes, corr_genes)[0],
        "Gene–gene correlation heatmaps",
        f"Correlation between the {len(corr_genes)} top highly variable genes (ranked on the real cells), "
        "clustered on the real cells; the synthetic matrix uses the same gene "
        "order, so the same blocks should appear. The right panel shows where they differ.",
    )
    sections.append(("correlation", "Gene–gene correlations", corr_html))

    # ---- library sizes
    size_real, size_synth, size_label, log_scale, size_note = _library_sizes(ctx)
    lib_html = figure(
        lambda: plots.library_histograms(
            size_real,
            size_synth,
            (ctx.real.X > 0).sum(axis=1),
            (ctx.synth.X > 0).sum(axis=1),
            size_label=size_label,
            log_scale=log_scale,
        ),
        "Library size histograms",
        _e(size_note) + " Right: number of genes with a non-zero value per cell, over the matched genes.",
    )
    sections.append(("library", "Library sizes", lib_html))

    # ---- per type
    sections.append(("per-type", "Cell types", _per_type_section(metrics, ctx, types, figure)))

    # ---- training
    if history is not None:
        hist = list(history)
        if plots.has_curves(hist):
            curves = figure(
                lambda: plots.training_curves(hist),
                "Training curves",
                f"{len(hist)} epochs. Left: the losses averaged over each epoch. Right: the MMD between "
                "generated and held-out real cells measured during training (lower is better; the star "
                "marks the weights that were kept).",
            )
        else:
            curves = '<p class="note">The model recorded no losses or validation MMD to draw.</p>'
        sections.append(("training", "Training curves", curves))

    # ---- settings
    sections.append(("settings", "Settings", _settings_section(metrics, ctx, umap_cap, emb)))

    # ---- page
    header = _header(metrics, ctx, __version__, title)
    verdict_html = _verdict_block(metrics, ctx)
    nav = " ".join(f'<a href="#{sid}">{_e(name)}</a>' for sid, name, _ in sections)
    body = "\n".join(
        f'<section id="{sid}"><h2>{_e(name)}</h2>\n{content}</section>' for sid, name, content in sections
    )
    elapsed = time.perf_counter() - t0
    footer = (
        f"<footer>Written by cellsynth {_e(__version__)} in {elapsed:.1f} s. One self-contained file: "
        "images are embedded, nothing is loaded from the network.</footer>"
    )
    page = (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{header}\n{verdict_html}\n<nav>{nav}</nav>\n{body}\n{footer}\n</main>\n</body>\n</html>\n"
    )
    write_text_atomic(path, page)
    return path


# -------------------------------------------------------------------------------------------- header


def _header(metrics: Metrics, ctx: EvalContext, version: str, title: str) -> str:
    settings = {**ctx.settings, **metrics.settings}
    representation = settings.get("representation")
    if representation is None:
        sides = {"real": ctx.real, "synth": ctx.synth, "train": ctx.train}
        representation = {k: getattr(v, "representation", None) for k, v in sides.items() if v is not None}
        representation = {k: v for k, v in representation.items() if v} or "not recorded"
    if isinstance(representation, dict):
        representation = ", ".join(f"{k}: {v}" for k, v in representation.items())
    n_types_real = len(set(np.asarray(ctx.real.labels, dtype=str)))
    n_types_synth = len(set(np.asarray(ctx.synth.labels, dtype=str)))
    facts = [
        ("Real cells (held out)", f"{len(ctx.real.X):,} cells · {n_types_real} types"),
        ("Synthetic cells", f"{len(ctx.synth.X):,} cells · {n_types_synth} types"),
    ]
    if ctx.train is not None:
        facts.append(("Training cells", f"{len(ctx.train.X):,} cells (control and privacy)"))
    facts += [
        ("Genes", _genes_fact(ctx, settings)),
        ("Representation", str(representation)),
        ("Seed", str(ctx.seed)),
        ("Date", datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")),
        ("cellsynth", version),
    ]
    items = "".join(f"<div><dt>{_e(k)}</dt><dd>{_e(v)}</dd></div>" for k, v in facts)
    return f'<header><h1>{_e(title)}</h1><dl class="facts">{items}</dl></header>'


def _genes_fact(ctx: EvalContext, settings: dict[str, Any]) -> str:
    n_genes = settings.get("n_genes")
    matched = n_genes.get("matched") if isinstance(n_genes, dict) else None
    if matched is not None and int(matched) != len(ctx.genes):
        head = f"{len(ctx.genes):,} evaluated of {int(matched):,} matched"
    else:
        head = f"{len(ctx.genes):,} matched"
    return f"{head} · {len(ctx.hvg):,} highly variable"


def _verdict_block(metrics: Metrics, ctx: EvalContext) -> str:
    level, headline, sentences = overall_verdict(metrics, ctx)
    warned = metrics.settings.get("warnings") or []
    if isinstance(warned, str):
        warned = [warned]
    notes = ""
    if warned:
        items = "".join(f"<li>{_e(w)}</li>" for w in warned)
        notes = f'<div class="warnings"><strong>Warnings during the evaluation</strong><ul>{items}</ul></div>'
    return (
        f'<section id="verdict" class="verdict {level}"><h2>Verdict: {_e(headline)}</h2>'
        f"<p>{_e(' '.join(sentences))}</p>{notes}</section>"
    )


def overall_verdict(metrics: Metrics, ctx: EvalContext | None = None) -> tuple[str, str, list[str]]:
    """A plain-language verdict: a level (good/warn/bad/none), a headline and a few sentences.

    Copying outranks everything (the training cells themselves are hard to tell from real cells);
    then the detection AUC against its real-vs-real control; then what the biology and privacy
    metrics add. Per-gene correlations never carry the verdict (they stay high even for noise).
    """
    o, c = metrics.overall, metrics.control
    det, det_c = _num(o.get("detection_auc")), _num(c.get("detection_auc"))
    dcr, copies, mia = (_num(o.get(k)) for k in ("dcr_ratio", "exact_copy_fraction", "mia_auc"))

    copied = (dcr is not None and dcr < 0.5) or (copies is not None and copies > 0.1)
    if copied:
        level, headline = "bad", "the synthetic cells look copied from the training cells"
    elif det is not None and det > 0.75:
        level, headline = "bad", "the synthetic cells are easily told apart from real cells"
    elif det is None:
        level, headline = "none", "no detection metric was computed"
    elif det <= max(0.6, (det_c if det_c is not None else 0.5) + 0.05):
        level, headline = "good", "the synthetic cells are hard to tell apart from real cells"
    else:
        level, headline = "warn", "the synthetic cells are partly distinguishable from real cells"

    s: list[str] = []
    if det is not None:
        ctl = f"; two independent samples of real cells score {det_c:.2f}" if det_c is not None else ""
        s.append(
            f"A classifier trained to tell synthetic from real cells reaches an AUC of {det:.2f} "
            f"(0.5: it cannot tell them apart; 1.0: it always can){ctl}."
        )
    if dcr is not None:
        if dcr < 0.5:
            s.append(
                f"The synthetic cells sit much closer to the training cells than new real cells do "
                f"(distance ratio {dcr:.2f}; about 1 is expected, near 0 means copies): the model appears "
                "to have memorised its training data, so a good detection score here means little."
            )
        elif dcr < 0.9:
            s.append(
                f"The synthetic cells sit somewhat closer to the training cells than new real cells do "
                f"(distance ratio {dcr:.2f}; about 1 is expected): some memorisation is possible."
            )
        else:
            s.append(
                f"There is no sign of copied training cells (distance ratio {dcr:.2f}; about 1 is expected)."
            )
    else:
        s.append("Copying was not checked (no training cells were given).")
    if copies is not None and copies > 0:
        s.append(f"{copies:.1%} of the synthetic cells are exact copies of training cells.")
    if mia is not None and mia > 0.6:
        s.append(
            f"Membership inference reaches an AUC of {mia:.2f}: the synthetic cells reveal which cells "
            "were in the training set."
        )
    trts = _num(o.get("trts_accuracy"))
    if trts is not None:
        s.append(
            f"A classifier trained on real cells recognises {trts:.0%} of the synthetic cells as the type "
            "they were generated as."
        )
    tstr, trtr = _num(o.get("tstr_macro_f1")), _num(o.get("trtr_macro_f1"))
    if tstr is not None:
        ref = f" (trained on real cells instead: {trtr:.2f})" if trtr is not None else ""
        s.append(
            f"Trained on synthetic cells, a classifier labels real cells with a macro F1 of {tstr:.2f}{ref}."
        )
    if ctx is not None:
        missing = sorted(
            set(np.asarray(ctx.real.labels, dtype=str)) - set(np.asarray(ctx.synth.labels, dtype=str))
        )
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            s.append(f"No synthetic cells were generated for {len(missing)} type(s): {shown}.")
    table = metrics.table()
    if len(table):
        judged = table[(table["family"] != PRIVACY_FAMILY) & table["control_verdict"].isin(VERDICT_LEVEL)]
        judged = judged[judged["control_verdict"].map(VERDICT_LEVEL).isin(["good", "bad"])]
        if len(judged):
            k = int((judged["control_verdict"] == "as good as real data").sum())
            s.append(f"{k} of {len(judged)} metrics with a real-vs-real control are as good as real data.")
    return level, headline[0].upper() + headline[1:], s


# --------------------------------------------------------------------------------------- summary table


def _summary_table(metrics: Metrics) -> str:
    table = metrics.table()
    if not len(table):
        return '<p class="note">No registered metrics were computed.</p>'
    fams = list(FAMILY_ORDER) + sorted(set(table["family"]) - set(FAMILY_ORDER))
    rows = []
    for fam in fams:
        part = table[table["family"] == fam]
        if not len(part):
            continue
        rows.append(
            f'<tr class="family"><th colspan="5">{_e(FAMILY_TITLES.get(fam, fam.capitalize()))}</th></tr>'
        )
        for rec in part.itertuples(index=False):
            cls, text = rec.level, rec.verdict
            rows.append(
                "<tr>"
                f'<td><code>{_e(rec.metric)}</code><div class="dir">{_e(_direction(rec.metric))}</div></td>'
                f'<td class="num">{_fmt(rec.value)}</td>'
                f'<td class="num">{_fmt(rec.control)}</td>'
                f'<td><span class="badge {cls}">{_e(text)}</span></td>'
                f"<td>{_e(rec.description)}</td>"
                "</tr>"
            )
    head = (
        "<thead><tr><th>Metric</th><th>Synthetic vs real</th><th>Control: real vs real</th>"
        "<th>Verdict</th><th>What it measures</th></tr></thead>"
    )
    notes = (
        '<p class="small">The control is the same metric computed between two independent samples of real '
        "cells (a training subsample of the same size against the held-out cells): the best a generator "
        "can hope for. Privacy metrics are judged against fixed thresholds instead (a copy of the training "
        "cells would match that control perfectly); the detection AUC is also flagged above 0.75.</p>"
    )
    return f'<table class="metrics">{head}<tbody>{"".join(rows)}</tbody></table>{notes}'


_BAR_COLORS = {"good": "#5aa469", "warn": "#e0b341", "bad": "#d0544b"}


def _direction(name: str) -> str:
    info = METRICS.get(name)
    if info is None:
        return ""
    if info.direction == "minimize":
        return "lower is better"
    if info.direction == "maximize":
        return "higher is better"
    return f"best at {info.target:g}"


# ------------------------------------------------------------------------------------------- per type


def _per_type_section(
    metrics: Metrics, ctx: EvalContext, types: list[str], figure: Callable[..., str]
) -> str:
    from . import plots

    lab_r = np.asarray(ctx.real.labels, dtype=str)
    lab_s = np.asarray(ctx.synth.labels, dtype=str)
    n_real = [int(np.sum(lab_r == t)) for t in types]
    n_synth = [int(np.sum(lab_s == t)) for t in types]
    pt = metrics.per_type
    score = score_name = ideal = colors = span = None
    if pt is not None and len(pt):
        for col, best in (("detection_auc", 0.5), ("trts_accuracy", 1.0), ("tstr_f1", 1.0)):
            if col in pt.columns:
                vals = pt[col].reindex(types).to_numpy(dtype=np.float64)
                if np.isfinite(vals).any():
                    score, score_name, ideal = vals, col, best
                    break
        check = CHECKS.get(score_name or "")
        if check is not None:
            colors = [
                _BAR_COLORS["bad"]
                if check.bad(v)
                else _BAR_COLORS["good"]
                if check.good(v)
                else _BAR_COLORS["warn"]
                for v in np.nan_to_num(score, nan=0.5)
            ]
        span = (0.0, 1.0) if score_name in ("detection_auc", "trts_accuracy", "tstr_f1") else None
    caption = "Cells of each type in the real and synthetic sets"
    if score_name is not None:
        caption += f", and the per-type <code>{_e(score_name)}</code> (dashed line: ideal)"
    out = [
        figure(
            lambda: plots.type_counts(types, n_real, n_synth, score, score_name, ideal, colors, span),
            "Cells per type",
            caption + ".",
        )
    ]
    if pt is None or not len(pt):
        out.append('<p class="note">No per-type metrics were computed.</p>')
    else:
        out.append(_frame_table(pt))
        out.append(
            '<p class="small">Per-type detection and MMD need at least 20 cells of the type on both sides '
            "(— otherwise). A per-type detection AUC above 0.75 is shaded red, at most 0.6 green.</p>"
        )
    return "\n".join(out)


def _frame_table(df: Any) -> str:
    df = df[_paired_columns([str(c) for c in df.columns])] if len(df.columns) else df
    cols = [str(c) for c in df.columns]
    index_name = df.index.name or "cell type"
    head = "".join(f"<th>{_e(c)}</th>" for c in [index_name, *cols])
    rows = []
    for idx, rec in zip(df.index, df.itertuples(index=False), strict=True):
        cells = [f"<th>{_e(str(idx))}</th>"]
        for col, v in zip(cols, rec, strict=True):
            cls = "num"
            check = CHECKS.get(col)
            fv = _num(v)
            if check is not None and fv is not None:
                cls += " bad" if check.bad(fv) else " good" if check.good(fv) else ""
            cells.append(f'<td class="{cls}">{_fmt(v, integer=col.startswith("n_"))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    table = f'<table class="frame"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    return f'<div class="scroll">{table}</div>'


def _paired_columns(cols: list[str]) -> list[str]:
    """Columns with each ``<name>_control`` right after ``<name>`` (and counts first, as given)."""
    out: list[str] = []
    for c in cols:
        if c in out:
            continue
        if c.endswith("_control") and c[: -len("_control")] in cols:
            continue  # placed after its partner
        out.append(c)
        if f"{c}_control" in cols:
            out.append(f"{c}_control")
    return out


# ------------------------------------------------------------------------------------------- settings


def _settings_section(metrics: Metrics, ctx: EvalContext, umap_cap: int, emb: Any) -> str:
    flat = _flatten({**ctx.settings, **metrics.settings})
    flat["report.umap_cap_per_side"] = umap_cap
    if emb is not None:
        flat["report.umap_cells"] = f"{emb.n_real} real + {emb.n_synth} synthetic"
    rows = "".join(
        f"<tr><th><code>{_e(k)}</code></th><td>{_e(_short_repr(v))}</td></tr>"
        for k, v in sorted(flat.items())
    )
    return (
        "<details><summary>Everything the evaluation recorded (click to open)</summary>"
        f'<table class="frame settings"><tbody>{rows}</tbody></table></details>'
    )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short_repr(v: Any, n: int = 300) -> str:
    if isinstance(v, list | tuple | np.ndarray):
        text = ", ".join(str(x) for x in list(v)[:50]) + (f", … ({len(v)} in all)" if len(v) > 50 else "")
    elif isinstance(v, float | np.floating):
        text = _fmt(v)
    else:
        text = str(v)
    return text if len(text) <= n else text[: n - 1] + "…"


# ------------------------------------------------------------------------------------------- helpers


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


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _fmt(v: Any, *, integer: bool = False) -> str:
    f = _num(v)
    if f is None:
        return "—"
    if integer or isinstance(v, int | np.integer):
        return f"{int(round(f)):,}"
    if f != 0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.3g}"
    if abs(f) >= 100:
        return f"{f:,.1f}"
    return f"{f:.3f}"


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


_RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --zebra:#f7f8fa; --good:#2e7d32; --good-bg:#e3f2e5;
  --bad:#b3261e; --bad-bg:#fbe3e1; --warn:#8a5a00; --warn-bg:#fff3d6; --none:#616e7c; --none-bg:#eef0f2; }
* { box-sizing: border-box; }
body { margin:0; background:#fbfbfc; color:var(--ink);
  font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 32px 40px; background:#fff; }
h1 { font-size:26px; margin:0 0 14px; }
h2 { font-size:20px; margin:0 0 12px; padding-bottom:6px; border-bottom:2px solid var(--line); }
section { margin:34px 0; }
code { font:13px/1.3 "SFMono-Regular", Menlo, Consolas, monospace; }
.facts { display:grid; grid-template-columns:repeat(auto-fill, minmax(220px, 1fr)); gap:10px 22px; margin:0; }
.facts div { border-left:3px solid var(--line); padding-left:10px; }
.facts dt { font-size:12px; text-transform:uppercase; letter-spacing:.04em; color:var(--muted); }
.facts dd { margin:0; font-weight:600; }
.verdict { border-radius:8px; padding:16px 20px; border-left:6px solid; margin-top:24px; }
.verdict h2 { border:none; padding:0; margin-bottom:6px; }
.verdict p { margin:0; }
.warnings { margin-top:12px; font-size:14px; }
.warnings ul { margin:4px 0 0; padding-left:20px; }
.verdict.good { background:var(--good-bg); border-color:var(--good); }
.verdict.bad { background:var(--bad-bg); border-color:var(--bad); }
.verdict.warn { background:var(--warn-bg); border-color:#d9a300; }
.verdict.none { background:var(--none-bg); border-color:var(--none); }
nav { position:sticky; top:0; z-index:1; background:#fff; border-bottom:1px solid var(--line);
  padding:10px 0; margin-top:18px; font-size:14px; }
nav a { color:#2757a5; text-decoration:none; margin-right:16px; white-space:nowrap; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { padding:7px 10px; text-align:left; vertical-align:top; border-bottom:1px solid var(--line); }
thead th { background:#eef1f5; font-size:13px; color:#3e4c59; position:sticky; top:0; }
tbody tr:nth-child(even) { background:var(--zebra); }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr.family th { background:#dde4ee; color:#243b53; font-size:14px; padding-top:9px; }
.dir { font-size:12px; color:var(--muted); }
.badge { display:inline-block; padding:2px 9px; border-radius:11px; font-size:13px; font-weight:600;
  white-space:nowrap; }
.badge.good, td.good { background:var(--good-bg); color:var(--good); }
.badge.bad, td.bad { background:var(--bad-bg); color:var(--bad); }
.badge.warn, td.warn { background:var(--warn-bg); color:var(--warn); }
.badge.none { background:var(--none-bg); color:var(--none); }
.frame th { white-space:nowrap; }
.scroll { overflow-x:auto; }
figure { margin:14px 0 8px; }
figure img { max-width:100%; height:auto; display:block; margin:0 auto; border:1px solid var(--line);
  border-radius:4px; }
figcaption { color:var(--muted); font-size:14px; margin-top:6px; }
.small, .note { color:var(--muted); font-size:13px; }
.note.bad { color:var(--bad); }
details summary { cursor:pointer; color:#2757a5; margin-bottom:8px; }
.settings td { font-family:"SFMono-Regular", Menlo, Consolas, monospace; font-size:12px;
  word-break:break-all; }
footer { margin-top:40px; color:var(--muted); font-size:12px; border-top:1px solid var(--line);
  padding-top:10px; }
"""
