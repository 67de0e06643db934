"""The verdict policy: how a metric value, its control and fixed thresholds become a judgement.

One policy serves every reader of an evaluation: :meth:`cellsynth.metrics.Metrics.table` (and so the
summary the CLI prints), the report's summary table, its per-type colours and its overall verdict.

- :func:`verdict` compares a value with its real-vs-real control.
- :data:`CHECKS` are fixed thresholds for what a control cannot judge (copying: a TRAIN subsample *is* a
  copy) or must not hide (a detection AUC far from 0.5).
- :func:`judge` combines the two into the level (good/warn/bad/none) and text of one metric.
- :func:`overall_verdict` summarises the judged metrics in a headline and a few sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from .base import EvalContext, MetricInfo, Metrics

Level = Literal["good", "warn", "bad", "none"]
LEVEL_RANK: dict[str, int] = {"none": 0, "good": 1, "warn": 2, "bad": 3}
PRIVACY_FAMILY = "privacy"

AS_GOOD = "as good as real data"
WORSE = "worse than real data"
NO_CONTROL = "no control"
NOT_COMPUTED = "not computed"
REFERENCE = "reference"

VERDICT_LEVEL: dict[str, Level] = {
    AS_GOOD: "good",
    WORSE: "bad",
    NO_CONTROL: "none",
    NOT_COMPUTED: "none",
    REFERENCE: "none",
}


@dataclass(frozen=True)
class Check:
    """A fixed threshold on a metric: bad past ``bad``, good up to ``good``, borderline between.

    ``worse`` says which way is worse: ``"above"`` (bad when ``value > bad``, good when
    ``value <= good``) or ``"below"`` (bad when ``value < bad``, good when ``value >= good``).
    """

    worse: Literal["above", "below"]
    bad: float
    good: float
    bad_text: str
    good_text: str

    def level(self, value: float) -> Level:
        """``"bad"``, ``"good"`` or ``"warn"`` (borderline) for a finite value."""
        v = float(value)
        if self.worse == "above":
            return "bad" if v > self.bad else "good" if v <= self.good else "warn"
        return "bad" if v < self.bad else "good" if v >= self.good else "warn"


# The training cells given as synthetic cells are as hard to detect as independent real cells but have a
# DCR ratio of 0 (each is its own nearest neighbour), so a real-vs-real control cannot flag copying and the
# privacy metrics are judged on fixed thresholds (docs/benchmarks.md, "Controls").
CHECKS: dict[str, Check] = {
    "detection_auc": Check("above", 0.75, 0.6, "easily told apart", "hard to tell apart"),
    "dcr_ratio": Check("below", 0.5, 0.9, "looks copied", "no sign of copying"),
    "exact_copy_fraction": Check("above", 0.01, 0.0, "exact copies", "no exact copies"),
    "mia_auc": Check("above", 0.65, 0.55, "membership leaks", "no membership leak"),
}


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` (missing, non-numeric, NaN or infinite)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def check_level(name: str, value: Any) -> Level | None:
    """The level a fixed threshold gives ``value`` of metric (or per-type column) ``name``; ``None``
    when the metric has no threshold or the value is missing."""
    check = CHECKS.get(name)
    v = finite(value)
    return None if check is None or v is None else check.level(v)


def verdict(info: MetricInfo, value: float | None, control: float | None, *, tolerance: float = 0.05) -> str:
    """Plain-language verdict of a value beside its real-vs-real control.

    ``"as good as real data"`` when the value is no worse than the control (within ``tolerance``,
    relative to the scale of the control), ``"worse than real data"`` otherwise, and ``"no control"``
    when no control was computed; ``"reference"`` for a value computed on REAL alone.
    """
    if value is None or not np.isfinite(value):
        return NOT_COMPUTED
    if info.reference:
        return REFERENCE
    if control is None or not np.isfinite(control):
        return NO_CONTROL
    bad, ref = info.badness(value), info.badness(control)
    scale = max(abs(float(control)) if info.direction != "target" else 0.5, 1e-9)
    return AS_GOOD if bad <= ref + tolerance * scale else WORSE


def judge(name: str, family: str, value: float | None, control_verdict: str) -> tuple[Level, str]:
    """Level (good/warn/bad/none) and text of one metric's verdict.

    The verdict against the control stands, except that a fixed threshold (:data:`CHECKS`) that
    fires overrides it; privacy metrics, and thresholded metrics without a control, are judged on
    their thresholds alone (``"borderline"`` between the good and the bad threshold).
    """
    check = CHECKS.get(name)
    v = finite(value)
    if check is not None and v is not None:
        level = check.level(v)
        if level == "bad":
            return "bad", check.bad_text
        if family == PRIVACY_FAMILY or control_verdict == NO_CONTROL:
            return (level, check.good_text) if level == "good" else ("warn", "borderline")
    return VERDICT_LEVEL.get(control_verdict, "none"), control_verdict


# --------------------------------------------------------------------------------- overall verdict

# Metrics whose level decides the overall verdict: copying and membership first (the training cells
# themselves are hard to tell from real cells, so copying outranks detection), then detection.
PRIVACY_HEADLINES: dict[str, dict[str, str]] = {
    "dcr_ratio": {
        "bad": "the synthetic cells look copied from the training cells",
        "warn": "the synthetic cells sit closer to the training cells than new real cells do",
    },
    "exact_copy_fraction": {
        "bad": "the synthetic cells look copied from the training cells",
        "warn": "a few synthetic cells are exact copies of training cells",
    },
    "mia_auc": {
        "bad": "the synthetic cells reveal which cells were in the training set",
        "warn": "the synthetic cells may reveal which cells were in the training set",
    },
}
DETECTION_HEADLINES: dict[str, str] = {
    "good": "the synthetic cells are hard to tell apart from real cells",
    "warn": "the synthetic cells are partly distinguishable from real cells",
    "bad": "the synthetic cells are easier to tell apart from real cells than real cells from each other",
    "none": "no detection metric was computed",
}


def overall_verdict(metrics: Metrics, ctx: EvalContext | None = None) -> tuple[Level, str, list[str]]:
    """A plain-language verdict: a level (good/warn/bad/none), a headline and a few sentences.

    The level is the worst of the levels :meth:`Metrics.table` gives the privacy metrics
    (``dcr_ratio``, ``exact_copy_fraction``, ``mia_auc``) and ``detection_auc``; a privacy metric
    wins a tie with detection. Per-gene correlations never carry the verdict (they stay high even
    for noise); the biology metrics add sentences.

    Parameters
    ----------
    metrics
        The result of :func:`cellsynth.evaluate`.
    ctx
        The compared sets; with it, types that got no synthetic cells are named.

    Returns
    -------
    tuple
        ``(level, headline, sentences)``; the headline starts with a capital, each sentence ends with
        a full stop.
    """
    table = metrics.table()
    rows: dict[str, Any] = {r.metric: r for r in table.itertuples(index=False)} if len(table) else {}
    level, headline = _headline(rows)
    sentences = _sentences(metrics.overall, metrics.control)
    if ctx is not None:
        missing = sorted(
            set(np.asarray(ctx.real.labels, dtype=str)) - set(np.asarray(ctx.synth.labels, dtype=str))
        )
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            sentences.append(f"No synthetic cells were generated for {len(missing)} type(s): {shown}.")
    judged = [
        r for r in rows.values() if r.family != PRIVACY_FAMILY and r.control_verdict in (AS_GOOD, WORSE)
    ]
    if judged:
        k = sum(r.control_verdict == AS_GOOD for r in judged)
        sentences.append(
            f"{k} of {len(judged)} metrics with a real-vs-real control are as good as real data."
        )
    return level, headline[0].upper() + headline[1:], sentences


def _headline(rows: Mapping[str, Any]) -> tuple[Level, str]:
    det = rows.get("detection_auc")
    det_level: Level = det.level if det is not None else "none"
    flagged = [rows[n] for n in PRIVACY_HEADLINES if n in rows and rows[n].level in ("bad", "warn")]
    if flagged:
        worst = max(flagged, key=lambda r: LEVEL_RANK[r.level])  # the first of the worst
        if LEVEL_RANK[worst.level] >= LEVEL_RANK[det_level]:
            return worst.level, PRIVACY_HEADLINES[worst.metric][worst.level]
    if det_level == "bad" and det.verdict == CHECKS["detection_auc"].bad_text:
        return "bad", "the synthetic cells are easily told apart from real cells"
    return det_level, DETECTION_HEADLINES[det_level]


def _sentences(overall: Mapping[str, float], control: Mapping[str, float]) -> list[str]:
    o, c = overall, control
    det, det_c = finite(o.get("detection_auc")), finite(c.get("detection_auc"))
    dcr, copies, mia = (finite(o.get(k)) for k in ("dcr_ratio", "exact_copy_fraction", "mia_auc"))
    s: list[str] = []
    if det is not None:
        ctl = f"; two independent samples of real cells score {det_c:.2f}" if det_c is not None else ""
        s.append(
            f"A classifier trained to tell synthetic from real cells reaches an AUC of {det:.2f} "
            f"(0.5: it cannot tell them apart; 1.0: it always can){ctl}."
        )
    dcr_level = check_level("dcr_ratio", dcr)
    if dcr_level == "bad":
        s.append(
            f"The synthetic cells sit much closer to the training cells than new real cells do "
            f"(distance ratio {dcr:.2f}; about 1 is expected, near 0 means copies): the model appears "
            "to have memorised its training data, so a good detection score here means little."
        )
    elif dcr_level == "warn":
        s.append(
            f"The synthetic cells sit somewhat closer to the training cells than new real cells do "
            f"(distance ratio {dcr:.2f}; about 1 is expected): some memorisation is possible."
        )
    elif dcr_level == "good":
        s.append(
            f"There is no sign of copied training cells (distance ratio {dcr:.2f}; about 1 is expected)."
        )
    else:
        s.append("Copying was not checked (no training cells were given).")
    if copies is not None and copies > 0:
        s.append(f"{copies:.1%} of the synthetic cells are exact copies of training cells.")
    mia_level = check_level("mia_auc", mia)
    if mia_level in ("bad", "warn"):
        how = "reveal" if mia_level == "bad" else "may reveal"
        s.append(
            f"Membership inference reaches an AUC of {mia:.2f}: the synthetic cells {how} which cells "
            "were in the training set."
        )
    trts = finite(o.get("trts_accuracy"))
    if trts is not None:
        s.append(
            f"A classifier trained on real cells recognises {trts:.0%} of the synthetic cells as the type "
            "they were generated as."
        )
    tstr, trtr = finite(o.get("tstr_macro_f1")), finite(o.get("trtr_macro_f1"))
    if tstr is not None:
        ref = f" (trained on real cells instead: {trtr:.2f})" if trtr is not None else ""
        s.append(
            f"Trained on synthetic cells, a classifier labels real cells with a macro F1 of {tstr:.2f}{ref}."
        )
    return s
