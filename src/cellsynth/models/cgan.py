"""The conditional GAN: per-condition noise modulation, an auxiliary class discriminator, a projection
critic, learnable sparsity and label mixing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import torch
from torch import nn
from torch.nn import functional as F

from ..nn.blocks import MLP, ConditionalNoise, ProjectionDiscriminator
from ..train.adversarial import TrainSettings, train_adversarial
from ..train.losses import get_loss
from .base import SyntheticCellModel, register


class ConditionalGenerator(nn.Module):
    """z ~ N(0, I) → z' = mean[c] + z ⊙ dev[c] → MLP → relu (exact zeros) or identity.

    Returns ``(x, pre)``: the output and the pre-activation, from which the sparsity loss takes a
    gradient also where relu has none.
    """

    def __init__(
        self, n_genes: int, sizes: Sequence[int], z_dim: int, hidden: Sequence[int], nonnegative: bool
    ):
        super().__init__()
        self.z_dim = z_dim
        self.nonnegative = nonnegative
        self.noise = ConditionalNoise(sizes, z_dim)
        self.net = MLP(z_dim, hidden, n_genes, norm=True)

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor]):
        pre = self.net(self.noise(z, weights))
        return (F.relu(pre) if self.nonnegative else pre), pre


class ConditionClassifier(nn.Module):
    """Auxiliary classifier: one head of logits per condition key (no softmax before the loss)."""

    def __init__(self, n_genes: int, sizes: Sequence[int], hidden: Sequence[int], dropout: float = 0.1):
        super().__init__()
        *body, last = hidden
        self.body = nn.Sequential(MLP(n_genes, body, last, dropout=dropout), nn.LeakyReLU(0.2))
        self.heads = nn.ModuleList([nn.Linear(last, n) for n in sizes])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.body(x)
        return [head(h) for head in self.heads]


_TRAIN_KEYS = {f.name for f in fields(TrainSettings)} - {"extra"}


@register
class CGAN(SyntheticCellModel):
    """Conditional GAN: cell-type (and covariate) conditioned generator with auxiliary classifier."""

    name = "cgan"
    default_params = {
        "z_dim": 64,
        "g_hidden": (256, 512, 1024),
        "d_hidden": (1024, 512, 256),
        "c_hidden": (256, 128),
        "loss": "bce",
        "label_smoothing": 0.9,
        "d_dropout": 0.1,
        **{f.name: f.default for f in fields(TrainSettings) if f.name in _TRAIN_KEYS and f.name != "extra"},
    }

    def _build(self, sizes, n_genes):
        p = self.params
        nonneg = True if self.info is None else bool(self.info["preprocessing"]["nonnegative"])
        return {
            "generator": ConditionalGenerator(n_genes, sizes, p["z_dim"], p["g_hidden"], nonneg),
            "discriminator": ProjectionDiscriminator(n_genes, sizes, p["d_hidden"], dropout=p["d_dropout"]),
            "classifier": ConditionClassifier(n_genes, sizes, p["c_hidden"]),
        }

    def _loss(self):
        p = self.params
        if p["loss"] == "bce":
            return get_loss("bce", real_label=p["label_smoothing"])
        return get_loss(p["loss"])

    def _settings(self) -> TrainSettings:
        kw = {k: self.params[k] for k in _TRAIN_KEYS}
        kw["betas"] = tuple(kw["betas"])
        if self.params["loss"] == "wgan-gp" and kw["betas"] == TrainSettings.betas:
            kw["betas"] = (0.0, 0.9)
        return TrainSettings(**kw)

    def _fit(self, data, *, device, seed, progress):
        result = train_adversarial(
            self.modules["generator"],
            self.modules["discriminator"],
            self.modules["classifier"],
            data,
            self._loss(),
            self._settings(),
            device=device,
            seed=seed,
            progress=progress,
            checkpoint=self._checkpoint_callback(),
        )
        self.modules["generator"].load_state_dict(result.generator_state)
        self.history = result.history
        self.fit_record = {"stopped_because": result.stopped_because, "best_val_mmd": result.best_val_mmd}
