"""What the step-alternating benchmarks (``*_ab.py``) share: two ways of running the same training step,
alternated step by step inside one nbgan fit on Baron mouse pancreas (one process: the host's slower
minutes fall on both ways), each step timed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "baron_mouse_pancreas.h5ad"


def baron():
    """Baron mouse pancreas (AnnData), with two torch threads set; exits saying so when it is absent."""
    if not DATA.exists():
        sys.exit(f"{DATA} is absent: this benchmark needs Baron mouse pancreas in ../shared/data")
    import anndata as ad
    import torch

    torch.set_num_threads(2)
    return ad.read_h5ad(DATA)


def alternate(plan_class, kinds: tuple[str, str], switch: Callable) -> dict[str, list[float]]:
    """Replace ``plan_class.training_step`` with one that runs its calls as ``kinds[0]``, ``kinds[1]``,
    ``kinds[0]``, ...: ``switch(plan, kind)`` sets a call's kind up and returns what undoes it after the
    step. Returns each kind's step times (seconds), filled as the fit runs."""
    step, times = plan_class.training_step, {k: [] for k in kinds}

    def run(self, rows):
        kind = kinds[sum(map(len, times.values())) % 2]
        undo = switch(self, kind)
        start = time.perf_counter()
        out = step(self, rows)
        times[kind].append(time.perf_counter() - start)
        undo()
        return out

    plan_class.training_step = run
    return times


def fit_nbgan(data, *, epochs: int, ae_epochs: int) -> None:
    """An nbgan fit of ``ae_epochs`` autoencoder and ``epochs`` generator epochs, validation off."""
    from cellsynth import models

    off = {"val_every_steps": 10_000, "patience": 0}
    model = models.get("nbgan", epochs=epochs, ae={"epochs": ae_epochs, **off}, **off)
    model.fit(data, label_key="cell_type", progress=False, seed=0)


def medians_ms(times: dict[str, list[float]], skip: int) -> dict[str, float]:
    """Each kind's median step time in ms, its first ``skip`` steps left out."""
    return {k: 1000 * float(np.median(v[skip:])) for k, v in times.items()}


def alternated_generator_steps(data, kinds: tuple[str, str], switch: Callable, *, epochs: int, skip: int):
    """An nbgan fit (one autoencoder epoch, ``epochs`` generator epochs) whose generator steps alternate
    between ``kinds`` (:func:`alternate`); prints the steps' count and returns each kind's median step in
    ms, its first ``skip`` steps left out."""
    from cellsynth.train.adversarial import AdversarialPlan

    times = alternate(AdversarialPlan, kinds, switch)
    fit_nbgan(data, epochs=epochs, ae_epochs=1)
    print("generator steps: " + ", ".join(f"{len(v)} {k}" for k, v in times.items()))
    return medians_ms(times, skip)
