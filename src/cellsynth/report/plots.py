"""Figures of the report: each function draws one figure from the compared sets and returns it.

Figures are plain :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas: no pyplot state,
no window, nothing to close, and nothing global changes when a report is written (so it is safe inside a
notebook or a server). :func:`png_base64` turns one into the text of a ``data:`` URI.

This module holds what every figure shares (colours, the type order and palette, small helpers), the
per-type counts and the data-property statistics; the other figures live by subject in ``umap_plots``
(the map of cells), ``gene_plots`` (per-gene statistics, gene–gene correlations, library sizes) and
``training_plots`` (training curves).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

REAL_COLOR = "#3b6fb6"
SYNTH_COLOR = "#e4772b"
BACKGROUND_COLOR = "#d9d9d9"


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
    ax.set_yticklabels([shorten(t, 30) for t in types], fontsize=8)
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


# ---------------------------------------------------------------------------------------- properties

LEVEL_COLORS = {"good": "#2e7d32", "warn": "#c48a00", "bad": "#c62828", "none": "#7f7f7f"}


def property_dots(
    labels: Sequence[str],
    values: Sequence[float],
    controls: Sequence[float] | None = None,
    levels: Sequence[str] | None = None,
) -> Figure:
    """One row per data property: the statistic of the synthetic set (a dot coloured by its verdict
    level) beside that of the real-vs-real control (an open circle), on a 0–1 axis, lower is better."""
    k = len(labels)
    fig = Figure(figsize=(8.5, max(2.4, 0.36 * k + 1.2)))
    ax = fig.subplots()
    y = np.arange(k)
    vals = np.asarray(values, dtype=np.float64)
    ctrl = np.full(k, np.nan) if controls is None else np.asarray(controls, dtype=np.float64)
    levels = list(levels) if levels is not None else ["none"] * k
    both = np.isfinite(vals) & np.isfinite(ctrl)
    for yi in y[both]:  # the gap between the synthetic set and the control
        ax.plot([ctrl[yi], vals[yi]], [yi, yi], color="#b0b0b0", lw=2, zorder=1)
    ok = np.isfinite(ctrl)
    ax.scatter(ctrl[ok], y[ok], s=70, facecolors="white", edgecolors=REAL_COLOR, linewidths=1.6, zorder=2)
    ok = np.isfinite(vals)
    colors = [LEVEL_COLORS.get(lv, LEVEL_COLORS["none"]) for lv in levels]
    ax.scatter(vals[ok], y[ok], s=55, c=[colors[i] for i in y[ok]], zorder=3)
    for yi in y[~ok]:
        ax.text(0.01, yi, "not computed", va="center", fontsize=7, color="#888888")
    ax.set_yticks(y)
    ax.set_yticklabels([shorten(t, 40) for t in labels], fontsize=9)
    ax.set_ylim(k - 0.5, -0.5)
    top = np.nanmax(np.concatenate([vals, ctrl, [0.1]]))
    ax.set_xlim(0, min(1.0, max(0.1, 1.15 * top)))
    ax.set_xlabel("KS statistic, per cell type weighted by the real proportions (lower is better)")
    ax.grid(axis="x", alpha=0.25)
    if not np.isfinite(ctrl).any():
        handles = [legend_dot(LEVEL_COLORS["none"], "synthetic vs real (no control)")]
    else:
        from matplotlib.lines import Line2D

        handles = [
            legend_dot(LEVEL_COLORS["good"], "synthetic vs real: as good as the control"),
            legend_dot(LEVEL_COLORS["bad"], "synthetic vs real: worse than the control"),
        ]

        ring = {"markerfacecolor": "white", "markeredgecolor": REAL_COLOR, "markersize": 7}
        handles.append(Line2D([], [], marker="o", ls="none", label="control: real vs real", **ring))
    ax.legend(
        handles=handles, frameon=False, fontsize=8, loc="upper center", bbox_to_anchor=(0.4, -0.1), ncol=3
    )
    if labels and str(labels[-1]).startswith("Mean"):  # the summary row, set apart
        ax.axhline(k - 1.5, color="#d0d0d0", lw=0.8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------- helpers


def point_size(n: int) -> float:
    """Scanpy's default marker size for ``n`` cells, a little larger (the panels are small)."""
    return float(min(60.0, 1.4 * 120000 / max(n, 1)))


def shorten(text: str, n: int) -> str:
    """``text`` cut to ``n`` characters, with an ellipsis when cut."""
    return text if len(text) <= n else text[: n - 1] + "…"


def format_r(r: float) -> str:
    """A correlation for a title: three decimals, ``n/a`` when undefined."""
    return "n/a" if not np.isfinite(r) else f"{r:.3f}"


def legend_dot(color: str, label: str):
    """A round legend marker."""
    from matplotlib.lines import Line2D

    return Line2D([], [], marker="o", ls="none", color=color, markersize=7, label=label)
