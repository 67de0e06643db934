"""Training: ONE adversarial loop for every GAN (losses plug in), device/Fabric set-up."""

from __future__ import annotations

from .adversarial import train_adversarial
from .device import make_fabric, resolve_device
from .losses import LOSSES, AdversarialLoss, get_loss

__all__ = ["LOSSES", "AdversarialLoss", "get_loss", "make_fabric", "resolve_device", "train_adversarial"]
