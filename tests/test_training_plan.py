"""The training plan owns its faults: checkpoints, resume after a stop or a kill, rollback on divergence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cellsynth import models
from cellsynth.cli import app
from cellsynth.errors import TrainingError
from cellsynth.train.adversarial import AdversarialPlan
from cellsynth.train.checkpoint import STATE_JSON, flatten, read_training_state, unflatten
from cellsynth.train.losses import AdversarialLoss
from tests.conftest import sigterm_at_step

TINY = dict(g_hidden=(32, 64), d_hidden=(64, 32), c_hidden=(32, 16), z_dim=16, val_every_steps=5)


def _cells(model) -> np.ndarray:
    return model.sample(n=120, seed=3).X.toarray()


def test_checkpoint_tree_keeps_types_tensors_and_integer_keys():
    import torch

    state = {
        "opt": {
            "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 3)}},
            "groups": [(0.5, 0.9)],
        },
        "rng": np.random.default_rng(1).bit_generator.state,
        "perm": np.arange(5, dtype=np.int64),
        "best": float("inf"),
        "none": None,
    }
    tree, tensors = flatten(state)
    json.dumps(tree)  # plain JSON: nothing to unpickle
    back = unflatten(json.loads(json.dumps(tree)), tensors)
    assert list(back["opt"]["state"]) == [0]
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], torch.ones(2, 3))
    assert back["opt"]["groups"] == [(0.5, 0.9)]
    assert back["rng"] == state["rng"]
    np.testing.assert_array_equal(back["perm"], state["perm"])
    assert back["best"] == float("inf") and back["none"] is None


@pytest.mark.parametrize(("every", "epochs_run"), [(3, 4), (2, 3)])
def test_patience_means_as_many_steps_where_epochs_are_longer_than_the_validation_interval(
    counts_adata, monkeypatch, every, epochs_run
):
    """Epochs of 3 steps, validated at their ends, every validation worse than the first, patience 3: with
    an interval of 3 steps that is 3 validations; with 2, an epoch is longer than the interval and patience
    means 3 × 2 steps, so 2 validations of 3 steps each."""
    scores = iter(range(100))
    monkeypatch.setattr(AdversarialPlan, "validation_scores", lambda self: {"val_mmd": float(next(scores))})
    model = models.get("cgan", epochs=8, patience=3, **{**TINY, "val_every_steps": every}).fit(
        counts_adata, label_key="cell_type", progress=False
    )
    assert model.fit_record["stopped_because"] == "early stopping"
    assert [r["g_step"] for r in model.history] == [3 * (i + 1) for i in range(epochs_run)]


def test_a_stopped_run_resumed_from_its_checkpoint_ends_exactly_like_an_uninterrupted_one(
    counts_adata, tmp_path, monkeypatch
):
    """SIGTERM mid-epoch: a checkpoint is written and training stops; resuming gives the same model."""
    params = dict(epochs=6, **TINY)
    whole = models.get("cgan", **params).fit(counts_adata, label_key="cell_type", progress=False, seed=2)

    restore = sigterm_at_step(monkeypatch, AdversarialPlan, 8)  # mid-epoch (3 steps per epoch here)
    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match="interrupted"):
        first = models.get("cgan", **params).fit(
            counts_adata, label_key="cell_type", progress=False, seed=2, checkpoint_dir=ckpt
        )
    assert first.fit_record["stopped_because"] == "interrupted"
    state, meta = read_training_state(ckpt)
    assert state["loop"]["epoch"] == 2 and state["loop"]["batch"] == 2  # two steps into the third epoch
    assert models.load(ckpt).sample(n=5).n_obs == 5  # the checkpoint is also a complete model directory
    restore()

    resumed = models.get("cgan", **params).fit(
        counts_adata, label_key="cell_type", progress=False, seed=2, checkpoint_dir=ckpt, resume=True
    )
    assert resumed.fit_record["stopped_because"] == "epochs"
    assert [r["epoch"] for r in resumed.history] == list(range(1, 7))
    assert [r["d_loss"] for r in resumed.history] == [r["d_loss"] for r in whole.history]
    np.testing.assert_array_equal(_cells(resumed), _cells(whole))


def test_resume_refuses_a_checkpoint_of_another_run(counts_adata, tmp_path, monkeypatch):
    restore = sigterm_at_step(monkeypatch, AdversarialPlan, 1)
    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning):
        models.get("cgan", epochs=3, **TINY).fit(
            counts_adata, label_key="cell_type", progress=False, checkpoint_dir=ckpt
        )
    restore()
    with pytest.raises(TrainingError, match="other parameters"):
        models.get("cgan", epochs=3, **{**TINY, "lr_g": 1e-3}).fit(
            counts_adata, label_key="cell_type", progress=False, checkpoint_dir=ckpt, resume=True
        )
    with pytest.raises(TrainingError, match="other data"):
        models.get("cgan", epochs=3, **TINY).fit(
            counts_adata[:500], label_key="cell_type", progress=False, checkpoint_dir=ckpt, resume=True
        )
    with pytest.raises(TrainingError, match="no training checkpoint"):
        models.get("cgan", epochs=3, **TINY).fit(
            counts_adata, label_key="cell_type", progress=False, checkpoint_dir=tmp_path / "none", resume=True
        )


class _NaNCritic(AdversarialLoss):
    """An adversarial loss whose critic loss is NaN on chosen calls (a diverging critic)."""

    def __init__(self, inner, bad):
        self.inner, self.bad, self.calls = inner, bad, 0
        self.d_steps, self.gradient_penalty = inner.d_steps, inner.gradient_penalty

    def d_loss(self, real, fake):
        self.calls += 1
        loss = self.inner.d_loss(real, fake)
        return loss * float("nan") if self.bad(self.calls) else loss

    def g_loss(self, fake):
        return self.inner.g_loss(fake)


def _with_critic_failures(monkeypatch, bad):
    from cellsynth.models.cgan import CGAN

    make = CGAN._loss
    monkeypatch.setattr(CGAN, "_loss", lambda self: _NaNCritic(make(self), bad))


def test_a_diverging_step_is_rolled_back_with_a_lower_learning_rate(counts_adata, monkeypatch):
    _with_critic_failures(monkeypatch, lambda call: call == 10)
    with pytest.warns(UserWarning, match="rolled back"):
        model = models.get("cgan", epochs=4, **TINY).fit(counts_adata, label_key="cell_type", progress=False)
    assert model.fit_record["stopped_because"] == "epochs"
    (rollback,) = model.fit_record["rollbacks"]
    assert rollback["lr_factor"] == 0.5 and "d_loss is nan" in rollback["problem"]
    assert [r["epoch"] for r in model.history] == [1, 2, 3, 4]
    assert all(np.isfinite(r["d_loss"]) for r in model.history)
    assert np.isfinite(_cells(model)).all()


def test_training_that_keeps_diverging_stops_with_one_clear_error(counts_adata, monkeypatch):
    _with_critic_failures(monkeypatch, lambda call: call >= 6)
    with pytest.warns(UserWarning, match="rolled back"), pytest.raises(TrainingError) as err:
        models.get("cgan", epochs=4, max_rollbacks=2, **TINY).fit(
            counts_adata, label_key="cell_type", progress=False
        )
    message = str(err.value)
    assert "diverged" in message and "after 2 rollbacks" in message and "\n" not in message


@pytest.fixture()
def h5ad(counts_adata, tmp_path) -> Path:
    path = tmp_path / "cells.h5ad"
    counts_adata.write_h5ad(path)
    return path


def test_fit_refuses_to_replace_a_model_without_overwrite(h5ad, tmp_path):
    out = tmp_path / "model"
    args = ["fit", str(h5ad), "--model", "cgan", "--out", str(out), "--epochs", "1", "--quiet"]
    args += [f"--param={k}={json.dumps(v)}" for k, v in TINY.items()]
    assert CliRunner().invoke(app, args).exit_code == 0
    before = (out / "weights.safetensors").read_bytes()
    refused = CliRunner().invoke(app, [*args, "--seed", "1"])
    assert refused.exit_code == 2
    assert "already exists" in refused.output and "--overwrite" in refused.output
    assert (out / "weights.safetensors").read_bytes() == before
    replaced = CliRunner().invoke(app, [*args, "--seed", "1", "--overwrite"])
    assert replaced.exit_code == 0
    assert (out / "weights.safetensors").read_bytes() != before


def test_a_killed_fit_resumes_from_its_last_checkpoint(h5ad, tmp_path):
    """SIGKILL (no chance to save anything): the resumed run loses at most one checkpoint interval."""
    out = tmp_path / "model"
    interval_min = 0.01  # 0.6 s
    cmd = [
        sys.executable,
        "-m",
        "cellsynth.cli",
        "fit",
        str(h5ad),
        "--model",
        "cgan",
        "--out",
        str(out),
        "--quiet",
    ]
    cmd += ["--epochs", "150", f"--param=checkpoint_minutes={interval_min}", "--param=patience=0"]
    cmd += [f"--param={k}={json.dumps(v)}" for k, v in TINY.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_file = out.with_name(f".{out.name}.checkpoint") / STATE_JSON
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists() and json.loads(state_file.read_text())["state"]["__dict__"]:
                doc = json.loads(state_file.read_text())
                if _epoch_of(doc) >= 3:
                    break
            time.sleep(0.1)
        assert proc.poll() is None, "training ended before it could be killed"
        time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not out.exists()  # nothing half-written where the model goes
    # the last checkpoint is at most one interval (plus the step in flight) older than the kill
    assert killed_at - state_file.stat().st_mtime <= 60 * interval_min + 2.0
    saved_epochs = _epoch_of(json.loads(state_file.read_text()))
    resumed = subprocess.run(
        [sys.executable, "-m", "cellsynth.cli", "fit", str(h5ad), "--out", str(out), "--quiet", "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    model = models.load(out)
    assert [r["epoch"] for r in model.history] == list(range(1, 151))
    assert model.history[saved_epochs - 1]["epoch"] == saved_epochs
    assert np.isfinite(model.sample(n=50, seed=0).X.toarray()).all()
    assert not out.with_name(f".{out.name}.checkpoint").exists()  # removed once the model is saved


def _epoch_of(doc: dict) -> int:
    """Epochs completed in a checkpoint's JSON tree (``state.loop.epoch``)."""
    items = dict((k, v) for k, v in doc["state"]["__dict__"])
    loop = dict((k, v) for k, v in items["loop"]["__dict__"])
    return int(loop["epoch"])


def test_a_checkpoint_replacement_cut_off_between_its_two_renames_is_finished(tmp_path):
    """A crash after the old checkpoint was moved aside and before the new one moved in loses nothing."""
    import torch

    from cellsynth.train.checkpoint import write_training_state

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    write_training_state(ckpt, {"x": torch.ones(2)}, {"model": "cgan"})
    os.replace(ckpt, tmp_path / ".ckpt.old")  # the state a crash between the renames leaves
    state, meta = read_training_state(ckpt)
    assert meta == {"model": "cgan"} and torch.equal(state["x"], torch.ones(2))
    assert ckpt.is_dir() and not (tmp_path / ".ckpt.old").exists()


def test_a_monitor_sees_a_sampling_copy_at_every_validation_and_costs_no_training_time(
    counts_adata, monkeypatch
):
    import types

    import cellsynth.train.plan as plan_module

    clock = [0.0]  # the plan's clock: only the monitor moves it, by 100 s per call
    monkeypatch.setattr(plan_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    calls = []

    def monitor(model, step, seconds):
        out = model.sample(40, seed=0)  # the copy samples with the weights trained so far
        calls.append((step, seconds))
        clock[0] += 100.0
        return {"monitored_cells": out.n_obs}

    # a one-minute budget: were the monitor's 100 s training time, the first validation would end training
    model = models.get("cgan", epochs=4, max_minutes=1.0, **{**TINY, "val_every_steps": 1})
    model.fit(counts_adata, label_key="cell_type", progress=False, monitor=monitor)
    validated = [r for r in model.history if "val_mmd" in r]
    assert model.fit_record["stopped_because"] == "epochs"
    assert len(calls) == len(validated) == 4
    assert all(r["monitored_cells"] == 40 for r in validated)
    assert [c[0] for c in calls] == [r["g_step"] for r in validated]
    assert all(c[1] == 0.0 for c in calls) and model.history[-1]["seconds"] == 0.0
    assert model.sample(40, seed=0).n_obs == 40  # the model itself is untouched


def test_cosine_schedule_lowers_the_rates_over_the_run_and_constant_keeps_them():
    import torch

    from cellsynth.data.celldata import CellData
    from cellsynth.data.datasets import simulate
    from cellsynth.models.vae import NBVAENet
    from cellsynth.train.likelihood import LikelihoodPlan, LikelihoodSettings
    from cellsynth.train.optim import LR_FLOOR, lr_factor

    assert lr_factor("cosine", 0.0) == 1.0 and lr_factor("cosine", 1.0) == pytest.approx(LR_FLOOR)
    assert lr_factor("cosine", 0.5) == pytest.approx((1 + LR_FLOOR) / 2)
    assert lr_factor("cosine", 2.0) == pytest.approx(LR_FLOOR)  # past the end (a late budget check)
    assert lr_factor("constant", 0.7) == 1.0
    with pytest.raises(ValueError, match="lr_schedule"):
        lr_factor("step", 0.5)

    data = CellData.from_anndata(simulate({"a": 60, "b": 60}, n_genes=20, seed=0), label_key="cell_type")
    rates = {}
    for schedule in ("constant", "cosine"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = NBVAENet(data.n_genes, [2], 4, (16,), 0.0, per_label=True, zero_inflated=False)
            s = LikelihoodSettings(epochs=4, batch_size=32, lr=1e-3, lr_schedule=schedule, patience=0)
            plan = LikelihoodPlan(net, s, device="cpu", seed=0, progress=False)
            plan.fit(data)
        rates[schedule] = plan.optimizers()[0].param_groups[0]["lr"]
    assert rates["constant"] == 1e-3
    # set at the start of the last epoch, 3 of 4 epochs into the run
    assert rates["cosine"] == pytest.approx(1e-3 * lr_factor("cosine", 3 / 4))


def _fit_a_scripted_likelihood_plan(tie_key=None, **settings):
    """A small NB-VAE fitted in the likelihood plan (validation at every epoch, patience 2) with the test's
    scripted validation scores: the result, and whether the state kept is the one training ended in."""
    import torch

    from cellsynth.data.celldata import CellData
    from cellsynth.data.datasets import simulate
    from cellsynth.models.vae import NBVAENet
    from cellsynth.train.likelihood import LikelihoodPlan, LikelihoodSettings

    data = CellData.from_anndata(simulate({"a": 60, "b": 60}, n_genes=20, seed=0), label_key="cell_type")
    torch.manual_seed(0)
    net = NBVAENet(data.n_genes, [2], 4, (16,), 0.0, per_label=True, zero_inflated=False)
    # 90 training cells, 2 steps an epoch: validated at every epoch's end, patience in validations
    s = LikelihoodSettings(batch_size=32, val_every_steps=2, patience=2, **settings)
    plan = LikelihoodPlan(net, s, device="cpu", seed=0, progress=False, tie_key=tie_key)
    result = plan.fit(data)
    assert plan.steps_per_epoch == 2
    final = plan.sampling_module().state_dict()
    return result, all(torch.equal(result.generator_state[k], final[k]) for k in final)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_decides_between_the_best_validated_state_and_the_final_one(keep, monkeypatch):
    from cellsynth.train.likelihood import LikelihoodPlan

    scores = iter(range(100))  # every validation worse than the one before: the first is the best
    monkeypatch.setattr(LikelihoodPlan, "nelbo", lambda self: float(next(scores)))
    result, same = _fit_a_scripted_likelihood_plan(epochs=6, keep=keep)
    validated = [r for r in result.history if "val_nelbo" in r]
    if keep == "best":  # early stopping after two validations without improvement; the first one kept
        assert result.stopped_because == "early stopping" and len(validated) == 3 and not same
    else:  # scores recorded at every epoch, no early stop, the state training ended in
        assert result.stopped_because == "epochs" and len(validated) == 6 and same


@pytest.mark.parametrize("tolerance", [0.0, 1.0])
def test_a_score_within_its_noise_of_the_best_keeps_the_later_state_but_is_not_progress(
    tolerance, monkeypatch
):
    from cellsynth.train.likelihood import LikelihoodPlan

    # noise SD 1: 4.5 and 4.8 are tied with 5.0 (and with each other); 4.5 beats 5.0 only without tolerance
    scores = iter([5.0, 4.5, 4.8, 4.6, 4.7, 4.9, 4.4, 4.3])
    monkeypatch.setattr(
        LikelihoodPlan, "validation_scores", lambda self: {"val_nelbo": next(scores), "val_nelbo_sd": 1.0}
    )
    result, same = _fit_a_scripted_likelihood_plan(epochs=8, val_tolerance=tolerance)
    validated = [r["val_nelbo"] for r in result.history if "val_nelbo" in r]
    assert result.stopped_because == "early stopping"
    if tolerance:  # no score beats 5.0 by more than its noise: stopped at the third, which is kept (tied)
        assert validated == [5.0, 4.5, 4.8] and same
    else:  # 4.5 is the lowest; the two after it are worse: stopped at the fourth, the second kept
        assert validated == [5.0, 4.5, 4.8, 4.6] and not same
        assert result.best_val_mmd == 4.5


@pytest.mark.parametrize("tie_key", [None, "val_tie"])
def test_a_tie_on_the_score_is_decided_by_the_tie_break_score(tie_key, monkeypatch):
    import torch

    from cellsynth.train.likelihood import LikelihoodPlan

    # (score, tie-break) with noise SD 1: 5.5 is tied with 5.0 and breaks the tie (9 < 10); 5.9 is tied
    # too but its tie-break is worse than the kept state's; 6.5 is beyond the noise
    script = iter([(5.0, 10.0), (5.5, 9.0), (5.9, 9.5), (6.5, 1.0), (7.0, 1.0)])
    states = []

    def scores(self):
        states.append({k: w.clone() for k, w in self.sampling_module().state_dict().items()})
        score, tie = next(script)
        return {"val_nelbo": score, "val_nelbo_sd": 1.0, "val_tie": tie}

    monkeypatch.setattr(LikelihoodPlan, "validation_scores", scores)
    result, _ = _fit_a_scripted_likelihood_plan(tie_key=tie_key, epochs=8)
    w = result.generator_state
    kept = [i for i, st in enumerate(states) if all(torch.equal(w[k], st[k]) for k in st)]
    assert result.stopped_because == "early stopping" and result.best_val_mmd == 5.0
    if tie_key:  # the tie won: patience starts again from the second validation
        assert kept == [1] and len(states) == 4
    else:  # the lowest score: the first, and two validations without improvement after it
        assert kept == [0] and len(states) == 3


def test_the_selection_rule_at_its_boundaries():
    from cellsynth.train.selection import judge

    # without a tie-break or tolerance: strictly lower is kept and is progress; nothing else
    assert judge(4.9, 1.0, 5.0) == judge(4.9, 0.0, 5.0) == (True, True)
    assert judge(5.0, 1.0, 5.0) == (False, False)
    # tolerance 1: within one SD of the best a tie (the later kept, no progress); below that, progress
    assert judge(5.9, 1.0, 5.0, tolerance=1.0) == judge(4.1, 1.0, 5.0, tolerance=1.0) == (True, False)
    assert judge(3.9, 1.0, 5.0, tolerance=1.0) == (True, True)
    assert judge(6.1, 1.0, 5.0, tolerance=1.0) == (False, False)
    # a tie-break: ties (within max(tolerance, 1) SDs) kept only with a lower tie-break, then progress
    assert judge(5.9, 1.0, 5.0, tie=1.0, kept_tie=2.0) == (True, True)
    assert judge(5.9, 1.0, 5.0, tie=3.0, kept_tie=2.0) == (False, False)
    assert judge(4.5, 1.0, 5.0, tie=3.0, kept_tie=2.0) == (True, True)  # lower is lower, whatever its tie
    assert judge(6.5, 1.0, 5.0, tolerance=2.0, tie=1.0, kept_tie=2.0) == (True, True)
    assert judge(6.5, 1.0, 5.0, tie=1.0, kept_tie=2.0) == (False, False)
    assert judge(5.1, 0.0, 5.0, tie=1.0, kept_tie=2.0) == (False, False)  # no noise known: no ties


@pytest.mark.parametrize("warmup", [0, 5])
def test_critic_warmup_trains_the_critic_alone_for_its_first_steps(counts_adata, monkeypatch, warmup):
    calls: list[str] = []
    critic, generator = AdversarialPlan.critic_step, AdversarialPlan.generator_steps

    def counted_critic(self, *a):
        calls.append("d")
        return critic(self, *a)

    def counted_generator(self, *a):
        calls.append("g")
        return generator(self, *a)

    monkeypatch.setattr(AdversarialPlan, "critic_step", counted_critic)
    monkeypatch.setattr(AdversarialPlan, "generator_steps", counted_generator)
    m = models.get("cgan", epochs=4, critic_warmup=warmup, **TINY)
    m.fit(counts_adata, label_key="cell_type", progress=False)
    n_critic = calls.count("d")
    assert n_critic > warmup + 2
    # the first generator step follows the critic's (warmup + 1)-th; then one per critic step
    assert calls[: warmup + 3] == ["d"] * (warmup + 1) + ["g", "d"]
    assert calls.count("g") == n_critic - warmup
    assert m.history[-1]["g_step"] == n_critic - warmup


@pytest.mark.parametrize("shared", [True, False])
def test_shared_fakes_judge_one_generated_batch_in_both_steps(counts_adata, monkeypatch, shared):
    """``shared_fakes``: one generator pass and count draw per step, which the critic learns on and the
    generator is then judged on; without it each network's step draws its own batch."""
    drawn, given = [], []
    fake_batch, critic, generator = (
        AdversarialPlan.fake_batch, AdversarialPlan.critic_step, AdversarialPlan.generator_steps
    )  # fmt: skip

    def counted_batch(self, *a, **k):
        drawn.append(fake_batch(self, *a, **k))
        return drawn[-1]

    def spied_critic(self, *a):
        given.append(("d", a[-1]))
        return critic(self, *a)

    def spied_generator(self, *a):
        given.append(("g", a[-1]))
        return generator(self, *a)

    monkeypatch.setattr(AdversarialPlan, "fake_batch", counted_batch)
    monkeypatch.setattr(AdversarialPlan, "critic_step", spied_critic)
    monkeypatch.setattr(AdversarialPlan, "generator_steps", spied_generator)
    m = models.get("cgan", epochs=2, shared_fakes=shared, **TINY)
    m.fit(counts_adata, label_key="cell_type", progress=False)
    steps = m.history[-1]["g_step"]
    assert steps > 2 and len(given) == 2 * steps
    assert len(drawn) == (steps if shared else 2 * steps)
    for (d, batch_d), (g, batch_g) in zip(given[::2], given[1::2], strict=True):
        assert (d, g) == ("d", "g")
        assert batch_d is batch_g if shared else batch_d is None and batch_g is None


def test_the_validation_mmd_compares_at_most_val_cells_held_out_cells(counts_adata, monkeypatch):
    """Large data hold out many cells; the MMD's kernels grow with their square, so a fixed subsample
    of at most VAL_CELLS is compared (and as many generated cells, at least 500)."""
    from cellsynth.train import adversarial

    monkeypatch.setattr(adversarial, "VAL_CELLS", 60)
    seen = []
    validation_set = AdversarialPlan._validation_set

    def spied(self, data):
        validation_set(self, data)
        seen.append((len(self.val_rows), len(self.ref_pcs), len(self.val_gen_rows)))
        assert set(self.val_gen_rows) <= set(self.val_rows)  # held-out cells' conditions only

    monkeypatch.setattr(AdversarialPlan, "_validation_set", spied)
    models.get("cgan", epochs=1, **TINY).fit(counts_adata, label_key="cell_type", progress=False)
    ((held, compared, generated),) = seen
    assert held > 60 and compared == 60 and generated == 500


@pytest.mark.parametrize(
    ("options", "total"),
    [
        ({"patience": 0}, 2),
        ({"patience": 3}, None),
        ({"patience": 3, "keep": "last"}, 2),
        ({"max_minutes": 5}, None),
    ],
)
def test_the_progress_bar_counts_towards_the_epochs_only_where_they_end_training(
    counts_adata, monkeypatch, options, total
):
    """An ETA for every epoch is a promise only where neither early stopping nor a time budget can end
    training sooner; otherwise the bar shows a rate."""
    import cellsynth.progress

    totals = []
    real = cellsynth.progress.Progress

    def recording(*args, **kwargs):
        totals.append(kwargs.get("total", args[0] if args else None))
        return real(*args, **kwargs)

    monkeypatch.setattr(cellsynth.progress, "Progress", recording)
    models.get("cgan", epochs=2, **{**TINY, **options}).fit(
        counts_adata, label_key="cell_type", progress=False
    )
    assert totals == [total]
