"""The self-contained HTML report of an evaluation: one file, images embedded, no scripts, no network.

This module assembles the page (header, verdict, navigation, sections, footer); the figure sections
are in :mod:`.sections`, the tables in :mod:`.tables`, the figures themselves in the ``*plots``
modules, and the verdict policy in :mod:`cellsynth.metrics.verdicts`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_text_atomic
from ..metrics.base import EvalContext, Metrics
from ..metrics.verdicts import overall_verdict
from .sections import (
    Section,
    correlation_section,
    genes_section,
    library_section,
    per_type_section,
    properties_section,
    training_section,
    umap_sections,
)
from .tables import esc, settings_table, summary_table


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
    from .. import __version__
    from .plots import type_order

    t0 = time.perf_counter()
    types = type_order(ctx.real.labels, ctx.synth.labels)
    umap, emb = umap_sections(ctx, types, cap=umap_cap, max_panels=max_type_panels)
    sections = [
        Section("summary", "Summary of metrics", summary_table(metrics)),
        *umap,
        genes_section(ctx),
        correlation_section(ctx, n_corr_genes),
        library_section(ctx),
        properties_section(metrics),
        per_type_section(metrics, ctx, types),
    ]
    sections = [s for s in sections if s is not None]
    if history is not None:
        sections.append(training_section(history))
    sections.append(Section("settings", "Settings", settings_table(metrics, ctx, umap_cap, emb)))
    top = _header(metrics, ctx, __version__, title) + "\n" + _verdict_block(metrics, ctx)
    page = _page(title, top, sections, __version__, time.perf_counter() - t0)
    return write_text_atomic(path, page)


def _page(title: str, top: str, sections: Sequence[Section], version: str, seconds: float) -> str:
    """The whole document: ``top`` (header and verdict), links to the sections, the sections, a footer."""
    nav = " ".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections)
    body = "\n".join(f'<section id="{s.id}"><h2>{esc(s.title)}</h2>\n{s.html}</section>' for s in sections)
    footer = (
        f"<footer>Written by cellsynth {esc(version)} in {seconds:.1f} s. One self-contained file: "
        "images are embedded, nothing is loaded from the network.</footer>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{top}\n<nav>{nav}</nav>\n{body}\n{footer}\n</main>\n</body>\n</html>\n"
    )


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
    items = "".join(f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in facts)
    return f'<header><h1>{esc(title)}</h1><dl class="facts">{items}</dl></header>'


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
        items = "".join(f"<li>{esc(w)}</li>" for w in warned)
        notes = f'<div class="warnings"><strong>Warnings during the evaluation</strong><ul>{items}</ul></div>'
    return (
        f'<section id="verdict" class="verdict {level}"><h2>Verdict: {esc(headline)}</h2>'
        f"<p>{esc(' '.join(sentences))}</p>{notes}</section>"
    )


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
