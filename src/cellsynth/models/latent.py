"""``latentgan``: a conditional GAN in the latent space of a count autoencoder.

Two stages, each in its own training plan:

1. an ``nbvae`` (:class:`~cellsynth.models.vae.NBVAE`: a conditional VAE with a negative-binomial decoder
   at the observed library size) learns to encode cells into a few dozen dimensions and to decode them
   into counts;
2. the training cells' posterior means become the training data of a cgan
   (:class:`~cellsynth.models.cgan.CGAN`, with its conditioning: per-type noise modulation, auxiliary
   classifier, label mixing, covariates), which learns to generate codes of each cell type.

A synthetic cell is a generated code decoded by the autoencoder: its profile at a library size drawn from
the type's training cells, then negative-binomial counts. The decoder owns counts, sparsity and library
sizes; the critic judges cells in the latent space, where its steps are cheap and a few hundred cells are
enough to train it. This is how the strongest recent single-cell generators are built (latent diffusion
or flow matching on a count autoencoder), with a GAN as the latent generator.

With a time budget (``max_minutes``), the autoencoder gets ``ae_share`` of it and the GAN the rest (plus
whatever the autoencoder's early stopping left); each stage also stops on its own validation score.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch

from ..errors import TrainingError
from ..params import Param
from .cgan import CGAN, ConditionalGenerator
from .registry import register
from .vae import NBVAE, encode_means

#: the cgan's parameters for codes instead of expression: the critic sees the codes themselves, no zeros
#: to match and no counts to draw (the decoder draws them)
LATENT_GAN_DEFAULTS = {
    "z_dim": 32,
    "g_hidden": (256, 256),
    "d_hidden": (256, 128),
    "c_hidden": (128, 64),
    "critic_space": "genes",
    "init_variation": 16,
    "sparsity_weight": 0.0,
    "count_noise": "none",
}
#: the cgan parameters the ``gan`` mapping may set (budgets and epochs are the latent model's own)
GAN_OPTIONS = tuple(p.name for p in CGAN.param_spec if p.name not in ("max_minutes", "epochs"))


@register
class LatentGAN(NBVAE):
    """Latent GAN: a conditional GAN generating the codes of an NB count autoencoder, which decodes them."""

    name = "latentgan"
    param_spec = NBVAE.param_spec.extend(
        Param("ae_share", 0.5, "float", "share of max_minutes for the autoencoder (the rest: the GAN)",
              gt=0, lt=1),
        Param("gan", {}, "dict", "the latent GAN's cgan parameters (over LATENT_GAN_DEFAULTS)",
              keys=GAN_OPTIONS),
    )  # fmt: skip

    def _gan_params(self) -> dict:
        return {**LATENT_GAN_DEFAULTS, **self.params["gan"]}

    # ------------------------------------------------------------------ networks
    def _build(self, sizes, n_genes):
        modules = super()._build(sizes, n_genes)
        g = {**CGAN.default_params, **self._gan_params()}
        modules["latent_generator"] = ConditionalGenerator(
            int(self.params["z_dim"]), sizes, int(g["z_dim"]), g["g_hidden"], nonnegative=False
        )
        return modules

    # ------------------------------------------------------------------ training
    def fit(self, adata, *, resume: bool = False, **kwargs):
        if resume:
            raise TrainingError(
                "model latentgan cannot resume an interrupted fit yet; fit it afresh (its checkpoints hold "
                "the autoencoder only)"
            )
        return super().fit(adata, **kwargs)

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None):
        budget = self.params["max_minutes"]
        started = time.monotonic()
        ae_params, user_monitor = dict(self.params), getattr(self, "_monitor", None)
        if budget is not None:
            self.params = {**ae_params, "max_minutes": budget * float(ae_params["ae_share"])}
        self._monitor = None  # no codes to sample before the GAN trains: the monitor follows the GAN stage
        try:
            super()._fit(data, device=device, seed=seed, progress=progress, checkpoint=checkpoint)
        finally:
            self.params, self._monitor = ae_params, user_monitor
        ae_seconds = time.monotonic() - started
        ae_history, ae_record = self.history, self.fit_record

        codes = self.encode(data)
        gan_params = {**self._gan_params(), "epochs": int(self.params["epochs"])}
        if budget is not None:
            gan_params["max_minutes"] = max(budget - ae_seconds / 60.0, 1e-3)
        gan = CGAN(**gan_params)
        gan.fit(
            latent_cells(codes, data),
            label_key=data.label.key,
            condition_keys=[c.key for c in data.conditions[1:]],
            representation="as_is",
            device=device,
            seed=seed,
            progress=progress,
            monitor=self._stage_monitor(ae_seconds),
        )
        self.modules["latent_generator"].load_state_dict(gan.modules["generator"].state_dict())
        shifted = [{**r, "stage": "gan", "seconds": r["seconds"] + ae_seconds} for r in gan.history]
        self.history = [{**r, "stage": "autoencoder"} for r in ae_history] + shifted
        self.fit_record = {
            "stopped_because": gan.fit_record["stopped_because"],
            "best_val": gan.fit_record["best_val"],
            "val_metric": gan.fit_record["val_metric"],
            "autoencoder": {k: ae_record[k] for k in ("stopped_because", "best_val") if k in ae_record},
            "autoencoder_seconds": round(ae_seconds, 3),
        }

    def encode(self, data) -> np.ndarray:
        """The posterior means of ``data``'s cells (cells × ``z_dim``), from the fitted encoder."""
        return encode_means(self.modules["generator"], data)

    def _stage_monitor(self, offset: float):
        """The user's monitor during the GAN stage: a copy of this model with the GAN's weights so far."""
        user = getattr(self, "_monitor", None)
        if user is None:
            return None

        def monitor(gan_snapshot, step: int, seconds: float) -> dict:
            snapshot = copy.copy(self)
            snapshot.modules = {name: copy.deepcopy(m).to("cpu").eval() for name, m in self.modules.items()}
            snapshot.modules["latent_generator"].load_state_dict(
                gan_snapshot.modules["generator"].state_dict()
            )
            return dict(user(snapshot, step, seconds + offset) or {})

        return monitor

    # ------------------------------------------------------------------ sampling
    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.modules["latent_generator"].z_dim, generator=gen)

    @torch.no_grad()
    def _generate(self, weights, z):
        codes, _ = self.modules["latent_generator"](z, weights)
        return self.modules["generator"].generate(codes, weights)


def latent_cells(codes: np.ndarray, data):
    """An AnnData of the cells' codes with their conditions, the GAN stage's training data."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=[str(i) for i in range(len(codes))])
    for c in data.conditions:
        obs[c.key] = pd.Categorical.from_codes(c.codes, categories=list(c.categories))
    var = pd.DataFrame(index=[f"z{i}" for i in range(codes.shape[1])])
    return ad.AnnData(X=np.ascontiguousarray(codes, dtype=np.float32), obs=obs, var=var)


__all__ = ["LATENT_GAN_DEFAULTS", "LatentGAN"]
