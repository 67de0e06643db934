"""Adversarial losses: how the critic and the generator are scored from the critic's outputs.

They are the only thing in which the GAN variants differ inside the one adversarial plan
(:mod:`.adversarial`): the standard GAN (``bce``), the Wasserstein GAN with gradient penalty or weight
clipping (``wgan-gp``, ``wgan-clip``), the hinge loss, f-GAN with a chosen f-divergence (``fgan``) and the
Fisher GAN (``fisher``, the "f-GAN" of the GARAGE paper's comparison).

A loss may keep state that changes during training (the Fisher GAN's Lagrange multiplier): it is part
of the training state (:meth:`AdversarialLoss.state_dict`), so checkpoints and rollbacks restore it.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InputError


class AdversarialLoss:
    """How the critic and the generator are scored from the critic's logits.

    ``d_steps`` is how many critic updates (each on a fresh real minibatch) precede the generator's;
    ``gradient_penalty`` the weight of the WGAN-GP penalty the plan adds to the critic's loss.
    """

    name = "base"
    d_steps = 1
    gradient_penalty = 0.0

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_critic_step(self, critic: nn.Module) -> None:
        """Called after each critic update (weight clipping, multiplier updates); nothing by default."""

    def state_dict(self) -> dict[str, torch.Tensor]:
        """What changes during training (empty for a stateless loss)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict`."""


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


class WGANClipLoss(WGANGPLoss):
    """Wasserstein critic kept Lipschitz by clipping its weights to [−clip, clip] (Arjovsky et al. 2017)."""

    name = "wgan-clip"

    def __init__(self, clip: float = 0.01, d_steps: int = 5):
        super().__init__(gp_weight=0.0, d_steps=d_steps)
        self.clip = clip

    @torch.no_grad()
    def after_critic_step(self, critic: nn.Module) -> None:
        for name, p in critic.named_parameters():
            # the critic's frozen input projection (critic_space="pca") is data, not a weight to clip
            if p.requires_grad and "projection" not in name:
                p.clamp_(-self.clip, self.clip)


class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; used with projection discriminators)."""

    name = "hinge"

    def d_loss(self, real, fake):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake):
        return -fake.mean()


def _js_activation(v):
    return math.log(2.0) - F.softplus(-v)


#: f-divergences of f-GAN (Nowozin et al. 2016, table 2): the output activation g_f that maps the
#: critic's logit v into the domain of the conjugate f*, and f* itself
F_DIVERGENCES = {
    "kl": (lambda v: v, lambda t: torch.exp(t - 1.0)),
    "reverse-kl": (lambda v: -torch.exp(-v), lambda t: -1.0 - torch.log(-t)),
    "js": (_js_activation, lambda t: -torch.log(2.0 - torch.exp(t))),
    "pearson": (lambda v: v, lambda t: 0.25 * t * t + t),
}


class FDivergenceLoss(AdversarialLoss):
    """f-GAN (Nowozin et al. 2016): the critic maximises the variational lower bound of an f-divergence,

    D_f(P_real ‖ Q_generated) ≥ E_P[T(x)] − E_Q[f*(T(x))],  T = g_f(v),

    and the generator maximises E_Q[g_f(v)] (the paper's alternative, non-saturating update). At the
    optimal critic T = f'(p/q), the bound equals the divergence. ``divergence``: ``kl``, ``reverse-kl``,
    ``js`` (Jensen–Shannon, up to the paper's scaling) or ``pearson`` (Pearson χ²). The logits are clamped
    to ±``logit_clip`` so that exp in the KL conjugate cannot overflow.
    """

    name = "fgan"

    def __init__(self, divergence: str = "js", d_steps: int = 1, logit_clip: float = 20.0):
        if divergence not in F_DIVERGENCES:
            raise InputError(f"unknown f-divergence {divergence!r}; choose one of {sorted(F_DIVERGENCES)}")
        self.divergence = divergence
        self.activation, self.conjugate = F_DIVERGENCES[divergence]
        self.d_steps = d_steps
        self.logit_clip = logit_clip

    def _t(self, v: torch.Tensor) -> torch.Tensor:
        return self.activation(v.float().clamp(-self.logit_clip, self.logit_clip))

    def bound(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """The variational lower bound E_P[T] − E_Q[f*(T)] of the divergence, from critic logits."""
        return self._t(real).mean() - self.conjugate(self._t(fake)).mean()

    def d_loss(self, real, fake):
        return -self.bound(real, fake)

    def g_loss(self, fake):
        return -self._t(fake).mean()


class FisherLoss(AdversarialLoss):
    """Fisher GAN (Mroueh & Sercu 2017): an IPM whose critic is held to a unit second moment.

    The critic maximises the augmented Lagrangian
    ``E_P f − E_Q f + λ (1 − Ω) − ρ/2 (1 − Ω)²`` with ``Ω = ½ (E_P f² + E_Q f²)``; after each critic
    update the multiplier takes a gradient step ``λ ← λ − ρ (1 − Ω)``. The generator minimises ``−E_Q f``.
    """

    name = "fisher"

    def __init__(self, rho: float = 1e-6, d_steps: int = 2):
        self.rho = rho
        self.d_steps = d_steps
        self.lam = torch.zeros(())
        self._constraint: torch.Tensor | None = None

    def d_loss(self, real, fake):
        real, fake = real.float(), fake.float()
        ipm = real.mean() - fake.mean()
        constraint = 1.0 - 0.5 * (real.pow(2).mean() + fake.pow(2).mean())
        self._constraint = constraint.detach()
        lam = self.lam.to(real.device)
        return -(ipm + lam * constraint - 0.5 * self.rho * constraint.pow(2))

    def g_loss(self, fake):
        return -fake.float().mean()

    def after_critic_step(self, critic: nn.Module) -> None:
        if self._constraint is not None:
            self.lam = self.lam - self.rho * self._constraint.to(self.lam.device).cpu()
            self._constraint = None

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"lam": self.lam.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.lam = state["lam"].detach().clone().cpu()


LOSSES = {
    cls.name: cls for cls in (BCELoss, WGANGPLoss, WGANClipLoss, HingeLoss, FDivergenceLoss, FisherLoss)
}


def get_loss(name: str, **kwargs) -> AdversarialLoss:
    """A new adversarial loss by name (one of :data:`LOSSES`), with its keyword options."""
    if name not in LOSSES:
        raise InputError(f"unknown adversarial loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name](**kwargs)
