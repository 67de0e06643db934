"""Adversarial losses. GAN variants differ only here; they share one training loop."""

from __future__ import annotations

import torch
from torch.nn import functional as F


class AdversarialLoss:
    """How the critic and the generator are scored from the critic's logits.

    ``d_steps`` is how many critic updates (each on a fresh real minibatch) precede the generator's.
    """

    name = "base"
    d_steps = 1
    gradient_penalty = 0.0

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class BCELoss(AdversarialLoss):
    """Standard GAN on logits (BCE-with-logits), one-sided label smoothing, non-saturating generator."""

    name = "bce"

    def __init__(self, real_label: float = 0.9, fake_label: float = 0.0, d_steps: int = 1):
        self.real_label = real_label
        self.fake_label = fake_label
        self.d_steps = d_steps

    def d_loss(self, real, fake):
        return F.binary_cross_entropy_with_logits(
            real, torch.full_like(real, self.real_label)
        ) + F.binary_cross_entropy_with_logits(fake, torch.full_like(fake, self.fake_label))

    def g_loss(self, fake):
        return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


class WGANGPLoss(AdversarialLoss):
    """Wasserstein critic with gradient penalty (Gulrajani et al. 2017)."""

    name = "wgan-gp"

    def __init__(self, gp_weight: float = 10.0, d_steps: int = 5):
        self.gradient_penalty = gp_weight
        self.d_steps = d_steps

    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake):
        return -fake.mean()


class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; used with projection discriminators)."""

    name = "hinge"

    def d_loss(self, real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


LOSSES = {cls.name: cls for cls in (BCELoss, WGANGPLoss, HingeLoss)}


def get_loss(name: str, **kwargs) -> AdversarialLoss:
    from ..errors import InputError

    if name not in LOSSES:
        raise InputError(f"unknown adversarial loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
