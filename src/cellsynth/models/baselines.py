"""The GANs GARAGE is published against: GAN, WGAN, f-GAN, Fisher GAN and LSH-GAN.

Each is the cgan's networks trained in the one adversarial plan with its own loss, without the cgan's
own additions (the auxiliary classifier's loss, the zero-fraction match, the conditional MMD, the moment
match, packing, label mixing in training, the R1 penalty): the comparison then measures the loss, and
the cgan's additions measure themselves. What the baselines keep from the cgan is what any careful GAN
for counts would have: the conditional generator with per-type noise modulation and output offsets
(started at each type's mean profile), the projection critic on a PCA of the training cells, the
generator's EMA, class-balanced minibatches and the count draw of the output (Poisson–log-normal with a
learned dispersion). Every one of those, and every addition, is a parameter (``cellsynth models --params
gan``), so a baseline can be run as published or with any of the cgan's additions switched on.

All are conditional on cell type and covariates by default (every synthetic cell has a label);
``conditional=False`` trains the paper's unconditional GAN, whose cells are labelled by a classifier
trained on the real cells (:mod:`.labeller`).
"""

from __future__ import annotations

from ..params import Param
from ..train.losses import F_DIVERGENCES, get_loss
from .cgan import CGAN
from .garage import GARAGE
from .registry import register

#: the cgan's own additions, switched off
PLAIN = dict(
    class_weight=0.0,
    sparsity_weight=0.0,
    mmd_weight=0.0,
    moment_weight=0.0,
    pack=1,
    mix_prob=0.0,
    r1_weight=0.0,
)


#: the cgan's learning rates (LSH-GAN keeps them where GARAGE, its parent here, has its own)
CGAN_RATES = {name: CGAN.param_spec.defaults()[name] for name in ("lr_g", "lr_d")}


def _loss_param(name: str) -> Param:
    return Param("loss", name, "str", "adversarial loss (this model's own)", choices=(name,))


@register
class GAN(CGAN):
    """GAN: the standard (non-saturating, BCE) GAN on the cgan's networks, without its additions."""

    name = "gan"
    param_spec = CGAN.param_spec.with_defaults(**PLAIN).extend(_loss_param("bce"))


@register
class WGAN(CGAN):
    """WGAN: Wasserstein GAN with gradient penalty (or weight clipping: ``clip``)."""

    name = "wgan"
    param_spec = (
        CGAN.param_spec.with_defaults(**PLAIN, betas=(0.0, 0.9))
        .without("label_smoothing")
        .extend(
            Param("loss", "wgan-gp", "str", "wgan-gp (gradient penalty) | wgan-clip (weight clipping)",
                  choices=("wgan-gp", "wgan-clip")),
            Param("gp_weight", 10.0, "float", "wgan-gp: weight of the gradient penalty", gt=0),
            Param("clip", 0.01, "float", "wgan-clip: the critic's weights are clipped to ±clip", gt=0),
        )
    )  # fmt: skip

    def _adversarial_loss(self):
        p = self.params
        if p["loss"] == "wgan-clip":
            return get_loss("wgan-clip", clip=float(p["clip"]))
        return get_loss("wgan-gp", gp_weight=float(p["gp_weight"]))


@register
class FGAN(CGAN):
    """f-GAN: the variational bound of a chosen f-divergence (KL, reverse KL, Jensen–Shannon, Pearson χ²)."""

    name = "fgan"
    param_spec = (
        CGAN.param_spec.with_defaults(**PLAIN)
        .without("label_smoothing")
        .extend(
            _loss_param("fgan"),
            Param("divergence", "js", "str", "the f-divergence", choices=tuple(F_DIVERGENCES)),
        )
    )

    def _adversarial_loss(self):
        return get_loss("fgan", divergence=self.params["divergence"])


@register
class FisherGAN(CGAN):
    """Fisher GAN: an IPM critic held to a unit second moment (the GARAGE paper's "f-GAN")."""

    name = "fishergan"
    param_spec = (
        # a third of the cgan's learning rates: the default sweep (docs/benchmarks.md)
        CGAN.param_spec.with_defaults(**PLAIN, **{k: v / 3 for k, v in CGAN_RATES.items()})
        .without("label_smoothing")
        .extend(
            _loss_param("fisher"),
            Param("rho", 1e-6, "float", "penalty weight and step of the Lagrange multiplier", gt=0),
        )
    )

    def _adversarial_loss(self):
        return get_loss("fisher", rho=float(self.params["rho"]))


@register
class LSHGAN(GARAGE):
    """LSH-GAN: a locality-sensitive-hashing subsample of cells fed, with noise rows, to a GAN's generator."""

    name = "lshgan"
    param_spec = (
        GARAGE.param_spec.with_defaults(**PLAIN, **CGAN_RATES, input_space="genes")
        .without("gat", "gat_k")
        .extend(
            _loss_param("bce"),
            Param("seed_method", "lsh", "str", "how seed cells are chosen: LSH-GAN's subsample",
                  choices=("lsh",)),
        )
    )  # fmt: skip
