"""What the parts of nbgan's generator step cost: the median step of fits that differ by one setting (a
loss term off, another batch size), one after another in one process on Baron mouse pancreas.

Run from the repository root::

    .venv/bin/python benchmarks/step_parts.py                          # the loss terms, each off
    .venv/bin/python benchmarks/step_parts.py --batch-sizes 64 128 256  # the batch size instead

Each fit: one autoencoder epoch, then ``--epochs`` generator epochs, validation off, two torch threads;
``AdversarialPlan.batch_step`` (a critic step and a generator step) is timed, its first ten calls left out.
The default's fit runs first and last (the host's drift shows in the two). A term's cost is the default's
step less the step without it; the batch sizes' steps give the step's cost per cell (their slope) and what
a step costs whatever its cells (the intercept). Prints ``RESULT setting=<name> step_ms=<median>`` per fit.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from alternation import baron

#: each a setting whose work the step then leaves out
TERMS_OFF = (
    "moment_weight", "sparsity_weight", "class_weight", "mmd_weight", "ema_decay", "r1_weight", "mix_prob",
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10, help="generator epochs")
    ap.add_argument("--batch-sizes", type=int, nargs="*", default=None, help="time these, not the terms")
    args = ap.parse_args()
    data = baron()
    from cellsynth import models
    from cellsynth.train.adversarial import AdversarialPlan

    step, times = AdversarialPlan.batch_step, []

    def timed(self, *a, **kw):
        start = time.perf_counter()
        out = step(self, *a, **kw)
        times.append(time.perf_counter() - start)
        return out

    AdversarialPlan.batch_step = timed
    if args.batch_sizes:
        settings = [("batch_size", b) for b in args.batch_sizes]
    else:
        settings = [("default", None), *((name, 0) for name in TERMS_OFF), ("default", None)]
    off = {"val_every_steps": 10_000, "patience": 0}
    for name, value in settings:
        times.clear()
        params = {} if name == "default" else {name: value}
        model = models.get("nbgan", epochs=args.epochs, ae={"epochs": 1, **off}, **off, **params)
        model.fit(data, label_key="cell_type", progress=False, seed=0)
        label = name if name == "default" else f"{name}={value}"
        print(f"RESULT setting={label} step_ms={1000 * float(np.median(times[10:])):.1f}", flush=True)


if __name__ == "__main__":
    main()
