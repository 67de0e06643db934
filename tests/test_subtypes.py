"""Sub-populations within a type: found where they stand apart, modelled, sampled at their shares and
output under the type's label."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from cellsynth import models
from cellsynth.data import CellData
from cellsynth.data import subtypes as subtypes_module
from cellsynth.data.datasets import simulate
from cellsynth.data.subtypes import split_types
from cellsynth.errors import ModelFileError, RequestError
from cellsynth.models.model import SyntheticCellModel
from cellsynth.models.sampling import plan_conditions

TINY = dict(epochs=3, val_every_steps=5, z_dim=8, g_hidden=(32, 32), d_hidden=(32, 16), c_hidden=(16,))


@pytest.fixture(scope="module")
def coarse():
    """ "mixed": two distinct populations (simulated types "m1" 150 and "m2" 90 cells) under one label;
    "plain": one population of 200 cells varying along continuous programs; "few": 20 cells of "m1"'s kind."""
    adata = simulate(
        {"m1": 150, "m2": 90, "plain": 200, "few": 20}, n_genes=150, programs=3, mean_library=1500, seed=5
    )
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    adata.obs["cell_type"] = np.where(np.isin(truth, ["m1", "m2"]), "mixed", truth)
    return adata, truth


def test_a_type_of_distinct_populations_is_split_and_a_continuum_and_a_small_type_stay_whole(coarse):
    adata, truth = coarse
    data = CellData.from_anndata(adata, label_key="cell_type")
    split, record = split_types(data, 15, seed=0)
    label = split.conditions[0]
    names = np.asarray(label.categories)[label.codes]
    assert sorted(label.categories) == ["few", "mixed #1", "mixed #2", "plain"]
    mixed = truth != "plain"
    mixed &= truth != "few"
    assert adjusted_rand_score(truth[mixed], names[mixed]) > 0.95  # the populations overlap at a cell or two
    assert set(names[truth == "plain"]) == {"plain"} and set(names[truth == "few"]) == {"few"}
    # the map back to the label's types, and library sizes to draw from per sub-type
    types = record["types"]
    assert [types[p] for p in record["parent"]] == [n.split(" #")[0] for n in label.categories]
    for k, name in enumerate(label.categories):
        np.testing.assert_allclose(
            split.preprocessing.library_sizes[name], np.sort(split.library[label.codes == k]), rtol=1e-6
        )
    # the same split on every call (the seed's), and the rest of the data untouched
    again = split_types(data, 15, seed=0)[0].conditions[0]
    assert np.array_equal(again.codes, label.codes)
    assert split.X is data.X and split.conditions[1:] == data.conditions[1:]


def test_no_split_leaves_the_data_as_it_was(coarse):
    adata, _ = coarse
    data = CellData.from_anndata(adata[adata.obs["cell_type"] != "mixed"].copy(), label_key="cell_type")
    assert split_types(data, 15, seed=0) == (data, None)


def test_cells_beyond_the_clustered_sample_join_their_populations_centre(coarse, monkeypatch):
    adata, truth = coarse
    data = CellData.from_anndata(adata, label_key="cell_type")
    monkeypatch.setattr(subtypes_module, "MAX_CELLS", 100)
    monkeypatch.setattr(subtypes_module, "ASSIGN_ROWS", 32)  # several blocks
    label = split_types(data, 15, seed=0)[0].conditions[0]
    mixed = np.isin(truth, ["m1", "m2"])
    assert adjusted_rand_score(truth[mixed], label.codes[mixed]) > 0.95  # a border cell or two may go astray


def test_sub_type_names_never_take_an_existing_category(coarse):
    adata, _ = coarse
    adata = adata.copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).replace({"few": "mixed #1"})
    data = CellData.from_anndata(adata, label_key="cell_type")
    categories = split_types(data, 15, seed=0)[0].conditions[0].categories
    assert len(set(categories)) == len(categories) == 4
    assert "mixed #1" in categories and "mixed #1'" in categories


def _info(shares: dict[str, int]) -> dict:
    """A model's record of label sub-types ``shares`` (name: training cells), types "a" (split) and "b"."""
    names = list(shares)
    return {
        "label_key": "cell_type",
        "condition_keys": [],
        "categories": {"cell_type": names},
        "joint": {"codes": list(range(len(names))), "counts": list(shares.values())},
        "subtypes": {"types": ["a", "b"], "parent": [0 if n.startswith("a") else 1 for n in names]},
    }


def test_a_request_names_types_and_gets_their_sub_types_at_their_training_shares():
    info = _info({"a #1": 300, "a #2": 100, "b": 50})
    rng = np.random.default_rng(0)
    codes, label_w, names = plan_conditions(info, None, {"a": 8000, "b": 10}, "real", None, rng)
    assert label_w is None
    assert names.count("a") == 8000 and names.count("b") == 10
    drawn = np.bincount(codes[:, 0], minlength=3)
    assert drawn[2] == 10
    assert abs(drawn[0] / 8000 - 0.75) < 0.02  # binomial sd 0.005
    # n cells in the types' real proportions: a 400 of 450 training cells
    _, _, names = plan_conditions(info, 900, None, "real", None, rng)
    assert names.count("a") == 800
    _, _, names = plan_conditions(info, 900, None, "uniform", None, rng)
    assert names.count("a") == 450
    with pytest.raises(RequestError, match=r"unknown label 'a #1'.*known labels: \['a', 'b'\]"):
        plan_conditions(info, None, {"a #1": 3}, "real", None, rng)


def test_a_mixed_cell_takes_one_sub_type_of_each_mixed_type():
    info = _info({"a #1": 300, "a #2": 100, "b": 50})
    _, label_w, names = plan_conditions(
        info, 4000, None, "real", {"a": 0.6, "b": 0.4}, np.random.default_rng(0)
    )
    np.testing.assert_allclose(label_w.sum(1), 1.0)
    np.testing.assert_allclose(label_w[:, 2], 0.4)
    a = label_w[:, :2]
    assert np.all((a == 0) | np.isclose(a, 0.6)) and np.all((a > 0).sum(1) == 1)
    assert abs((a[:, 0] > 0).mean() - 0.75) < 0.03
    assert set(names) == {"mix(a=0.60,b=0.40)"}


@pytest.fixture(scope="module")
def fitted(coarse):
    adata, _ = coarse
    return models.get("nbgan", **TINY, ae={"epochs": 3}, subtypes=True).fit(
        adata, label_key="cell_type", progress=False, seed=0
    )


def test_nbgan_conditions_on_sub_types_and_outputs_the_types(fitted, coarse, tmp_path):
    adata, truth = coarse
    assert fitted.info["subtypes"]["types"] == ["few", "mixed", "plain"]
    out = fitted.sample(per_type={"mixed": 300, "few": 5}, seed=1)
    assert out.obs["cell_type"].astype(str).value_counts().to_dict() == {"mixed": 300, "few": 5}
    assert list(out.obs["cell_type"].cat.categories) == ["few", "mixed", "plain"]
    # both populations come out, in about their training shares, told apart by their markers
    X = out.X.toarray()
    lib_norm = np.log1p(adata.X.toarray() / adata.X.sum(1).A1[:, None] * 1e4)
    gap = lib_norm[truth == "m1"].mean(0) - lib_norm[truth == "m2"].mean(0)
    m1, m2 = np.argsort(-gap)[:10], np.argsort(gap)[:10]

    def m1_share(counts):  # cells more m1's than m2's by their markers
        return float((counts[:, m1].sum(1) > counts[:, m2].sum(1)).mean())

    real_share = m1_share(adata.X.toarray()[np.isin(truth, ["m1", "m2"])])
    assert 0.5 < real_share < 0.75  # 150 of 240 cells
    assert abs(m1_share(X[(out.obs["cell_type"] == "mixed").to_numpy()]) - real_share) < 0.1
    fitted.save(tmp_path / "m")
    again = SyntheticCellModel.load(tmp_path / "m").sample(per_type={"mixed": 300, "few": 5}, seed=1)
    assert np.array_equal(again.X.toarray(), X)


def test_a_model_file_whose_sub_types_do_not_map_onto_its_types_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    config["data"]["subtypes"]["parent"][0] = 7
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="data.subtypes.parent"):
        SyntheticCellModel.load(tmp_path / "m")
