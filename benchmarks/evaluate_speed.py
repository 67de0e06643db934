"""End-to-end time of `cellsynth.evaluate` on 10,000 vs 10,000 cells × 2,000 genes (simulated counts).

Run from the repository root::

    .venv/bin/python benchmarks/evaluate_speed.py              # with TRAIN: control + privacy too
    .venv/bin/python benchmarks/evaluate_speed.py --no-train   # synthetic vs real only
    .venv/bin/python benchmarks/evaluate_speed.py --smoke      # 300 cells × 100 genes, light settings

30,000 cells are simulated in one draw (``cellsynth.data.datasets.simulate``, 8 types from 8% to 25%
plus a rare one, NB counts, CSR) and cut into REAL, SYNTH and TRAIN of 10,000 cells each, so that SYNTH
behaves like a good generator's output. The timed call is ``evaluate(real, synth, train=train)`` with
the default settings (every registered family, the control and the privacy metrics, the subsampling caps
of ``cellsynth.metrics.space.DEFAULT_SETTINGS``), from AnnData in to ``Metrics`` out; building the common
space is included, simulating the data is not. The per-family seconds and the caps used are printed,
and the last line is ``RESULT evaluate_seconds=<x>``. Target: ≤ 60 s on the 2-core development machine.
``--smoke`` runs the same steps on 300 cells × 100 genes per set with light evaluation settings (fewer
trees, folds and components; :mod:`smoke`): a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import smoke  # benchmarks/ is the script's directory

from cellsynth.data.datasets import simulate
from cellsynth.metrics import evaluate
from cellsynth.metrics.space import DEFAULT_SETTINGS

TYPES = {
    "t0": 7500,
    "t1": 6000,
    "t2": 4500,
    "t3": 3600,
    "t4": 3000,
    "t5": 2400,
    "t6": 1500,
    "t7": 1200,
    "rare": 300,
}
CAPS = [key for key in DEFAULT_SETTINGS if key.startswith(("max_", "detection_", "per_type", "n_"))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=10_000, help="cells per set")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--no-train", action="store_true", help="no TRAIN: no control, no privacy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="300 cells × 100 genes: checks the script")
    args = parser.parse_args()
    if args.smoke:
        args.cells, args.genes = 300, smoke.GENES

    scale = 3 * args.cells / sum(TYPES.values())
    sizes = {t: int(round(n * scale)) for t, n in TYPES.items()}
    cells = simulate(sizes, n_genes=args.genes, n_markers=40, seed=args.seed)
    order = np.random.default_rng(args.seed).permutation(cells.n_obs)
    n = args.cells
    real, synth, train = (cells[order[i * n : (i + 1) * n]].copy() for i in range(3))
    print(f"REAL, SYNTH, TRAIN: {n} cells × {args.genes} genes each (CSR counts); cpus: {os.cpu_count()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")

    t0 = time.perf_counter()
    metrics = evaluate(
        real,
        synth,
        label_key="cell_type",
        train=None if args.no_train else train,
        seed=args.seed,
        settings=smoke.EVALUATE if args.smoke else None,
    )
    seconds = time.perf_counter() - t0

    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("settings: " + ", ".join(f"{k}={metrics.settings[k]}" for k in CAPS))
    print("seconds: " + ", ".join(f"{k}={v:.1f}" for k, v in metrics.settings["seconds"].items()))
    for name in ("detection_auc", "wasserstein", "mmd", "dcr_ratio", "tstr_macro_f1"):
        if name in metrics.overall:
            control = metrics.control.get(name)
            print(
                f"{name}: {metrics.overall[name]:.4g}"
                + (f" (control {control:.4g})" if control is not None else "")
            )
    print(f"RESULT evaluate_seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
