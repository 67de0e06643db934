"""Running the benchmarks' ``--smoke`` mode from the tests (helpers, not tests).

Each benchmark runs as a subprocess (``python benchmarks/X.py --smoke``, from the repository root) on tiny
simulated data, and its usual result lines are parsed: the fields must be there and the numbers finite.
The scripts are run from a copy of ``benchmarks/`` in a temporary directory (the ``scripts`` fixture of
``conftest.py``), where ``../shared/data`` does not exist, so a smoke run that needed the shared datasets
would fail here on every machine.
"""

from __future__ import annotations

import ast
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
# tiny runs: more BLAS/OpenMP threads only spin against each other and other jobs on a shared machine.
# NUMBA_NUM_THREADS too: numba's OpenMP layer (started by scanpy) sets the shared OpenMP runtime's thread
# count, torch's included, to its own
THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
ENV = {**os.environ, **dict.fromkeys(THREADS, "1")}
NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"


def copy_benchmarks(folder: Path) -> Path:
    """A copy of ``benchmarks/`` at ``folder/repo/benchmarks``, in a tree without ``../shared/data``."""
    copy = folder / "repo" / "benchmarks"
    shutil.copytree(BENCHMARKS, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert not (copy.parents[1] / "shared" / "data").exists()
    return copy


def smoke(scripts: Path, name: str, *args: str) -> str:
    """Run ``benchmarks/NAME --smoke ARGS`` from the repository root; its stdout (exit 0 asserted)."""
    proc = subprocess.run(
        [sys.executable, str(scripts / name), "--smoke", *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{name} --smoke exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def constant(name: str, script: str):
    """The literal value of module-level ``name`` in ``benchmarks/script`` (read, not imported)."""
    for node in ast.parse((BENCHMARKS / script).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{script} has no {name}")


def result_values(out: str) -> dict[str, float]:
    """``key=value`` pairs of every ``RESULT`` line."""
    pairs = {}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            pairs.update({k: float(v) for k, v in re.findall(rf"(\w+)=({NUMBER})", line)})
    return pairs


def assert_finite(values: dict, keys) -> None:
    for key in keys:
        assert key in values, f"{key} missing from {values}"
        assert isinstance(values[key], int | float) and math.isfinite(values[key]), (key, values[key])
