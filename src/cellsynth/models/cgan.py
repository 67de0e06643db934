"""The conditional GAN: per-condition noise modulation, an auxiliary class discriminator, a projection
critic, learnable sparsity and label mixing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import COUNT_NOISE
from ..data.stats import label_dispersion, label_mean_profile, within_type_axes
from ..errors import RequestError
from ..nn.blocks import MLP, ConditionalNoise, InputProjection, Projected, ProjectionDiscriminator
from ..params import Param, ParamSpec
from ..train import LOSSES
from ..train.adversarial import AdversarialPlan, AdversarialSettings
from ..train.losses import get_loss
from ..train.optim import KEEP, LR_SCHEDULES, PATIENCE_HELP, TOLERANCE_HELP
from ..train.validation import VAL_METRICS
from .labeller import predict_labels, train_labeller
from .model import SyntheticCellModel
from .registry import register


class ConditionalGenerator(nn.Module):
    """z ~ N(0, I) → z' = mean[c] + z ⊙ dev[c] → MLP + offset[c] → relu (exact zeros) or identity.

    ``offset`` is a learned per-condition, per-gene output bias (summed over condition keys like the
    noise embeddings). :meth:`init_offset` starts the label's offset at each type's mean profile, so the
    network learns the variation of cells around their type from the first step instead of first
    spending thousands of steps finding each type's mean expression.

    Returns ``(x, pre)``: the output and the pre-activation, from which the sparsity loss takes a
    gradient also where relu has none.
    """

    def __init__(
        self,
        n_genes: int,
        sizes: Sequence[int],
        z_dim: int,
        hidden: Sequence[int],
        nonnegative: bool,
        dispersion: bool = False,
    ):
        super().__init__()
        self.z_dim = z_dim
        self.nonnegative = nonnegative
        self.noise = ConditionalNoise(sizes, z_dim)
        self.net = MLP(z_dim, hidden, n_genes, norm=True)
        self.offset = nn.ParameterList([nn.Parameter(torch.zeros(n, n_genes)) for n in sizes])
        # per-(label, gene) log over-dispersion of the count draw (count_noise="pln"; see
        # data.preprocess.CountObservation)
        self.log_dispersion = nn.Parameter(torch.full((sizes[0], n_genes), -2.0)) if dispersion else None

    def marginal_parameters(self) -> list[nn.Parameter]:
        """Per-(condition, gene) parameters: output offsets and the count draw's dispersion."""
        extra = [] if self.log_dispersion is None else [self.log_dispersion]
        return [*self.offset, *extra]

    def dispersion(self, weights: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """cells × genes over-dispersion for cells with conditions ``weights`` (mixtures: geometric)."""
        if self.log_dispersion is None:
            return None
        return torch.exp(weights[0].float() @ self.log_dispersion.float())

    @torch.no_grad()
    def init_dispersion(self, phi: torch.Tensor) -> None:
        if self.log_dispersion is not None:
            self.log_dispersion.copy_(torch.log(phi.clamp(1e-3, 1e2)))

    @torch.no_grad()
    def init_offset(self, label_mean: torch.Tensor, network_scale: float = 0.1) -> None:
        """Start at ``label_mean`` (labels × genes) with the network's own output scaled down."""
        self.offset[0].copy_(label_mean)
        last = self.net[-1]
        last.weight.mul_(network_scale)
        last.bias.zero_()

    @torch.no_grad()
    def init_variation(
        self,
        components: torch.Tensor,
        sd: torch.Tensor,
        label_freq: torch.Tensor,
        gen: torch.Generator | None = None,
        n_draw: int = 4096,
    ) -> None:
        """Start the network's output variation on the real cells' within-type axes.

        ``components`` (k × genes, orthonormal rows) and ``sd`` (k) are the principal axes and standard
        deviations of the training cells around their type means. The last layer is set so that, for
        noise drawn as in training (labels at ``label_freq``), each type's output varies along
        ``components`` with deviation ``sd`` (the hidden features whitened within types), and the
        type's mean output is unchanged (absorbed in the label's offset). Training then refines a
        generator that starts as a per-type Gaussian on the real axes instead of a point at the type
        mean.
        """
        last = self.net[-1]
        labels = torch.multinomial(label_freq.float(), n_draw, replacement=True, generator=gen)
        w = F.one_hot(labels, len(label_freq)).float()
        weights = [w] + [torch.zeros(n_draw, o.shape[0]) for o in list(self.offset)[1:]]
        h = self.noise(torch.randn(n_draw, self.z_dim, generator=gen), weights)
        for layer in list(self.net)[:-1]:
            h = layer(h)
        count = w.sum(0).clamp_min(1)
        h_mean = (w.T @ h) / count[:, None]  # labels × hidden
        hc = h - h_mean[labels]
        _, s, vh = torch.linalg.svd(hc, full_matrices=False)
        k = min(len(sd), int((s > 1e-6 * s[0]).sum()))
        whiten = vh[:k] / (s[:k, None] / np.sqrt(n_draw))  # k × hidden: unit-variance coordinates
        weight = (components[:k].T * sd[:k]) @ whiten  # genes × hidden
        last.weight.copy_(weight)
        last.bias.zero_()
        self.offset[0].sub_(h_mean @ weight.T)

    def forward(self, z: torch.Tensor, weights: Sequence[torch.Tensor]):
        pre = self.net(self.noise(z, weights))
        pre = pre + sum(w.to(pre.dtype) @ o.to(pre.dtype) for w, o in zip(weights, self.offset, strict=True))
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


_S = AdversarialSettings()  # the training loop's defaults, where the cgan keeps them
#: the generator's input: "pca", z_dim normal noise (seeded models: seeds as standardised principal
#: coordinates); "genes", uniform noise in [−1, 1] of gene dimension (seeds as scaled expression), the
#: GARAGE paper's
_SPACES = ("pca", "genes")
_WIDTH = dict(ge=1, le=65536)  # a layer's width, or a count of noise dimensions or components
_LAYERS = dict(length=(1, 16), **_WIDTH)
_STEPS = dict(ge=1, le=100, optional=True)

#: The cgan's hyperparameters (``cellsynth models --params cgan``). The defaults of the learning rates,
#: the count draw, packing, the moment match and ``init_variation`` were chosen by measurement
#: (docs/benchmarks.md, "Quality per dataset"; what else was tried: docs/design-notes.md); the other
#: training settings are the training plan's defaults (``AdversarialSettings``).
PARAMS = ParamSpec(
    [
        # networks
        Param("z_dim", 64, "int", "noise dimensions of the generator's input", **_WIDTH),
        Param("g_hidden", (256, 512), "ints", "widths of the generator's hidden layers", **_LAYERS),
        Param("d_hidden", (256, 128), "ints", "widths of the critic's hidden layers", **_LAYERS),
        Param("c_hidden", (256, 128), "ints", "widths of the auxiliary classifier's layers", **_LAYERS),
        Param("loss", "bce", "str", "adversarial loss", choices=tuple(LOSSES)),
        Param("label_smoothing", 0.9, "float", "bce: the target of real cells (1: none)", gt=0, le=1),
        Param("d_dropout", 0.1, "float", "dropout in the critic", ge=0, lt=1),
        Param("critic_space", "pca", "str", "what the critic and classifier see", choices=("genes", "pca")),
        Param("critic_components", 128, "int", "critic_space=pca: principal components seen", **_WIDTH),
        Param("init_variation", 64, "int", "within-type axes the generator starts on (0: off)", ge=0),
        # optimisation
        Param("epochs", _S.epochs, "int", "most passes over the training cells", ge=1),
        Param("max_minutes", _S.max_minutes, "float", "time budget (null: none)", gt=0, optional=True),
        Param("batch_size", _S.batch_size, "int", "cells per minibatch", ge=1, le=1_000_000),
        Param("lr_g", 1e-4, "float", "generator learning rate", gt=0),
        Param("lr_d", 1e-4, "float", "critic and classifier learning rate", gt=0),
        Param(
            "lr_schedule",
            _S.lr_schedule,
            "str",
            "rates over the run: constant | cosine (to 10%)",
            choices=LR_SCHEDULES,
        ),
        Param("lr_marginal", 5e-3, "float", "per-(type, gene) parameters (null: lr_g)", gt=0, optional=True),
        Param("betas", _S.betas, "floats", "Adam's betas (wgan-gp: (0, 0.9))", length=(2, 2), ge=0, lt=1),
        Param("optimizer", _S.optimizer, "str", "optimiser of every network", choices=("adam", "rmsprop")),
        Param("g_steps", _S.g_steps, "int", "generator steps per critic step", ge=1, le=100),
        Param(
            "critic_warmup", _S.critic_warmup, "int", "critic steps alone before the generator's first", ge=0
        ),
        Param("grad_clip", _S.grad_clip, "float", "gradient norm clip (null: none)", gt=0, optional=True),
        Param("ema_decay", _S.ema_decay, "float", "generator EMA (null, 0: none)", ge=0, lt=1, optional=True),
        Param("balance", _S.balance, "float", "minibatch type balance (0: as drawn, 1: equal)", ge=0, le=1),
        Param("mixed_precision", _S.mixed_precision, "bool", "bf16 autocast (null: auto)", optional=True),
        # loss terms
        Param("class_weight", _S.class_weight, "float", "auxiliary classifier's loss weight", ge=0),
        Param("sparsity_weight", _S.sparsity_weight, "float", "zero-fraction match weight", ge=0),
        Param("sparsity_temperature", _S.sparsity_temperature, "float", "softness of the zero count", gt=0),
        Param("moment_weight", 6e-3, "float", "per-(type, gene) moment match weight, per gene", ge=0),
        Param("moment_decay", _S.moment_decay, "float", "running mean of generated moments", ge=0, lt=1),
        Param("mmd_weight", _S.mmd_weight, "float", "per-type MMD weight", ge=0),
        Param("r1_weight", _S.r1_weight, "float", "R1 gradient penalty on real cells (0: none)", ge=0),
        Param("pack", 2, "int", "PacGAN: cells of one type the critic judges together", ge=1, le=64),
        Param("mix_prob", _S.mix_prob, "float", "share of generated cells with mixed labels", ge=0, le=1),
        Param("conditional", _S.conditional, "bool", "networks see the type (false: a classifier labels)"),
        Param("input_space", "pca", "str", "input: z_dim normal (pca) | U(-1,1) per gene", choices=_SPACES),
        Param("d_steps", None, "int", "critic steps per generator step (null: the loss's)", **_STEPS),
        Param("shared_fakes", _S.shared_fakes, "bool", "one generated batch for both networks' steps"),
        Param("count_noise", "pln", "str", "count data: how counts are drawn", choices=COUNT_NOISE),
        # validation, stopping, checkpoints, divergence
        Param("val_fraction", _S.val_fraction, "float", "share of cells held out", ge=0, lt=1),
        Param("val_min_cells", _S.val_min_cells, "int", "held-out cells wanted (≤ 25% of cells)", ge=0),
        Param("val_every_steps", _S.val_every_steps, "int", "generator steps between validations", ge=1),
        Param(
            "val_metric",
            _S.val_metric,
            "str",
            "validation score: mmd | wmmd (whitened) | cmmd (type means set) | c2st (held-out forest) | "
            "c2st_train (training cells)",
            choices=VAL_METRICS,
        ),
        Param("validate_start", _S.validate_start, "bool", "score the starting state too (kept if best)"),
        Param("patience", _S.patience, "int", PATIENCE_HELP, ge=0),
        Param("val_tolerance", _S.val_tolerance, "float", TOLERANCE_HELP, ge=0),
        Param("keep", _S.keep, "str", "state kept: best (validated) | last (no early stop)", choices=KEEP),
        Param("checkpoint_minutes", _S.checkpoint_minutes, "float", "minutes between checkpoints", ge=0),
        Param("max_rollbacks", _S.max_rollbacks, "int", "divergence: restores of the last good state", ge=0),
        Param("rollback_lr_factor", _S.rollback_lr_factor, "float", "divergence: lr × this", gt=0, le=1),
        Param("divergence_limit", _S.divergence_limit, "float", "a loss beyond this diverged", gt=0),
    ]
)
_TRAIN_KEYS = {f.name for f in fields(AdversarialSettings) if f.name in PARAMS}


@register
class CGAN(SyntheticCellModel):
    """Conditional GAN: cell-type (and covariate) conditioned generator with auxiliary classifier."""

    name = "cgan"
    param_spec = PARAMS

    def _z_dim(self, n_genes: int) -> int:
        """Dimension of the generator's input: ``z_dim``, or the genes' (``input_space="genes"``)."""
        return n_genes if self.params["input_space"] == "genes" else int(self.params["z_dim"])

    @property
    def conditional(self) -> bool:
        return bool(self.params["conditional"])

    def _noise_fn(self):
        """``noise(n, generator, device)``: the generator's input noise (see ``input_space``)."""
        z_dim = self.modules["generator"].z_dim
        if self.params["input_space"] == "genes":

            def uniform(n, g, d):
                return torch.rand(n, z_dim, generator=g, device=d) * 2 - 1

            return uniform

        def normal(n, g, d):
            return torch.randn(n, z_dim, generator=g, device=d)

        return normal

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self._noise_fn()(n, gen, torch.device("cpu"))

    def _learns_dispersion(self) -> bool:
        """Poisson–log-normal count draws (``count_noise="pln"``) on count data."""
        info = self.info
        return (
            self.params["count_noise"] == "pln"
            and info is not None
            and info["preprocessing"]["representation"] == "counts"
        )

    def _critic_inputs(self, n_genes: int) -> int:
        if self.params["critic_space"] == "genes":
            return n_genes
        return int(self.params["critic_components"])

    def _build(self, sizes, n_genes):
        p = self.params
        nonneg = True if self.info is None else bool(self.info["preprocessing"]["nonnegative"])
        n_in = self._critic_inputs(n_genes)
        if self.info is not None and "critic_components" in self.info:
            n_in = int(self.info["critic_components"])  # capped by the training data
        pack = int(p["pack"])
        critic = ProjectionDiscriminator(pack * n_in, sizes, p["d_hidden"], dropout=p["d_dropout"])
        classifier = ConditionClassifier(n_in, sizes, p["c_hidden"]) if self._needs_classifier() else None
        if p["critic_space"] == "pca":
            critic = Projected(InputProjection(n_genes, n_in), critic)
            if classifier is not None:
                classifier = Projected(InputProjection(n_genes, n_in), classifier)
        modules = {
            "generator": ConditionalGenerator(
                n_genes,
                sizes,
                self._z_dim(n_genes),
                p["g_hidden"],
                nonneg,
                dispersion=self._learns_dispersion(),
            ),
            "discriminator": critic,
        }
        if classifier is not None:
            modules["classifier"] = classifier
        return modules

    def _needs_classifier(self) -> bool:
        """Whether the auxiliary classifier is built: when its loss counts, or to label the cells of an
        unconditional model."""
        return bool(self.params["class_weight"]) or not self.conditional

    def _prepare_critic(self, data, seed: int) -> None:
        """Fit the critic's input PCA on the training cells (``critic_space="pca"``)."""
        if self.params["critic_space"] != "pca":
            return
        mean, basis, _ = data.pca(int(self.params["critic_components"]), seed, coords=False)
        k = basis.shape[1]
        if k != self._critic_inputs(data.n_genes):  # fewer cells or genes than components: rebuild
            self.info["critic_components"] = k
            sizes = [c.n for c in data.conditions]
            fresh = self._build(sizes, data.n_genes)
            self.modules.update({n: m for n, m in fresh.items() if n in ("discriminator", "classifier")})
        for name in ("discriminator", "classifier"):
            if name in self.modules:
                self.modules[name].projection.set(torch.from_numpy(mean), torch.from_numpy(basis))

    def _loss(self):
        """The adversarial loss (:meth:`_adversarial_loss`) with ``d_steps`` critic steps when given."""
        loss = self._adversarial_loss()
        if self.params["d_steps"] is not None:
            loss.d_steps = int(self.params["d_steps"])
        return loss

    def _adversarial_loss(self):
        p = self.params
        return get_loss("bce", real_label=p["label_smoothing"]) if p["loss"] == "bce" else get_loss(p["loss"])

    def _settings(self) -> AdversarialSettings:
        kw = {k: self.params[k] for k in _TRAIN_KEYS}
        kw["betas"] = tuple(kw["betas"])
        if self.params["loss"] == "wgan-gp" and kw["betas"] == AdversarialSettings.betas:
            kw["betas"] = (0.0, 0.9)
        return AdversarialSettings(**kw)

    def _training_latent(self, data, *, device, seed, progress):
        """The training loop's ``latent_fn`` (None: the plan's normal noise); seeded models override this."""
        if self.params["input_space"] == "pca":
            return None
        noise = self._noise_fn()

        def latent_fn(weights, rows, g, d):
            return noise(len(rows), g, d), weights, rows

        return latent_fn

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None):
        latent_fn = self._training_latent(data, device=device, seed=seed, progress=progress)
        self._prepare_critic(data, seed)
        self._start_generator(data, device=device, seed=seed, progress=progress, resume=resume)
        plan = self._adversarial_plan(
            self.modules["generator"],
            latent_fn=latent_fn,
            device=device,
            seed=seed,
            progress=progress,
            checkpoint=checkpoint,
            monitor=self._plan_monitor(),
            deadline=self._deadline,
        )
        result = plan.fit(data, resume=resume)
        self.modules["generator"].load_state_dict(result.generator_state)
        self.history = result.history
        self.fit_record = {
            "stopped_because": result.stopped_because,
            "best_val": result.best_val_mmd,  # the best validation score: val_metric's
            "val_metric": self.params["val_metric"],
            "precision": plan.fabric.strategy.precision.precision,
        }
        if result.rollbacks:
            self.fit_record["rollbacks"] = result.rollbacks
        if not self.conditional:
            self.fit_record["labeller_accuracy"] = train_labeller(self.modules["classifier"], data, seed)
        self._finish(plan, data, seed)

    def _finish(self, plan: AdversarialPlan, data, seed: int) -> None:
        """Called once the kept state is loaded and the fit recorded (nbgan: mean calibration)."""

    def _adversarial_plan(self, generator: nn.Module, **kwargs) -> AdversarialPlan:
        """The adversarial plan training ``generator`` against this model's critic and classifier, with
        its loss and settings (``kwargs``: the plan's device, seed, progress, callbacks)."""
        return AdversarialPlan(
            generator,
            self.modules["discriminator"],
            self.modules.get("classifier"),
            self._loss(),
            self._settings(),
            **kwargs,
        )

    def _start_generator(self, data, *, device, seed, progress, resume) -> None:  # noqa: ARG002
        """The generator's starting point, from the data's statistics: each type's mean profile, the
        within-type axes (``init_variation``) and the count draw's dispersion."""
        self.modules["generator"].init_offset(torch.from_numpy(label_mean_profile(data)))
        k = int(self.params["init_variation"])
        if k:
            comps, sd = within_type_axes(data, k, seed)
            freq = np.bincount(data.label.codes, minlength=data.label.n).astype(np.float32)
            self.modules["generator"].init_variation(
                torch.from_numpy(comps),
                torch.from_numpy(sd),
                torch.from_numpy(freq),
                torch.Generator().manual_seed(seed),
            )
        if self._learns_dispersion():
            self.modules["generator"].init_dispersion(torch.from_numpy(label_dispersion(data)))

    # ------------------------------------------------------------------ sampling
    def sample(self, n=None, *, per_type=None, mix=None, **kw):
        if not self.conditional and (per_type or mix or kw.get("proportions", "real") != "real"):
            raise RequestError(
                f"this {self.name} model is unconditional (conditional=False): it cannot generate chosen "
                "cell types; sample --n cells and select by the predicted obs labels, or fit with "
                "conditional=True"
            )
        return super().sample(n, per_type=per_type, mix=mix, **kw)

    def _as_given(self, weights: list[torch.Tensor]) -> list[torch.Tensor]:
        """The conditions the networks see: an unconditional model's see the training label frequencies."""
        if self.conditional:
            return weights
        return [self._label_prior().expand(len(weights[0]), -1), *weights[1:]]

    def _latent(self, weights, gen):
        return self._noise(len(weights[0]), gen), self._as_given(weights), None

    def _dispersion(self, label_codes, label_w):
        if self.conditional:
            return super()._dispersion(label_codes, label_w)
        n = len(label_codes) if label_w is None else len(label_w)  # as in training: the label frequencies
        return super()._dispersion(None, self._label_prior().expand(n, -1).numpy())

    def _label_prior(self) -> torch.Tensor:
        """The training label frequencies: what an unconditional model's networks see as the label."""
        counts = self._joint()[2]
        return torch.from_numpy((counts / counts.sum()).astype(np.float32))

    def _annotate(self, out, origins) -> None:
        if not self.conditional:
            predict_labels(out, self.modules["classifier"], self.info)
