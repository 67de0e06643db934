"""Benchmark: a fair, resumable leaderboard of generators on the user's data.

>>> from cellsynth.benchmark import run_benchmark
>>> table = run_benchmark("cells.h5ad", label_key="cell_type", models="cgan,garage",
...                       max_minutes=5, seeds=3, out="bench/")  # doctest: +SKIP

:func:`run_benchmark` (:mod:`.grid`) splits once, runs every model × seed in its own process
(:mod:`.cell`), and writes ``leaderboard.csv``, ``.md`` and ``.html`` (:mod:`.leaderboard`); the rare-type
augmentation test is in :mod:`.augmentation`, the directory layout and what makes a cell finished in
:mod:`.layout`, the command line in :mod:`.command`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .augmentation import augmentation_plan, augmentation_test
    from .grid import BenchmarkInterrupted, run_benchmark

__all__ = ["BenchmarkInterrupted", "augmentation_plan", "augmentation_test", "run_benchmark"]

# pandas, scikit-learn and the models load on first use, so that `cellsynth --help` stays quick
_LAZY = {
    "BenchmarkInterrupted": "grid",
    "run_benchmark": "grid",
    "augmentation_plan": "augmentation",
    "augmentation_test": "augmentation",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cellsynth.benchmark' has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value
    return value
