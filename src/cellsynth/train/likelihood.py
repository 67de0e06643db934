"""The likelihood training plan: every model trained by maximising a likelihood bound (the VAEs) trains here.

A likelihood model is one ``nn.Module`` whose call on a batch returns its per-cell loss terms: the
negative log-likelihood of the cells under the decoder (``"recon"``) and the KL divergence of the
approximate posterior from the prior (``"kl"``); their sum is the negative evidence lower bound (ELBO).
Per step, one Adam update of ``recon + β · kl``, with ``β`` ramped linearly from 0 to ``kl_weight`` over
the first ``kl_warmup_steps`` steps (KL warm-up: the decoder first learns to use the latent code before
the prior pulls the posterior in).

A batch (:meth:`LikelihoodPlan.batch`) holds the training values ``x`` (cells × genes, the training
representation), the condition ``weights`` (one matrix per condition key, one-hot) and, for count
input, the cells' raw ``counts`` at their non-zero entries (recovered exactly from the stored values:
:func:`~cellsynth.data.preprocess.nonzero_counts`) and their
observed ``library`` size over the training genes.

Validation is the negative ELBO per held-out cell (KL weight 1, one posterior draw from a fixed noise
seed, so successive scores differ only by the model). With ``val_metric="c2st"`` the score that selects
and stops is instead the classifier two-sample test of :mod:`~cellsynth.train.validation`: one cell drawn
from the prior (decoder and count noise) for each held-out cell, with its type and library size, against
the held-out cells themselves — a held-out ELBO can be best long before prior samples are most
realistic, and get worse while they improve; the ELBO is recorded beside it. The loop, EMA, early
stopping, checkpoints, resume and rollback are the shared :class:`~cellsynth.train.plan.TrainingPlan`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.celldata import densify
from ..data.preprocess import nonzero_counts
from ..nn.blocks import one_hot_conditions
from .plan import TrainingPlan, TrainSettings
from .validation import C2ST_CELLS, c2st_auc, c2st_reference, forest_state

_VAL_CHUNK = 512  # held-out cells scored at a time (bounds the dense validation batch)


@dataclass
class LikelihoodSettings(TrainSettings):
    """The shared settings, and what the likelihood plan adds."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    ema_decay: float | None = None
    kl_weight: float = 1.0
    kl_warmup_steps: int = 0  # the KL weight rises linearly from 0 to kl_weight over these steps
    val_metric: str = "nelbo"  # nelbo | c2st: the score that selects the kept state and stops early


class LikelihoodPlan(TrainingPlan):
    """Train ``module`` by minimising its negative ELBO.

    ``module(batch) -> {"recon": (cells,), "kl": (cells,)}``: per-cell negative log-likelihood and KL
    divergence for a batch built by :meth:`batch`. The module is the whole model (encoder and decoder):
    its weights (or their EMA) are what :meth:`sampling_module` gives the model to keep. With
    ``val_metric="c2st"`` the module also draws cells from its prior:
    ``module.draw_cells(weights, library, scale, gen, rng)`` → cells × genes in the training representation.
    """

    loss_keys = {
        "loss": ("loss", "n_steps"),
        "recon_loss": ("recon", "n_steps"),
        "kl_loss": ("kl", "n_steps"),
    }
    val_key = "val_nelbo"

    def __init__(
        self,
        module: nn.Module,
        settings: LikelihoodSettings,
        *,
        scorer: Callable[[nn.Module], float] | None = None,
        tie_key: str | None = None,
        **kwargs,
    ):
        super().__init__(settings, **kwargs)
        self.module = module
        # scorer(module) -> {"val_start": a score of the state to keep (lower is better), ...}: val_start
        # selects instead of val_metric (a model built on this one judges what it would start from), the
        # other entries are recorded beside it
        self.scorer = scorer
        self.val_key = "val_start" if scorer is not None else f"val_{settings.val_metric}"
        self.tie_key = tie_key  # e.g. val_nelbo: which of the states tied on val_key to keep

    # ------------------------------------------------------------------ set-up
    def configure(self, data) -> None:
        s = self.settings
        self.sizes = [c.n for c in data.conditions]
        self.codes_all = torch.from_numpy(data.codes)
        self.library_all = self.scale_all = None
        if data.library is not None:  # count input: the likelihood is of the raw counts
            self.library_all = torch.from_numpy(data.library)
            self.scale_all = torch.from_numpy(data.scale)
        opt = self.make_optimizer(self.module.parameters(), s.lr)
        self.module_f, self.opt = self.fabric.setup(self.module, opt)
        self.ema = self.make_ema(self.module)
        self.step = 0
        # validation: the held-out cells, or a training subsample when too few are held out
        rows = self.val_rows
        if len(rows) < 50:
            rows = self.rng.choice(self.train_rows, min(len(self.train_rows), 1000), replace=False)
        self.score_rows = np.sort(rows)
        self.c2st_real = None
        if s.val_metric == "c2st":  # held-out cells only, and the conditions to draw their twins with
            self.c2st_real = c2st_reference(data, self.val_rows, self.device)
            held = self.batch(np.sort(self.val_rows)[:C2ST_CELLS])
            self.c2st_batch = {k: held[k] for k in ("weights", "library", "scale") if k in held}

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.opt]

    def sampling_module(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.module

    def step_count(self) -> int:
        return self.step

    def kl_scale(self) -> float:
        """The KL term's weight at the current step (the warm-up ramp, then ``kl_weight``)."""
        s = self.settings
        if s.kl_warmup_steps <= 0:
            return s.kl_weight
        return s.kl_weight * min(1.0, self.step / s.kl_warmup_steps)

    # ------------------------------------------------------------------ one step
    def batch(self, rows: np.ndarray) -> dict:
        """The training cells ``rows`` as the module's input (see the module docstring)."""
        dev = self.device
        stored = self.data.rows(rows)
        x = torch.from_numpy(densify(stored)).to(dev, non_blocking=True)
        out = {"x": x, "weights": one_hot_conditions(self.codes_all[rows].to(dev), self.sizes)}
        if self.library_all is not None:
            out["library"] = self.library_all[rows].to(dev)
            out["scale"] = self.scale_all[rows].to(dev)
            out["counts"] = nonzero_counts(stored, self.data.scale[rows], dev)
        return out

    def training_step(self, rows: np.ndarray) -> dict[str, float]:
        s = self.settings
        terms = self.module_f(self.batch(rows), gen=self.gen)
        recon, kl = terms["recon"].float().mean(), terms["kl"].float().mean()
        loss = recon + self.kl_scale() * kl
        self.opt.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        if s.grad_clip:
            self.fabric.clip_gradients(self.module_f, self.opt, max_norm=s.grad_clip)
        self.opt.step()
        if self.ema is not None:
            self.ema.update_parameters(self.module)
        self.step += 1
        return {"loss": (recon + kl).item(), "recon": recon.item(), "kl": kl.item(), "n_steps": 1.0}

    # ------------------------------------------------------------------ validation
    def validation_score(self) -> float:
        return self.validation_scores()[self.val_key]

    def validation_scores(self) -> dict[str, float]:
        scores = {"val_nelbo": self.nelbo()}
        if self.c2st_real is not None:
            scores["val_c2st"] = self.c2st()
        if self.scorer is not None:
            scores.update({k: float(v) for k, v in self.scorer(self.sampling_module()).items()})
        return scores

    @torch.no_grad()
    def c2st(self) -> float:
        """The classifier test of the held-out cells against one prior draw per cell, with its type and
        library size (fixed noise seeds: successive scores differ by the model and the forest)."""
        net = self.sampling_module()
        was = net.training
        net.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 2)
        rng = np.random.default_rng(self.seed + 2)
        b = self.c2st_batch
        fake = net.draw_cells(b["weights"], b.get("library"), b.get("scale"), gen, rng)
        net.train(was)
        state = forest_state(self.seed, self.step)
        return c2st_auc(self.c2st_real, fake.to(self.c2st_real.dtype), random_state=state)

    @torch.no_grad()
    def nelbo(self) -> float:
        """Negative ELBO per held-out cell (lower is better)."""
        net = self.sampling_module()
        was = net.training
        net.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        total = 0.0
        rows = self.score_rows
        for start in range(0, len(rows), _VAL_CHUNK):
            with self.fabric.autocast():
                terms = net(self.batch(rows[start : start + _VAL_CHUNK]), gen=gen)
            total += float((terms["recon"].float() + terms["kl"].float()).sum())
        net.train(was)
        return total / max(len(rows), 1)

    def progress_postfix(self, record: dict) -> dict[str, str]:
        return {
            "nelbo": f"{record['loss']:.4g}",
            "kl": f"{record['kl_loss']:.3g}",
            "val": f"{self.loop['best_score']:.4g}",
        }

    # ------------------------------------------------------------------ state
    def state_parts(self) -> dict:
        parts = {
            "module": self.module.state_dict(),
            "opt": self.opt.state_dict(),
            "counters": {"step": self.step},
        }
        if self.ema is not None:
            parts["ema"] = self.ema.state_dict()
        return parts

    def load_state_parts(self, parts: dict) -> None:
        self.module.load_state_dict(parts["module"])
        self.opt.load_state_dict(parts["opt"])
        # a checkpoint written while the encoder's first weight was stored outputs × inputs (nn.Linear's
        # layout; now nn.blocks.WideInputLinear's inputs × outputs): its Adam moments transposed to fit
        for p, moments in self.opt.state.items():
            for k, v in moments.items():
                if torch.is_tensor(v) and v.dim() == 2 and v.shape != p.shape and v.shape == p.shape[::-1]:
                    moments[k] = v.t().contiguous()
        if self.ema is not None:
            self.ema.load_state_dict(parts["ema"])
        self.step = int(parts["counters"]["step"])
