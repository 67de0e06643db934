"""Metric registry and the shared evaluation context.

Every metric is declared once with a name, a family, a direction and one line of description
(:func:`metric`), and computed by a family function that receives an :class:`EvalContext` (the two
compared sets already in a common space) and returns ``{name: value}``. Families live one per file:
``distribution.py``, ``detection.py``, ``genes.py``, ``properties.py``, ``biology.py``, ``privacy.py``.

Conventions for a family function ``fn(ctx) -> dict[str, float]``
-------------------------------------------------------------------
- Return overall values only, keyed by declared metric names. Leave a metric out when it does not
  apply (e.g. ``ks_library_size`` without counts, privacy without ``ctx.train``); return NaN when it
  applies but cannot be computed.
- Per-type values go through :meth:`EvalContext.add_per_type`, one column at a time:
  ``ctx.add_per_type("tstr_f1", {"alpha": 0.91, "beta": 0.88})``. :func:`cellsynth.evaluate` turns
  them into the per-type table (index: cell type; ``n_real`` and ``n_synth`` always come first; a
  type missing from a column is NaN). Column names used so far: ``detection_auc``, ``mmd``
  (detection/distribution families), ``tstr_f1``, ``trts_accuracy`` (biology). With ``train``, the same
  columns computed for the real-vs-real control appear as ``<column>_control``.
- The same function runs twice with ``train``: on the synthetic context (``ctx.kind == "synthetic"``:
  ``ctx.synth`` is the synthetic set, ``ctx.train`` is set) and on the control context
  (``ctx.kind == "control"``: ``ctx.synth`` is a TRAIN subsample, ``ctx.train`` is ``None``). Write
  it once, for "the compared set" ``ctx.synth`` vs ``ctx.real``.
- Randomness: ``ctx.rng("metric_name")`` (a fresh generator per use); for scikit-learn,
  ``ctx.random_state("metric_name")``. Caps and options: ``ctx.settings`` (see
  ``cellsynth.metrics.space.DEFAULT_SETTINGS``). A family declares its own options once, at import,
  with ``register_settings({"my_cap": 2000})``: ``evaluate(settings={"my_cap": 500})`` then accepts
  them (unknown keys are a user error), and ``ctx.settings["my_cap"]`` holds the value used, which is
  recorded with the rest.
- Caches: ``ctx.cache`` belongs to one comparison (e.g. the union PCA); ``ctx.shared`` is the same
  dict in the synthetic and the control contexts, for what depends on REAL (or TRAIN) only, such as a
  classifier trained on REAL.
- Diagnostics (e.g. "OT did not converge"): ``ctx.note(key, value)``; warnings that the user should
  see: ``ctx.warn(message)``. Both end up in ``Metrics.settings``.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .verdicts import judge, verdict

Direction = Literal["minimize", "maximize", "target"]
# the order of the families in listings, tables and the report
FAMILY_ORDER = ("distribution", "detection", "genes", "properties", "biology", "privacy")


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
    reference: bool = False  # computed on REAL alone, to read other values against: no verdict

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
SETTINGS: dict[str, Any] = {}  # options declared by family modules, with their defaults


def register_settings(defaults: Mapping[str, Any]) -> None:
    """Declare a family's options and their defaults (once, at import of its module), so that
    ``evaluate(settings=...)`` accepts them as overrides and reports the values used."""
    SETTINGS.update(defaults)


def metric(
    name: str,
    family: str,
    direction: Direction,
    description: str,
    *,
    target: float | None = None,
    needs_train: bool = False,
    per_type: bool = False,
    reference: bool = False,
) -> MetricInfo:
    """Declare a metric (once, at import of its family module)."""
    if direction == "target" and target is None:
        raise ValueError(f"metric {name}: direction 'target' needs a target value")
    info = MetricInfo(name, family, direction, description, target, needs_train, per_type, reference)
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
        cells × genes raw counts over the same genes when the input was counts (``scipy.sparse`` CSR,
        float32), else ``None``.
    library_size
        total counts per cell over all of the input's genes (counts input), else ``None``.
    representation
        what the input held: ``counts``, ``log1p`` (non-negative, non-integer: used as is) or ``as_is``.
    """

    X: np.ndarray
    labels: np.ndarray
    counts: Any = None
    library_size: np.ndarray | None = None
    representation: str = "log1p"

    def __len__(self) -> int:
        return self.X.shape[0]


@dataclass
class UnionPCA:
    """A PCA fitted on equal-sized subsamples of both compared sets, so that neither is privileged.

    Attributes
    ----------
    real, synth
        Every cell of each set projected (cells × components, float32).
    real_fit, synth_fit
        Indices of the cells the PCA was fitted on (equal numbers on both sides). Compare these cells
        (or subsamples of them): a PCA captures some of its fitted cells' own noise, so fitted and
        unfitted cells differ slightly, and a comparison of fitted REAL with unfitted SYNTH cells would
        be biased.
    explained_variance_ratio
        Per component.
    """

    real: np.ndarray
    synth: np.ndarray
    real_fit: np.ndarray
    synth_fit: np.ndarray
    explained_variance_ratio: np.ndarray


@dataclass
class EvalContext:
    """Everything a family needs: the compared sets in a common space, settings and a seeded RNG.

    Built by :func:`cellsynth.metrics.space.build_context`; see the module docstring for the
    conventions a family function follows.
    """

    real: Space
    synth: Space
    genes: np.ndarray
    hvg: np.ndarray  # indices into genes: highly variable genes chosen on REAL, most variable first
    train: Space | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)
    kind: str = "synthetic"  # "synthetic" (SYNTH vs REAL) or "control" (a TRAIN subsample vs REAL)
    shared: dict[str, Any] = field(default_factory=dict)
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    control: EvalContext | None = None  # the control context, set on the synthetic one by evaluate

    def rng(self, salt: int | str = 0) -> np.random.Generator:
        """A fresh generator per use, so a metric's randomness does not depend on which ran before.

        ``salt`` is best the metric's name: each metric then draws its own stream.
        """
        if isinstance(salt, str):
            salt = zlib.crc32(salt.encode())
        return np.random.default_rng([self.seed, salt])

    def random_state(self, salt: int | str = 0) -> int:
        """An integer seed for libraries that take ``random_state`` (scikit-learn, POT, UMAP)."""
        return int(self.rng(salt).integers(2**31 - 1))

    # ---------------------------------------------------------------- recording
    def add_per_type(self, column: str, values: Mapping[str, float]) -> None:
        """Record one per-type column, ``{cell type: value}`` (merged into the per-type table)."""
        self.per_type.setdefault(column, {}).update({str(k): float(v) for k, v in values.items()})

    def note(self, key: str, value: Any) -> None:
        """Record a diagnostic (reported under ``settings["diagnostics"]``)."""
        self.diagnostics[key] = value

    def warn(self, message: str) -> None:
        """Warn the user and keep the message (reported under ``settings["warnings"]``)."""
        message = f"{self.kind}: {message}"
        self.warnings.append(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)

    # ---------------------------------------------------------------- helpers
    def types(self, min_cells: int | None = None) -> list[str]:
        """Cell types with at least ``min_cells`` cells in both sets (default
        ``settings["min_cells_per_type"]``), largest in REAL first."""
        if min_cells is None:
            min_cells = int(self.settings.get("min_cells_per_type", 20))
        real_t, real_n = np.unique(self.real.labels, return_counts=True)
        synth_n = dict(zip(*np.unique(self.synth.labels, return_counts=True), strict=True))
        order = np.argsort(-real_n, kind="stable")
        return [
            str(real_t[i]) for i in order if real_n[i] >= min_cells and synth_n.get(real_t[i], 0) >= min_cells
        ]

    def equal_subsample(
        self, real_idx: np.ndarray, synth_idx: np.ndarray, cap: int | None, salt: int | str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Equal-sized seeded subsamples of two index sets: ``min(len(real_idx), len(synth_idx), cap)``
        each (sorted)."""
        n = min(len(real_idx), len(synth_idx), cap if cap else np.inf)
        rng = self.rng(salt)
        pick = [
            np.sort(rng.choice(np.asarray(ix), size=int(n), replace=False)) for ix in (real_idx, synth_idx)
        ]
        return pick[0], pick[1]

    def union_pca(self) -> UnionPCA:
        """The PCA of the distribution and detection metrics (cached per comparison).

        Fitted on the highly variable genes of equal-sized seeded subsamples of REAL and of the compared
        set (at most ``settings["max_cells_pca"]`` each), with ``settings["n_pcs"]`` components; every
        cell of both sets is then projected.
        """
        if "union_pca" not in self.cache:
            from sklearn.decomposition import PCA

            ri, si = self.equal_subsample(
                np.arange(len(self.real)),
                np.arange(len(self.synth)),
                self.settings.get("max_cells_pca", 2500),
                "union_pca",
            )
            hvg = np.sort(self.hvg)
            fit = np.concatenate([self.real.X[ri][:, hvg], self.synth.X[si][:, hvg]])
            k = int(min(self.settings.get("n_pcs", 50), fit.shape[0] - 1, len(hvg)))
            pca = PCA(n_components=k, svd_solver="randomized", random_state=self.random_state("union_pca"))
            pca.fit(fit)
            self.cache["union_pca"] = UnionPCA(
                real=pca.transform(self.real.X[:, hvg]).astype(np.float32),
                synth=pca.transform(self.synth.X[:, hvg]).astype(np.float32),
                real_fit=ri,
                synth_fit=si,
                explained_variance_ratio=pca.explained_variance_ratio_,
            )
        return self.cache["union_pca"]


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
        """One row per metric: family, direction, value, control, verdict, description.

        ``verdict`` is the judgement the CLI and the report show
        (:func:`cellsynth.metrics.verdicts.judge`: the comparison with the control, overridden by a
        fixed threshold that fires; privacy metrics on their thresholds alone), ``level`` its class
        (good/warn/bad/none), ``control_verdict`` the comparison with the control alone. Metrics not
        declared in the registry are left out.
        """
        import pandas as pd

        rows = []
        for name, value in self.overall.items():
            info = METRICS.get(name)
            if info is None:
                continue
            control = self.control.get(name)
            against_control = verdict(info, value, control)
            level, text = judge(name, info.family, value, against_control)
            rows.append(
                {
                    "metric": name,
                    "family": info.family,
                    "direction": info.direction if info.direction != "target" else f"target {info.target:g}",
                    "value": value,
                    "control": control,
                    "verdict": text,
                    "level": level,
                    "control_verdict": against_control,
                    "description": info.description,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """``{"overall", "control", "per_type", "settings"}`` (per type: ``{type: {column: value}}``)."""
        per_type = {} if self.per_type is None else self.per_type.to_dict(orient="index")
        return {
            "overall": self.overall,
            "control": self.control,
            "per_type": per_type,
            "settings": self.settings,
        }
