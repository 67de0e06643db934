"""Tables of the report: the metric summary, the per-type table and the recorded settings, as HTML."""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from ..metrics.base import FAMILY_ORDER, METRICS, EvalContext, Metrics
from ..metrics.verdicts import CHECKS, check_level
from ..metrics.verdicts import finite as num

FAMILY_TITLES = {
    "distribution": "Distribution: how far apart the two clouds of cells are",
    "detection": "Detection: can a classifier tell synthetic from real?",
    "genes": "Genes: per-gene statistics and gene–gene structure",
    "properties": "Properties: data properties per cell type, as SimBench compares them",
    "biology": "Biology: are the cell types right?",
    "privacy": "Privacy: were training cells copied?",
}


# --------------------------------------------------------------------------------------- summary table


def summary_table(metrics: Metrics) -> str:
    """Every judged metric, grouped by family: value, control, verdict (:meth:`Metrics.table`), meaning."""
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
            f'<tr class="family"><th colspan="5">{esc(FAMILY_TITLES.get(fam, fam.capitalize()))}</th></tr>'
        )
        for rec in part.itertuples(index=False):
            rows.append(
                "<tr>"
                f'<td><code>{esc(rec.metric)}</code><div class="dir">{esc(_direction(rec.metric))}</div></td>'
                f'<td class="num">{fmt(rec.value)}</td>'
                f'<td class="num">{fmt(rec.control)}</td>'
                f'<td><span class="badge {rec.level}">{esc(rec.verdict)}</span></td>'
                f"<td>{esc(rec.description)}</td>"
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
        "cells would match that control perfectly); the detection AUC is also flagged above "
        f"{CHECKS['detection_auc'].bad:g}.</p>"
    )
    return f'<table class="metrics">{head}<tbody>{"".join(rows)}</tbody></table>{notes}'


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


def frame_table(df: Any) -> str:
    """A per-type table (index: cell type), each ``<name>_control`` beside its ``<name>``; a column
    with a fixed threshold (:data:`cellsynth.metrics.verdicts.CHECKS`) is shaded by it."""
    df = df[_paired_columns([str(c) for c in df.columns])] if len(df.columns) else df
    cols = [str(c) for c in df.columns]
    index_name = df.index.name or "cell type"
    head = "".join(f"<th>{esc(c)}</th>" for c in [index_name, *cols])
    rows = []
    for idx, rec in zip(df.index, df.itertuples(index=False), strict=True):
        cells = [f"<th>{esc(str(idx))}</th>"]
        for col, v in zip(cols, rec, strict=True):
            level = check_level(col, v)
            cls = "num" + (f" {level}" if level in ("good", "bad") else "")
            cells.append(f'<td class="{cls}">{fmt(v, integer=col.startswith("n_"))}</td>')
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


def settings_table(metrics: Metrics, ctx: EvalContext, umap_cap: int, emb: Any) -> str:
    """Everything the evaluation recorded, flattened to ``a.b.c`` keys, in a collapsed table."""
    flat = _flatten({**ctx.settings, **metrics.settings})
    flat["report.umap_cap_per_side"] = umap_cap
    if emb is not None:
        flat["report.umap_cells"] = f"{emb.n_real} real + {emb.n_synth} synthetic"
    rows = "".join(
        f"<tr><th><code>{esc(k)}</code></th><td>{esc(_short_repr(v))}</td></tr>"
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
        text = fmt(v)
    else:
        text = str(v)
    return text if len(text) <= n else text[: n - 1] + "…"


# -------------------------------------------------------------------------------------------- text


def fmt(v: Any, *, integer: bool = False) -> str:
    """A number for a table cell: three decimals or significant digits; — when missing."""
    f = num(v)
    if f is None:
        return "—"
    if integer or isinstance(v, int | np.integer):
        return f"{int(round(f)):,}"
    if f != 0 and (abs(f) >= 1e4 or abs(f) < 1e-3):
        return f"{f:.3g}"
    if abs(f) >= 100:
        return f"{f:,.1f}"
    return f"{f:.3f}"


def esc(text: Any) -> str:
    """``text`` escaped for HTML text and attribute values."""
    return html.escape(str(text), quote=True)
