"""``nbgan``: a conditional GAN whose generator starts as the decoder of a negative-binomial autoencoder.

Two stages, the second the cgan's own adversarial training:

1. an ``nbvae`` (:class:`~cellsynth.models.vae.NBVAE`) learns to encode the training cells into
   ``z_dim`` dimensions and to decode them into a profile (softmax over genes) and a per-(type, gene)
   inverse dispersion θ;
2. the generator is that decoder, fed with the cgan's per-type noise modulation
   ``z' = mean[type] + dev[type] z`` (``dev`` a lower-triangular matrix per type,
   :class:`~cellsynth.models.type_noise.TypeGaussianNoise`) started at each type's distribution of codes
   (the mean and covariance of its cells' posterior means), with Poisson–log-normal counts of
   over-dispersion 1/θ — a per-type Gaussian in the autoencoder's latent space, decoded. The cgan's
   adversarial training (critic in a PCA of the cells, auxiliary classifier, per-type MMD, moment and
   zero-fraction matches, label mixing, covariates) then fine-tunes all of it: the noise embeddings, the
   decoder and the per-(type, gene) offsets and dispersions.

The kept state is then calibrated: each type's mean log-expression moved onto its training cells'
(:mod:`~cellsynth.train.calibration`) and, with ``spread``, each type's spread along the training cells'
leading principal axes topped up by a Gaussian term in the log-rates where a forest check says it helps
(:mod:`~cellsynth.train.spread`).

A likelihood model cannot be more realistic than its decoder; a GAN trained from scratch on a few
hundred cells spends its budget finding what the decoder already knows and its critic overfits them.
Here the start is the decoder (the state before adversarial training is validated as a candidate and
kept if nothing later beats it), and the critic judges whole cells, so training can go past the
decoder.

With a time budget (``max_minutes``) the autoencoder gets ``ae_share`` of it (less if its own early
stopping ends it sooner) and the adversarial stage the rest. Checkpoints are written in both stages, each
a complete nbgan model directory: in the autoencoder's, its best state so far as the generator's start (the
decoder, fed each type's Gaussian of codes) with the autoencoder's training state beside it. A run
interrupted in either stage resumes where it stopped (one interrupted in the adversarial stage does not
refit the autoencoder); one interrupted in the autoencoder's keeps that start as its model. A ``monitor``
given to ``fit`` follows both stages: in the autoencoder's it sees the model started from each validated
state (so quality against training time starts before the adversarial stage does).
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from torch import nn

from ..data.stats import count_means_by_label, moments_by_label, per_type_rows
from ..errors import InputError
from ..nn.blocks import one_hot_conditions
from ..params import Param, ParamSpec
from ..train.calibration import calibrate_means, expected_seconds
from ..train.device import resolve_device
from ..train.spread import calibrate_spread, check_seconds, leading_axes
from .cgan import CGAN, PARAMS
from .decoder_generator import DecoderGenerator
from .registry import register
from .type_noise import CODE_COV
from .vae import NBVAE, NBVAENet, encode_means

#: the nbvae parameters the ``ae`` mapping may set (the latent size and the decoder's widths are the
#: nbgan's own ``z_dim`` and ``g_hidden``; the budget, the held-out cells and the validation's tolerance
#: are shared)
AE_OPTIONS = tuple(
    p.name
    for p in NBVAE.param_spec
    if p.name
    not in (
        "z_dim", "hidden", "dispersion", "zero_inflated", "max_minutes", "val_fraction", "val_min_cells",
        "checkpoint_minutes", "val_tolerance",
    )
)  # fmt: skip
#: how the autoencoder's kept state is chosen (``ae_selection``): the validation score of the start it gives
#: (the decoder fed each type's Gaussian of codes, scored as the adversarial stage scores its states), or its
#: own held-out NELBO (best at its first validation on every dataset here, long before the decoder is)
AE_SELECTION = ("start", "nelbo")
#: the most of a time budget reserved for the calibration and the spread term (a short budget on a large
#: dataset would otherwise leave the adversarial stage nothing); past the budget the calibration stops
#: after a round
RESERVE_SHARE = 0.4
#: the spread term's steps, and the training cells it is fitted on at most
SPREAD_ROUNDS = 2
SPREAD_CELLS = 5000
#: cells of a type (at most) whose codes give its Gaussian at each validation of the autoencoder's stage
START_CODES = 5000
#: the key that marks a checkpoint written in the autoencoder's stage (its value: that stage's plan state)
AE_STAGE = "autoencoder_stage"
#: the cgan parameters that mean nothing here: the generator's input is normal noise of the latent's
#: size, and it starts from the autoencoder, not from the data's within-type axes
_UNUSED = ("input_space", "init_variation")


@register
class NBGAN(CGAN):
    """NB-GAN: a conditional GAN whose generator starts as a trained negative-binomial count decoder."""

    name = "nbgan"
    _ae_seconds = 0.0
    _calibration_reserve = 0.0
    _ae_monitor_seconds = 0.0
    # the start (the decoder) is a candidate to keep: on pbmc68k's few hundred training cells adversarial
    # steps made it more detectable; states are scored as the calibration will leave them (the type-centred
    # MMD), since it moves each type's means after training (docs/benchmarks.md, "nbgan")
    param_spec = ParamSpec([p for p in PARAMS if p.name not in _UNUSED]).with_defaults(
        z_dim=32, g_hidden=(256, 256), validate_start=True, val_metric="cmmd"
    ).extend(
        Param("ae_share", 0.3, "float", "share of max_minutes for the autoencoder (the rest: the GAN)",
              gt=0, lt=1),
        Param("ae", {}, "dict", "the autoencoder's nbvae parameters", keys=AE_OPTIONS),
        Param("ae_selection", "start", "str", "the autoencoder's state kept: the one whose start (decoder "
              "and codes) scores best (val_metric), or its best held-out NELBO",
              choices=AE_SELECTION),
        Param("ae_tie_break", True, "bool", "ae_selection=start: a state whose start scores within one noise "
              "SD of the best replaces the kept one where its held-out NELBO is lower"),
        Param("calibrate", 6, "int", "rounds moving each type's mean log-expression onto its training "
              "cells' after training (0: off)", ge=0),
        Param("code_cov", "pooled", "str", "each type's code covariance shrunk, where its cells are few, "
              "towards its variances with every type's pooled correlations, or with none (diagonal)",
              choices=CODE_COV),
        Param("spread", True, "bool", "after training, top up each type's spread along the training cells' "
              "principal axes to theirs (a Gaussian term in the log-rates), kept only if a forest then tells "
              "generated from training cells less well"),
        Param("spread_from_noise", True, "bool", "spread: the term's variance in each gene taken out of the "
              "count draw's independent noise (each gene's log-rate keeps its variance; the genes vary "
              "together more)"),
        Param("calibrate_rates", True, "bool", "calibration: the genes a type is expected to hold fewer than "
              "0.3 counts per cell of moved onto an empirical-Bayes estimate of their training rates"),
        Param("calibrate_pool", 0, "int", "calibration: genes shrunk towards the mean step of this many "
              "bins of similar expression (0: towards zero)", ge=0),
        Param("subtypes", True, "bool", "split each type's training cells into sub-populations where they "
              "stand apart (Leiden clusters), condition on them and sample them at their shares (output "
              "with the type's label)"),
        Param("subtype_min_cells", 15, "int", "subtypes: the fewest cells of a sub-population (smaller "
              "clusters join the nearest; a type of fewer than twice as many stays whole)", ge=2),
    )  # fmt: skip

    def _z_dim(self, n_genes: int) -> int:  # noqa: ARG002
        return int(self.params["z_dim"])

    def _noise_fn(self):
        z_dim = int(self.params["z_dim"])

        def normal(n, g, d):
            return torch.randn(n, z_dim, generator=g, device=d)

        return normal

    def _training_latent(self, data, *, device, seed, progress):  # noqa: ARG002
        return None

    def _build(self, sizes, n_genes):
        modules = super()._build(sizes, n_genes)
        p, spread = self.params, (self.fit_record or {}).get("spread", {})
        modules["generator"] = DecoderGenerator(
            n_genes, sizes, int(p["z_dim"]), p["g_hidden"], dispersion=self._learns_dispersion(),
            code_cov=p["code_cov"], spread=bool(spread.get("kept")),
            spread_from_noise=bool(spread.get("from_noise")),
        )  # fmt: skip
        return modules

    def _autoencoder(self) -> NBVAE:
        p = self.params
        # the autoencoder in the nbgan's precision unless ``ae`` sets its own
        ae = {
            "mixed_precision": p["mixed_precision"],
            **p["ae"],
            "z_dim": p["z_dim"],
            "hidden": tuple(p["g_hidden"])[::-1],
        }
        for k in ("val_fraction", "val_min_cells", "checkpoint_minutes", "val_tolerance"):
            ae[k] = p[k]
        if p["max_minutes"] is not None:
            ae["max_minutes"] = float(p["max_minutes"]) * float(p["ae_share"])
        return NBVAE(**ae)

    def _checkpoint_callback(self, path, meta):
        write = super()._checkpoint_callback(path, meta)

        def stage_aware(state: dict, model_state: dict) -> None:
            if self._ae_stage is None:  # the adversarial stage: the cgan's checkpoint
                write(state, model_state)
                return
            # the autoencoder's stage: the nbgan started from its best state so far, and its plan state
            start = _cpu_copy(self.modules["generator"])
            self._start_at(model_state, start, self._started)
            write({AE_STAGE: state, "loop": state["loop"]}, start.state_dict())

        return stage_aware

    def _start_generator(self, data, *, device, seed, progress, resume) -> None:
        self._ae_seconds = self._calibration_reserve = 0.0
        if resume is not None:  # every weight comes back from the checkpoint
            return
        if data.library is None:
            self.info = None  # nothing was fitted
            raise InputError(
                f"model nbgan needs raw counts but the data are {data.preprocessing.representation}; "
                "give the counts (--layer/layer= the counts layer), or fit model cgan on log-normalised "
                "or scaled data"
            )
        started, self._ae_monitor_seconds = time.monotonic(), 0.0
        ae = self._autoencoder()
        ae.info, ae._deadline = self.info, self._deadline
        ae.modules = ae._build([c.n for c in data.conditions], data.n_genes)
        if self.params["ae_selection"] == "start":  # set up after the autoencoder's weights are drawn
            ae._scorer = self._start_scorer(data, device=device, seed=seed)
            ae._tie_key = "val_nelbo" if self.params["ae_tie_break"] else None
        ae._outer_monitor = self._start_monitor()
        ae_net = _cpu_copy(ae.modules["generator"])
        self._ae_stage = {"net": ae_net, "data": data}
        try:
            ae._fit(data, device=device, seed=seed, progress=progress, checkpoint=self._checkpoint,
                    resume=self._ae_resume)  # fmt: skip
        finally:
            self._ae_stage = None
        net = ae.modules["generator"].to("cpu")
        codes = encode_means(net, data)
        self.modules["generator"].start_from(net, codes, data.label.codes)
        self._started(self.modules["generator"], data, codes)
        self._calibration_reserve = self._calibration_estimate(data, device)
        # the monitor's time in the autoencoder's stage is not training time: off the stage's seconds, and
        # added to the whole fit's deadline (the stage's own plan moved its deadline already)
        self._ae_seconds = time.monotonic() - started - self._ae_monitor_seconds
        if self._deadline is not None:
            self._deadline += self._ae_monitor_seconds
        self._ae_history, self._ae_record = ae.history, ae.fit_record
        if ae.fit_record.get("stopped_because") == "interrupted":
            raise _InterruptedInAutoencoder

    def _start_scorer(self, data, *, device, seed):
        """``score(net)``: the validation score (``val_metric``'s) of the start that the autoencoder ``net``
        gives, computed by an adversarial plan set up as the adversarial stage's (the same held-out cells,
        principal axes and count draw) with the same noise at every call; its other scores beside it."""
        probe = self._adversarial_plan(
            _cpu_copy(self.modules["generator"]), device=device, seed=seed, progress=False
        )
        probe.setup(data)
        # a type's Gaussian of codes from at most START_CODES of its cells: each validation's encoding no
        # longer grows with the data
        rows = per_type_rows(data.label.codes, START_CODES)
        labels = data.label.codes[rows]

        def score(net: NBVAENet) -> dict[str, float]:
            if next(net.parameters()).device.type != "cpu":  # the codes are computed on the CPU
                net = _cpu_copy(net)
            probe.sampling_module().start_from(net, encode_means(net, data, rows), labels)
            probe.gen.manual_seed(seed + 3)
            scores = probe.validation_scores()
            # the adversarial stage's score selects; every score is recorded (val_start_mmd, ...)
            noise = scores.get(f"{probe.val_key}_sd", 0.0)
            selected = {"val_start": scores[probe.val_key], "val_start_sd": noise}
            return selected | {f"val_start_{k[4:]}": v for k, v in scores.items()}

        return score

    def _start_at(self, model_state: dict, generator: DecoderGenerator, started) -> None:
        """In the autoencoder's stage: put ``generator`` at the start that the autoencoder's weights
        ``model_state`` give, then call ``started`` (a model's :meth:`_started`) with it."""
        net, data = self._ae_stage["net"], self._ae_stage["data"]  # net: a CPU copy to load weights into
        net.load_state_dict(model_state)
        codes = encode_means(net, data)
        generator.start_from(net, codes, data.label.codes)
        started(generator, data, codes)

    def _start_monitor(self):
        """The user's monitor in the autoencoder's stage (None without one): at each of its validations,
        a copy of this model started from the autoencoder's state then (its decoder fed each type's
        Gaussian of codes: the model a checkpoint of that stage holds)."""
        user = getattr(self, "_monitor", None)
        if user is None:
            return None
        import copy

        def monitor(step: int, seconds: float, model_state: dict) -> dict:
            t0 = time.monotonic()
            try:
                return watch(step, seconds, model_state)
            finally:
                self._ae_monitor_seconds += time.monotonic() - t0

        def watch(step: int, seconds: float, model_state: dict) -> dict:
            snapshot = copy.copy(self)
            snapshot.modules = {name: _cpu_copy(m) for name, m in self.modules.items()}
            self._start_at(model_state, snapshot.modules["generator"], snapshot._started)
            for m in snapshot.modules.values():
                m.eval()
            return dict(user(snapshot, step, seconds) or {})

        return monitor

    def _started(self, generator: DecoderGenerator, data, codes: np.ndarray) -> None:
        """Called once ``generator`` is put at a start (the final one, or a checkpoint's in the
        autoencoder's stage), with the training cells' codes (posterior means) it started from."""

    def _settings(self):
        settings = super()._settings()
        if settings.max_minutes is not None:  # the autoencoder's seconds spent, the calibration's reserved
            spent = self._ae_seconds + self._calibration_reserve
            settings.max_minutes = max(settings.max_minutes - spent / 60.0, 1e-3)
        return settings

    def _calibration_estimate(self, data, device) -> float:
        """Seconds reserved out of the adversarial stage's budget for what follows it: on the CPU, the
        calibration's and the spread term's expected seconds (their cells generated,
        :func:`~cellsynth.train.calibration.expected_seconds`, and the spread check's forests), at most
        RESERVE_SHARE of the budget (the calibration's rounds stop once the budget is spent); on a GPU the
        generation takes seconds: nothing."""
        rounds, budget = int(self.params["calibrate"]), self.params["max_minutes"]
        spread = bool(self.params.get("spread"))
        if spread:  # its steps and its check generate about as many cells as a round each
            rounds += SPREAD_ROUNDS + 2
        if not rounds or budget is None or resolve_device(device) != "cpu":
            return 0.0
        expected = expected_seconds(self.modules["generator"], self._noise_fn(), data, rounds)
        if spread:
            expected += check_seconds(data.n_cells)
        return min(expected, RESERVE_SHARE * 60.0 * float(budget))

    def _plan_monitor(self):
        inner = super()._plan_monitor()
        if inner is None:
            return None
        offset = self._ae_seconds

        def monitor(step: int, seconds: float, model_state: dict) -> dict:
            return inner(step, seconds + offset, model_state)

        return monitor

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None):
        self._ae_history, self._ae_record = [], {}
        self._checkpoint, self._ae_stage, self._ae_resume = checkpoint, None, None
        if resume is not None and AE_STAGE in resume:  # interrupted in the autoencoder's stage
            self._ae_resume, resume = resume[AE_STAGE], None
        try:
            super()._fit(
                data, device=device, seed=seed, progress=progress, checkpoint=checkpoint, resume=resume
            )
        except _InterruptedInAutoencoder:  # the model is the decoder's start; no adversarial stage
            self.history = []
            self.fit_record = {"stopped_because": "interrupted", "best_val": None,
                               "val_metric": self.params["val_metric"]}  # fmt: skip
        offset = self._ae_seconds
        gan = [{**r, "stage": "gan", "seconds": r["seconds"] + offset} for r in self.history]
        self.history = [{**r, "stage": "autoencoder"} for r in self._ae_history] + gan
        if self._ae_record:
            self.fit_record["autoencoder"] = {
                k: self._ae_record[k]
                for k in ("stopped_because", "best_val", "precision")
                if k in self._ae_record
            }
            self.fit_record["autoencoder_seconds"] = round(offset, 3)

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        """Sampling noise: the latent's, and the spread term's columns once it is set."""
        return torch.randn(n, self.modules["generator"].noise_width(), generator=gen)

    def _finish(self, plan, data, seed: int) -> None:
        """Mean calibration (:mod:`~cellsynth.train.calibration`) of the kept state, with the model's own
        sampling noise and count draw, at the training cells' conditions and library sizes; then, with
        ``spread``, the spread term (:mod:`~cellsynth.train.spread`)."""
        rounds = int(self.params["calibrate"])
        if plan.observe is None or self.fit_record["stopped_because"] == "interrupted":
            return
        net, started = self.modules["generator"], time.perf_counter()
        dev = next(net.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(seed + 7919)

        def generate(rows: np.ndarray, expected: bool = False):
            """Cells generated for training ``rows`` as the critic sees them; ``expected``: with their
            expected counts (profile × library)."""
            w = plan.as_given(one_hot_conditions(plan.codes_all[rows].to(dev), plan.sizes))
            z = torch.randn(len(rows), net.noise_width(), generator=gen, device=dev)
            x, _, rho = net(z, w, with_profile=True)
            seen = plan.observed(x, rows, w, expected=rho, net=net)[0]
            return (seen, rho * plan.library_all[rows].to(dev)[:, None]) if expected else seen

        rows = np.sort(plan.train_rows)
        was = net.training
        net.eval()
        # the adversarial plan's deadline: the fit's, moved on by the time its monitor took
        deadline = plan.deadline

        def spent() -> bool:  # at least one round, then none past the fit's budget
            return deadline is not None and time.monotonic() > deadline

        if rounds:
            rates = count_means_by_label(data, rows) if self.params["calibrate_rates"] else None
            trace = calibrate_means(
                net.shift_log_rate, functools.partial(generate, expected=rates is not None),
                moments_by_label(data, rows), rows, plan.codes_all[rows, 0].numpy(), plan.sizes[0],
                data.n_genes, rounds, stop=spent, pool_bins=int(self.params["calibrate_pool"]), rates=rates,
            )  # fmt: skip
            self.fit_record["calibration"] = {
                "rounds": len(trace),
                "mean_abs_difference": [round(v, 5) for v in trace],
                "seconds": round(time.perf_counter() - started, 3),
                "reserved_seconds": round(self._calibration_reserve, 3),
            }
        if self.params.get("spread"):
            self.fit_record["spread"] = self._calibrate_spread(net, generate, data, rows, plan, seed)
        net.train(was)

    def _calibrate_spread(self, net: DecoderGenerator, generate, data, rows, plan, seed: int) -> dict:
        """Fit the spread term on (at most SPREAD_CELLS of) the training cells; its record."""
        started = time.perf_counter()
        rng = np.random.default_rng(seed + 104729)
        if len(rows) > SPREAD_CELLS:
            rows = np.sort(rng.choice(rows, SPREAD_CELLS, replace=False))
        real = data.dense_rows(rows)
        axes = leading_axes(real, data.preprocessing.representation, seed)

        net.spread_from_noise = from_noise = bool(self.params["spread_from_noise"])

        def set_term(factors):
            net.set_spread(axes[1], factors)

        record = calibrate_spread(
            generate, set_term, real, axes, rows, plan.codes_all[rows, 0].numpy(),
            plan.sizes[0], SPREAD_ROUNDS, seed,
        )  # fmt: skip
        return record | {"from_noise": from_noise, "seconds": round(time.perf_counter() - started, 3)}


class _InterruptedInAutoencoder(Exception):
    """SIGTERM/SIGINT stopped the autoencoder's stage: its checkpoint is written, the adversarial stage
    does not start."""


def _cpu_copy(module: nn.Module) -> nn.Module:
    """A CPU copy of ``module`` to load checkpointed weights into (the training copy is left alone)."""
    import copy

    return copy.deepcopy(module).to("cpu")


__all__ = ["AE_OPTIONS", "AE_STAGE", "DecoderGenerator", "NBGAN"]
