"""The encoder's first layer with its weight stored transposed (``WideInputLinear``, inputs × outputs)
against ``nn.Linear``'s layout (outputs × inputs), alternated step by step inside one nbgan fit on Baron
mouse pancreas (one process: the host's slower minutes fall on both).

Run from the repository root::

    .venv/bin/python benchmarks/encoder_layout_ab.py

Odd autoencoder steps compute the layer as ``F.linear`` with a copy of its weight in ``nn.Linear``'s
layout, even steps as the model does (``addmm``) with a copy in the transposed layout: both copies are
made once, are tensors the optimiser does not see (so neither kind of step pays for the layer's Adam
update) and have their gradients dropped after each step. ``--ae-epochs`` autoencoder epochs,
validation off, two torch threads, the first five steps of each kind left out. Prints
``RESULT stage=autoencoder transposed_ms=<median> linear_ms=<median>``.
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
    ap.add_argument("--ae-epochs", type=int, default=14, help="autoencoder epochs")
    args = ap.parse_args()
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs Baron mouse pancreas in ../shared/data")
    import anndata as ad
    import torch
    from torch.nn import functional as F

    from cellsynth import models
    from cellsynth.nn.blocks import WideInputLinear
    from cellsynth.train.likelihood import LikelihoodPlan

    torch.set_num_threads(2)
    linear = {"on": False}
    copies: list[torch.Tensor] = []

    def forward(self, x):
        if not hasattr(self, "copies"):
            self.copies = [self.weight_t.detach().clone(), self.weight_t.detach().t().contiguous()]
            copies.extend(w.requires_grad_(True) for w in self.copies)
        if linear["on"]:
            return F.linear(x, self.copies[1], self.bias)
        return torch.addmm(self.bias, x, self.copies[0])

    WideInputLinear.forward = forward
    times = {"transposed": [], "linear": []}
    step, count = LikelihoodPlan.training_step, [0]

    def run(self, rows):
        count[0] += 1
        linear["on"] = count[0] % 2 == 1
        start = time.perf_counter()
        out = step(self, rows)
        times["linear" if linear["on"] else "transposed"].append(time.perf_counter() - start)
        linear["on"] = False
        for w in copies:
            w.grad = None
        return out

    LikelihoodPlan.training_step = run
    off = {"val_every_steps": 10_000, "patience": 0}
    model = models.get("nbgan", epochs=1, ae={"epochs": args.ae_epochs, **off}, **off)
    model.fit(ad.read_h5ad(DATA), label_key="cell_type", progress=False, seed=0)
    ms = {kind: 1000 * float(np.median(t[5:])) for kind, t in times.items()}
    print(f"autoencoder: {sum(map(len, times.values()))} steps")
    print(f"RESULT stage=autoencoder transposed_ms={ms['transposed']:.1f} linear_ms={ms['linear']:.1f}")


if __name__ == "__main__":
    main()
