"""Training: one plan every model shares (loop, validation, stopping, checkpoints, resume, rollback),
the adversarial plan every GAN configures, and the objectives they are trained with."""

from __future__ import annotations

from .adversarial import AdversarialPlan, AdversarialSettings
from .device import make_fabric, resolve_device
from .likelihood import LikelihoodPlan, LikelihoodSettings
from .losses import LOSSES, AdversarialLoss, get_loss
from .plan import TrainingPlan, TrainResult, TrainSettings

__all__ = [
    "LOSSES",
    "AdversarialLoss",
    "AdversarialPlan",
    "AdversarialSettings",
    "LikelihoodPlan",
    "LikelihoodSettings",
    "TrainResult",
    "TrainSettings",
    "TrainingPlan",
    "get_loss",
    "make_fabric",
    "resolve_device",
]
