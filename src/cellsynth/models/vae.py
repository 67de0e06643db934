"""Conditional variational autoencoders: ``vae`` (Gaussian decoder) and ``nbvae`` (scVI-style counts).

Both encode a cell's training values with its conditions (one-hot cell type and covariates) into a
latent ``z`` and decode ``z`` with the conditions again; both train in the one likelihood plan
(:class:`~cellsynth.train.likelihood.LikelihoodPlan`). Sampling draws ``z ~ N(0, I)`` for each requested
condition; label mixing gives the decoder soft one-hot weights, and per-type parameters (noise scale,
dispersion) are mixed geometrically by the same weights.

- ``vae``: a Gaussian likelihood on the training representation (log1p of counts normalised to 1e4 for
  count input) with a learned standard deviation per gene (or per type and gene). A sample is the
  decoder mean plus that Gaussian noise; for count input the base class then draws Poisson counts at a
  real library size of the type. Any representation can be modelled.
- ``nbvae``: counts ~ NB(library · ρ, θ) (or zero-inflated), ρ a softmax profile over the training genes
  from the decoder, the library the cell's observed total count, θ per (type, gene) or per gene
  (:mod:`cellsynth.models.nbvae`). The encoder sees the normalised log1p values: the library size is
  observed, so the latent need not encode it. Count input only: other input raises
  :class:`~cellsynth.errors.InputError` naming the ``vae`` for log-normalised or scaled data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..data.preprocess import expand_genes, normalize_log1p
from ..data.stats import label_dispersion, label_mean_profile, moments_by_label
from ..errors import InputError
from ..nn.blocks import MLP, one_hot_conditions
from ..params import Param, ParamSpec
from ..train.likelihood import LikelihoodPlan, LikelihoodSettings
from ..train.optim import KEEP, LR_SCHEDULES, PATIENCE_HELP, TOLERANCE_HELP
from ..train.validation import LIKELIHOOD_VAL_METRICS
from .model import SyntheticCellModel
from .nbvae import EXPECTED_COUNTS, LOG_THETA_RANGE, PROFILE_VALUES, count_nll, draw_nb
from .registry import register

_LOG_2PI = float(np.log(2 * np.pi))
_BLOCK_ROWS = 2048  # cells per block of the sampling draws (bounds the dense float64 work arrays)
_ENCODE_ROWS = 4096  # cells encoded at a time


# ---------------------------------------------------------------------- networks
def weighted_rows(weights: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``weights @ table`` in ``table``'s precision under any autocast: per-(type, gene) tables (the types'
    log-profile offsets, log-dispersions) enter the likelihood's log-gamma and log terms, whose differences
    bf16 would round away (docs/benchmarks.md, "A training step of the default model")."""
    with torch.autocast(device_type=table.device.type, enabled=False):
        return weights.to(table.dtype) @ table


class ConditionalVAENet(nn.Module):
    """Encoder ``q(z | x, c)`` and the decoder's body ``h(z, c)``; subclasses add the likelihood.

    ``forward(batch, gen)`` returns the per-cell loss terms of
    :class:`~cellsynth.train.likelihood.LikelihoodPlan`; ``generate(z, weights)`` the values a sample is
    drawn from.
    """

    def __init__(self, n_genes: int, sizes: Sequence[int], z_dim: int, hidden: Sequence[int], dropout: float):
        super().__init__()
        self.z_dim = z_dim
        n_cond = int(sum(sizes))
        back = list(hidden)[::-1]
        self.encoder = MLP(n_genes + n_cond, hidden, 2 * z_dim, norm=True, dropout=dropout, wide_input=True)
        self.decoder = nn.Sequential(
            MLP(z_dim + n_cond, back[:-1], back[-1], norm=True), nn.LayerNorm(back[-1]), nn.LeakyReLU(0.2)
        )
        self.width = back[-1]
        # per-type output offset (on the head's scale), started at each type's mean: the networks learn
        # the variation of cells around their type instead of first searching for each type's profile
        self.offset = nn.Parameter(torch.zeros(sizes[0], n_genes))

    def head_output(self, head: nn.Linear, h: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """``head(h)`` plus the cells' type offset (soft weights: the weighted offsets), in float32."""
        return head(h).float() + weighted_rows(weights[0], self.offset.float())

    @torch.no_grad()
    def init_offset(self, head: nn.Linear, offset: np.ndarray, network_scale: float = 0.1) -> None:
        """Start the type offsets at ``offset`` (labels × genes), the head's own output scaled down."""
        self.offset.copy_(torch.from_numpy(np.asarray(offset, dtype=np.float32)))
        head.weight.mul_(network_scale)
        head.bias.zero_()

    def decode(self, z: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.decoder(torch.cat([z, *(w.to(z.dtype) for w in weights)], dim=1))

    def forward(self, batch: dict, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        weights = batch["weights"]
        stats = self.encoder(torch.cat([batch["x"], *weights], dim=1)).float()
        mean, log_var = stats[:, : self.z_dim], stats[:, self.z_dim :].clamp(-12.0, 8.0)
        eps = torch.randn(mean.shape, generator=gen, device=mean.device, dtype=mean.dtype)
        z = mean + torch.exp(0.5 * log_var) * eps
        kl = 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var).sum(1)
        return {"recon": self.nll(self.decode(z, weights), batch), "kl": kl}

    def nll(self, h: torch.Tensor, batch: dict) -> torch.Tensor:
        """Per-cell negative log-likelihood of the batch given the decoder's features ``h``."""
        raise NotImplementedError

    def draw_cells(self, weights, library, scale, gen: torch.Generator, rng: np.random.Generator):
        """Cells drawn from the prior with conditions ``weights``, in the training representation (count
        models: at the given library sizes over the training genes, normalised by ``scale``)."""
        raise NotImplementedError

    def prior_draw(self, weights: Sequence[torch.Tensor], gen: torch.Generator) -> torch.Tensor:
        """The decoder's features for one ``z ~ N(0, I)`` per cell."""
        n = len(weights[0])
        z = torch.randn(n, self.z_dim, generator=gen, device=weights[0].device)
        return self.decode(z, weights)

    @staticmethod
    def per_cell(table: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """A per-(type, gene) table (or one row per gene) for each cell: ``weights[0] @ table``."""
        if table.shape[0] == 1:
            return table.expand(len(weights[0]), -1)
        return weighted_rows(weights[0], table)


class GaussianVAENet(ConditionalVAENet):
    """Decoder mean per gene, a learned log standard deviation per gene (or per type and gene)."""

    def __init__(self, n_genes, sizes, z_dim, hidden, dropout, per_label: bool):
        super().__init__(n_genes, sizes, z_dim, hidden, dropout)
        self.mean = nn.Linear(self.width, n_genes)
        self.log_sd = nn.Parameter(torch.zeros(sizes[0] if per_label else 1, n_genes))

    def nll(self, h, batch):
        log_sd = self.per_cell(self.log_sd, batch["weights"]).clamp(-7.0, 5.0)
        resid = (batch["x"] - self.head_output(self.mean, h, batch["weights"])) * torch.exp(-log_sd)
        return (0.5 * resid.square() + log_sd + 0.5 * _LOG_2PI).sum(1)

    def generate(self, z: torch.Tensor, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head_output(self.mean, self.decode(z, weights), weights)

    @torch.no_grad()
    def draw_cells(self, weights, library, scale, gen, rng):
        mean = self.head_output(self.mean, self.prior_draw(weights, gen), weights)
        sd = torch.exp(self.per_cell(self.log_sd.float(), weights).clamp(-7.0, 5.0))
        return mean + sd * torch.randn(mean.shape, generator=gen, device=mean.device)

    @torch.no_grad()
    def init_from(self, mean: np.ndarray, var: np.ndarray, label_freq: np.ndarray) -> None:
        """Start at the types' means (labels × genes) and standard deviations (per gene: the cells'
        average variance)."""
        self.init_offset(self.mean, mean)
        var = np.asarray(var, dtype=np.float64)
        if self.log_sd.shape[0] == 1:
            var = (label_freq / label_freq.sum()) @ var
        log_sd = 0.5 * np.log(np.maximum(np.atleast_2d(var), 1e-4))
        self.log_sd.copy_(torch.from_numpy(log_sd))


class NBVAENet(ConditionalVAENet):
    """Decoder profile ρ (softmax over genes), θ per (type, gene) or per gene, optional dropout logits."""

    def __init__(self, n_genes, sizes, z_dim, hidden, dropout, per_label: bool, zero_inflated: bool):
        super().__init__(n_genes, sizes, z_dim, hidden, dropout)
        self.profile = nn.Linear(self.width, n_genes)
        self.log_theta = nn.Parameter(torch.zeros(sizes[0] if per_label else 1, n_genes))
        self.dropout_logits = nn.Linear(self.width, n_genes) if zero_inflated else None

    def theta(self, weights: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.exp(self.per_cell(self.log_theta.float(), weights).clamp(*LOG_THETA_RANGE))

    def nll(self, h, batch):
        counts = batch["counts"]
        mu = EXPECTED_COUNTS(self.head_output(self.profile, h, batch["weights"]), batch["library"])
        theta = self.theta(batch["weights"])
        zi_logits = None if self.dropout_logits is None else self.dropout_logits(h).float()
        return count_nll(counts, mu, theta, zi_logits)

    @torch.no_grad()
    def draw_cells(self, weights, library, scale, gen, rng):
        h = self.prior_draw(weights, gen)
        rho = torch.softmax(self.head_output(self.profile, h, weights), 1).double()
        mu = (library.double()[:, None] * rho).cpu().numpy()
        theta = self.theta(weights).double().cpu().numpy()
        dropout = None
        if self.dropout_logits is not None:
            dropout = torch.sigmoid(self.dropout_logits(h).double()).cpu().numpy()
        counts = torch.from_numpy(draw_nb(mu, theta, rng, dropout)).to(library.device)
        return torch.log1p(counts * scale.float()[:, None])

    def profile_values(self, h: torch.Tensor, weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``(log1p(ρ · 1e4), ρ)`` for the decoder's features ``h``: the expected profile ρ (softmax over
        genes) in the training representation, and ρ itself."""
        return PROFILE_VALUES(self.head_output(self.profile, h, weights))

    def generate(self, z, weights):
        """``log1p(ρ · 1e4)`` (the expected profile in the training representation), followed by the
        dropout logits when zero-inflated: cells × genes (× 2)."""
        h = self.decode(z, weights)
        values = self.profile_values(h, weights)[0]
        if self.dropout_logits is None:
            return values
        return torch.cat([values, self.dropout_logits(h).float()], dim=1)

    @torch.no_grad()
    def init_theta(self, phi: np.ndarray, label_freq: np.ndarray) -> None:
        """Start θ at 1/φ, the method-of-moments over-dispersion ``phi`` (labels × genes) of the data;
        one row per gene: the cells' average of log θ."""
        log_theta = -np.log(phi.astype(np.float64))
        if self.log_theta.shape[0] == 1:
            log_theta = (label_freq / label_freq.sum()) @ log_theta
        self.log_theta.copy_(torch.from_numpy(np.atleast_2d(log_theta)).clamp(*LOG_THETA_RANGE))


@torch.no_grad()
def encode_means(net: ConditionalVAENet, data, rows: np.ndarray | None = None) -> np.ndarray:
    """The posterior means of ``data``'s cells (cells × ``z_dim``; ``rows`` only, where given) under
    ``net``'s encoder."""
    was = net.training
    net.eval()
    sizes = [c.n for c in data.conditions]
    codes = torch.from_numpy(data.codes)
    every = np.arange(data.n_cells) if rows is None else np.asarray(rows)
    out = []
    for start in range(0, len(every), _ENCODE_ROWS):
        rows = every[start : start + _ENCODE_ROWS]
        x = torch.from_numpy(data.dense_rows(rows))
        w = one_hot_conditions(codes[rows], sizes)
        stats = net.encoder(torch.cat([x, *w], dim=1)).float()
        out.append(stats[:, : net.z_dim].numpy())
    net.train(was)
    return np.concatenate(out)


# ---------------------------------------------------------------------- parameters
_S = LikelihoodSettings()
_WIDTH = dict(ge=1, le=65536)
_LAYERS = dict(length=(1, 16), **_WIDTH)
_PER = ("gene", "gene-label")

#: hyperparameters both VAEs share: networks, the KL term and the likelihood plan's training settings
PARAMS = ParamSpec(
    [
        Param("z_dim", 32, "int", "latent dimensions", **_WIDTH),
        Param("hidden", (256, 256), "ints", "encoder widths (decoder: reversed)", **_LAYERS),
        Param("dropout", 0.1, "float", "dropout in the encoder", ge=0, lt=1),
        Param("kl_weight", _S.kl_weight, "float", "weight of the KL term after warm-up", ge=0),
        Param("kl_warmup_steps", 400, "int", "steps over which the KL weight rises from 0", ge=0),
        Param("epochs", _S.epochs, "int", "most passes over the training cells", ge=1),
        Param("max_minutes", _S.max_minutes, "float", "time budget (null: none)", gt=0, optional=True),
        Param("batch_size", _S.batch_size, "int", "cells per minibatch", ge=1, le=1_000_000),
        Param("lr", _S.lr, "float", "Adam learning rate", gt=0),
        Param(
            "lr_schedule",
            _S.lr_schedule,
            "str",
            "rate over the run: constant | cosine (to 10%)",
            choices=LR_SCHEDULES,
        ),
        Param("grad_clip", _S.grad_clip, "float", "gradient norm clip (null: none)", gt=0, optional=True),
        Param("ema_decay", _S.ema_decay, "float", "weights' EMA (null, 0: none)", ge=0, lt=1, optional=True),
        Param("balance", _S.balance, "float", "minibatch type balance (0: as drawn, 1: equal)", ge=0, le=1),
        Param("mixed_precision", _S.mixed_precision, "bool", "bf16 autocast (null: auto)", optional=True),
        Param("val_fraction", _S.val_fraction, "float", "share of cells held out", ge=0, lt=1),
        Param("val_min_cells", _S.val_min_cells, "int", "held-out cells wanted (≤ 25% of cells)", ge=0),
        Param("val_every_steps", _S.val_every_steps, "int", "steps between validations", ge=1),
        Param("patience", _S.patience, "int", PATIENCE_HELP, ge=0),
        Param("val_tolerance", _S.val_tolerance, "float", TOLERANCE_HELP, ge=0),
        Param(
            "val_metric",
            _S.val_metric,
            "str",
            "validation score: nelbo | c2st (held-out forest AUC)",
            choices=LIKELIHOOD_VAL_METRICS,
        ),
        Param("keep", _S.keep, "str", "state kept: best (validated) | last (no early stop)", choices=KEEP),
        Param("checkpoint_minutes", _S.checkpoint_minutes, "float", "minutes between checkpoints", ge=0),
        Param("max_rollbacks", _S.max_rollbacks, "int", "divergence: restores of the last good state", ge=0),
        Param("rollback_lr_factor", _S.rollback_lr_factor, "float", "divergence: lr × this", gt=0, le=1),
        Param("divergence_limit", _S.divergence_limit, "float", "a loss beyond this diverged", gt=0),
    ]
)
_TRAIN_KEYS = {f.name for f in fields(LikelihoodSettings) if f.name in PARAMS}


# ---------------------------------------------------------------------- models
class _ConditionalVAE(SyntheticCellModel):
    """What both VAEs share: training in the likelihood plan, sampling through the decoder."""

    param_spec = PARAMS
    #: a model built on this one sets it to score the states to keep (LikelihoodPlan's ``scorer``)
    _scorer = None
    #: ... and the score deciding between states tied on the scorer's (LikelihoodPlan's ``tie_key``)
    _tie_key = None
    #: a model built on this one sets it to follow this one's states as its own (the plan's ``monitor``,
    #: instead of one that hands the user a copy of this model)
    _outer_monitor = None

    def _settings(self) -> LikelihoodSettings:
        return LikelihoodSettings(**{k: self.params[k] for k in _TRAIN_KEYS})

    def _prepare(self, data) -> None:
        """Checks of the data and initialisation from its statistics, before training."""

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None):
        self._prepare(data)
        plan = LikelihoodPlan(
            self.modules["generator"],
            self._settings(),
            scorer=self._scorer,
            tie_key=self._tie_key,
            device=device,
            seed=seed,
            progress=progress,
            checkpoint=checkpoint,
            monitor=self._outer_monitor or self._plan_monitor(),
            deadline=self._deadline,
        )
        result = plan.fit(data, resume=resume)
        self.modules["generator"].load_state_dict(result.generator_state)
        self.history = result.history
        # best_val: the best validation score (held-out negative ELBO per cell, or the forest's AUC)
        self.fit_record = {
            "stopped_because": result.stopped_because,
            "best_val": result.best_val_mmd,
            "val_metric": self.params["val_metric"],
            "precision": plan.fabric.strategy.precision.precision,
        }
        if result.rollbacks:
            self.fit_record["rollbacks"] = result.rollbacks

    @torch.no_grad()
    def _generate(self, weights: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        return self.modules["generator"].generate(z, weights)

    def _per_cell(self, table: torch.Tensor, label_codes, label_w, sl: slice) -> np.ndarray:
        """float64 rows of a per-(type, gene) table (or its one row) for the cells ``sl``."""
        t = table.detach().double().cpu().numpy()
        if t.shape[0] == 1:
            return t
        if label_w is None:
            return t[label_codes[sl]]
        return np.asarray(label_w[sl], dtype=np.float64) @ t


@register
class VAE(_ConditionalVAE):
    """Conditional VAE with a Gaussian decoder on the training representation (any input)."""

    name = "vae"
    param_spec = PARAMS.extend(
        Param("noise", "gene-label", "str", "decoder standard deviation per", choices=_PER),
        Param("sample_noise", True, "bool", "add the decoder's Gaussian noise to samples"),
    )

    def _build(self, sizes, n_genes):
        p = self.params
        net = GaussianVAENet(
            n_genes, sizes, p["z_dim"], p["hidden"], p["dropout"], per_label=p["noise"] == "gene-label"
        )
        return {"generator": net}

    def _prepare(self, data) -> None:
        mean, var = moments_by_label(data, np.arange(data.n_cells))
        freq = np.bincount(data.label.codes, minlength=data.label.n).astype(np.float64)
        self.modules["generator"].init_from(mean, var, freq)

    def _to_output(self, values, label_codes, label_w, rng):
        if self.params["sample_noise"]:
            log_sd = self.modules["generator"].log_sd
            for start in range(0, len(values), _BLOCK_ROWS):
                sl = slice(start, start + _BLOCK_ROWS)
                sd = np.exp(np.clip(self._per_cell(log_sd, label_codes, label_w, sl), -7.0, 5.0))
                values[sl] += (sd * rng.standard_normal(values[sl].shape)).astype(values.dtype)
        return super()._to_output(values, label_codes, label_w, rng)


@register
class NBVAE(_ConditionalVAE):
    """scVI-style conditional count VAE: negative binomial (or zero-inflated) at the observed library."""

    name = "nbvae"
    # a third of the vae's learning rate: the default sweep across the datasets (docs/benchmarks.md,
    # "Each model's defaults") found the nbvae better with it on pbmc68k and no worse elsewhere
    param_spec = PARAMS.with_defaults(lr=_S.lr / 3).extend(
        Param("dispersion", "gene-label", "str", "inverse dispersion θ per", choices=_PER),
        Param("zero_inflated", False, "bool", "zero-inflated negative binomial"),
    )

    def _build(self, sizes, n_genes):
        p = self.params
        net = NBVAENet(
            n_genes,
            sizes,
            p["z_dim"],
            p["hidden"],
            p["dropout"],
            per_label=p["dispersion"] == "gene-label",
            zero_inflated=p["zero_inflated"],
        )
        return {"generator": net}

    def _prepare(self, data) -> None:
        if data.library is None:
            self.info = None  # nothing was fitted
            representation = data.preprocessing.representation
            raise InputError(
                f"model nbvae needs raw counts but the data are {representation}; give the counts "
                "(--layer/layer= the counts layer), or fit model vae on log-normalised or scaled data"
            )
        freq = np.bincount(data.label.codes, minlength=data.label.n).astype(np.float64)
        net = self.modules["generator"]
        net.init_theta(label_dispersion(data), freq)
        # log of each type's mean profile (per 1e4 counts; softmax ignores the scale)
        net.init_offset(net.profile, np.log(np.expm1(label_mean_profile(data).astype(np.float64)) + 1e-3))

    def _to_output(self, values, label_codes, label_w, rng):
        """Counts ~ NB(library · ρ, θ) (ZINB when zero-inflated) at library sizes drawn from the
        training cells of each cell's type (mixtures: of the dominant type); ``X`` integer counts over
        the output genes, ``layers["log1p"]`` their normalised log1p."""
        info = self.info
        pre = info["preprocessing"]
        cols = np.asarray(pre["train_genes"], dtype=np.int64)
        n_genes, n_out = len(cols), len(pre["output_genes"])
        labels = info["categories"][info["label_key"]]
        dominant = label_codes if label_w is None else label_w.argmax(1)
        lib = np.empty(len(values))
        for c in np.unique(dominant):
            idx = dominant == c
            lib[idx] = rng.choice(np.asarray(pre["library_sizes"][labels[c]]), size=int(idx.sum()))
        net = self.modules["generator"]
        blocks = []
        for start in range(0, len(values), _BLOCK_ROWS):
            sl = slice(start, start + _BLOCK_ROWS)
            rho = np.expm1(values[sl, :n_genes].astype(np.float64))
            rho /= np.maximum(rho.sum(1, keepdims=True), 1e-300)
            log_theta = self._per_cell(net.log_theta, label_codes, label_w, sl)
            theta = np.exp(np.clip(log_theta, *LOG_THETA_RANGE))
            dropout = None
            if net.dropout_logits is not None:
                dropout = 1.0 / (1.0 + np.exp(-values[sl, n_genes:].astype(np.float64)))
            counts = draw_nb(rho * lib[sl, None], theta, rng, dropout)
            blocks.append(expand_genes(counts, cols, n_out))
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_out), dtype=np.float32)
        return X, normalize_log1p(X, target_sum=pre["target_sum"])


__all__ = ["NBVAE", "VAE", "GaussianVAENet", "NBVAENet"]
