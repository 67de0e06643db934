"""Optimiser helpers shared by the training plans: learning-rate schedules, the weight average (EMA)
with warm-up, and freezing a network's parameters during the other network's step."""

from __future__ import annotations

import math

import torch

#: learning-rate schedules: ``constant``; ``cosine``, from the set rate down to :data:`LR_FLOOR` of it along
#: a half cosine over the run, whose progress is the larger of the epochs done over ``epochs`` and the
#: time spent over ``max_minutes`` (set once per epoch)
LR_SCHEDULES = ("constant", "cosine")
#: which state a fit keeps: the best validated one, or the one training ends in
KEEP = ("best", "last")
#: ``val_tolerance``: ties within a validation score's noise (its ``<key>_sd``); 0 keeps the lowest score
TOLERANCE_HELP = "validation scores within this many noise SDs of the best are tied: the later state is kept"
#: ``patience``: TrainingPlan.patience_validations
PATIENCE_HELP = "validations without improvement (0: no stop); on epochs over val_every_steps: as many steps"
LR_FLOOR = 0.1


def lr_factor(schedule: str, progress: float) -> float:
    """The multiple of the set learning rate at ``progress`` (0: start, 1: end of the run)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        p = min(max(progress, 0.0), 1.0)
        return LR_FLOOR + (1.0 - LR_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * p))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def ema_with_warmup(decay: float):
    """EMA whose effective decay ramps up (1/(n+1) at first), so early weights do not linger."""

    def update(averaged, current, num_averaged):
        weight = max(1.0 - decay, 1.0 / (float(num_averaged) + 1.0))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)
