"""nbgan: a cgan whose generator starts as a trained NB decoder — the start, both stages, round trips."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cellsynth import models
from cellsynth.data import CellData
from cellsynth.errors import InputError
from cellsynth.models.nbgan import AE_STAGE, RESERVE_SHARE, DecoderGenerator
from cellsynth.models.vae import NBVAENet
from cellsynth.train.checkpoint import read_training_state
from cellsynth.train.likelihood import LikelihoodPlan
from cellsynth.train.spread import check_seconds
from tests.conftest import assert_labelled_counts, sigterm_at_step

TINY = dict(
    epochs=3,
    val_every_steps=5,
    z_dim=8,
    g_hidden=(32, 32),
    d_hidden=(32, 16),
    c_hidden=(16,),
    ae={"epochs": 3},
)


@pytest.fixture(scope="module")
def fitted(counts_adata):
    m = models.get("nbgan", **TINY)
    return m.fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False, seed=0)


def test_the_generator_starts_as_the_decoder_of_each_types_codes():
    torch.manual_seed(0)
    sizes, genes, z_dim = [3, 2], 20, 4
    ae = NBVAENet(genes, sizes, z_dim, (16, 8), 0.0, per_label=True, zero_inflated=False)
    with torch.no_grad():
        ae.log_theta.copy_(torch.randn(3, genes))
    gen = DecoderGenerator(genes, sizes, z_dim, (8, 16), dispersion=True)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 400)
    mix = np.array([[[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0.5]]] * 3)  # correlated codes
    centres = np.array([[0.0] * 4, [3.0] * 4, [-2.0, 1.0, 0.0, 5.0]])
    codes = centres[labels] + np.einsum("nij,nj->ni", mix[labels], rng.standard_normal((1200, z_dim)))
    gen.start_from(ae, codes, labels)

    # the noise of each type is its codes' Gaussian: mean and (full) covariance
    n = 20_000
    for c in range(3):
        w = [
            F.one_hot(torch.full((n,), c), 3).float(),
            F.one_hot(torch.zeros(n, dtype=torch.long), 2).float(),
        ]
        drawn = gen.noise(torch.randn(n, z_dim), w).detach().numpy()
        real = codes[labels == c]
        np.testing.assert_allclose(drawn.mean(0), real.mean(0), atol=0.05)
        np.testing.assert_allclose(np.cov(drawn, rowvar=False), np.cov(real, rowvar=False), atol=0.08)

    # decoded as the autoencoder decodes; the covariates reach the decoder only
    z = torch.randn(6, z_dim)
    w = [
        F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float(),
        F.one_hot(torch.tensor([0, 1] * 3), 2).float(),
    ]
    x, pre = gen(z, w)
    torch.testing.assert_close(x, ae.generate(gen.noise(z, w), w), rtol=1e-5, atol=1e-5)
    assert torch.equal(x, pre) and (x >= 0).all()
    # the count draw's over-dispersion is the decoder's 1/θ, per type
    torch.testing.assert_close(gen.dispersion(w), 1.0 / ae.theta(w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("code_cov", ["diagonal", "pooled"])
def test_a_type_of_few_cells_keeps_its_variances_and_takes_the_pooled_correlations_when_told(code_cov):
    sizes, genes, z_dim = [3], 10, 4
    ae = NBVAENet(genes, sizes, z_dim, (8,), 0.0, per_label=True, zero_inflated=False)
    gen = DecoderGenerator(genes, sizes, z_dim, (8,), dispersion=False, code_cov=code_cov)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [500, 500, 4])  # type 2: as few cells as dimensions, shrunk all the way
    mix = np.array([[1, 0, 0, 0], [0.8, 0.6, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # dims 0 and 1: r = 0.8
    codes = rng.standard_normal((len(labels), z_dim)) @ mix.T
    codes[labels == 2] = np.array([[2.0, 1.0, 0.0, 0.0], [0.0, -1.0, 1.0, 0.5], [-1.0, 0.0, 2.0, 0.0],
                                   [1.0, 2.0, 0.0, -1.0]])  # fmt: skip
    gen.start_from(ae, codes, labels)

    dev = torch.tril(gen.noise.dev).detach().double().numpy()
    cov = dev[2] @ dev[2].T
    np.testing.assert_allclose(np.diag(cov), np.var(codes[labels == 2], axis=0, ddof=1), rtol=1e-4)
    corr = cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])
    assert corr == pytest.approx(0.0 if code_cov == "diagonal" else 0.8, abs=0.05)
    # a type of many cells keeps (almost all of) its own covariance either way
    big = dev[0] @ dev[0].T
    np.testing.assert_allclose(big, np.cov(codes[labels == 0], rowvar=False), atol=0.05)


def test_the_profile_given_beside_the_output_draws_the_same_counts_with_the_same_gradients():
    """``with_profile=True`` hands the count draw ρ itself: the draw it gives and the gradients through it
    are those of recovering ρ from the output (what any other generator's output goes through)."""
    from cellsynth.data.preprocess import CountObservation, profile

    torch.manual_seed(0)
    sizes, genes, z_dim = [3], 50, 4
    gen = DecoderGenerator(genes, sizes, z_dim, (8, 16), dispersion=True)
    z, w = torch.randn(7, z_dim), [F.one_hot(torch.tensor([0, 1, 2, 0, 1, 2, 0]), 3).float()]
    x, pre, rho = gen(z, w, with_profile=True)
    x2, _ = gen(z, w)
    assert torch.equal(x, x2) and torch.equal(x, pre)
    torch.testing.assert_close(rho, profile(x), rtol=1e-4, atol=1e-7)
    library = torch.linspace(500.0, 5000.0, 7)
    grads, outputs = [], []
    for expected in (None, rho):
        gen.zero_grad()
        x, _, rho = gen(z, w, with_profile=True)
        g = torch.Generator().manual_seed(3)
        obs, p0 = CountObservation("pln")(
            x, library, 1e4 / library, g, gen.dispersion(w), None if expected is None else rho
        )
        (obs.pow(2).sum() + p0.sum()).backward()
        outputs.append((obs.detach(), p0.detach()))
        grads.append(torch.cat([q.grad.ravel() for q in gen.parameters() if q.grad is not None]))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-5)
    assert grads[0].abs().sum() > 0


def test_both_stages_run_and_the_start_is_a_validated_candidate(fitted, counts_adata):
    stages = [r["stage"] for r in fitted.history]
    assert stages == ["autoencoder"] * 3 + ["gan"] * 4  # the GAN's step-0 validation, then its epochs
    start = fitted.history[3]
    assert start["g_step"] == 0 and "val_mmd" in start
    seconds = [r["seconds"] for r in fitted.history]
    assert seconds == sorted(seconds)
    assert fitted.fit_record["autoencoder"]["stopped_because"] == "epochs"
    request = {"alpha": 30, "rare": 10}
    assert_labelled_counts(fitted.sample(per_type=request, seed=0), request, counts_adata)


def test_nbgan_round_trips_and_is_deterministic(fitted, tmp_path):
    a = fitted.sample(n=40, seed=3)
    assert (a.X != fitted.sample(n=40, seed=3).X).nnz == 0
    assert (a.X != fitted.sample(n=40, seed=4).X).nnz > 0
    fitted.save(tmp_path / "m")
    again = models.load(tmp_path / "m")
    assert (a.X != again.sample(n=40, seed=3).X).nnz == 0
    assert not any(k.startswith("vae.encoder") for k in again.modules["generator"].state_dict())


def test_the_budget_is_shared_between_the_stages(counts_adata):
    m = models.get("nbgan", **{**TINY, "epochs": 100_000, "max_minutes": 0.1, "ae": {"epochs": 100_000}})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.fit_record["autoencoder"]["stopped_because"] in ("time budget", "early stopping")
    # its share of the 6 s, and set-up (up to 3 s on two loaded cores): below the whole budget
    assert m.fit_record["autoencoder_seconds"] <= 0.3 * 6 + 3
    assert m.history[-1]["seconds"] <= 6 + 4
    # the calibration's seconds are reserved out of the adversarial stage's share, and it ran
    record = m.fit_record["calibration"]
    assert record["reserved_seconds"] > 0 and len(record["mean_abs_difference"]) == record["rounds"]
    # with the spread term, the reserve covers its check's forests too (the check ran), within its cap
    assert "spread" in m.fit_record and m.params["spread"]
    reserve = min(check_seconds(counts_adata.n_obs), RESERVE_SHARE * 6)
    assert record["reserved_seconds"] >= reserve - 1e-6


def test_nbgan_refuses_what_it_cannot_fit(counts_adata):
    with pytest.raises(InputError, match="ae"):
        models.get("nbgan", ae={"z_dim": 4})  # the latent size is the nbgan's own z_dim
    logged = counts_adata.copy()
    logged.X = np.log1p(logged.X.toarray())
    m = models.get("nbgan", **TINY)
    with pytest.raises(InputError, match="nbgan needs raw counts"):
        m.fit(logged, label_key="cell_type", representation="log1p", progress=False)
    assert not m.is_fitted


def test_a_run_stopped_in_the_autoencoders_stage_resumes_there_and_ends_like_an_uninterrupted_one(
    counts_adata, tmp_path, monkeypatch
):
    """SIGTERM while the autoencoder trains: the checkpoint is a complete nbgan (the decoder's start) with
    the autoencoder's training state; the adversarial stage does not start; resuming finishes both."""
    params = {**TINY, "ae": {"epochs": 4}}
    whole = models.get("nbgan", **params).fit(counts_adata, label_key="cell_type", progress=False, seed=1)

    restore = sigterm_at_step(monkeypatch, LikelihoodPlan, 5)  # while the autoencoder trains
    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match="interrupted"):
        first = models.get("nbgan", **params).fit(
            counts_adata, label_key="cell_type", progress=False, seed=1, checkpoint_dir=ckpt
        )
    assert first.fit_record["stopped_because"] == "interrupted"
    assert {r["stage"] for r in first.history} == {"autoencoder"}  # no adversarial step was taken
    state, meta = read_training_state(ckpt)
    assert meta["model"] == "nbgan" and AE_STAGE in state
    saved = models.load(ckpt)
    assert saved.name == "nbgan" and saved.sample(n=5, seed=0).n_obs == 5
    # the saved start is the interrupted model's own (both started from the autoencoder's best state)
    np.testing.assert_array_equal(
        saved.sample(n=30, seed=2).X.toarray(), first.sample(n=30, seed=2).X.toarray()
    )
    restore()

    resumed = models.get("nbgan", **params).fit(
        counts_adata, label_key="cell_type", progress=False, seed=1, checkpoint_dir=ckpt, resume=True
    )
    assert resumed.fit_record["stopped_because"] == "epochs"
    assert resumed.fit_record["autoencoder"]["stopped_because"] == "epochs"
    assert [r["stage"] for r in resumed.history] == [r["stage"] for r in whole.history]
    cells = [m.sample(n=60, seed=3).X.toarray() for m in (resumed, whole)]
    np.testing.assert_array_equal(*cells)


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_start_is_the_autoencoders_best_state_or_its_last_when_told(counts_adata, monkeypatch, keep):
    from cellsynth.train.plan import TrainingPlan

    ends = []
    run = TrainingPlan._run

    def recording_run(plan):
        stopped = run(plan)
        if isinstance(plan, LikelihoodPlan):  # the autoencoder's state when its training ends
            ends.append(_clone(plan.sampling_module().state_dict()))
        return stopped

    monkeypatch.setattr(TrainingPlan, "_run", recording_run)
    starts = _recorded_starts(monkeypatch)
    # selected by its NELBO, the autoencoder's best validated state; ae={"keep": "last"} its final one
    ae = {"epochs": 80, "lr": 3e-2, "val_every_steps": 20, "patience": 0}
    if keep == "last":
        ae["keep"] = "last"
    m = models.get("nbgan", **{**TINY, "epochs": 1, "ae": ae, "ae_selection": "nelbo"})
    assert m._autoencoder().params["keep"] == keep
    m.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    ae_vals = [r["val_nelbo"] for r in m.history if r["stage"] == "autoencoder" and "val_nelbo" in r]
    assert len(ends) == 1 and len(ae_vals) >= 3
    decoder = [k for k in starts[-1] if k.startswith("decoder")]
    same = all(torch.equal(starts[-1][k], ends[0][k]) for k in decoder)
    # a state other than the last scored best, so only keep="last" starts from the last
    assert min(ae_vals) < ae_vals[-1]
    assert same == (keep == "last")


@pytest.mark.parametrize("tie_break", [False, True])
def test_ae_selection_start_keeps_the_state_whose_start_scores_best_or_a_tie_of_lower_nelbo(
    counts_adata, monkeypatch, tie_break
):
    from cellsynth.train.selection import judge

    snapshots = []
    scores = LikelihoodPlan.validation_scores

    def recording_scores(plan):  # every validated autoencoder state, beside its scores
        out = scores(plan)
        snapshots.append(_clone(plan.sampling_module().state_dict()))
        return out

    monkeypatch.setattr(LikelihoodPlan, "validation_scores", recording_scores)
    starts = _recorded_starts(monkeypatch)
    ae = {"epochs": 40, "lr": 3e-2, "val_every_steps": 20, "patience": 0}
    params = {**TINY, "epochs": 1, "ae": ae, "ae_selection": "start", "ae_tie_break": tie_break}
    m = models.get("nbgan", **params)
    m.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    records = [r for r in m.history if r["stage"] == "autoencoder" and "val_start" in r]
    assert len(records) == len(snapshots) >= 3
    assert all("val_nelbo" in r for r in records)  # the NELBO is still recorded
    vals = [r["val_start"] for r in records]
    assert min(vals) < vals[0]  # a later state scores best
    # the kept state: the lowest score, or with the tie-break the state the rule picks from the records
    best, low, kept_tie = 0, vals[0], records[0]["val_nelbo"]
    for i, r in enumerate(records[1:], 1):
        tie = r["val_nelbo"] if tie_break else None
        if judge(r["val_start"], r["val_start_sd"], low, tie=tie, kept_tie=kept_tie).keep:
            best, low, kept_tie = i, min(low, r["val_start"]), r["val_nelbo"]
    assert (best != int(np.argmin(vals))) == tie_break  # here a tie with a lower NELBO won
    assert m.fit_record["autoencoder"]["best_val"] == pytest.approx(min(vals))
    decoder = [k for k in starts[-1] if k.startswith("decoder")]
    kept = [
        i for i, snap in enumerate(snapshots) if all(torch.equal(starts[-1][k], snap[k]) for k in decoder)
    ]
    assert kept == [best]
    # the score is the start's validation score (val_metric's, the type-centred MMD by default): the
    # adversarial stage's step-0 validation of the kept start scores the same cells, with other noise
    assert m.params["val_metric"] == "cmmd"
    step0 = next(r for r in m.history if r["stage"] == "gan" and r["g_step"] == 0)
    assert step0["val_cmmd"] == pytest.approx(vals[best], abs=0.02)


def _clone(state: dict) -> dict:
    """A copy of a state dict (its tensors are the module's own, which training goes on changing)."""
    return {k: v.detach().clone() for k, v in state.items()}


def _recorded_starts(monkeypatch) -> list[dict]:
    """The decoder states nbgan starts its generator from, in order (copies)."""
    from cellsynth.models.nbgan import NBGAN

    starts = []
    monkeypatch.setattr(
        NBGAN, "_started", lambda self, gen, data, codes: starts.append(_clone(gen.vae.state_dict()))
    )
    return starts


def test_a_monitor_follows_the_start_in_the_autoencoders_stage_and_changes_nothing(counts_adata, monkeypatch):
    snapshots = []
    scores = LikelihoodPlan.validation_scores

    def recording_scores(plan):  # every validated autoencoder state
        snapshots.append(_clone(plan.sampling_module().state_dict()))
        return scores(plan)

    monkeypatch.setattr(LikelihoodPlan, "validation_scores", recording_scores)
    seen = []

    def monitor(model, step, seconds):
        seen.append((model, _clone(model.modules["generator"].vae.state_dict())))
        out = model.sample(per_type={"alpha": 5, "rare": 5}, seed=0)
        clock["skipped"] += pause  # a slow monitor: its time is not the stage's training time
        return {"monitored_cells": out.n_obs}

    # a budget the monitor's clock overruns: the fit's deadlines, the calibration's too, move with it
    params = {**TINY, "max_minutes": 10, "ae": {"epochs": 4, "val_every_steps": 5, "patience": 0}}
    m, pause = models.get("nbgan", **params), 1000.0
    # each call of the monitor takes a thousand seconds of the clock the fit reads (no real waiting)
    clock, monotonic = {"skipped": 0.0}, time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: monotonic() + clock["skipped"])
    m.fit(counts_adata, label_key="cell_type", progress=False, seed=0, monitor=monitor)
    monkeypatch.setattr(time, "monotonic", monotonic)
    validated = [r for r in m.history if "val_start" in r or "val_mmd" in r]
    ae_records = [r for r in validated if r["stage"] == "autoencoder"]
    assert len(ae_records) == len(snapshots) >= 2
    assert all(r["monitored_cells"] == 10 for r in validated)  # every validation of both stages
    # in the autoencoder's stage the monitor sees an nbgan started from the state validated then
    for (model, decoder), state in zip(seen, snapshots, strict=False):
        assert isinstance(model, type(m)) and model is not m
        for k, v in decoder.items():
            assert torch.equal(v, state[k])
    assert not all(torch.equal(seen[0][1][k], seen[1][1][k]) for k in seen[0][1])
    # watching changes nothing: the same seed without a monitor fits the same model
    unwatched = models.get("nbgan", **params).fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    assert (m.sample(n=30, seed=1).X != unwatched.sample(n=30, seed=1).X).nnz == 0
    # and the stage's seconds (the adversarial stage's clock and budget start from them) leave the
    # monitor's thousands out
    assert m.fit_record["autoencoder_seconds"] < pause
    assert all(r["seconds"] < pause for r in m.history)
    assert m.fit_record["calibration"]["rounds"] == unwatched.fit_record["calibration"]["rounds"] > 1


def _type_mean_gap(model, adata) -> float:
    """Mean absolute difference between each type's mean log-expression in ``model``'s cells and in
    ``adata``'s, over types (weighted by cells) and genes."""
    from cellsynth.data.preprocess import normalize_log1p

    labels = adata.obs["cell_type"].astype(str)
    request = labels.value_counts().to_dict()
    syn = model.sample(per_type=request, seed=5)
    real, fake = normalize_log1p(adata.X).toarray(), normalize_log1p(syn.X).toarray()
    syn_labels = syn.obs["cell_type"].astype(str).to_numpy()
    gaps = [
        np.abs(real[labels.to_numpy() == t].mean(0) - fake[syn_labels == t].mean(0)).mean() * n
        for t, n in request.items()
    ]
    return float(np.sum(gaps) / sum(request.values()))


def test_calibration_undoes_a_bias_in_each_types_mean_expression(counts_adata, monkeypatch):
    start_from = DecoderGenerator.start_from

    def biased(self, *args, **kwargs):  # every other gene's log-rate an e-fold too high, in every type
        start_from(self, *args, **kwargs)
        with torch.no_grad():
            self.vae.offset[:, ::2] += 1.0

    monkeypatch.setattr(DecoderGenerator, "start_from", biased)
    kw = {**TINY, "epochs": 1}
    off = models.get("nbgan", **kw, calibrate=0).fit(counts_adata, label_key="cell_type", progress=False)
    on = models.get("nbgan", **kw, calibrate=4).fit(counts_adata, label_key="cell_type", progress=False)
    assert "calibration" not in off.fit_record
    record = on.fit_record["calibration"]
    assert record["rounds"] == 4 and len(record["mean_abs_difference"]) == 4
    assert record["mean_abs_difference"][-1] < 0.5 * record["mean_abs_difference"][0]
    assert _type_mean_gap(on, counts_adata) < 0.5 * _type_mean_gap(off, counts_adata)


def test_rarely_expressed_genes_are_calibrated_in_rates_at_the_cells_library_sizes(counts_adata, monkeypatch):
    """Each type's genes of fewer than 0.6 counts per cell started at a fifth of their rates: the rate
    calibration (expected counts = profile × each training cell's library) brings their counts back."""
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    X = counts_adata.X.toarray()[:, data.preprocessing.train_genes]
    labels = counts_adata.obs["cell_type"].astype(str).to_numpy()
    means = np.stack([X[labels == t].mean(0) for t in data.label.categories])
    low = means < 0.6
    start_from = DecoderGenerator.start_from

    def lowered(self, *args, **kwargs):
        start_from(self, *args, **kwargs)
        with torch.no_grad():
            self.vae.offset[torch.from_numpy(low)] -= float(np.log(5.0))

    monkeypatch.setattr(DecoderGenerator, "start_from", lowered)
    request = {t: 4 * int((labels == t).sum()) for t in data.label.categories}
    ratio = {}
    for rates in (False, True):
        kw = {**TINY, "epochs": 1}
        model = models.get("nbgan", **kw, calibrate=4, spread=False, calibrate_rates=rates)
        model.fit(counts_adata, label_key="cell_type", progress=False)
        syn = model.sample(per_type=request, seed=3)
        S = syn.X.toarray()[:, data.preprocessing.train_genes]
        syn_labels = syn.obs["cell_type"].astype(str).to_numpy()
        gen = np.stack([S[syn_labels == t].mean(0) for t in data.label.categories])
        ratio[rates] = gen[low].sum() / means[low].sum()
    assert 0.85 < ratio[True] < 1.15
    assert abs(np.log(ratio[True])) < abs(np.log(ratio[False]))


def test_the_spread_term_is_kept_where_cells_vary_along_programs_and_travels_with_the_model(tmp_path):
    """Cells of each type varying along shared expression programs: the decoder of a short fit spreads them
    too little, the spread term tops that up (out of the count draw's noise), passes the forest's check, and
    is in the model file, which samples the same cells once loaded; without
    ``spread`` the file holds no such tensors. nbgarage (whose samples come from its seed bank) has none."""
    from safetensors import safe_open

    from cellsynth.data.datasets import simulate

    adata = simulate({"a": 300, "b": 200}, n_genes=100, programs=3, program_sd=0.8, seed=1)
    fitted = models.get("nbgan", **TINY).fit(adata, label_key="cell_type", progress=False, seed=0)
    record = fitted.fit_record["spread"]
    assert record["kept"] and record["auc_with"] < record["auc_without"]
    a = fitted.sample(n=60, seed=2)
    fitted.save(tmp_path / "m")
    again = models.load(tmp_path / "m")
    assert again.modules["generator"].spread_on
    # the term's variance is taken out of the count draw's noise (the default), in the loaded model too
    assert record["from_noise"] and again.modules["generator"].noise_taken() is not None
    assert (a.X != again.sample(n=60, seed=2).X).nnz == 0

    off = models.get("nbgan", spread=False, **TINY).fit(adata, label_key="cell_type", progress=False, seed=0)
    assert "spread" not in off.fit_record
    off.save(tmp_path / "off")
    with safe_open(str(tmp_path / "off" / "weights.safetensors"), framework="pt") as f:
        assert not any("spread" in k for k in f.keys())
    assert "spread" not in models.registry.param_spec("nbgarage").names


def test_the_start_scorer_encodes_at_most_start_codes_cells_of_a_type(counts_adata, monkeypatch):
    """Each validation of the autoencoder's stage encodes a type's cells up to START_CODES of them, spread
    over the type; the final start encodes every cell (the seed cells' codes need theirs)."""
    from cellsynth.data.stats import per_type_rows
    from cellsynth.models import nbgan

    labels = np.repeat([0, 1, 2], [10, 4, 7])
    rows = per_type_rows(labels, 5)
    assert np.bincount(labels[rows]).tolist() == [5, 4, 5] and rows.tolist() == sorted(rows.tolist())
    assert rows[labels[rows] == 0].tolist() == [0, 2, 4, 7, 9]  # first, last and evenly between
    assert per_type_rows(labels, 10).tolist() == list(range(21))

    encoded = []
    real = nbgan.encode_means

    def spy(net, data, rows=None):
        encoded.append(data.n_cells if rows is None else len(rows))
        return real(net, data, rows)

    monkeypatch.setattr(nbgan, "encode_means", spy)
    monkeypatch.setattr(nbgan, "START_CODES", 30)
    models.get("nbgan", **TINY).fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    n_types = counts_adata.obs["cell_type"].nunique()
    assert encoded[-1] == counts_adata.n_obs  # the final start
    scorer = encoded[:-1]
    assert scorer and all(n <= 30 * n_types for n in scorer)
