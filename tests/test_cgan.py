"""The cgan end to end: sampling output, requests, mixing, save/load, determinism, quality."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellsynth import ModelFileError, RequestError, load, models
from tests.conftest import assert_integer


def test_sample_returns_labelled_integer_counts_over_the_input_genes(fitted_cgan, counts_adata):
    s = fitted_cgan.sample(n=300, seed=0)
    assert s.n_obs == 300
    assert list(s.var_names) == list(counts_adata.var_names)
    assert sp.issparse(s.X)
    assert_integer(s.X.data)
    assert s.X.data.min() >= 0
    # never-expressed input genes come back as zero columns
    assert np.asarray(s.X[:, [5, 50, 100]].sum()) == 0
    assert set(s.obs["cell_type"]) == {"alpha", "beta", "gamma", "rare"}
    assert set(s.obs["donor"]) <= {"donor_0", "donor_1"}
    assert "log1p" in s.layers
    lib = np.asarray(s.X.sum(1)).ravel()
    np.testing.assert_allclose(
        np.asarray(np.expm1(s.layers["log1p"]).sum(1)).ravel()[lib > 0], 1e4, rtol=1e-3
    )
    assert s.uns["cellsynth"]["model"] == "cgan" and s.uns["cellsynth"]["seed"] == 0


def test_real_proportions_by_default_and_uniform_on_request(fitted_cgan):
    real = fitted_cgan.sample(n=595, seed=0).obs["cell_type"].value_counts()
    assert real["alpha"] == 250 and real["rare"] == 25
    uniform = fitted_cgan.sample(n=400, proportions="uniform", seed=0).obs["cell_type"].value_counts()
    assert (uniform == 100).all()


def test_per_type_requests_add_cells_of_that_type(fitted_cgan):
    s = fitted_cgan.sample(per_type={"rare": 50, "beta": 7}, seed=0)
    assert s.obs["cell_type"].value_counts().to_dict() == {"rare": 50, "beta": 7, "alpha": 0, "gamma": 0}


def test_unknown_label_is_a_clear_error(fitted_cgan):
    with pytest.raises(RequestError, match="unknown label 'delta'.*known labels"):
        fitted_cgan.sample(per_type={"delta": 5})
    with pytest.raises(RequestError, match="unknown label"):
        fitted_cgan.sample(n=5, mix={"alpha": 0.5, "delta": 0.5})


def test_mixing_generates_cells_between_two_types(fitted_cgan):
    mixed = fitted_cgan.sample(n=200, mix={"alpha": 0.5, "gamma": 0.5}, seed=0)
    assert set(mixed.obs["cell_type"]) == {"mix(alpha=0.50,gamma=0.50)"}
    assert mixed.uns["cellsynth"]["mix"] == {"alpha": 0.5, "gamma": 0.5}
    a = fitted_cgan.sample(per_type={"alpha": 200}, seed=0).layers["log1p"].toarray().mean(0)
    g = fitted_cgan.sample(per_type={"gamma": 200}, seed=0).layers["log1p"].toarray().mean(0)
    m = mixed.layers["log1p"].toarray().mean(0)
    # the mixture sits between the two types: closer to their midpoint than to either end
    mid = (a + g) / 2
    assert np.linalg.norm(m - mid) < min(np.linalg.norm(m - a), np.linalg.norm(m - g))


def test_same_seed_same_cells_other_seed_other_cells(fitted_cgan):
    a, b, c = (fitted_cgan.sample(n=100, seed=s) for s in (7, 7, 8))
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0
    assert (a.obs["donor"] == b.obs["donor"]).all()


def test_fit_is_reproducible_and_leaves_global_rng_alone(counts_adata):
    import torch

    small = dict(epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    m1 = models.get("cgan", **small).fit(counts_adata, label_key="cell_type", seed=4, progress=False)
    after = torch.rand(1)
    m2 = models.get("cgan", **small).fit(counts_adata, label_key="cell_type", seed=4, progress=False)
    assert before == after, "fit must not consume the global torch RNG"
    assert (m1.sample(n=50, seed=1).X != m2.sample(n=50, seed=1).X).nnz == 0


def test_save_load_round_trip_samples_identical_cells(fitted_cgan, fitted_cgan_dir):
    loaded = load(fitted_cgan_dir)
    a = fitted_cgan.sample(n=120, seed=3)
    b = loaded.sample(n=120, seed=3)
    assert (a.X != b.X).nnz == 0
    assert (a.obs == b.obs).all().all()
    assert loaded.history == json.loads((fitted_cgan_dir / "config.json").read_text())["history"]


def test_model_directory_holds_no_pickle(fitted_cgan_dir):
    names = sorted(p.name for p in fitted_cgan_dir.iterdir())
    assert names == ["config.json", "weights.safetensors"]
    for p in fitted_cgan_dir.iterdir():
        head = p.read_bytes()[:2]
        assert head != b"\x80\x04" and head[:1] != b"\x80", f"{p.name} looks like a pickle"
    cfg = json.loads((fitted_cgan_dir / "config.json").read_text())
    for key in ("model", "cellsynth_version", "params", "data", "history"):
        assert key in cfg
    assert cfg["data"]["categories"]["cell_type"] == ["alpha", "beta", "gamma", "rare"]


def test_truncated_weights_are_a_clear_error(fitted_cgan_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(fitted_cgan_dir, broken)
    w = broken / "weights.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load(broken)


def test_weights_that_do_not_match_the_config_are_a_clear_error(fitted_cgan_dir, tmp_path):
    import shutil

    broken = tmp_path / "mismatch"
    shutil.copytree(fitted_cgan_dir, broken)
    cfg = json.loads((broken / "config.json").read_text())
    cfg["params"]["z_dim"] = 7
    cfg.pop("weights_sha256")
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="does not match"):
        load(broken)


def test_missing_model_files_are_clear_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="missing"):
        load(tmp_path / "empty")


def test_log1p_input_gives_log1p_output():
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng(0)
    X = np.log1p(rng.poisson(1.0, (120, 15)) * 3.0).astype(np.float32)
    a = ad.AnnData(
        X, obs=pd.DataFrame({"cell_type": ["x", "y", "z"] * 40}, index=[f"c{i}" for i in range(120)])
    )
    m = models.get("cgan", epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    s = m.fit(a, label_key="cell_type", progress=False).sample(n=30, seed=0)
    assert s.uns["cellsynth"]["representation"] == "log1p"
    x = s.X.toarray()
    assert x.min() >= 0 and not np.array_equal(x, np.round(x))
    np.testing.assert_array_equal(x, s.layers["log1p"].toarray())


def test_unknown_model_and_parameter_are_clear_errors():
    from cellsynth import InputError

    with pytest.raises(InputError, match="unknown model"):
        models.get("nope")
    with pytest.raises(InputError, match="unknown parameter"):
        models.get("cgan", learning_rate=1)


@pytest.mark.slow
def test_generated_cells_are_recognisably_of_their_requested_type():
    """Quality smoke test: a classifier trained on real cells assigns ≥ 90% of synthetic cells to the
    type they were generated as."""
    import scanpy as sc
    from sklearn.ensemble import RandomForestClassifier

    from cellsynth.data.datasets import simulate

    real = simulate({"a": 300, "b": 200, "c": 100, "rare": 30}, n_genes=200, seed=11)
    model = models.get("cgan", epochs=80, val_every_steps=50)
    model.fit(real, label_key="cell_type", progress=False, seed=0)
    synth = model.sample(n=600, proportions="uniform", seed=0)
    norm = real.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    clf = RandomForestClassifier(n_estimators=200, random_state=0).fit(
        norm.X.toarray(), norm.obs["cell_type"]
    )
    predicted = clf.predict(synth.layers["log1p"].toarray())
    labels = synth.obs["cell_type"].astype(str).to_numpy()
    assert (predicted == labels).mean() >= 0.9
    assert (predicted[labels == "rare"] == "rare").mean() >= 0.8


def test_checkpoints_are_complete_model_directories(counts_adata, tmp_path):
    small = dict(epochs=4, val_every_steps=2, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    ckpt = tmp_path / "ckpt"
    models.get("cgan", checkpoint_minutes=0, **small).fit(
        counts_adata, label_key="cell_type", checkpoint_dir=ckpt, progress=False
    )
    restored = load(ckpt)
    assert restored.fit_record["stopped_because"] == "checkpoint"
    assert restored.sample(n=10, seed=0).n_obs == 10


def test_mixed_precision_trains_and_samples(counts_adata):
    small = dict(epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    m = models.get("cgan", mixed_precision=True, **small).fit(
        counts_adata, label_key="cell_type", progress=False
    )
    s = m.sample(n=20, seed=0)
    assert np.isfinite(s.X.data).all() and s.n_obs == 20


@pytest.mark.parametrize(
    "options",
    [
        {"loss": "wgan-gp", "mixed_precision": True},  # gradient penalties under Fabric's bf16 autocast
        {"r1_weight": 1.0, "mixed_precision": True},
        {"r1_weight": 1.0, "critic_space": "pca", "critic_components": 8},
        {"pack": 2, "critic_space": "pca", "critic_components": 8},  # PacGAN on the projected critic
        {"pack": 2, "critic_space": "genes", "loss": "wgan-gp"},
    ],
)
def test_gradient_penalties_and_pca_critic_train(counts_adata, options):
    small = dict(epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    m = models.get("cgan", **options, **small).fit(counts_adata, label_key="cell_type", progress=False)
    assert all(np.isfinite(r["d_loss"]) for r in m.history)
    if options.get("critic_space") == "pca":
        proj = m.modules["discriminator"].projection
        assert proj.basis.shape == (counts_adata.n_vars - 3, 8) and proj.basis.abs().sum() > 0


def test_count_overdispersion_is_estimated_learned_and_kept_on_save(tmp_path):
    """count_noise="pln": a per-(type, gene) dispersion starts at the method-of-moments estimate."""
    from cellsynth.data.celldata import CellData
    from cellsynth.data.datasets import simulate
    from cellsynth.models.cgan import label_dispersion

    adata = simulate((400, 300), n_genes=80, dispersion=0.5, mean_library=3000, seed=1)
    data = CellData.from_anndata(adata, label_key="cell_type")
    phi = label_dispersion(data)
    mean_counts = np.asarray(adata.X.mean(0)).ravel()[data.preprocessing.train_genes]
    expressed = mean_counts > 5  # enough counts per cell to see the over-dispersion
    assert expressed.sum() > 10
    assert abs(np.median(phi[:, expressed]) - 0.5) < 0.1

    small = dict(epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    m = models.get("cgan", **small).fit(adata, label_key="cell_type", progress=False)  # pln: the default
    learned = m.modules["generator"].log_dispersion.detach().exp().numpy()
    assert learned.shape == phi.shape and not np.allclose(learned, phi)  # trained, not frozen
    s = m.sample(n=200, seed=0)
    assert np.array_equal(s.X.data, np.round(s.X.data))
    m.save(tmp_path / "pln")
    again = load(tmp_path / "pln").sample(n=200, seed=0)
    assert (again.X != s.X).nnz == 0
    # a plain-Poisson model has no dispersion to learn
    plain = models.get("cgan", count_noise="poisson", **small).fit(
        adata, label_key="cell_type", progress=False
    )
    assert plain.modules["generator"].log_dispersion is None


def test_within_type_axes_and_generator_start_on_them():
    """init_variation: the generator starts varying along the training cells' within-type axes, with
    their spread, around unchanged type means (not at a point per type)."""
    import torch

    from cellsynth.data.celldata import CellData
    from cellsynth.data.datasets import simulate
    from cellsynth.models.cgan import ConditionalGenerator, within_type_axes

    adata = simulate((300, 200), n_genes=60, seed=2)
    data = CellData.from_anndata(adata, label_key="cell_type")
    comps, sd = within_type_axes(data, 5)
    X = data.dense_rows(np.arange(data.n_cells))
    codes = data.label.codes
    resid = X - np.stack([X[codes == c].mean(0) for c in range(data.label.n)])[codes]
    top = np.linalg.svd(resid, full_matrices=False)
    np.testing.assert_allclose(sd, top[1][:5] / np.sqrt(len(X)), rtol=0.02)
    assert np.allclose(np.abs(np.sum(comps * top[2][:5], 1)), 1, atol=0.02)  # same axes up to sign

    torch.manual_seed(0)
    n_genes = 40
    axes = torch.linalg.qr(torch.randn(n_genes, 3))[0].T  # 3 orthonormal rows
    spread = torch.tensor([3.0, 1.5, 0.5])
    gen = ConditionalGenerator(n_genes, [2], z_dim=16, hidden=(64, 64), nonnegative=False)
    type_mean = torch.randn(2, n_genes)
    gen.init_offset(type_mean)
    gen.init_variation(axes, spread, torch.tensor([3.0, 1.0]))
    gen.eval()
    with torch.no_grad():
        for c in range(2):
            w = torch.zeros(20000, 2)
            w[:, c] = 1
            x, _ = gen(torch.randn(20000, 16), [w])
            assert torch.allclose(x.mean(0), type_mean[c], atol=0.15)
            proj = (x - x.mean(0)) @ axes.T
            ratio = proj.std(0) / spread
            assert ((ratio > 0.7) & (ratio < 1.3)).all(), ratio
            off_axes = (x - x.mean(0)) - proj @ axes
            assert off_axes.pow(2).sum(1).mean() < 0.05 * spread.pow(2).sum()


# tiny networks and few principal axes: the set-up PCAs dominate these fits otherwise
TINY = dict(
    val_every_steps=5,
    g_hidden=(32,),
    d_hidden=(32, 16),
    c_hidden=(16, 8),
    critic_components=8,
    init_variation=0,
)


@pytest.mark.parametrize(("key", "value"), [("loss", "hinge"), ("optimizer", "rmsprop")])
def test_hinge_loss_and_rmsprop_train_and_sample_labelled_cells(counts_adata, key, value):
    m = models.get("cgan", epochs=2, **{key: value}, **TINY)
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.params[key] == value
    assert len(m.history) == 2 and m.fit_record["stopped_because"] == "epochs"
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in m.history)
    s = m.sample(n=60, proportions="uniform", seed=0)
    assert np.isfinite(s.X.data).all() and s.X.data.min() >= 0
    assert s.obs["cell_type"].value_counts().to_dict() == {"alpha": 15, "beta": 15, "gamma": 15, "rare": 15}


def test_a_time_budget_stops_before_the_epoch_cap(counts_adata):
    m = models.get("cgan", epochs=10_000, max_minutes=0.005, **TINY)
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.fit_record["stopped_because"] == "time budget"
    assert 1 <= len(m.history) < 10_000
    assert m.sample(n=10, seed=0).n_obs == 10


@pytest.mark.parametrize("model", ["cgan", "nbgan"])
def test_the_time_budget_counts_the_set_up_before_the_training_loop(counts_adata, monkeypatch, model):
    """max_minutes bounds the whole fit: set-up that uses the budget up (here a slow data preparation)
    leaves the training loops a single step, not a budget of their own."""
    from cellsynth.data.celldata import CellData

    prepare = CellData.from_anndata

    def slow(*a, **k):
        time.sleep(4.0)
        return prepare(*a, **k)

    monkeypatch.setattr(CellData, "from_anndata", slow)
    from tests.test_nbgan import TINY as NB_TINY

    settings = {**NB_TINY, "ae": {**NB_TINY.get("ae", {}), "epochs": 10_000}} if model == "nbgan" else TINY
    m = models.get(model, **{**settings, "epochs": 10_000, "max_minutes": 0.06})  # 3.6 s, spent on the data
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.fit_record["stopped_because"] == "time budget"
    gan = [r for r in m.history if r.get("stage", "gan") == "gan"]
    assert gan[-1]["epoch"] == 1 and gan[-1]["g_step"] == 1  # one step, then the deadline
    assert m.sample(n=10, seed=0).n_obs == 10


def test_early_stopping_stops_before_the_epoch_cap(counts_adata):
    m = models.get("cgan", epochs=300, patience=1, **{**TINY, "val_every_steps": 1})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.fit_record["stopped_because"] == "early stopping"
    assert len(m.history) < 300
    scores = [r["val_mmd"] for r in m.history if "val_mmd" in r]
    assert scores[-1] >= min(scores[:-1])  # the last validation did not improve on the best
    assert m.fit_record["best_val"] == pytest.approx(min(scores)) and m.fit_record["val_metric"] == "mmd"


def test_the_epoch_cap_stops_after_exactly_that_many_epochs(counts_adata):
    m = models.get("cgan", epochs=3, patience=0, **TINY)
    m.fit(counts_adata, label_key="cell_type", progress=False)
    assert m.fit_record["stopped_because"] == "epochs"
    assert [r["epoch"] for r in m.history] == [1, 2, 3]


def test_c2st_tells_shifted_cells_and_not_cells_of_the_same_distribution():
    import torch

    from cellsynth.train.validation import c2st_auc

    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 40, generator=g)
    same = torch.randn(200, 40, generator=g)
    shifted = torch.randn(200, 40, generator=g)
    shifted[:, :5] += 1.5  # five genes higher: visible in the union PCA
    assert 0.35 < c2st_auc(real, same) < 0.65
    assert c2st_auc(real, shifted) > 0.9
    before = torch.get_rng_state()
    assert c2st_auc(real, shifted) == c2st_auc(real, shifted)  # no random draws outside the seed
    assert torch.equal(torch.get_rng_state(), before)  # the global random state untouched


def test_c2st_validation_keeps_the_state_with_the_lowest_classifier_auc(counts_adata):
    m = models.get("cgan", epochs=6, val_metric="c2st", **{**TINY, "val_every_steps": 2})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    validated = [r for r in m.history if "val_c2st" in r]
    assert len(validated) >= 2 and all("val_mmd" in r for r in validated)  # the MMD recorded beside it
    assert all(0.0 <= r["val_c2st"] <= 1.0 for r in validated)
    assert m.fit_record["val_metric"] == "c2st"
    assert m.fit_record["best_val"] == pytest.approx(min(r["val_c2st"] for r in validated))


def test_c2st_train_validation_keeps_the_state_with_the_lowest_forest_auc_on_training_cells(counts_adata):
    m = models.get("cgan", epochs=6, val_metric="c2st_train", **{**TINY, "val_every_steps": 2})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    validated = [r for r in m.history if "val_c2st_train" in r]
    assert len(validated) >= 2 and all("val_mmd" in r and "val_c2st" not in r for r in validated)
    assert all(0.0 <= r["val_c2st_train"] <= 1.0 for r in validated)
    assert m.fit_record["val_metric"] == "c2st_train"
    assert m.fit_record["best_val"] == pytest.approx(min(r["val_c2st_train"] for r in validated))


def test_c2st_train_compares_training_cells_only_in_their_most_variable_genes():
    import numpy as np
    import torch

    from cellsynth.errors import TrainingError
    from cellsynth.train.validation import C2ST_CELLS, C2ST_GENES, c2st_sides

    n, genes, varied = 3000, C2ST_GENES + 200, 100
    rng = np.random.default_rng(0)

    def cells(m, shift=0.0):  # the first ``varied`` genes vary between cells, the rest only by counting noise
        rate = np.full((m, genes), 2.0)
        rate[:, :varied] = 2.0 * rng.gamma(1.0, 1.0, (m, 1)) + shift  # the same mean as the others
        return np.log1p(rng.poisson(rate)).astype(np.float32)

    class Data:
        preprocessing = type("Preprocessing", (), {"representation": "counts"})
        X = cells(n)

        def dense_rows(self, rows):
            return self.X[rows]

    codes = torch.arange(n)[:, None] % 4
    train_rows, val_rows = np.arange(0, n, 2), np.arange(1, n, 2)
    test, (gen_codes, gen_rows) = c2st_sides("c2st_train", Data(), val_rows, train_rows, codes, rng, "cpu")
    assert len(test.rows) == C2ST_CELLS and np.isin(test.rows, train_rows).all()
    assert len(set(test.rows)) == C2ST_CELLS and (gen_rows == test.rows).all()
    assert torch.equal(gen_codes, codes[test.rows])
    assert len(test.genes) == C2ST_GENES and np.isin(np.arange(varied), test.genes).all()
    same = test(torch.from_numpy(cells(C2ST_CELLS)), random_state=0)
    shifted = test(torch.from_numpy(cells(C2ST_CELLS, shift=8.0)), random_state=0)
    assert 0.4 < same < 0.6 and shifted > 0.9
    held, none = c2st_sides("c2st", Data(), val_rows, train_rows, codes, rng, "cpu")
    assert none is None and 0.0 <= held(torch.from_numpy(cells(100)), random_state=0) <= 1.0
    assert c2st_sides("mmd", Data(), val_rows, train_rows, codes, rng, "cpu") == (None, None)
    with pytest.raises(TrainingError, match="needs training cells"):
        c2st_sides("c2st_train", Data(), val_rows, train_rows[:3], codes, rng, "cpu")


def test_whitened_mmd_validation_keeps_the_state_with_the_lowest_whitened_mmd(counts_adata):
    m = models.get("cgan", epochs=6, val_metric="wmmd", **{**TINY, "val_every_steps": 2})
    m.fit(counts_adata, label_key="cell_type", progress=False)
    validated = [r for r in m.history if "val_wmmd" in r]
    assert len(validated) >= 2 and all("val_mmd" in r for r in validated)  # the MMD recorded beside it
    assert m.fit_record["val_metric"] == "wmmd"
    assert m.fit_record["best_val"] == pytest.approx(min(r["val_wmmd"] for r in validated))
    assert [r["val_wmmd"] for r in validated] != [r["val_mmd"] for r in validated]
    assert all(r["val_cmmd"] >= 0 for r in validated)  # the type-centred MMD recorded at every validation


def test_the_whitened_mmd_sees_a_shift_that_the_plain_one_misses():
    import torch

    from cellsynth.train.validation import pca_mmds

    g = torch.Generator().manual_seed(0)
    sd = torch.tensor([10.0, 3.0, 1.0, 0.1, 0.1])  # principal components' standard deviations
    ref = torch.randn(300, 5, generator=g) * sd
    same = torch.randn(300, 5, generator=g) * sd
    shifted = same.clone()
    shifted[:, 3] += 0.1  # one sd along a low-variance component
    before, after = pca_mmds(same, ref, sd), pca_mmds(shifted, ref, sd)
    assert after["val_wmmd"] - before["val_wmmd"] > 0.1
    assert abs(after["val_mmd"] - before["val_mmd"]) < 0.005


def test_the_centred_mmd_forgives_what_calibration_mends_and_not_a_wrong_spread():
    import torch

    from cellsynth.train.validation import centre_types, pca_mmds

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    labels = torch.arange(600) % 3
    ref = centres[labels] + torch.randn(600, 3, generator=g)
    fake = centres[labels] + torch.randn(600, 3, generator=g)
    sd, var, many = torch.ones(3), torch.ones(3, 3), torch.full((3,), 1000.0)
    shifted = fake + torch.tensor([1.0, -1.0, 0.5])[labels, None]  # every type's mean off by up to 1 sd
    wide = centres[labels] + 2.5 * torch.randn(600, 3, generator=g)  # the right means, too wide
    same, moved, spread = (pca_mmds(x, ref, sd, (labels, centres, var, many)) for x in (fake, shifted, wide))
    assert moved["val_mmd"] - same["val_mmd"] > 0.02  # the plain MMD sees the shifts...
    assert abs(moved["val_cmmd"] - same["val_cmmd"]) < 0.005  # ...the centred one does not
    assert spread["val_cmmd"] - same["val_cmmd"] > 0.02  # but it does see a wrong spread
    # with many training cells a type's mean is moved onto its target...
    centred = centre_types(shifted, labels, centres, var, many)
    for c in range(3):
        assert torch.allclose(centred[labels == c].mean(0), centres[c], atol=0.02)
    # ...a difference within the standard error of the mean of two cells of sd 2 is left alone, as
    # calibration leaves it...
    wider = torch.tensor([[1.0, 1.0, 1.0], [4.0, 4.0, 4.0], [1.0, 1.0, 1.0]])
    few = centre_types(shifted, labels, centres, wider, torch.tensor([1000.0, 2.0, 1000.0]))
    assert torch.allclose(few[labels == 1], shifted[labels == 1])
    assert torch.allclose(few[labels == 0].mean(0), centres[0], atol=0.02)
    # ...and a type without training cells is not moved
    none = centre_types(shifted, labels, centres, var, torch.tensor([1000.0, 1000.0, 0.0]))
    assert torch.equal(none[labels == 2], shifted[labels == 2])


def test_c2st_validation_without_held_out_cells_is_refused(counts_adata):
    from cellsynth.errors import TrainingError

    m = models.get("cgan", epochs=2, val_metric="c2st", val_fraction=0.0, val_min_cells=0, **TINY)
    with pytest.raises(TrainingError, match="val_metric='c2st' needs held-out cells"):
        m.fit(counts_adata, label_key="cell_type", progress=False)


def test_integer_and_boolean_conditions_come_back_as_such_and_text_ones_as_text(counts_adata, tmp_path):
    data = counts_adata.copy()
    # twelve integer clusters (text order would put 10 and 11 before 2) and an integer day; the donor
    # stays text even though its values look like numbers (scanpy's Leiden clusters are such text)
    data.obs["cluster"] = np.arange(data.n_obs) % 12
    data.obs["day"] = pd.Categorical(np.where(np.arange(data.n_obs) % 2 == 0, 3, 14))
    data.obs["donor"] = pd.Categorical(np.where(np.arange(data.n_obs) % 3 == 0, "0", "1"))
    data.obs["treated"] = np.arange(data.n_obs) % 4 == 0  # a boolean covariate
    small = dict(epochs=1, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
    m = models.get("cgan", **small).fit(
        data, label_key="cluster", condition_keys=["day", "donor", "treated"], progress=False
    )
    assert m.info["categories"]["cluster"] == [str(k) for k in range(12)]
    m.save(tmp_path / "m")
    for model in (m, load(tmp_path / "m")):
        out = model.sample(n=60, per_type={"11": 5}, seed=0)
        assert list(out.obs["cluster"].cat.categories) == list(range(12))
        assert (out.obs["cluster"] == 11).sum() >= 5
        assert set(out.obs["day"]) <= {3, 14} and pd.api.types.is_integer_dtype(out.obs["day"].cat.categories)
        assert set(out.obs["donor"]) <= {"0", "1"}
        assert (
            pd.api.types.is_bool_dtype(out.obs["treated"].cat.categories)
            and out.obs["treated"].astype(bool).any()
        )
    mixed = m.sample(n=4, mix={"2": 0.5, "10": 0.5}, seed=0)
    assert str(mixed.obs["cluster"].iloc[0]).startswith("mix(")
