"""Metric registry and the shared evaluation context.

Every metric is declared once with a name, a family, a direction and one line of description
(:func:`metric`), and computed by a family function that receives an :class:`EvalContext` (the two
compared sets already in a common space) and returns ``{name: value}``. Families live one per file:
``distribution.py``, ``detection.py``, ``genes.py``, ``biology.py``, ``privacy.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

Direction = Literal["minimize", "maximize", "target"]


@dataclass(frozen=True)
class MetricInfo:
    """What a metric means: its family, which way is better, and a one-line description.

    ``direction="target"`` means the ideal is ``target`` (e.g. 0.5 for a detection AUC) and the
    distance to it is what counts.
    """

    name: str
    family: str
    direction: Direction
    description: str
    target: float | None = None
    needs_train: bool = False
    per_type: bool = False

    def badness(self, value: float) -> float:
        """A number that grows as the value gets worse (for verdicts and sorting)."""
        if value is None or not np.isfinite(value):
            return np.inf
        if self.direction == "minimize":
            return float(value)
        if self.direction == "maximize":
            return -float(value)
        return abs(float(value) - float(self.target))


METRICS: dict[str, MetricInfo] = {}
FAMILIES: dict[str, Callable[[EvalContext], dict[str, float]]] = {}


def metric(
    name: str,
    family: str,
    direction: Direction,
    description: str,
    *,
    target: float | None = None,
    needs_train: bool = False,
    per_type: bool = False,
) -> MetricInfo:
    """Declare a metric (once, at import of its family module)."""
    if direction == "target" and target is None:
        raise ValueError(f"metric {name}: direction 'target' needs a target value")
    info = MetricInfo(name, family, direction, description, target, needs_train, per_type)
    METRICS[name] = info
    return info


def family(name: str):
    """Decorator registering ``fn(ctx) -> {metric: value}`` as the computation of a family."""

    def wrap(fn):
        FAMILIES[name] = fn
        return fn

    return wrap


@dataclass
class Space:
    """One compared set in the common space.

    Attributes
    ----------
    X
        cells × genes, dense float32, log1p of normalised counts (or the log data as is), over the
        matched genes (``EvalContext.genes``).
    labels
        cell type of each cell (str array).
    counts
        cells × genes raw counts over the same genes when the input was counts, else ``None``.
    library_size
        total counts per cell over all of the input's genes (counts input), else ``None``.
    """

    X: np.ndarray
    labels: np.ndarray
    counts: np.ndarray | None = None
    library_size: np.ndarray | None = None


@dataclass
class EvalContext:
    """Everything a family needs: the compared sets in a common space, settings and a seeded RNG."""

    real: Space
    synth: Space
    genes: np.ndarray
    hvg: np.ndarray  # indices into genes: highly variable genes chosen on REAL
    train: Space | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)

    def rng(self, salt: int = 0) -> np.random.Generator:
        """A fresh generator per use, so a metric's randomness does not depend on which ran before."""
        return np.random.default_rng([self.seed, salt])


def verdict(info: MetricInfo, value: float | None, control: float | None, *, tolerance: float = 0.05) -> str:
    """Plain-language verdict of a value beside its real-vs-real control.

    ``"as good as real data"`` when the value is no worse than the control (within ``tolerance``,
    relative to the scale of the control), ``"worse than real data"`` otherwise, and ``"no control"``
    when no control was computed.
    """
    if value is None or not np.isfinite(value):
        return "not computed"
    if control is None or not np.isfinite(control):
        return "no control"
    bad, ref = info.badness(value), info.badness(control)
    scale = max(abs(float(control)) if info.direction != "target" else 0.5, 1e-9)
    return "as good as real data" if bad <= ref + tolerance * scale else "worse than real data"


@dataclass
class Metrics:
    """The result of :func:`cellsynth.evaluate`.

    Attributes
    ----------
    overall
        ``{metric: value}`` synthetic vs REAL.
    control
        ``{metric: value}`` a TRAIN subsample of the same size vs REAL (empty without ``train``).
    per_type
        One row per cell type (index), columns such as ``n_real``, ``n_synth``, ``detection_auc``,
        ``mmd``, ``tstr_f1``, ``trts_accuracy`` (NaN where a type is too small).
    settings
        What was done: representation detected, genes matched, HVGs, caps, seed, versions.
    """

    overall: dict[str, float]
    control: dict[str, float]
    per_type: Any  # pandas.DataFrame
    settings: dict[str, Any]

    def table(self):
        """One row per metric: family, direction, value, control, verdict, description."""
        import pandas as pd

        rows = []
        for name, value in self.overall.items():
            info = METRICS.get(name)
            if info is None:
                continue
            control = self.control.get(name)
            rows.append(
                {
                    "metric": name,
                    "family": info.family,
                    "direction": info.direction if info.direction != "target" else f"target {info.target:g}",
                    "value": value,
                    "control": control,
                    "verdict": verdict(info, value, control),
                    "description": info.description,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        per_type = {} if self.per_type is None else self.per_type.to_dict(orient="index")
        return {"overall": self.overall, "control": self.control, "per_type": per_type, "settings": self.settings}
