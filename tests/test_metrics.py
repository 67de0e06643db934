"""The evaluation suite: controls near ideal, noise and copies flagged, verdict directions, outputs, CLI."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellsynth.cli import app
from cellsynth.data.datasets import simulate
from cellsynth.data.split import split_by_type
from cellsynth.errors import InputError
from cellsynth.metrics import METRICS, Metrics, evaluate, write_outputs
from cellsynth.metrics.base import MetricInfo, verdict
from cellsynth.metrics.distribution import exact_wasserstein
from cellsynth.metrics.evaluation import load_families

from .conftest import shared_file

# small caps: these tests check behaviour, not the precision of the estimates
FAST = {
    "max_cells_ot": 300,
    "max_cells_mmd": 300,
    "detection_trees": 50,
    "per_type_trees": 20,
    "groundgan_trees": 50,
    "n_jobs": 1,
}


@pytest.fixture(scope="module")
def halves():
    """~1,000 simulated cells split 50/50 by type: (train, test)."""
    cells = simulate({"alpha": 400, "beta": 300, "gamma": 200, "delta": 100}, n_genes=200, seed=11)
    return split_by_type(cells, label_key="cell_type", test_fraction=0.5, seed=0)


def shuffled_genes(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """Each gene permuted across cells independently: right marginals, no cell structure."""
    X = adata.X.toarray()
    rng = np.random.default_rng(seed)
    X = np.stack([rng.permutation(X[:, j]) for j in range(X.shape[1])], axis=1)
    return ad.AnnData(X, obs=adata.obs.copy(), var=adata.var.copy())


def test_real_vs_real_control_scores_near_ideal(halves):
    train, test = halves
    m = evaluate(test, train, label_key="cell_type", families=["detection"], settings=FAST)
    assert m.overall["detection_auc"] <= 0.6
    assert abs(m.overall["detection_auc_logreg"] - 0.5) <= 0.1


def test_noise_is_flagged(halves):
    train, test = halves
    m = evaluate(test, shuffled_genes(test), label_key="cell_type", families=["detection"], settings=FAST)
    assert m.overall["detection_auc"] >= 0.95


def test_copy_of_train_is_flagged_by_privacy(halves):
    train, test = halves
    copy = train[np.random.default_rng(0).permutation(train.n_obs)[:400]].copy()
    m = evaluate(test, copy, label_key="cell_type", train=train, families=["privacy"], settings=FAST)
    assert m.overall["dcr_ratio"] < 0.2
    assert m.overall["exact_copy_fraction"] > 0.9
    assert m.overall["mia_auc"] > 0.6
    # an independent real sample is as far from TRAIN as REAL is
    real, independent = split_by_type(test, label_key="cell_type", seed=1)
    m = evaluate(real, independent, label_key="cell_type", train=train, families=["privacy"], settings=FAST)
    assert 0.8 < m.overall["dcr_ratio"] < 1.25 and m.overall["exact_copy_fraction"] == 0
    assert abs(m.overall["mia_auc"] - 0.5) < 0.1


MINE = ["distribution", "detection", "genes", "privacy"]  # biology and the report have their own tests


@pytest.fixture(scope="module")
def evaluated(halves):
    train, test = halves
    synth = train[:300].copy()
    return evaluate(
        test, synth, label_key="cell_type", train=train, families=MINE, settings=FAST, return_context=True
    )


def test_every_family_with_control(evaluated):
    m, ctx = evaluated
    assert ctx.control is not None and ctx.control.kind == "control"
    assert len(ctx.control.synth) == len(ctx.synth) == 300
    assert "dcr_ratio" in m.overall and "dcr_ratio" not in m.control
    for name in ("wasserstein", "wasserstein_garage", "sliced_wasserstein", "mmd", "detection_auc"):
        assert np.isfinite(m.overall[name]) and np.isfinite(m.control[name]), name
    for name in ("gene_mean_pearson", "gene_corr_pearson", "ks_library_size", "ks_cell_zero_fraction"):
        assert name in m.overall, name
    for name in m.overall:
        assert name in METRICS, name
    assert m.settings["representation"] == {"real": "counts", "synth": "counts", "train": "counts"}
    assert m.settings["diagnostics"]["wasserstein_converged"] is True
    assert m.settings["max_cells_ot"] == 300 and m.settings["n_cells"]["control"] == 300
    rows = m.table()
    assert set(rows.columns) >= {"metric", "value", "control", "verdict"}


def test_per_type_table_and_outputs(evaluated, tmp_path):
    m, _ = evaluated
    table = m.per_type
    assert list(table.columns[:2]) == ["n_real", "n_synth"]
    assert set(table.index) == {"alpha", "beta", "gamma", "delta"}
    assert {"detection_auc", "mmd", "detection_auc_control", "mmd_control"} <= set(table.columns)
    assert table.loc["alpha", "n_real"] == 200
    assert table["detection_auc"].notna().sum() >= 3

    files = write_outputs(m, tmp_path / "out")
    data = json.loads(files[0].read_text())
    assert set(data) == {"overall", "control", "per_type", "settings"}
    assert data["per_type"]["alpha"]["n_real"] == 200
    csv = pd.read_csv(files[1], index_col=0)
    assert list(csv.index) == list(table.index)


def test_json_writes_nan_as_null_and_numpy_as_plain_values(tmp_path):
    frame = pd.DataFrame({"n_real": [3], "mmd": [np.nan]}, index=["rare"])
    settings = {
        "seed": np.int64(0),
        "diagnostics": {"converged": np.bool_(True), "cost": np.float32("inf"), "axes": np.arange(3)},
        "genes": (np.str_("CD3E"), "MS4A1"),
        "out": tmp_path,  # a value JSON has no type for: written as its text
    }
    m = Metrics({"mmd": float("nan")}, {"mmd": np.float64(0.25)}, frame, settings)
    path, _ = write_outputs(m, tmp_path)
    data = json.loads(path.read_text())
    assert data["overall"]["mmd"] is None and data["per_type"]["rare"]["mmd"] is None
    assert data["control"]["mmd"] == 0.25
    assert data["settings"]["seed"] == 0
    assert data["settings"]["diagnostics"] == {"converged": True, "cost": None, "axes": [0, 1, 2]}
    assert data["settings"]["genes"] == ["CD3E", "MS4A1"] and data["settings"]["out"] == str(tmp_path)


def test_wasserstein_of_a_set_with_itself_is_zero():
    x = np.random.default_rng(0).normal(size=(300, 20))
    cost, converged = exact_wasserstein(x, x)
    assert cost == pytest.approx(0, abs=1e-9) and converged
    cost, converged = exact_wasserstein(x, x + 1.0)
    assert cost == pytest.approx(np.sqrt(20), rel=1e-6) and converged


def test_wasserstein_through_evaluate(halves):
    _, test = halves
    m = evaluate(
        test, test.copy(), label_key="cell_type", families=["distribution"], settings={"max_cells_ot": 600}
    )
    assert m.overall["wasserstein"] == pytest.approx(0, abs=1e-6)
    assert m.overall["wasserstein_garage"] == pytest.approx(0, abs=1e-6)
    assert m.settings["diagnostics"]["wasserstein_converged"] is True


@pytest.mark.parametrize(
    ("direction", "target", "good", "bad", "control"),
    [("minimize", None, 0.1, 0.5, 0.1), ("maximize", None, 0.9, 0.5, 0.9), ("target", 0.5, 0.52, 0.8, 0.5)],
)
def test_verdict_honours_direction(direction, target, good, bad, control):
    info = MetricInfo("m", "test", direction, "a test metric", target=target)
    assert verdict(info, good, control) == "as good as real data"
    assert verdict(info, bad, control) == "worse than real data"
    assert verdict(info, good, None) == "no control"
    if direction == "target":  # below the target is as bad as above it
        assert verdict(info, 0.2, control) == "worse than real data"


def test_verdicts_in_table_follow_declared_directions():
    m = Metrics(
        {
            "detection_auc": 0.7,
            "gene_mean_pearson": 0.99,
            "wasserstein": 10.0,
            "dcr_ratio": 0.1,
            "mia_auc": 0.5,
        },
        {"detection_auc": 0.5, "gene_mean_pearson": 0.95, "wasserstein": 5.0},
        None,
        {},
    )
    load_families()  # registers every metric
    table = m.table().set_index("metric")
    assert table["verdict"].to_dict() == {
        "detection_auc": "worse than real data",
        "gene_mean_pearson": "as good as real data",
        "wasserstein": "worse than real data",
        "dcr_ratio": "looks copied",  # privacy: a fixed threshold, the same words as in the report
        "mia_auc": "no membership leak",
    }
    assert table["level"].to_dict() == {
        "detection_auc": "bad",
        "gene_mean_pearson": "good",
        "wasserstein": "bad",
        "dcr_ratio": "bad",
        "mia_auc": "good",
    }
    assert table.loc["dcr_ratio", "control_verdict"] == "no control"
    # a value computed on REAL alone is a reference, not something to judge
    ref = Metrics({"ari_real": 0.8}, {"ari_real": 0.8}, None, {}).table()
    assert ref["verdict"].tolist() == ["reference"] and ref["level"].tolist() == ["none"]
    # a fixed threshold that fires overrides the comparison with the control
    easy = Metrics({"detection_auc": 0.9}, {"detection_auc": 0.89}, None, {}).table()
    assert easy["verdict"].tolist() == ["easily told apart"] and easy["level"].tolist() == ["bad"]
    # a privacy value that could not be computed is not judged on its threshold
    missing = Metrics({"dcr_ratio": float("nan")}, {}, None, {}).table()
    assert missing["verdict"].tolist() == ["not computed"] and missing["level"].tolist() == ["none"]
    # between the thresholds without a control: borderline
    middle = Metrics({"detection_auc": 0.7, "dcr_ratio": 0.7}, {}, None, {}).table()
    assert middle["verdict"].tolist() == ["borderline"] * 2 and middle["level"].tolist() == ["warn"] * 2


def test_gene_names_must_match(halves):
    train, test = halves
    other = train.copy()
    other.var_names = [f"ENSG{i:011d}" for i in range(other.n_vars)]
    with pytest.raises(InputError, match="gene names are shared"):
        evaluate(test, other, label_key="cell_type")
    with pytest.raises(InputError, match="obs column 'celltype' not found"):
        evaluate(test, train, label_key="celltype")
    with pytest.raises(InputError, match="unknown evaluation setting"):
        evaluate(test, train, label_key="cell_type", settings={"max_cells": 3})


def test_training_cells_given_as_held_out_cells_are_refused(halves):
    train, test = halves
    leaked = ad.concat([test, train[:5]])  # five training cells among the held-out ones
    with pytest.raises(InputError, match="5 of REAL's .* cells are also in TRAIN"):
        evaluate(leaked, test, label_key="cell_type", train=train, families=["privacy"], settings=FAST)
    # the same names with other values (another dataset's numbering) are not the same cells
    renamed = test.copy()
    renamed.obs_names = train.obs_names[: test.n_obs]
    m = evaluate(renamed, test, label_key="cell_type", train=train, families=["privacy"], settings=FAST)
    assert np.isfinite(m.overall["dcr_ratio"])


def test_normalised_values_without_the_log_are_refused(halves):
    import scanpy as sc

    train, test = halves
    per_10k = test.copy()
    sc.pp.normalize_total(per_10k, target_sum=1e4)
    with pytest.raises(InputError, match="REAL holds non-integer values up to .* beyond log1p"):
        evaluate(per_10k, train, label_key="cell_type", families=["detection"], settings=FAST)
    sc.pp.log1p(per_10k)  # the same cells logged are compared
    m = evaluate(per_10k, train, label_key="cell_type", families=["detection"], settings=FAST)
    assert m.overall["detection_auc"] <= 0.6


def test_log_normalised_input_is_used_as_is(halves):
    import scanpy as sc

    train, test = halves
    logged = train.copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    m, ctx = evaluate(test, logged, label_key="cell_type", families=["genes"], return_context=True)
    assert m.settings["representation"] == {"real": "counts", "synth": "log1p"}
    assert "ks_library_size" not in m.overall
    assert m.overall["gene_mean_pearson"] > 0.95


# ------------------------------------------------------------------------------------------------- CLI
runner = CliRunner()


def test_split_cli_is_stratified_and_keeps_singletons_in_train(tmp_path):
    cells = simulate({"big": 100, "small": 9, "single": 1}, n_genes=30, seed=2)
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    r = runner.invoke(
        app, ["split", str(path), "--label-key", "cell_type", "--seed", "1", "--out", str(tmp_path / "s")]
    )
    assert r.exit_code == 0, r.output
    train = ad.read_h5ad(tmp_path / "s" / "train.h5ad")
    test = ad.read_h5ad(tmp_path / "s" / "test.h5ad")
    assert train.n_obs + test.n_obs == 110
    assert not set(train.obs_names) & set(test.obs_names)
    counts = test.obs["cell_type"].value_counts()
    assert counts["big"] == 50 and counts["small"] in (4, 5) and counts.get("single", 0) == 0
    assert (train.obs["cell_type"] == "single").sum() == 1
    r = runner.invoke(app, ["split", str(path), "--test-fraction", "1.5", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "test-fraction" in r.output


def test_evaluate_cli_writes_metrics_json(halves, tmp_path):
    train, test = halves
    paths = {}
    for name, part in (("train", train), ("test", test), ("synth", train[:300].copy())):
        paths[name] = tmp_path / f"{name}.h5ad"
        part.write_h5ad(paths[name])
    out = tmp_path / "eval"
    args = ["evaluate", paths["test"], paths["synth"], "--label-key", "cell_type", "--train", paths["train"]]
    args += ["--out", out, "--family", "genes", "--family", "privacy", "--no-report"]
    args += [x for k, v in FAST.items() for x in ("--setting", f"{k}={v}")]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "metrics.json").read_text())
    assert set(data) == {"overall", "control", "per_type", "settings"}
    assert "dcr_ratio" in data["overall"] and "gene_mean_pearson" in data["control"]
    assert data["settings"]["max_cells_ot"] == 300
    assert (out / "metrics_per_type.csv").exists()
    assert "dcr_ratio" in r.output  # the summary table

    r = runner.invoke(
        app, ["evaluate", str(paths["test"]), str(paths["synth"]), "--label-key", "kind", "--out", str(out)]
    )
    assert r.exit_code == 2 and "error: " in r.output and "kind" in r.output


def test_evaluate_cli_compares_counts_with_the_real_sets_counts(halves, tmp_path):
    # REAL in CELLxGENE's layout (X normalised to a median total and logged, counts in raw.X) against
    # synthetic counts: the real counts are used, so both sides are normalised the same way
    import scanpy as sc

    train, test = halves
    real = test.copy()
    real.raw = test
    sc.pp.normalize_total(real)
    sc.pp.log1p(real)
    paths = {"real": tmp_path / "real.h5ad", "synth": tmp_path / "synth.h5ad"}
    real.write_h5ad(paths["real"])
    train.write_h5ad(paths["synth"])
    args = ["evaluate", paths["real"], paths["synth"], "--label-key", "cell_type", "--family", "detection"]
    args += ["--out", tmp_path / "eval", "--no-report"]
    args += [x for k, v in FAST.items() for x in ("--setting", f"{k}={v}")]
    r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    assert "REAL: X holds no counts and adata.raw does" in r.output
    data = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert data["overall"]["detection_auc"] <= 0.6  # real cells against real cells


def test_metrics_cli_lists_every_metric():
    r = runner.invoke(app, ["metrics"])
    assert r.exit_code == 0, r.output
    for name, info in METRICS.items():
        assert name in r.output and info.family in r.output


# ------------------------------------------------------------------------------------ shared real data
def test_baron_train_as_synthetic_is_flagged_and_real_control_is_ideal():
    cells = ad.read_h5ad(shared_file("baron_mouse_pancreas.h5ad"))
    train, test = split_by_type(cells, label_key="cell_type", test_fraction=0.5, seed=0)
    m = evaluate(
        test,
        train,
        label_key="cell_type",
        train=train,
        families=["detection", "privacy"],
        settings={
            "detection_trees": 50,
            "groundgan_trees": 100,
            "min_cells_per_type": 10**6,
            "max_genes": 3000,
        },
    )
    assert m.overall["dcr_ratio"] < 0.2
    assert m.overall["exact_copy_fraction"] > 0.9
    assert m.control["detection_auc"] <= 0.6


@pytest.fixture
def settings_registry():
    """The global registry of family settings, restored after the test (a declaration made in a test
    must not reach the settings of every later evaluation)."""
    from cellsynth.metrics import SETTINGS

    saved = dict(SETTINGS)
    yield SETTINGS
    SETTINGS.clear()
    SETTINGS.update(saved)


def test_family_settings_are_declared_and_overridable(halves, settings_registry):
    from cellsynth.metrics import register_settings

    train, test = halves
    register_settings({"test_only_cap": 7})
    assert settings_registry["test_only_cap"] == 7
    m = evaluate(test, train, label_key="cell_type", families=["genes"], settings={"test_only_cap": 3})
    assert m.settings["test_only_cap"] == 3 and m.settings["n_hvg"] == 2000
