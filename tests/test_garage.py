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
    a = models.get("garage", leakage=0.0, **SMALL).fit(counts_adata, label_key="cell_type", progress=False)
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
    model._predict_labels(real)
    assert (real.obs["cell_type"].astype(str) == counts_adata.obs["cell_type"].astype(str)).mean() > 0.8
    assert out.obs["cell_type"].nunique() >= 2
    assert model.fit_record["labeller_accuracy"] > 0.8  # held-out real cells
    for request in ({"per_type": {"alpha": 5}}, {"n": 5, "mix": {"alpha": 0.5, "beta": 0.5}}):
        with pytest.raises(RequestError, match="unconditional"):
            model.sample(**request)
    assert gen.offset[0].shape[0] == 4  # the same networks as the conditional model
