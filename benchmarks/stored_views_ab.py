"""The generator step with the real cells' stored views against projecting each real batch, alternated step
by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/stored_views_ab.py

Even generator steps read the stored table (``AdversarialPlan.real_views``), odd ones densify and project
their real batch as smaller data do; both then take the same critic and generator steps. One autoencoder
epoch, ``--epochs`` generator epochs, validation off, two torch threads; the first ten steps of each are
left out. Prints ``RESULT stored_ms=<median> projected_ms=<median>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "baron_mouse_pancreas.h5ad"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20, help="generator epochs")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs Baron mouse pancreas in ../shared/data")
    import anndata as ad
    import torch

    from cellsynth import models
    from cellsynth.train.adversarial import AdversarialPlan

    torch.set_num_threads(2)
    step = AdversarialPlan.training_step
    times: dict[str, list[float]] = {"stored": [], "projected": []}

    def alternated(self, rows):
        table, mode = self.real_views, ("stored", "projected")[self.g_step % 2]
        if mode == "projected":
            self.real_views = None
        start = time.perf_counter()
        out = step(self, rows)
        times[mode].append(time.perf_counter() - start)
        self.real_views = table
        return out

    AdversarialPlan.training_step = alternated
    off = {"val_every_steps": 10_000, "patience": 0}
    model = models.get("nbgan", epochs=args.epochs, ae={"epochs": 1, **off}, **off)
    model.fit(ad.read_h5ad(DATA), label_key="cell_type", progress=False, seed=0)
    ms = {k: 1000 * float(np.median(v[10:])) for k, v in times.items()}
    print(f"steps: {len(times['stored'])} stored, {len(times['projected'])} projected")
    print(f"RESULT stored_ms={ms['stored']:.1f} projected_ms={ms['projected']:.1f}")


if __name__ == "__main__":
    main()
