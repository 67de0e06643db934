"""Median generator step of nbgan for two versions of the code, alternated (an A/B on a noisy host).

Run from the repository root, with the older version checked out beside it::

    git worktree add /work/old <commit>
    .venv/bin/python benchmarks/step_ab.py /work/old . --rounds 3

Each round fits nbgan once from each code directory (in its own process, that directory's ``src`` first
on the path) on Baron mouse pancreas (all its cells; ../shared/data), for ``--epochs`` generator epochs
after one autoencoder epoch, validation off, on two torch threads, and times every generator step
(``AdversarialPlan.batch_step``: a critic step and a generator step) by wall clock and by the process's CPU
time; the first ten steps are left out. Alternating the versions spreads the host's slower minutes over
both, which one run of each after the other does not. Prints one line per fit:
``<dir> steps=<n> wall_ms=<median> cpu_ms=<median>``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "baron_mouse_pancreas.h5ad"


def one_fit(code: str, epochs: int) -> None:
    sys.path.insert(0, str(Path(code).resolve() / "src"))
    import time

    import anndata as ad
    import numpy as np
    import torch

    import cellsynth.train.adversarial as adversarial
    from cellsynth import models

    torch.set_num_threads(2)
    stamps: list[tuple[float, float]] = []
    step = adversarial.AdversarialPlan.batch_step

    def timed(self, *args, **kwargs):
        out = step(self, *args, **kwargs)
        stamps.append((time.perf_counter(), time.process_time()))
        return out

    adversarial.AdversarialPlan.batch_step = timed
    off = {"val_every_steps": 10_000, "patience": 0}
    model = models.get("nbgan", epochs=epochs, ae={"epochs": 1, **off}, **off)
    model.fit(ad.read_h5ad(DATA), label_key="cell_type", progress=False, seed=0)
    wall, cpu = (np.diff([s[i] for s in stamps])[10:] for i in (0, 1))
    wall_ms, cpu_ms = 1000 * np.median(wall), 1000 * np.median(cpu)
    print(f"{code} steps={len(stamps)} wall_ms={wall_ms:.0f} cpu_ms={cpu_ms:.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", nargs="+", help="code directories (each with a src/cellsynth)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8, help="generator epochs of each fit")
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a single fit, in this process
    args = ap.parse_args()
    if args.one:
        one_fit(args.dirs[0], args.epochs)
        return
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs Baron mouse pancreas in ../shared/data")
    for _ in range(args.rounds):
        for code in args.dirs:
            cmd = [sys.executable, __file__, code, "--one", "--epochs", str(args.epochs)]
            subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
