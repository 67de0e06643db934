"""The adversarial training plan: every GAN in cellsynth trains here.

GANs differ in their networks, their :class:`~cellsynth.train.losses.AdversarialLoss` and the input
batch their generator gets (``latent_fn``: plain noise, or noise with seed cells mixed in). Per step:

1. **critic step** on a fresh real minibatch: the critic scores real cells against generated ones
   (with R1 or the WGAN gradient penalty), and the auxiliary classifier learns the real labels;
2. every ``d_steps`` critic steps (after ``critic_warmup`` critic-only steps), ``g_steps`` **generator
   steps**: the adversarial term + the classifier's cross-entropy against the requested (possibly
   mixed) condition + the zero-fraction match + the conditional MMD + the per-(type, gene) moment match
   (its gradient to each gene's own pre-activation: :func:`~cellsynth.train.objectives.per_gene_path`).

Generated cells are judged as they will be output: counts are drawn from the generated profile at a
real cell's library size and normalised again (:class:`~cellsynth.data.preprocess.CountObservation`).
Validation: :mod:`~cellsynth.train.validation` on held-out cells (the best EMA generator is kept); the
loop, stopping, checkpoints, rollback: :class:`~cellsynth.train.plan.TrainingPlan`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.preprocess import COUNT_NOISE, CountObservation
from ..data.stats import moments_by_label, principal_axes, zero_fraction_by_label
from ..metrics.distribution import mmd2
from ..nn.blocks import one_hot_conditions
from .losses import AdversarialLoss
from .objectives import (
    MomentMatch,
    conditional_mmd,
    gradient_penalty,
    mix_labels,
    r1_penalty,
    same_label_partners,
    soft_cross_entropy,
    soft_zero,
    sparsity_loss,
)
from .optim import set_requires_grad
from .plan import TrainingPlan, TrainSettings
from .validation import VAL_METRICS, c2st_sides, forest_state, pca_mmds, type_centring
from .views import CellViews, View


@dataclass
class AdversarialSettings(TrainSettings):
    """The shared settings, and what the adversarial plan adds."""

    g_steps: int = 1
    critic_warmup: int = 0  # critic (+ classifier) steps alone first: a trained start meets a trained critic
    class_weight: float = 1.0
    conditional: bool = True  # False: the networks never see the cell type (GARAGE's unconditional mode)
    sparsity_weight: float = 50.0
    sparsity_temperature: float = 0.1
    moment_weight: float = 0.0  # per-(type, gene) mean and variance match (pull per gene), see MomentMatch
    moment_decay: float = 0.9  # running estimate of the generated moments (per generator step)
    lr_marginal: float | None = None  # learning rate of per-(type, gene) parameters (None: lr_g)
    mmd_weight: float = 5.0
    pack: int = 1  # PacGAN: the critic judges this many cells of one type at a time (see same_label_partners)
    r1_weight: float = 10.0
    mix_prob: float = 0.1
    count_noise: str = "poisson"  # poisson | pln | rounding | none: see data.preprocess.CountObservation
    val_metric: str = "mmd"  # the score that keeps the best state and stops: see VAL_METRICS
    shared_fakes: bool = True  # one generated batch for both networks' steps (see batch_step)


#: held-out cells the validation MMD compares at most (its time and memory grow with their square)
VAL_CELLS = 2000
#: ``latent_fn(weights, rows, gen, device) -> (z, weights, rows)``: the generator's input for a batch
#: whose conditions are ``weights``, paired with real ``rows`` (whose library sizes the count draw uses)
LatentFn = Callable[[list[torch.Tensor], np.ndarray, torch.Generator, torch.device], tuple]


class AdversarialPlan(TrainingPlan):
    """Train ``generator`` against ``discriminator`` (and ``classifier``) with ``loss``.

    ``generator(z, weights) -> (x, pre)``, ``discriminator(x, weights) -> logits``,
    ``classifier(x) -> list of logits per condition key``. ``latent_fn`` (see :data:`LatentFn`) draws
    the generator's input; by default plain normal noise.
    """

    loss_keys = {
        "d_loss": ("d_loss", "n_d"),
        "class_loss_real": ("class_real", "n_d"),
        "g_loss": ("g_loss", "n_g"),
        "class_loss_fake": ("class_fake", "n_g"),
        "sparsity_loss": ("sparsity", "n_g"),
        "mmd_loss": ("mmd", "n_g"),
        "moment_loss": ("moment", "n_g"),
    }

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        classifier: nn.Module | None,
        loss: AdversarialLoss,
        settings: AdversarialSettings,
        *,
        latent_fn: LatentFn | None = None,
        **kwargs,
    ):
        super().__init__(settings, **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.classifier = classifier
        self.loss = loss
        self.latent_fn = latent_fn or self._noise
        if settings.val_metric not in VAL_METRICS:
            raise ValueError(f"val_metric must be one of {VAL_METRICS}, got {settings.val_metric!r}")
        self.val_key = f"val_{settings.val_metric}"

    def _noise(self, weights, rows, gen, device):
        return torch.randn(len(rows), self.generator.z_dim, generator=gen, device=device), weights, rows

    # ------------------------------------------------------------------ set-up
    def configure(self, data) -> None:
        s, dev, rng = self.settings, self.device, self.rng
        self.sizes = [c.n for c in data.conditions]
        self.observe = None
        if s.count_noise not in COUNT_NOISE:
            raise ValueError(f"count_noise must be one of {COUNT_NOISE}, got {s.count_noise!r}")
        if s.count_noise != "none" and data.library is not None:
            if s.count_noise == "pln" and getattr(self.generator, "dispersion", None) is None:
                raise ValueError("count_noise='pln' needs a generator with a dispersion(weights) method")
            self.observe = CountObservation(s.count_noise)
            self.library_all = torch.from_numpy(data.library)
            self.scale_all = torch.from_numpy(data.scale)
        train_rows = self.train_rows
        self.target_zero = torch.from_numpy(zero_fraction_by_label(data, train_rows)).to(dev)
        self.moments = None
        if s.moment_weight and s.conditional:
            mean_t, var_t = moments_by_label(data, train_rows)
            self.moments = MomentMatch(
                torch.from_numpy(mean_t).to(dev), torch.from_numpy(var_t).to(dev), s.moment_decay
            )
        self.codes_all = torch.from_numpy(data.codes)
        gives_profile = getattr(self.generator, "gives_profile", False)  # ρ beside x: see fake_batch
        self.generator_kwargs = {"with_profile": True} if gives_profile else {}
        pca_mean, pca_axes, pca_sd = principal_axes(data, train_rows, 50, rng)
        self.pca_mean = torch.from_numpy(pca_mean).to(dev)
        self.pca_basis = torch.from_numpy(np.ascontiguousarray(pca_axes.T)).to(dev)
        self.pca_sd = torch.from_numpy(pca_sd).to(dev)  # the whitened validation MMD's scales
        self._validation_set(data)
        self.prior = None
        if not s.conditional:  # every cell is given the training label frequencies instead of its label
            freq = np.bincount(data.label.codes, minlength=self.sizes[0]).astype(np.float32)
            self.prior = torch.from_numpy(freq / freq.sum()).to(dev)
        self._optimisers()
        # networks behind a fixed orthonormal projection (a PCA) are fed each batch projected once (with the
        # MMD's components); R1 is then taken in that space, equal to the gene space's (‖g Bᵀ‖ = ‖g‖)
        self.views = CellViews(self.discriminator, self.classifier, self.pca_mean, self.pca_basis)
        self.real_views = self.views.stored(data, s.batch_size)  # every cell's views, or None

    def _validation_set(self, data) -> None:
        """Held-out cells in the validation PCA space, and the conditions of the cells generated for them."""
        dev, rng = self.device, self.rng
        if len(self.val_rows) < 50:  # too few held-out cells for a stable score: a training subsample
            ref_rows = rng.choice(self.train_rows, min(len(self.train_rows), 1000), replace=False)
        else:  # at most VAL_CELLS held-out cells: the MMD's time and memory grow with their square
            big = len(self.val_rows) > VAL_CELLS
            ref_rows = rng.choice(self.val_rows, VAL_CELLS, replace=False) if big else self.val_rows
        ref_rows = np.sort(ref_rows)
        self.ref_pcs = (torch.from_numpy(data.dense_rows(ref_rows)).to(dev) - self.pca_mean) @ self.pca_basis
        ref_codes = self.codes_all[ref_rows].to(dev)
        val_pick = rng.integers(0, len(ref_rows), max(len(ref_rows), 500))
        self.val_gen_codes = ref_codes[torch.from_numpy(val_pick).to(dev)]
        self.val_gen_rows = ref_rows[val_pick]
        self.centring = type_centring(self, data)
        sides = (self.settings.val_metric, data, self.val_rows, self.train_rows, self.codes_all, rng, dev)
        self.c2st, self.c2st_gen = c2st_sides(*sides)

    def _optimisers(self) -> None:
        s, fabric = self.settings, self.fabric
        generator = self.generator
        marginal = list(getattr(generator, "marginal_parameters", list)()) if s.lr_marginal else []
        if marginal:  # per-(type, gene) offsets and dispersions: one Adam step moves each by ~lr in log space
            ids = {id(q) for q in marginal}
            g_params = [
                {"params": [q for q in generator.parameters() if id(q) not in ids]},
                {"params": marginal, "lr": s.lr_marginal},
            ]
        else:
            g_params = generator.parameters()
        opt_g = self.make_optimizer(g_params, s.lr_g)
        self.d_params = list(self.discriminator.parameters()) + (
            list(self.classifier.parameters()) if self.classifier is not None else []
        )
        opt_d = self.make_optimizer(self.d_params, s.lr_d)
        self.generator_f, self.opt_g = fabric.setup(generator, opt_g)
        self.discriminator_f = fabric.setup_module(self.discriminator)
        self.classifier_f = fabric.setup_module(self.classifier) if self.classifier is not None else None
        self.opt_d = fabric.setup_optimizers(opt_d)
        self.ema = self.make_ema(generator)
        self.g_step = 0
        self.d_count = 0

    def optimizers(self):
        return [self.opt_g, self.opt_d]

    def sampling_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.generator

    def step_count(self) -> int:
        return self.g_step

    # ------------------------------------------------------------------ what the critic sees
    def as_given(self, w: list[torch.Tensor]) -> list[torch.Tensor]:
        """The conditions the networks see (the label hidden in unconditional training)."""
        return w if self.prior is None else [self.prior.expand(len(w[0]), -1), *w[1:]]

    def observed(self, x, rows, weights, pre=None, expected=None, *, net=None):
        """What the critic sees of generated ``x`` (profile ``expected`` when the generator gives it) for
        cells paired with real ``rows``: (x, soft zeros)."""
        s = self.settings
        if self.observe is None:
            zeros = None if pre is None else soft_zero(pre.float(), s.sparsity_temperature)
            return x, zeros
        net, dev = net or self.generator, self.device
        phi = net.dispersion(weights) if s.count_noise == "pln" else None
        library, scale = self.library_all[rows].to(dev), self.scale_all[rows].to(dev)
        x_obs, p0 = self.observe(x, library, scale, self.gen, phi, expected)
        zeros = None if pre is None else soft_zero(pre.float(), s.sparsity_temperature, p0)
        return x_obs, zeros

    def fake_conditions(self, w_real: list[torch.Tensor]) -> list[torch.Tensor]:
        """The real batch's conditions, with a fraction of labels mixed with another cell's label."""
        # unconditional: no label to mix
        return w_real if self.prior is not None else mix_labels(w_real, self.settings.mix_prob, self.gen)

    def packing(self, codes: torch.Tensor) -> list[torch.Tensor]:
        """The critic's partners for a batch (PacGAN): each cell beside ``pack - 1`` cells of its type."""
        # generated row i was drawn for real row i's label: same pairing; unconditional: fake pairs
        # cannot share a hidden label, so real pairs do not either
        group = codes[:, 0] if self.prior is None else torch.zeros_like(codes[:, 0])
        return [same_label_partners(group, self.gen) for _ in range(self.settings.pack - 1)]

    def judge(self, v: torch.Tensor, weights, partners, *, raw: bool = False) -> torch.Tensor:
        """The critic's logits for viewed cells ``v`` (a View's ``critic``), packed with ``partners``."""
        net = self.discriminator if raw else self.discriminator_f
        return net(v, weights, partners=partners, **self.views.critic_kwargs)

    def classify(self, x: torch.Tensor, view: View) -> list[torch.Tensor]:
        """The auxiliary classifier's logits for cells ``x`` seen as ``view``."""
        if self.views.classifier_projected:
            return self.classifier_f(view.critic, projected=True)
        return self.classifier_f(x)

    # ------------------------------------------------------------------ one step
    def training_step(self, rows: np.ndarray) -> dict[str, float]:
        codes = self.codes_all[rows].to(self.device)
        if self.real_views is not None:
            return self.batch_step(None, codes, rows, self.views.split(self.real_views[rows]))
        x_real = torch.from_numpy(self.data.dense_rows(rows)).to(self.device, non_blocking=True)
        return self.batch_step(x_real, codes, rows)

    def batch_step(self, x_real, codes: torch.Tensor, rows: np.ndarray, real_view: View | None = None):
        """One step on dense real cells ``x_real`` (or None and their stored ``real_view``) of conditions
        ``codes`` (cells × keys) and training ``rows`` (the count draw uses their library sizes)."""
        s, w_real, partners = self.settings, one_hot_conditions(codes, self.sizes), self.packing(codes)
        self.d_count += 1
        after = self.d_count - s.critic_warmup
        g_turn = after > 0 and after % self.loss.d_steps == 0
        # both networks' steps on one generated batch when each takes one (DCGAN's order)
        shared = self.fake_batch(w_real, rows) if g_turn and s.shared_fakes and s.g_steps == 1 else None
        real = (x_real, real_view or self.views(x_real, mmd=g_turn))  # projected once for both steps
        out = self.critic_step(real, codes, w_real, rows, partners, shared)
        if g_turn:
            out.update(self.generator_steps(real, w_real, rows, partners, shared))
        return out

    def fake_batch(self, w_real, rows, zeros: bool = True) -> tuple:
        """``(observed x, pre-activation, soft zeros or None, conditions, view)`` of cells generated for
        the conditions of real ``rows`` (a share of them mixed) and drawn at their library sizes; ``zeros``
        False: a batch for the critic alone (no soft zeros, no MMD components in its view)."""
        z, w_fake, fake_rows = self.latent_fn(self.fake_conditions(w_real), rows, self.gen, self.device)
        w_fake = self.as_given(w_fake)
        x_fake, pre, *rho = self.generator_f(z, w_fake, **self.generator_kwargs)  # rho: the profile, if given
        x_fake, soft = self.observed(x_fake, fake_rows, w_fake, pre if zeros else None, *rho)
        return x_fake, pre, soft, w_fake, self.views(x_fake, mmd=zeros)

    def critic_step(self, real, codes, w_real, rows, partners, shared=None) -> dict[str, float]:
        """One update of the critic (+ the auxiliary classifier on real cells with their real labels), on the
        ``shared`` generated batch (:meth:`fake_batch`) or a fresh one; ``real``: the cells, their View."""
        s, fabric = self.settings, self.fabric
        x_real, real_view = real
        with torch.no_grad():
            _, _, _, w_fake, fake_view = shared or self.fake_batch(w_real, rows, zeros=False)
        v_real, v_fake = real_view.critic, fake_view.critic.detach()
        if s.r1_weight:
            # the raw module under Fabric's autocast: Fabric forbids autograd.grad via its wrapper
            v_real = v_real.detach().requires_grad_(True)  # (gene space: v_real is x_real itself)
            with fabric.autocast():
                real_logits = self.judge(v_real, self.as_given(w_real), partners, raw=True)
        else:
            real_logits = self.judge(v_real, self.as_given(w_real), partners)
        d_loss = self.loss.d_loss(real_logits, self.judge(v_fake, w_fake, partners))
        if s.r1_weight:
            d_loss = d_loss + s.r1_weight * r1_penalty(real_logits, v_real)
            v_real = v_real.detach()
        if self.loss.gradient_penalty:
            with fabric.autocast():
                critic = partial(self.judge, partners=partners, raw=True)
                gp = gradient_penalty(critic, v_real, v_fake, self.as_given(w_real), self.gen)
                d_loss = d_loss + self.loss.gradient_penalty * gp
        c_loss = torch.zeros((), device=self.device)
        if self.classifier_f is not None:
            logits = self.classify(x_real, real_view)
            c_loss = sum(F.cross_entropy(lg, codes[:, k]) for k, lg in enumerate(logits)) / len(logits)
        self.opt_d.zero_grad(set_to_none=True)
        fabric.backward(d_loss + c_loss)
        if s.grad_clip:
            fabric.clip_gradients(self.discriminator_f, self.opt_d, max_norm=s.grad_clip)
        self.opt_d.step()
        self.loss.after_critic_step(self.discriminator)
        return {"d_loss": d_loss.item(), "class_real": c_loss.item(), "n_d": 1.0}

    def generator_steps(self, real, w_real, rows, partners, shared=None) -> dict[str, float]:
        """``g_steps`` updates of the generator (the first on the ``shared`` batch when given), the
        critic's weights frozen (their gradients would be thrown away); ``real``: as :meth:`critic_step`'s."""
        s = self.settings
        out = dict.fromkeys(("g_loss", "class_fake", "sparsity", "mmd", "moment", "n_g"), 0.0)
        set_requires_grad(self.d_params, False)
        for i in range(s.g_steps):
            fake = shared if shared and i == 0 else self.fake_batch(w_real, rows)
            terms = self.generator_loss(fake, real[1], w_real, partners)
            total = (
                terms["g_loss"]
                + s.class_weight * terms["class_fake"]
                + s.sparsity_weight * terms["sparsity"]
                + s.mmd_weight * terms["mmd"]
                + s.moment_weight * terms["moment"]
            )
            self.opt_g.zero_grad(set_to_none=True)
            self.fabric.backward(total)
            if s.grad_clip:
                self.fabric.clip_gradients(self.generator_f, self.opt_g, max_norm=s.grad_clip)
            self.opt_g.step()
            if self.ema is not None:
                self.ema.update_parameters(self.generator)
            for key in ("g_loss", "class_fake", "sparsity", "mmd"):
                out[key] += terms[key].item()
            if "moment_error" in terms:
                out["moment"] += terms["moment_error"]
            out["n_g"] += 1
            self.g_step += 1
        set_requires_grad(self.d_params, True)
        return out

    def generator_loss(self, fake: tuple, real_view: View, w_real, partners) -> dict:
        """The generator's loss terms for one generated batch ``fake`` (:meth:`fake_batch`) against the
        real batch seen as ``real_view`` (weights applied by the caller)."""
        s, dev = self.settings, self.device
        x_fake, pre, zeros, w_fake, view = fake
        terms = {"g_loss": self.loss.g_loss(self.judge(view.critic, w_fake, partners))}
        cf = torch.zeros((), device=dev)
        if self.classifier_f is not None and s.class_weight and self.prior is None:
            logits = self.classify(x_fake, view)
            cf = sum(soft_cross_entropy(lg, w_fake[k]) for k, lg in enumerate(logits)) / len(logits)
        terms["class_fake"] = cf
        sp_loss = torch.zeros((), device=dev)
        if s.sparsity_weight and zeros is not None:
            sp_loss = sparsity_loss(zeros, w_fake[0], self.target_zero)
        terms["sparsity"] = sp_loss
        mmd_loss = torch.zeros((), device=dev)
        pure = w_fake[0].max(1).values >= 1.0  # mixed-label rows have no real counterpart
        if self.prior is not None and s.mmd_weight:
            mmd_loss = mmd2(view.mmd, real_view.mmd.detach())
        elif s.mmd_weight and int(pure.sum()) >= 2:
            mmd_loss = conditional_mmd(view.mmd, real_view.mmd.detach(), w_fake[0], w_real[0], keep=pure)
        terms["mmd"] = mmd_loss
        mom_loss = torch.zeros((), device=dev)
        if self.moments is not None and int(pure.sum()) >= 2:
            # mixed-label rows weigh nothing (a zero weight, not a row selection: cheaper on wide data)
            mom_loss = self.moments(x_fake, w_fake[0] * pure[:, None], pre)
            terms["moment_error"] = self.moments.error
        terms["moment"] = mom_loss
        return terms

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def validation_cells(self, codes=None, rows=None) -> torch.Tensor:
        """Cells generated for the validation conditions (or ``codes``, ``rows``'), counts drawn."""
        net = self.sampling_module()
        was = net.training
        net.eval()
        codes, rows = (self.val_gen_codes, self.val_gen_rows) if codes is None else (codes, rows)
        z, w, rows = self.latent_fn(one_hot_conditions(codes, self.sizes), rows, self.gen, self.device)
        w = self.as_given(w)
        x, _ = self.observed(net(z, w)[0], rows, w, net=net)
        net.train(was)
        return x.float()

    def validation_score(self) -> float:
        return self.validation_scores()[self.val_key]

    @torch.no_grad()
    def validation_scores(self) -> dict[str, float]:
        x = self.validation_cells()
        scores = pca_mmds((x - self.pca_mean) @ self.pca_basis, self.ref_pcs, self.pca_sd, self.centring)
        if self.c2st is not None:  # a classifier test of real cells against generated ones
            state = forest_state(self.seed, self.step_count())
            fake = x if self.c2st_gen is None else self.validation_cells(*self.c2st_gen)
            scores[self.val_key] = self.c2st(fake, random_state=state)
        return scores

    def progress_postfix(self, record: dict) -> dict[str, str]:
        r = record
        return {"d": f"{r['d_loss']:.3f}", "g": f"{r['g_loss']:.3f}", "cls": f"{r['class_loss_fake']:.2f}",
                "zero": f"{r['sparsity_loss']:.4f}", "mmd": f"{self.loop['best_score']:.4f}"}  # fmt: skip

    # ------------------------------------------------------------------ state
    def state_parts(self) -> dict:
        parts = {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "counters": {"g_step": self.g_step, "d_count": self.d_count},
        }
        for key, module in (("classifier", self.classifier), ("ema", self.ema)):
            if module is not None:
                parts[key] = module.state_dict()
        if self.moments is not None:
            parts["moments"] = {"running": self.moments.running, "seen": self.moments.seen}
        if self.loss.state_dict():
            parts["loss"] = self.loss.state_dict()
        return parts

    def load_state_parts(self, parts: dict) -> None:
        self.generator.load_state_dict(parts["generator"])
        self.discriminator.load_state_dict(parts["discriminator"])
        self.opt_g.load_state_dict(parts["opt_g"])
        self.opt_d.load_state_dict(parts["opt_d"])
        for key, module in (("classifier", self.classifier), ("ema", self.ema)):
            if module is not None:
                module.load_state_dict(parts[key])
        if self.moments is not None:
            self.moments.running.copy_(parts["moments"]["running"])
            self.moments.seen.copy_(parts["moments"]["seen"])
        if "loss" in parts:
            self.loss.load_state_dict(parts["loss"])
        self.g_step, self.d_count = (int(parts["counters"][k]) for k in ("g_step", "d_count"))
