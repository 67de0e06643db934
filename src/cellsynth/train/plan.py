"""The training plan every model trains in: set-up, the loop, validation, stopping and checkpoints.

A plan is configured, not copied: a subclass says what one training step does
(:meth:`TrainingPlan.training_step`), how a model is scored on held-out cells
(:meth:`TrainingPlan.validation_score`) and what its state is; this class owns the rest, in the order
the loop runs it:

- **set-up**: the device (Lightning Fabric), the plan's own random generators (numpy and torch, from one
  seed; nothing global is seeded), the stratified validation split;
- **epochs of minibatches** (class-balanced when ``balance`` > 0), with a time budget;
- **validation** every ``val_every_steps`` steps, keeping the best state and **early stopping** after
  ``patience`` validations without improvement (``patience × val_every_steps`` steps where an epoch is
  longer than that interval) — or, with ``keep="last"``, recording the scores only and
  keeping the state training ends in (for a score that does not follow what is kept for: a held-out ELBO
  is best long before a VAE's samples are most realistic);
- **checkpoints** every ``checkpoint_minutes`` and when SIGTERM/SIGINT arrives: the whole training state
  (weights, optimisers, EMA, every random generator, history, position in the epoch) goes to a callback,
  and :meth:`TrainingPlan.fit` with ``resume=`` continues from such a state exactly where it stopped;
- **rollback on divergence**: a non-finite or exploding loss restores the last good state (taken at
  the end of a healthy epoch, every ~20 seconds) with the learning rates multiplied by
  ``rollback_lr_factor``, at most ``max_rollbacks`` times; then training stops with
  :class:`~cellsynth.errors.TrainingError`.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.stats import balanced_row_weights, split_validation
from ..errors import TrainingError
from .device import make_fabric
from .optim import ema_with_warmup, lr_factor
from .selection import judge
from .signals import StopSignals

# how often the rollback point is renewed: a copy of the whole state (weights, optimisers, EMA) at the end
# of every epoch would cost in proportion to the number of epochs, which on small data are a few steps each
_SNAPSHOT_SECONDS = 20.0


@dataclass
class TrainSettings:
    """Optimisation settings every training plan shares."""

    epochs: int = 300
    max_minutes: float | None = None
    batch_size: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    optimizer: str = "adam"  # adam | rmsprop
    grad_clip: float | None = None
    balance: float = 0.5
    ema_decay: float | None = 0.999
    val_fraction: float = 0.1
    val_min_cells: int = 100  # small data: hold out up to 25% to reach this many validation cells
    val_every_steps: int = 100
    patience: int = 15
    mixed_precision: bool | None = False  # None: where it pays (device.bf16_pays)
    checkpoint_minutes: float = 2.0
    max_rollbacks: int = 3  # divergence: how many times the last good state is restored
    rollback_lr_factor: float = 0.5  # ... each time with the learning rates multiplied by this
    divergence_limit: float = 1e6  # a critic or generator loss beyond this (in magnitude) is a divergence
    lr_schedule: str = "constant"  # constant | cosine: see LR_SCHEDULES
    validate_start: bool = False  # score the state training starts from, as a candidate to keep
    keep: str = "best"  # best: the best validated state (early stopping on); last: the final state
    val_tolerance: float = 0.0  # optim.TOLERANCE_HELP; train.selection
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    generator_state: dict
    history: list[dict]
    stopped_because: str
    best_val_mmd: float | None
    rollbacks: list[dict] = field(default_factory=list)


#: ``checkpoint(state, model_state)``: the whole training state, and the weights of the model to keep
#: so far (the best validated, else the current sampling module's)
Checkpoint = Callable[[dict, dict], None]

#: ``monitor(step, seconds, model_state) -> {column: value}``: called at every validation with the
#: sampling module's current weights; what it returns joins that epoch's history record. The time it
#: takes is not training time: it counts neither against the time budget nor in ``seconds``.
Monitor = Callable[[int, float, dict], dict]


class TrainingPlan:
    """Base class: the loop, validation, early stopping, EMA, checkpoints, resume and rollback.

    Subclasses implement :meth:`configure` (statistics, optimisers), :meth:`training_step`,
    :meth:`validation_score`, :meth:`sampling_module` and :meth:`state_parts`/:meth:`load_state_parts`;
    ``loss_keys`` names the per-epoch averages recorded in the history (each ``training_step`` returns
    sums and counts for them).
    """

    #: history column → (sum key, count key) of what ``training_step`` returns
    loss_keys: dict[str, tuple[str, str]] = {}
    #: history column of the validation score
    val_key: str = "val_mmd"
    tie_key: str | None = None  # history column deciding between states tied on val_key: train.selection

    def __init__(
        self,
        settings: TrainSettings,
        *,
        device: str = "auto",
        seed: int = 0,
        progress: bool = True,
        checkpoint: Checkpoint | None = None,
        monitor: Monitor | None = None,
        deadline: float | None = None,
    ):
        self.settings = settings
        self.device_name = device
        self.seed = seed
        self.show_progress = progress
        self.checkpoint = checkpoint
        self.monitor = monitor
        # a time.monotonic() at which the loop stops whatever its own budget says: the model's whole fit
        # (data preparation and set-up before the loop included) stays within its max_minutes
        self.deadline = deadline

    # ------------------------------------------------------------------ to implement
    def configure(self, data) -> None:
        """Everything a step needs beyond the split: statistics, optimisers, EMA (after set-up)."""
        raise NotImplementedError

    def training_step(self, rows: np.ndarray) -> dict[str, float]:
        """One optimisation step on the training cells ``rows``: sums and counts of its losses."""
        raise NotImplementedError

    def validation_score(self) -> float:
        """A score of the current model on held-out cells (lower is better)."""
        raise NotImplementedError

    def validation_scores(self) -> dict[str, float]:
        """Every score a validation records, ``val_key``'s (the one that selects and stops) among them."""
        return {self.val_key: self.validation_score()}

    def sampling_module(self) -> nn.Module:
        """The module whose weights are the model (e.g. the EMA of the generator)."""
        raise NotImplementedError

    def state_parts(self) -> dict[str, Any]:
        """Everything that changes during training besides the loop's counters (weights, optimisers,
        EMA, running statistics): nested dicts of tensors and plain values."""
        raise NotImplementedError

    def load_state_parts(self, parts: dict[str, Any]) -> None:
        raise NotImplementedError

    def optimizers(self) -> list[torch.optim.Optimizer]:
        raise NotImplementedError

    def progress_postfix(self, record: dict) -> dict[str, str]:
        return {}

    # ------------------------------------------------------------------ set-up
    def setup(self, data) -> None:
        """Device, random generators and the validation split; then :meth:`configure`."""
        s = self.settings
        self.data = data
        self.rng = np.random.default_rng(self.seed)
        entries = s.batch_size * data.n_genes  # a batch's width decides mixed_precision null's precision
        self.fabric = make_fabric(self.device_name, mixed_precision=s.mixed_precision, entries=entries)
        self.device = self.fabric.device
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(self.seed)
        # early stopping must judge generalisation: with too few held-out cells the score is noise, and a
        # score against training cells rewards reproducing the training sample itself
        fraction = s.val_fraction
        if s.val_min_cells and data.n_cells:
            fraction = max(fraction, min(0.25, s.val_min_cells / data.n_cells))
        self.train_rows, self.val_rows = split_validation(data.label.codes, fraction, self.rng)
        self.configure(data)
        self.base_lrs = [[g["lr"] for g in opt.param_groups] for opt in self.optimizers()]

    def make_optimizer(self, params, lr: float) -> torch.optim.Optimizer:
        # Adam: the fused kernel, one pass over each parameter (foreach makes one per update term; the CPU
        # default, one launch per tensor); RMSprop: foreach kernels, one launch per group
        if self.settings.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, foreach=True)
        return torch.optim.Adam(params, lr=lr, betas=self.settings.betas, fused=True)

    def make_ema(self, module: nn.Module):
        """An exponential moving average of ``module``'s weights (None when ``ema_decay`` is off)."""
        if not self.settings.ema_decay:
            return None
        return torch.optim.swa_utils.AveragedModel(
            module, multi_avg_fn=ema_with_warmup(self.settings.ema_decay), use_buffers=True
        )

    # ------------------------------------------------------------------ the loop
    def fit(self, data, *, resume: dict | None = None) -> TrainResult:
        """Train on ``data`` (a :class:`~cellsynth.data.CellData`); ``resume``: a state passed to the
        checkpoint callback by an earlier, interrupted run of the same plan on the same data."""
        s = self.settings
        self.setup(data)
        self.steps_per_epoch = max(1, len(self.train_rows) // s.batch_size)
        self.row_p = balanced_row_weights(data.label.codes[self.train_rows], s.balance)
        self.loop = {"epoch": 0, "batch": 0, "perm": None, "sums": {}, "history": [], "best_score": math.inf,
                     "best_state": None, "stale": 0, "last_val_step": 0, "elapsed": 0.0}  # fmt: skip
        self.rollbacks: list[dict] = []
        if resume is not None:
            self.load_state(resume)
        elif s.validate_start:  # the starting state is a candidate too (a pre-trained start)
            self._started = time.monotonic()
            start = {"epoch": 0, "g_step": 0, "seconds": 0.0}
            self._validate(start, 0)
            self.loop["history"].append(start)
        self._take_snapshot()
        stopped = self._run()
        # keep="last", or no validation ran (e.g. interrupted in the first epoch): the state now
        if self.settings.keep == "last" or self.loop["best_state"] is None:
            self.loop["best_state"] = copy.deepcopy(self.sampling_module().state_dict())
        state = {k: v.detach().to("cpu").clone() for k, v in self.loop["best_state"].items()}
        best = self.loop["best_score"]
        return TrainResult(
            state, self.loop["history"], stopped, None if math.isinf(best) else best, self.rollbacks
        )

    def _run(self) -> str:
        s, loop = self.settings, self.loop
        budget = 60 * s.max_minutes if s.max_minutes else math.inf
        self._started = time.monotonic() - loop["elapsed"]
        last_checkpoint = time.monotonic()
        stopped = "epochs"
        from ..progress import Progress

        early_stops = bool(s.patience) and s.keep == "best"
        # under a time budget or early stopping the epoch count is only a cap: a rate, not a misleading ETA
        total = None if s.max_minutes or early_stops else s.epochs
        bar = Progress(total=total, desc="training", unit="epoch", enabled=self.show_progress)
        with bar, StopSignals() as signals:
            while loop["epoch"] < s.epochs:
                if loop["batch"] == 0:
                    loop["perm"] = self.epoch_rows()
                    loop["sums"] = {}
                    self._schedule_lr(budget)
                rolled_back = False
                while loop["batch"] < self.steps_per_epoch:
                    b = loop["batch"]
                    rows = np.sort(loop["perm"][b * s.batch_size : (b + 1) * s.batch_size])
                    out = self.training_step(rows)
                    problem = self._divergence(out)
                    if problem:  # back to the last good state: an epoch's start, or where a resumed run began
                        self._roll_back(problem)
                        rolled_back = True
                        break
                    for k, v in out.items():
                        loop["sums"][k] = loop["sums"].get(k, 0.0) + v
                    loop["batch"] += 1
                    loop["elapsed"] = time.monotonic() - self._started
                    if loop["elapsed"] > budget or (self.deadline and time.monotonic() > self.deadline):
                        stopped = "time budget"
                        break
                    if signals.received:
                        stopped = "interrupted"
                        break
                    if self.checkpoint and time.monotonic() - last_checkpoint >= 60 * s.checkpoint_minutes:
                        self._write_checkpoint()
                        last_checkpoint = time.monotonic()
                if rolled_back:
                    continue
                if stopped == "interrupted":  # mid-epoch: the checkpoint continues this very epoch
                    if self.checkpoint:
                        self._write_checkpoint()
                    kept = "the model as it is" if s.keep == "last" else "the best model so far"
                    warnings.warn(f"training interrupted: keeping {kept}", stacklevel=3)
                    break
                record = self._end_epoch(last=loop["epoch"] + 1 == s.epochs or stopped != "epochs")
                bar.set_postfix(**self.progress_postfix(record))
                bar.update(1)
                if stopped != "epochs":
                    break
                if early_stops and loop["stale"] >= self.patience_validations():
                    stopped = "early stopping"
                    break
                if self.checkpoint and time.monotonic() - last_checkpoint >= 60 * s.checkpoint_minutes:
                    self._write_checkpoint()
                    last_checkpoint = time.monotonic()
        return stopped

    def patience_validations(self) -> int:
        """Validations without progress that end training: ``patience``; where epochs (validated at their
        ends) are longer than ``val_every_steps``, as many as make ``patience × val_every_steps`` steps."""
        s = self.settings
        if self.steps_per_epoch <= s.val_every_steps:
            return s.patience
        return max(1, math.ceil(s.patience * s.val_every_steps / self.steps_per_epoch))

    def _schedule_lr(self, budget_seconds: float) -> None:
        """Set every optimiser's rates for the coming epoch: set rate × schedule × rollback reductions."""
        s = self.settings
        if s.lr_schedule == "constant" and not self.rollbacks:
            return
        progress = max(self.loop["epoch"] / s.epochs, self.loop["elapsed"] / budget_seconds)
        factor = lr_factor(s.lr_schedule, progress) * s.rollback_lr_factor ** len(self.rollbacks)
        for opt, lrs in zip(self.optimizers(), self.base_lrs, strict=True):
            for group, lr in zip(opt.param_groups, lrs, strict=True):
                group["lr"] = lr * factor

    def _write_checkpoint(self) -> None:
        model = self.loop["best_state"] if self.settings.keep == "best" else None
        model = model or self.sampling_module().state_dict()
        self.checkpoint(self.state(), model)

    def epoch_rows(self) -> np.ndarray:
        """The training rows of one epoch, in order (class-balanced draws when ``balance`` > 0)."""
        s = self.settings
        if self.row_p is None:
            return self.rng.permutation(self.train_rows)
        return self.rng.choice(self.train_rows, size=self.steps_per_epoch * s.batch_size, p=self.row_p)

    def step_count(self) -> int:
        """Optimisation steps so far (what validation intervals count)."""
        raise NotImplementedError

    def _end_epoch(self, *, last: bool) -> dict:
        s, loop = self.settings, self.loop
        record: dict[str, Any] = {
            "epoch": loop["epoch"] + 1,
            "g_step": self.step_count(),
            "seconds": round(loop["elapsed"], 3),
        }
        sums = loop["sums"]
        for column, (total, count) in self.loss_keys.items():
            record[column] = sums.get(total, 0.0) / max(sums.get(count, 0.0), 1)
        step = self.step_count()
        if step - loop["last_val_step"] >= s.val_every_steps or last:
            self._validate(record, step)
        loop["history"].append(record)
        loop["epoch"] += 1
        loop["batch"] = 0
        if time.monotonic() - self._good_at >= _SNAPSHOT_SECONDS:
            self._take_snapshot()
        return record

    def _validate(self, record: dict, step: int) -> None:
        """Score the model now (and call the monitor) into ``record``; keep its state if the best."""
        loop = self.loop
        loop["last_val_step"] = step
        scores = self.validation_scores()
        record.update(scores)
        if self.monitor is not None:
            t0 = time.monotonic()
            record.update(self.monitor(step, record["seconds"], self.sampling_module().state_dict()))
            self._started += time.monotonic() - t0  # the monitor's time is not training time
            if self.deadline:
                self.deadline += time.monotonic() - t0
        score, tie = scores[self.val_key], scores.get(self.tie_key, math.inf) if self.tie_key else None
        verdict = judge(score, scores.get(f"{self.val_key}_sd", 0.0), loop["best_score"],
                        self.settings.val_tolerance, tie, loop.get("best_tie", math.inf))  # fmt: skip
        if verdict.keep:
            loop["best_score"], loop["best_tie"] = min(score, loop["best_score"]), tie
            if self.settings.keep == "best":
                loop["best_state"] = copy.deepcopy(self.sampling_module().state_dict())
        loop["stale"] = 0 if verdict.progress else loop["stale"] + 1

    # ------------------------------------------------------------------ divergence
    def _divergence(self, out: dict[str, float]) -> str | None:
        """What went wrong in a step's losses (``n_*`` entries are counts), or None."""
        limit = self.settings.divergence_limit
        for key, value in out.items():
            if key.startswith("n_"):
                continue
            if not math.isfinite(value):
                return f"{key} is {value}"
            if limit and abs(value) > limit:
                return f"{key} exploded ({value:.3g})"
        return None

    def _roll_back(self, problem: str) -> None:
        s = self.settings
        step = self.step_count()
        if len(self.rollbacks) >= s.max_rollbacks:
            raise TrainingError(
                f"training diverged ({problem} at step {step}) after {len(self.rollbacks)} rollbacks "
                f"with learning rates × {s.rollback_lr_factor ** len(self.rollbacks):g}; lower the learning "
                "rates (--param lr_g=... lr_d=...) or set grad_clip"
            )
        self._restore(self._good)
        factor = s.rollback_lr_factor ** (len(self.rollbacks) + 1)
        for opt, lrs in zip(self.optimizers(), self.base_lrs, strict=True):
            for group, lr in zip(opt.param_groups, lrs, strict=True):
                group["lr"] = lr * factor
        self.rollbacks.append({"step": step, "problem": problem, "lr_factor": factor})
        warnings.warn(
            f"training diverged ({problem} at step {step}): rolled back to the end of epoch "
            f"{self.loop['epoch']} with learning rates × {factor:g}",
            stacklevel=3,
        )

    def _take_snapshot(self) -> None:
        """Keep the current state as the one a divergence rolls back to (at the end of a healthy epoch)."""
        self._good = copy.deepcopy(self.state(include_history=False))
        self._good_at = time.monotonic()

    def _restore(self, snap: dict) -> None:
        """Back to a snapshot's weights, optimisers, generators and position: the history is cut back to
        the snapshot's epoch (epochs stay numbered in order), the record of rollbacks goes on."""
        history, rollbacks = self.loop["history"], self.rollbacks
        self.load_state(copy.deepcopy(snap))
        self.loop["history"], self.rollbacks = history[: self.loop["epoch"]], rollbacks

    # ------------------------------------------------------------------ state
    def state(self, include_history: bool = True) -> dict[str, Any]:
        """The whole training state: what a checkpoint holds and ``fit(resume=...)`` continues from."""
        loop = dict(self.loop)
        if not include_history:
            loop["history"] = []
        rng = {
            "numpy": self.rng.bit_generator.state,
            "torch": self.gen.get_state(),
            "torch_global": torch.get_rng_state(),
        }
        if self.device.type == "cuda":
            rng["cuda_global"] = torch.cuda.get_rng_state(self.device)
        return {
            "loop": loop,
            "rng": rng,
            "rollbacks": list(self.rollbacks),
            "parts": self.state_parts(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.loop.update(state["loop"])
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.gen.set_state(state["rng"]["torch"])
        torch.set_rng_state(state["rng"]["torch_global"])
        if "cuda_global" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda_global"], self.device)
        self.rollbacks = list(state.get("rollbacks", []))
        self.load_state_parts(state["parts"])
