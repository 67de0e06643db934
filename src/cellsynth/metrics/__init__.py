"""Metrics comparing real and synthetic cells.

>>> from cellsynth.metrics import evaluate, write_outputs
>>> metrics = evaluate(test, synthetic, label_key="cell_type", train=train)  # doctest: +SKIP
>>> write_outputs(metrics, "eval_out")  # doctest: +SKIP

The families (distribution, detection, genes, properties, biology, privacy) import scikit-learn, POT and
scanpy; they load on first use, so that the training loop can import :func:`distribution.mmd_rbf` cheaply.
"""

from __future__ import annotations

from importlib import import_module

from .base import (
    FAMILIES,
    FAMILY_ORDER,
    METRICS,
    SETTINGS,
    EvalContext,
    MetricInfo,
    Metrics,
    Space,
    family,
    metric,
    register_settings,
    verdict,
)
from .verdicts import judge, overall_verdict

__all__ = [
    "FAMILIES",
    "FAMILY_ORDER",
    "METRICS",
    "SETTINGS",
    "DEFAULT_SETTINGS",
    "EvalContext",
    "MetricInfo",
    "Metrics",
    "Space",
    "available_metrics",
    "build_context",
    "evaluate",
    "family",
    "judge",
    "metric",
    "overall_verdict",
    "register_settings",
    "verdict",
    "write_outputs",
]

_LAZY = {
    "evaluate": ("cellsynth.metrics.evaluation", "evaluate"),
    "write_outputs": ("cellsynth.metrics.evaluation", "write_outputs"),
    "available_metrics": ("cellsynth.metrics.evaluation", "available_metrics"),
    "build_context": ("cellsynth.metrics.space", "build_context"),
    "DEFAULT_SETTINGS": ("cellsynth.metrics.space", "DEFAULT_SETTINGS"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cellsynth.metrics' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    value = getattr(import_module(module_name), attr)
    globals()[name] = value
    return value
