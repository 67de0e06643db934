"""GARAGE: seeded cgan — λ = 0 is the cgan, seeds come from the selection, round trips, copying guard."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth import models

SMALL = dict(epochs=6, val_every_steps=5, g_hidden=(64, 128), d_hidden=(128, 64), c_hidden=(64, 32), z_dim=16)


@pytest.fixture(scope="module")
def fitted_garage(counts_adata):
    model = models.get("garage", leakage=0.2, gat={"max_epochs": 40}, **SMALL)
    model.fit(counts_adata, label_key="cell_type", progress=False, seed=0)
    return model


def test_leakage_zero_is_exactly_the_cgan(counts_adata):
    # garage's default rates differ from the cgan's (each tuned on its own): give it the cgan's
    from cellsynth.models.cgan import CGAN

    rates = {k: CGAN.param_spec.defaults()[k] for k in ("lr_g", "lr_d")}
    a = models.get("garage", leakage=0.0, **rates, **SMALL).fit(
        counts_adata, label_key="cell_type", progress=False
    )
    b = models.get("cgan", **SMALL).fit(counts_adata, label_key="cell_type", progress=False)
    sa, sb = a.sample(200, seed=1), b.sample(200, seed=1)
    assert (sa.X != sb.X).nnz == 0
    assert not sa.obs["from_seed"].any()


def test_garage_seeds_cover_every_type_and_are_recorded(fitted_garage, counts_adata):
    seeding = fitted_garage.info["seeding"]
    assert seeding["method"] == "gat"
    assert seeding["n_seeds"] == int(np.ceil(0.2 * counts_adata.n_obs))
    assert all(v >= 2 for v in seeding["details"]["seeds_per_type"].values())
    assert set(seeding["seed_cells"]) <= set(counts_adata.obs_names)


def test_garage_samples_every_type_and_reports_distances_to_seeds(fitted_garage):
    out = fitted_garage.sample(1000, proportions="uniform", seed=0)
    assert set(out.obs["cell_type"]) == {"alpha", "beta", "gamma", "rare"}
    from_seed = out.obs["from_seed"].to_numpy()
    assert 0.1 < from_seed.mean() < 0.3  # λ = 0.2 of the rows come from seeds
    d = out.obs["seed_distance_ratio"].to_numpy()
    assert np.isfinite(d[from_seed]).all() and np.isnan(d[~from_seed]).all()
    guard = out.uns["cellsynth"]["copying_guard"]
    assert guard["n_from_seed"] == from_seed.sum() and guard["median_ratio"] > 0


def test_garage_save_load_round_trip(fitted_garage, tmp_path):
    fitted_garage.save(tmp_path / "g")
    back = models.load(tmp_path / "g")
    a, b = fitted_garage.sample(300, seed=4), back.sample(300, seed=4)
    assert (a.X != b.X).nnz == 0
    assert a.obs["from_seed"].equals(b.obs["from_seed"])
    assert back.info["seeding"]["n_seeds"] == fitted_garage.info["seeding"]["n_seeds"]


def test_garage_genes_input_space_trains_and_samples(counts_adata):
    model = models.get("garage", leakage=0.3, input_space="genes", seed_method="lsh", **SMALL)
    model.fit(counts_adata, label_key="cell_type", progress=False)
    assert model.modules["generator"].z_dim == counts_adata.n_vars - 3  # expressed genes
    out = model.sample(200, seed=0)
    assert out.obs["from_seed"].any() and out.n_vars == counts_adata.n_vars


def test_unconditional_garage_labels_its_cells_with_a_classifier_trained_on_real_cells(counts_adata):
    """The paper's mode: the generator never sees the type; the auxiliary classifier names the cells."""
    from cellsynth.errors import RequestError

    model = models.get(
        "garage", leakage=0.2, conditional=False, seed_method="random", **{**SMALL, "epochs": 6}
    )
    model.fit(counts_adata, label_key="cell_type", progress=False)
    gen = model.modules["generator"]
    # what the networks were given: the label frequencies, the same for every cell
    prior = model._label_prior()
    counts = counts_adata.obs["cell_type"].value_counts()
    assert np.allclose(
        prior.numpy(), [counts[c] / counts.sum() for c in model.info["categories"]["cell_type"]]
    )
    out = model.sample(400, seed=0)
    assert "predicted" in out.uns["cellsynth"]["labels"]
    assert out.obs["label_probability"].between(0, 1).all()
    # labels come from the classifier: on REAL cells it recovers their types
    real = counts_adata[:, :].copy()
    real.layers["log1p"] = np.log1p(real.X.multiply(1e4 / real.X.sum(1)).tocsr())
    from cellsynth.models.labeller import predict_labels

    predict_labels(real, model.modules["classifier"], model.info)
    assert (real.obs["cell_type"].astype(str) == counts_adata.obs["cell_type"].astype(str)).mean() > 0.8
    assert out.obs["cell_type"].nunique() >= 2
    assert model.fit_record["labeller_accuracy"] > 0.8  # held-out real cells
    for request in ({"per_type": {"alpha": 5}}, {"n": 5, "mix": {"alpha": 0.5, "beta": 0.5}}):
        with pytest.raises(RequestError, match="unconditional"):
            model.sample(**request)
    assert gen.offset[0].shape[0] == 4  # the same networks as the conditional model


TINY = dict(
    epochs=1, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8), z_dim=8,
    critic_components=8, init_variation=0,
)  # fmt: skip


def test_paper_params_train_and_sample_labelled_cells(counts_adata):
    from cellsynth.models.garage import PAPER_PARAMS

    tiny = {**TINY, "epochs": 2}
    tiny.pop("z_dim")  # the genes input space sets it
    model = models.get("garage", **PAPER_PARAMS, seed_method="random", **tiny)
    model.fit(counts_adata, label_key="cell_type", progress=False)
    assert {k: model.params[k] for k in PAPER_PARAMS} == PAPER_PARAMS
    assert model.modules["generator"].z_dim == counts_adata.n_vars - 3  # genes input space
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in model.history)
    out = model.sample(200, proportions="uniform", seed=0)
    assert np.isfinite(out.X.data).all()
    assert out.obs["cell_type"].value_counts().to_dict() == {"alpha": 50, "beta": 50, "gamma": 50, "rare": 50}
    assert out.obs["from_seed"].any()


def test_same_seed_same_data_same_seed_cells_and_same_samples(counts_adata):
    def fit():
        model = models.get("garage", leakage=0.2, gat={"max_epochs": 10, "hidden": 8, "heads": 2}, **TINY)
        return model.fit(counts_adata, label_key="cell_type", progress=False, seed=1)

    first, again = fit(), fit()
    assert again.info["seeding"]["seed_cells"] == first.info["seeding"]["seed_cells"]
    a, b = first.sample(300, seed=2), again.sample(300, seed=2)
    assert a.obs["from_seed"].any()
    assert (a.X != b.X).nnz == 0
    assert a.obs["from_seed"].equals(b.obs["from_seed"])
    np.testing.assert_array_equal(a.obs["seed_distance"].to_numpy(), b.obs["seed_distance"].to_numpy())


def _tiny_bank(labels):
    import torch

    from cellsynth.models.garage import SeedBank

    bank = SeedBank(len(labels), z_dim=3, n_genes=5, n_comps=2)
    bank.label.copy_(torch.tensor(labels))
    bank.latent.copy_(100.0 + torch.arange(len(labels), dtype=torch.float32)[:, None].expand(-1, 3))
    return bank


@pytest.mark.parametrize(
    "seedless",
    [
        1,
        3,
    ],
    ids=["middle-type-without-seeds", "last-type-without-seeds"],
)
def test_seed_rows_take_a_seed_of_their_own_type(seedless):
    import torch

    from cellsynth.models.garage import GenerateFromSeeds

    def noise(n, g, d):
        return torch.randn(n, 3, generator=g, device=d)

    labels = [t for t in (2, 0, 1, 0, 2, 2, 3, 3) if t != seedless]
    bank = _tiny_bank(labels)
    source = GenerateFromSeeds(bank, 4, leakage=0.5, noise=noise)
    gen = torch.Generator().manual_seed(0)
    row_label = torch.randint(0, 4, (4000,), generator=gen)
    weights = [torch.nn.functional.one_hot(row_label, 4).float()]
    z, origin = source(weights, gen)
    taken = origin >= 0
    assert torch.equal(bank.label[origin[taken]], row_label[taken])  # a seed of the row's own type
    assert torch.equal(z[taken], bank.latent[origin[taken]])  # the seed itself is the row's input
    assert (z[~taken] < 50).all()  # the other rows are noise
    assert not taken[row_label == seedless].any()  # a type without seeds never takes one
    share = taken[row_label != seedless].float().mean()
    assert 0.45 < share < 0.55
    assert set(origin[taken].tolist()) == set(range(len(labels)))  # every seed gets used
    # mixed (soft) labels have no type of their own: noise only
    soft = torch.full((50, 4), 0.25)
    assert (source([soft], gen)[1] == -1).all()


def test_no_seeds_or_zero_leakage_is_plain_noise():
    import torch

    from cellsynth.models.garage import GenerateFromSeeds

    gen = torch.Generator().manual_seed(0)
    weights = [torch.nn.functional.one_hot(torch.randint(0, 3, (100,), generator=gen), 3).float()]

    def noise(n, g, d):
        return torch.randn(n, 3, generator=g, device=d)

    for bank, leakage in ((_tiny_bank([0, 1, 2]), 0.0), (_tiny_bank([]), 0.5)):
        z, origin = GenerateFromSeeds(bank, 3, leakage, noise)(weights, gen)
        assert (origin == -1).all() and (z.abs() < 50).all()


def _guard_frame(model, counts_adata):
    """The guard's PCA frame, and every training cell's coordinates in it (computed here)."""
    import torch

    from cellsynth.data.celldata import CellData

    bank = model.modules["seeds"]
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    x = torch.from_numpy(data.dense_rows(np.arange(data.n_cells)))
    return bank, ((x - bank.guard_mean) @ bank.guard_basis).numpy()


def test_the_copying_guard_records_the_distance_to_a_seed_of_the_rows_own_type(fitted_garage, counts_adata):
    import torch
    from sklearn.neighbors import NearestNeighbors

    bank, coords = _guard_frame(fitted_garage, counts_adata)
    seeding = fitted_garage.info["seeding"]
    names = list(counts_adata.obs_names)
    seed_rows = np.array([names.index(c) for c in seeding["seed_cells"]])
    # the bank holds the named seed cells, in the guard's frame
    np.testing.assert_allclose(bank.guard_coords.numpy(), coords[seed_rows], atol=1e-3)
    seed_type = counts_adata.obs["cell_type"].astype(str).to_numpy()[seed_rows]
    # the reference: the median distance from a training cell to its nearest other training cell
    dist, _ = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)
    reference = float(np.median(dist[:, 1]))
    assert seeding["guard_reference"] == pytest.approx(reference, rel=1e-4)

    out = fitted_garage.sample(400, proportions="uniform", seed=5)
    rows = np.flatnonzero(out.obs["from_seed"].to_numpy())
    assert len(rows) > 40
    train_genes = fitted_garage.info["preprocessing"]["train_genes"]
    x = torch.from_numpy(out.layers["log1p"][rows][:, train_genes].toarray())
    synth = ((x - bank.guard_mean) @ bank.guard_basis).numpy()
    recorded = out.obs["seed_distance"].to_numpy()[rows]
    row_type = out.obs["cell_type"].astype(str).to_numpy()[rows]
    to_seeds = np.linalg.norm(synth[:, None, :] - coords[seed_rows][None], axis=2)  # rows × seeds
    for i in range(len(rows)):
        own = to_seeds[i, seed_type == row_type[i]]
        # the recorded distance is the distance to one of the seeds of the row's own type
        assert np.min(np.abs(own - recorded[i])) < 1e-3 * max(recorded[i], 1.0), i
    ratio = out.obs["seed_distance_ratio"].to_numpy()[rows]
    np.testing.assert_allclose(ratio, recorded / seeding["guard_reference"], rtol=1e-6)
    guard = out.uns["cellsynth"]["copying_guard"]
    assert guard["median_ratio"] == pytest.approx(np.median(ratio))
    assert guard["min_ratio"] == pytest.approx(ratio.min())
