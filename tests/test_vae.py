"""The VAEs (``vae``, ``nbvae``) and the likelihood plan they train in: sampling, save/load, determinism,
mixing, resume, the count likelihood and its sampler."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import cellsynth.models.vae  # noqa: F401  (registers vae and nbvae)
from cellsynth import models
from cellsynth.data.celldata import CellData
from cellsynth.data.preprocess import CountEntries, nonzero_counts
from cellsynth.errors import InputError, TrainingError
from cellsynth.models.nbvae import count_nll, draw_nb
from cellsynth.train.checkpoint import read_training_state, write_training_state
from cellsynth.train.likelihood import LikelihoodPlan, LikelihoodSettings
from tests.conftest import assert_integer, assert_labelled_counts, sigterm_at_step

SMALL = dict(z_dim=8, hidden=(64, 64), val_every_steps=5)
NAMES = ("vae", "nbvae")


@pytest.fixture(scope="module", params=NAMES)
def fitted(request, counts_adata):
    model = models.get(request.param, epochs=12, **SMALL)
    return model.fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False, seed=0)


def test_labelled_sample_has_every_type_integer_counts_and_the_covariate(fitted, counts_adata):
    request = {"alpha": 40, "beta": 30, "gamma": 20, "rare": 10}
    s = fitted.sample(per_type=request, seed=0)
    assert s.obs["cell_type"].value_counts().to_dict() == request
    assert set(s.obs["donor"]) <= {"donor_0", "donor_1"}
    assert list(s.var_names) == list(counts_adata.var_names)
    assert sp.issparse(s.X)
    assert_integer(s.X.data)
    assert s.X.data.min() >= 0
    assert np.asarray(s.X[:, [5, 50, 100]].sum()) == 0  # never-expressed genes stay zero
    lib = np.asarray(s.X.sum(1)).ravel()
    assert (lib > 0).all()
    np.testing.assert_allclose(np.asarray(np.expm1(s.layers["log1p"]).sum(1)).ravel(), 1e4, rtol=1e-3)
    assert fitted.fit_record["stopped_because"] == "epochs"
    assert np.isfinite(fitted.fit_record["best_val"])
    assert {"loss", "recon_loss", "kl_loss"} <= set(fitted.history[0])
    assert any("val_nelbo" in h for h in fitted.history)


def test_types_keep_their_own_profile(fitted, counts_adata):
    """Each type's synthetic mean profile is closest to its own real type's (the decoder is conditioned)."""
    types = ["alpha", "beta", "gamma"]
    s = fitted.sample(per_type=dict.fromkeys(types, 150), seed=0)

    def mean_log(a, t):
        X = a.X[np.asarray(a.obs["cell_type"] == t)]
        X = X.toarray() if sp.issparse(X) else X
        return np.log1p(X / X.sum(1, keepdims=True) * 1e4).mean(0)

    for t in types:
        d = {u: np.linalg.norm(mean_log(s, t) - mean_log(counts_adata, u)) for u in types}
        assert min(d, key=d.get) == t


def test_save_load_gives_identical_samples(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    back = models.load(tmp_path / "m")
    assert back.name == fitted.name and back.params == fitted.params
    a, b = fitted.sample(n=80, seed=5), back.sample(n=80, seed=5)
    assert (a.X != b.X).nnz == 0
    assert (a.obs["donor"] == b.obs["donor"]).all()


def test_same_seed_same_cells_other_seed_other_cells(fitted):
    a, b, c = (fitted.sample(n=100, seed=s) for s in (7, 7, 8))
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_mixing_generates_cells_between_two_types(fitted):
    mixed = fitted.sample(n=200, mix={"alpha": 0.5, "gamma": 0.5}, seed=0)
    assert set(mixed.obs["cell_type"]) == {"mix(alpha=0.50,gamma=0.50)"}
    assert_integer(mixed.X.data)
    a = fitted.sample(per_type={"alpha": 200}, seed=0).layers["log1p"].toarray().mean(0)
    g = fitted.sample(per_type={"gamma": 200}, seed=0).layers["log1p"].toarray().mean(0)
    m = mixed.layers["log1p"].toarray().mean(0)
    mid = (a + g) / 2
    assert np.linalg.norm(m - mid) < min(np.linalg.norm(m - a), np.linalg.norm(m - g))


@pytest.mark.parametrize("variant", [{"zero_inflated": True}, {"dispersion": "gene"}, {"noise": "gene"}])
def test_variants_fit_sample_and_round_trip(variant, counts_adata, tmp_path):
    name = "vae" if "noise" in variant else "nbvae"
    model = models.get(name, epochs=2, **variant, **SMALL)
    model.fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False, seed=1)
    model.save(tmp_path / "m")
    back = models.load(tmp_path / "m")
    a, b = (m.sample(n=60, mix={"alpha": 0.3, "rare": 0.7}, seed=2) for m in (model, back))
    assert (a.X != b.X).nnz == 0
    assert_integer(a.X.data)


def test_fit_is_reproducible(counts_adata):
    kw = dict(epochs=2, **SMALL)
    runs = [
        models.get("nbvae", **kw).fit(counts_adata, label_key="cell_type", progress=False, seed=s)
        for s in (4, 4, 5)
    ]
    cells = [m.sample(n=50, seed=0).X for m in runs]
    assert (cells[0] != cells[1]).nnz == 0
    assert (cells[0] != cells[2]).nnz > 0


def test_held_out_elbo_decreases_on_easy_data():
    from cellsynth.data.datasets import simulate
    from cellsynth.models.vae import NBVAENet

    adata = simulate({"a": 200, "b": 200}, n_genes=60, marker_fold=8.0, seed=1)
    data = CellData.from_anndata(adata, label_key="cell_type")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = NBVAENet(data.n_genes, [2], 4, (32,), 0.0, per_label=True, zero_inflated=False)
        settings = LikelihoodSettings(epochs=20, val_every_steps=1, patience=0, kl_warmup_steps=0)
        result = LikelihoodPlan(net, settings, device="cpu", seed=0, progress=False).fit(data)
    scores = [h["val_nelbo"] for h in result.history]
    assert len(scores) == 20
    assert scores[-1] < 0.9 * scores[0]
    assert (np.diff(scores[::5]) < 0).all()  # falling all along, not just once
    assert result.best_val_mmd == min(scores)


@pytest.mark.parametrize("name", NAMES)
def test_c2st_validation_selects_by_the_forest_and_records_the_elbo_beside_it(name, counts_adata):
    model = models.get(name, epochs=8, val_metric="c2st", **{**SMALL, "val_every_steps": 2})
    model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    validated = [r for r in model.history if "val_c2st" in r]
    assert len(validated) >= 3 and all("val_nelbo" in r for r in validated)
    assert all(0.0 <= r["val_c2st"] <= 1.0 for r in validated)
    assert model.fit_record["val_metric"] == "c2st"
    assert model.fit_record["best_val"] == pytest.approx(min(r["val_c2st"] for r in validated))
    refused = models.get(name, epochs=2, val_metric="c2st", val_fraction=0.0, val_min_cells=0, **SMALL)
    with pytest.raises(TrainingError, match="val_metric='c2st' needs held-out cells"):
        refused.fit(counts_adata, label_key="cell_type", progress=False)


def test_the_validation_twins_are_count_draws_at_the_held_out_cells_library_sizes():
    from cellsynth.data.datasets import simulate
    from cellsynth.models.vae import NBVAENet

    data = CellData.from_anndata(simulate({"a": 300, "b": 300}, n_genes=50, seed=2), label_key="cell_type")
    net = NBVAENet(data.n_genes, [2], 4, (16,), 0.0, per_label=False, zero_inflated=False)
    plan = LikelihoodPlan(net, LikelihoodSettings(val_metric="c2st", val_fraction=0.2), progress=False)
    plan.setup(data)  # the split, then configure: the held-out cells and their twins' conditions
    b = plan.c2st_batch
    x = net.draw_cells(b["weights"], b["library"], b["scale"], torch.Generator().manual_seed(0),
                       np.random.default_rng(0))  # fmt: skip
    counts = torch.round(torch.expm1(x.double()) / b["scale"].double()[:, None])
    assert torch.allclose(torch.expm1(x.double()) / b["scale"].double()[:, None], counts.double(), atol=1e-3)
    # negative binomial draws around library × profile: totals follow the held-out cells' library sizes
    ratio = counts.sum(1) / b["library"]
    assert 0.8 < float(ratio.mean()) < 1.2 and float(np.corrcoef(counts.sum(1), b["library"])[0, 1]) > 0.5
    assert x.shape == plan.c2st_real.shape


def test_kl_weight_rises_over_the_warmup():
    plan = LikelihoodPlan(torch.nn.Linear(1, 1), LikelihoodSettings(kl_weight=2.0, kl_warmup_steps=10))
    got = []
    for step in (0, 5, 10, 50):
        plan.step = step
        got.append(plan.kl_scale())
    assert got == [0.0, 1.0, 2.0, 2.0]


@pytest.mark.parametrize("old_layout", [False, True])
def test_a_stopped_run_resumed_from_its_checkpoint_ends_exactly_like_an_uninterrupted_one(
    counts_adata, tmp_path, monkeypatch, old_layout
):
    """``old_layout``: the checkpoint rewritten as written while the encoder's first weight was stored in
    nn.Linear's layout (outputs × inputs: the weight, its EMA and its Adam moments)."""
    params = dict(epochs=5, ema_decay=0.9, kl_warmup_steps=6, **SMALL)
    whole = models.get("vae", **params).fit(counts_adata, label_key="cell_type", progress=False, seed=2)

    restore = sigterm_at_step(monkeypatch, LikelihoodPlan, 8)  # mid-epoch (3 steps per epoch here)
    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match="interrupted"):
        first = models.get("vae", **params).fit(
            counts_adata, label_key="cell_type", progress=False, seed=2, checkpoint_dir=ckpt
        )
    assert first.fit_record["stopped_because"] == "interrupted"
    state, meta = read_training_state(ckpt)
    assert state["loop"]["epoch"] == 2 and state["loop"]["batch"] == 2
    assert models.load(ckpt).sample(n=5).n_obs == 5  # the checkpoint is a complete model directory
    restore()
    if old_layout:
        parts, shape = state["parts"], state["parts"]["module"]["encoder.0.weight_t"].shape
        for tree, key in (
            (parts["module"], "encoder.0.weight_t"),
            (parts["ema"], "module.encoder.0.weight_t"),
        ):
            tree[key[: -len("_t")]] = tree.pop(key).t().contiguous()
        moments = [m for m in parts["opt"]["state"].values() if m["exp_avg"].shape == shape]
        assert len(moments) == 1
        for k in ("exp_avg", "exp_avg_sq"):
            moments[0][k] = moments[0][k].t().contiguous()
        write_training_state(ckpt, state, meta)

    resumed = models.get("vae", **params).fit(
        counts_adata, label_key="cell_type", progress=False, seed=2, checkpoint_dir=ckpt, resume=True
    )
    assert resumed.fit_record["stopped_because"] == "epochs"
    assert [r["epoch"] for r in resumed.history] == list(range(1, 6))
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in whole.history]
    cells = [m.sample(n=60, seed=3).X.toarray() for m in (resumed, whole)]
    np.testing.assert_array_equal(*cells)


def test_nbvae_refuses_log_normalised_input_and_the_vae_takes_it(counts_adata):
    logged = counts_adata.copy()
    logged.X = sp.csr_matrix(np.log1p(logged.X.toarray() / logged.X.sum(1).A * 1e4))
    model = models.get("nbvae", epochs=1, **SMALL)
    with pytest.raises(InputError, match="nbvae needs raw counts.*model vae"):
        model.fit(logged, label_key="cell_type", progress=False)
    assert not model.is_fitted
    vae = models.get("vae", epochs=1, **SMALL).fit(logged, label_key="cell_type", progress=False)
    s = vae.sample(n=20, seed=0)
    X = s.X.toarray() if sp.issparse(s.X) else s.X
    assert X.min() >= 0 and not np.array_equal(X, np.round(X))  # log1p values, not counts


def test_invalid_parameters_are_refused():
    with pytest.raises(InputError, match="dispersion"):
        models.get("nbvae", dispersion="cell")
    with pytest.raises(InputError, match="z_dim"):
        models.get("vae", z_dim=0)


@pytest.mark.parametrize("sparse", [True, False])
def test_counts_are_recovered_exactly_from_the_training_values(counts_adata, sparse):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    raw = counts_adata.X[:, data.preprocessing.train_genes].toarray()
    rows = np.arange(data.n_cells)
    stored = data.rows(rows) if sparse else data.dense_rows(rows)
    assert sp.issparse(stored) == sparse
    x = torch.from_numpy(data.dense_rows(rows))
    exact = torch.expm1(x.double()) / torch.from_numpy(data.scale).double()[:, None]
    assert float((exact - torch.from_numpy(raw).double()).abs().max()) < 0.01
    got = nonzero_counts(stored, data.scale, "cpu")
    assert bool((got.value != 0).all()) and len(got.value) == np.count_nonzero(raw)
    dense = np.zeros_like(raw)
    dense[got.row.numpy(), got.col.numpy()] = got.value.numpy()
    np.testing.assert_array_equal(dense, raw)


def test_nb_and_zinb_log_likelihoods_match_their_definitions():
    from scipy import stats

    # two cells × four genes, zeros among them: the per-cell sums of each entry's log-probability
    x = np.array([[0.0, 1.0, 3.0, 0.0], [20.0, 0.0, 7.0, 0.0]])
    mu = torch.tensor([[0.5, 2.0, 3.0, 0.1], [15.0, 4.0, 0.7, 9.0]], dtype=torch.float64)
    theta = torch.tensor([[0.3, 1.0, 5.0, 2.0], [2.0, 100.0, 0.05, 0.4]], dtype=torch.float64)
    row, col = np.nonzero(x)
    counts = CountEntries(torch.from_numpy(row), torch.from_numpy(col), torch.from_numpy(x[row, col]))
    nb = stats.nbinom.logpmf(x, theta.numpy(), (theta / (theta + mu)).numpy())
    np.testing.assert_allclose(count_nll(counts, mu, theta).numpy(), -nb.sum(1), rtol=1e-6)
    logits = torch.tensor([[-1.0, 0.5, 2.0, -3.0], [0.0, 1.0, -0.5, 3.0]], dtype=torch.float64)
    pi = torch.sigmoid(logits).numpy()
    zinb = np.where(x == 0, np.log(pi + (1 - pi) * np.exp(nb)), np.log(1 - pi) + nb)
    np.testing.assert_allclose(count_nll(counts, mu, theta, logits).numpy(), -zinb.sum(1), rtol=1e-6)
    # gradients reach every entry's mean: the zeros' through the dense term
    mu.requires_grad_(True)
    count_nll(counts, mu, theta).sum().backward()
    assert bool((mu.grad != 0).all())


def test_nb_sampler_has_the_negative_binomial_mean_and_variance():
    rng = np.random.default_rng(0)
    mu = np.array([[0.2, 3.0, 40.0, 500.0]])
    theta = np.array([0.5, 2.0, 10.0, 1.0])
    x = draw_nb(np.repeat(mu, 200_000, axis=0), theta, rng)
    assert_integer(x)
    np.testing.assert_allclose(x.mean(0), mu[0], rtol=0.02)
    np.testing.assert_allclose(x.var(0), mu[0] + mu[0] ** 2 / theta, rtol=0.05)
    dropped = draw_nb(np.repeat(mu, 200_000, axis=0), theta, rng, dropout=0.3)
    np.testing.assert_allclose(dropped.mean(0), 0.7 * mu[0], rtol=0.02)


# ---------------------------------------------------------- latentgan: the GAN in nbvae's latent space
LATENT_TINY = dict(
    epochs=3, z_dim=8, hidden=(32,), gan={"g_hidden": (32,), "d_hidden": (32,), "c_hidden": (16,)}
)


@pytest.fixture(scope="module")
def fitted_latent(counts_adata):
    m = models.get("latentgan", **LATENT_TINY)
    return m.fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False, seed=0)


def test_latentgan_trains_both_stages_and_samples_labelled_counts(fitted_latent, counts_adata):
    stages = [r["stage"] for r in fitted_latent.history]
    assert stages == ["autoencoder"] * 3 + ["gan"] * 3  # each stage its epochs, the GAN's after
    seconds = [r["seconds"] for r in fitted_latent.history]
    assert seconds == sorted(seconds)  # the GAN's times continue the autoencoder's
    assert fitted_latent.fit_record["autoencoder"]["stopped_because"] == "epochs"
    codes = fitted_latent.encode(
        CellData.from_anndata(counts_adata, label_key="cell_type", condition_keys=["donor"])
    )
    assert codes.shape == (counts_adata.n_obs, 8) and np.isfinite(codes).all()
    request = {"alpha": 30, "rare": 10}
    assert_labelled_counts(fitted_latent.sample(per_type=request, seed=0), request, counts_adata)


def test_latentgan_round_trips_and_is_deterministic(fitted_latent, tmp_path):
    a = fitted_latent.sample(n=40, seed=3)
    assert (a.X != fitted_latent.sample(n=40, seed=3).X).nnz == 0
    assert (a.X != fitted_latent.sample(n=40, seed=4).X).nnz > 0
    fitted_latent.save(tmp_path / "m")
    again = models.load(tmp_path / "m")
    assert (a.X != again.sample(n=40, seed=3).X).nnz == 0
    assert set(again.modules) == {"generator", "latent_generator"}  # the critic is not part of the model


def test_latentgan_budget_is_shared_between_the_stages(counts_adata):
    m = models.get("latentgan", **{**LATENT_TINY, "epochs": 100_000, "max_minutes": 0.1, "ae_share": 0.5})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    ae = m.fit_record["autoencoder_seconds"]
    assert m.fit_record["autoencoder"]["stopped_because"] in ("time budget", "early stopping")
    assert ae <= 0.5 * 6 + 2  # its share of the 6 s, and set-up
    assert m.history[-1]["seconds"] <= 6 + 4


def test_latentgan_refuses_unknown_gan_options_and_resume(counts_adata, tmp_path):
    with pytest.raises(InputError, match="gan"):
        models.get("latentgan", gan={"no_such": 1})
    m = models.get("latentgan", **LATENT_TINY)
    with pytest.raises(TrainingError, match="cannot resume"):
        m.fit(counts_adata, label_key="cell_type", progress=False, checkpoint_dir=tmp_path, resume=True)
    assert not m.is_fitted


def test_the_encoders_transposed_first_layer_is_nn_linear_and_loads_its_layout():
    """The encoder's first layer (weight stored inputs × outputs) starts at nn.Linear's values for the same
    seed, computes what nn.Linear computes, and loads a state dict in nn.Linear's layout."""
    from cellsynth.nn.blocks import MLP, WideInputLinear

    torch.manual_seed(3)
    reference = torch.nn.Linear(300, 16)
    torch.manual_seed(3)
    layer = WideInputLinear(300, 16)
    assert layer.weight_t.shape == (300, 16) and layer.weight_t.is_contiguous()
    torch.testing.assert_close(layer.weight_t, reference.weight.t(), rtol=0, atol=0)
    torch.testing.assert_close(layer.bias, reference.bias, rtol=0, atol=0)
    x = torch.rand(8, 300)
    torch.testing.assert_close(layer(x), reference(x))
    layer(x).square().sum().backward()
    reference(x).square().sum().backward()
    torch.testing.assert_close(layer.weight_t.grad, reference.weight.grad.t())

    other = torch.nn.Linear(300, 16)
    mlp = MLP(300, [16], 4, wide_input=True)
    assert isinstance(mlp[0], WideInputLinear)
    old = {**mlp.state_dict()}
    old.pop("0.weight_t")
    old["0.weight"] = other.weight.detach().clone()  # a model file written with nn.Linear's layout
    mlp.load_state_dict(old)
    torch.testing.assert_close(mlp[0].weight_t, other.weight.t(), rtol=0, atol=0)
