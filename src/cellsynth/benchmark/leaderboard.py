"""The leaderboard of a benchmark: every cell in a CSV, and models × key metrics in Markdown and HTML.

``leaderboard.csv`` has one row per model × seed: status, error, fit / sample / evaluation seconds, peak
memory, why training stopped, every metric, the augmentation test and the control's metrics
(``control_<metric>``). ``leaderboard.md`` and ``leaderboard.html`` show each model's key metrics as mean ±
sd over its finished seeds, the real-vs-real control as its own row (a TRAIN subsample of TEST's size
against TEST: what a perfect generator would score), fit time and peak memory; the best model per metric
column is marked (bold, ``class="best"``) by the metric's direction (minimize, maximize, or closest to its
target); the control row is not ranked. Skipped and failed cells are listed under the table with why.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import write_text_atomic
from .augmentation import DIRECTIONS as AUGMENTATION_DIRECTIONS

#: the metrics shown in the Markdown and HTML tables, when the evaluation returned them
KEY_METRICS = (
    "detection_auc",
    "detection_auc_draws",
    "detection_auc_groundgan",
    "mmd",
    "properties_mean",
    "de_logfc_correlation",
    "gene_corr_pearson",
    "tstr_rare_macro_f1",
    "dcr_ratio",
    "augment_rare_f1_gain",
)
CONTROL_LABEL = "real vs real (control)"
_BASE = ("model", "seed", "status", "error", "max_minutes", "fit_seconds", "sample_seconds")
_BASE += ("evaluate_seconds", "augmentation_seconds", "peak_mb", "gpu_peak_mb", "stop_reason", "epochs")
_BASE += ("cell", "report")


def cell_rows(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per grid cell from its record (``result.json``, ``failed.json``, skipped, unfinished)."""
    rows = []
    for rec in records:
        row: dict[str, Any] = {k: rec.get(k) for k in _BASE if k in rec}
        seconds = rec.get("seconds", {})
        for part in ("sample", "evaluate", "augmentation"):
            if part in seconds:
                row[f"{part}_seconds"] = seconds[part]
        row.update({k: _number(v) for k, v in (rec.get("metrics") or {}).items()})
        augmentation = rec.get("augmentation") or {}
        row.update({k: _number(augmentation[k]) for k in AUGMENTATION_DIRECTIONS if k in augmentation})
        row.update({f"control_{k}": _number(v) for k, v in (rec.get("control") or {}).items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    first = [c for c in _BASE if c in frame.columns]
    return frame[first + [c for c in frame.columns if c not in first]]


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _direction(name: str) -> tuple[str, float | None]:
    from ..metrics import METRICS

    if name in AUGMENTATION_DIRECTIONS:
        return AUGMENTATION_DIRECTIONS[name], None
    info = METRICS[name]
    return info.direction, info.target


def _badness(name: str, value: float) -> float:
    if not np.isfinite(value):
        return math.inf
    direction, target = _direction(name)
    if direction == "minimize":
        return value
    if direction == "maximize":
        return -value
    return abs(value - target)


def key_columns(frame: pd.DataFrame) -> list[str]:
    """The key metrics the cells returned (in :data:`KEY_METRICS` order)."""
    from ..metrics.evaluation import available_metrics

    known = {**available_metrics(), **AUGMENTATION_DIRECTIONS}
    return [m for m in KEY_METRICS if m in known and m in frame.columns and frame[m].notna().any()]


def summary_table(frame: pd.DataFrame, models: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per model (and the control): ``(means, sds, metric columns)``; rows ``models`` then the control.

    Besides the metric columns, ``fit_seconds`` and ``peak_mb``, and ``seeds`` (finished / in the grid).
    """
    columns = key_columns(frame)
    done = frame[frame["status"] == "done"] if "status" in frame else frame.iloc[:0]
    index = [*models, CONTROL_LABEL]
    means = pd.DataFrame(index=index, columns=[*columns, "fit_seconds", "peak_mb"], dtype=float)
    sds = means.copy()
    seeds = {}
    for model in models:
        rows = done[done["model"] == model]
        seeds[model] = f"{len(rows)}/{int((frame['model'] == model).sum())}"
        for c in means.columns:
            values = pd.to_numeric(rows[c], errors="coerce").dropna() if c in rows else pd.Series(dtype=float)
            means.loc[model, c] = values.mean() if len(values) else math.nan
            sds.loc[model, c] = values.std(ddof=1) if len(values) > 1 else math.nan
    control = done.drop_duplicates("seed") if len(done) else done  # the control depends on the seed only
    seeds[CONTROL_LABEL] = str(len(control))
    for c in columns:
        column = f"control_{c}"
        values = pd.to_numeric(control[column], errors="coerce").dropna() if column in control else []
        means.loc[CONTROL_LABEL, c] = float(np.mean(values)) if len(values) else math.nan
        sds.loc[CONTROL_LABEL, c] = float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
    means.insert(0, "seeds", pd.Series(seeds))
    return means, sds, columns


def best_models(means: pd.DataFrame, columns: Sequence[str], models: Sequence[str]) -> dict[str, set[str]]:
    """``{metric: models with the best mean}`` (ties all marked; the control row is not ranked)."""
    best = {}
    for c in columns:
        bad = {m: _badness(c, float(means.loc[m, c])) for m in models}
        lowest = min(bad.values(), default=math.inf)
        if math.isfinite(lowest):
            best[c] = {m for m, b in bad.items() if abs(b - lowest) <= 1e-12 * max(1.0, abs(lowest))}
    return best


def _fmt(column: str, mean: float, sd: float) -> str:
    if not np.isfinite(mean):
        return "–"
    if column in ("fit_seconds", "peak_mb"):
        text = f"{mean:.0f}"
        return text + (f" ± {sd:.0f}" if np.isfinite(sd) and column == "fit_seconds" else "")
    return f"{mean:.3g}" + (f" ± {sd:.2g}" if np.isfinite(sd) else "")


def _header(column: str) -> str:
    if column == "fit_seconds":
        return "fit s"
    if column == "peak_mb":
        return "peak MB"
    direction, target = _direction(column)
    arrow = {"minimize": "↓", "maximize": "↑"}.get(direction) or f"→{target:g}"
    return f"{column} {arrow}"


def notes(frame: pd.DataFrame, skipped: Mapping[str, str]) -> list[str]:
    """Lines under the table: skipped models, failed and unfinished cells, with why."""
    lines = [f"skipped {model}: {why}" for model, why in skipped.items()]
    for row in frame.itertuples(index=False):
        if row.status == "failed":
            lines.append(f"failed {row.model} seed {row.seed}: {row.error}")
        elif row.status == "unfinished":
            lines.append(f"unfinished {row.model} seed {row.seed}: rerun the same command to run it")
    return lines


def write_leaderboard(
    frame: pd.DataFrame,
    out: str | Path,
    *,
    models: Sequence[str],
    skipped: Mapping[str, str],
    command: str,
    about: str = "",
) -> list[Path]:
    """Write ``leaderboard.csv``, ``leaderboard.md`` and ``leaderboard.html`` into ``out`` (atomically).

    Parameters
    ----------
    frame
        One row per cell (:func:`cell_rows`).
    models
        The models of the grid in the order given (skipped ones included; they show as 0 seeds).
    skipped
        ``{model: why}`` of models that did not run.
    command
        The command that produced the benchmark (shown at the top).
    about
        One line on the data and the budget.
    """
    out = Path(out)
    ranked = [m for m in models if m not in skipped]
    means, sds, columns = summary_table(frame, ranked)
    best = best_models(means, columns, ranked)
    shown = [*columns, "fit_seconds", "peak_mb"]
    lines = notes(frame, skipped)
    csv = write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))

    md = ["# cellsynth benchmark", "", "```", command, "```", ""]
    md += [about, ""] if about else []
    md.append("| model | seeds | " + " | ".join(_header(c) for c in shown) + " |")
    md.append("|---|---|" + "---:|" * len(shown))
    for model in means.index:
        cells = []
        for c in shown:
            text = _fmt(c, means.loc[model, c], sds.loc[model, c])
            cells.append(f"**{text}**" if model in best.get(c, ()) else text)
        md.append(f"| {model} | {means.loc[model, 'seeds']} | " + " | ".join(cells) + " |")
    md += [
        "",
        "Mean ± sd over seeds; the best model per metric in **bold** (↓ lower, ↑ higher, →t closest to t "
        "is better); the control is not ranked. Every cell and metric: leaderboard.csv.",
    ]
    md += ["", *[f"- {line}" for line in lines]] if lines else []
    md_path = write_text_atomic(out / "leaderboard.md", "\n".join(md) + "\n")

    html_path = write_text_atomic(
        out / "leaderboard.html", _html(frame, means, sds, shown, best, lines, command, about)
    )
    return [csv, md_path, html_path]


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}tr.control{font-style:italic;background:#fafafa}
td.best{font-weight:bold;background:#e3f4e3}"""


def _html(frame, means, sds, shown, best, lines, command, about) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>cellsynth benchmark</title>",
        f"<style>{_CSS}</style></head><body><h1>cellsynth benchmark</h1><pre>{esc(command)}</pre>",
    ]
    if about:
        parts.append(f"<p>{esc(about)}</p>")
    head = "".join(f"<th>{esc(_header(c))}</th>" for c in shown)
    parts.append(f"<table><thead><tr><th>model</th><th>seeds</th>{head}<th>reports</th></tr></thead><tbody>")
    for model in means.index:
        control = model == CONTROL_LABEL
        row = ["<tr class='control'>" if control else "<tr>", f"<td>{esc(model)}</td>"]
        row.append(f"<td>{esc(str(means.loc[model, 'seeds']))}</td>")
        for c in shown:
            mark = " class='best'" if model in best.get(c, ()) else ""
            row.append(f"<td{mark}>{esc(_fmt(c, means.loc[model, c], sds.loc[model, c]))}</td>")
        links = []
        if not control and "report" in frame:
            done = frame[(frame["model"] == model) & frame["report"].notna()]
            for r in done.itertuples(index=False):
                links.append(f"<a href='{esc(str(r.report))}'>seed {r.seed}</a>")
        row.append(f"<td>{' '.join(links)}</td></tr>")
        parts.append("".join(row))
    parts.append("</tbody></table>")
    parts.append(
        "<p>Mean ± sd over seeds; the best model per metric is highlighted (↓ lower, ↑ higher, →t closest "
        "to t is better); the control is not ranked. Every cell and metric: <a href='leaderboard.csv'>"
        "leaderboard.csv</a>.</p>"
    )
    if lines:
        parts.append("<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
