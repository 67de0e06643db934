"""Training steps with the fused (compiled) element-wise chains against the same chains run eagerly,
alternated step by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower
minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/fused_ab.py                                   # every fused chain
    .venv/bin/python benchmarks/fused_ab.py --chains _profile_values _expected_counts _zero_term

Odd steps of each stage run the chains named by ``--chains`` (the functions wrapped by
``cellsynth.data.fused.Fused``; default: all of them) eagerly, even steps compiled; both stages'
steps are timed (``--ae-epochs`` autoencoder epochs, then ``--epochs`` generator epochs, validation off,
two torch threads), the first ten of each stage left out. Prints one line per stage:
``RESULT stage=<autoencoder|gan> fused_ms=<median> eager_ms=<median>``.
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
    ap.add_argument("--epochs", type=int, default=12, help="generator epochs")
    ap.add_argument("--ae-epochs", type=int, default=12, help="autoencoder epochs")
    ap.add_argument("--chains", nargs="*", default=None, help="names of the fused functions run eagerly")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs Baron mouse pancreas in ../shared/data")
    import anndata as ad
    import torch

    from cellsynth import models
    from cellsynth.data.fused import Fused
    from cellsynth.train.adversarial import AdversarialPlan
    from cellsynth.train.likelihood import LikelihoodPlan

    torch.set_num_threads(2)
    fused_call, eager = Fused.__call__, {"on": False}

    def call(self, *a, **kw):
        if eager["on"] and (args.chains is None or self.fn.__name__ in args.chains):
            return self.fn(*a, **kw)
        return fused_call(self, *a, **kw)

    Fused.__call__ = call
    times = {(stage, mode): [] for stage in ("autoencoder", "gan") for mode in ("fused", "eager")}

    def alternated(plan_class, stage: str):
        step, count = plan_class.training_step, [0]

        def run(self, rows):
            count[0] += 1
            eager["on"] = count[0] % 2 == 1
            start = time.perf_counter()
            out = step(self, rows)
            times[stage, "eager" if eager["on"] else "fused"].append(time.perf_counter() - start)
            eager["on"] = False
            return out

        plan_class.training_step = run

    alternated(LikelihoodPlan, "autoencoder")
    alternated(AdversarialPlan, "gan")
    off = {"val_every_steps": 10_000, "patience": 0}
    model = models.get("nbgan", epochs=args.epochs, ae={"epochs": args.ae_epochs, **off}, **off)
    model.fit(ad.read_h5ad(DATA), label_key="cell_type", progress=False, seed=0)
    for stage in ("autoencoder", "gan"):
        ms = {mode: 1000 * float(np.median(times[stage, mode][5:])) for mode in ("fused", "eager")}
        steps = len(times[stage, "fused"]) + len(times[stage, "eager"])
        print(f"{stage}: {steps} steps")
        print(f"RESULT stage={stage} fused_ms={ms['fused']:.1f} eager_ms={ms['eager']:.1f}")


if __name__ == "__main__":
    main()
