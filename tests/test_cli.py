"""The command line: fit / sample / models, and user errors as one line + exit 2 with nothing written."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellsynth.cli import app, parse_pairs
from cellsynth.data.datasets import simulate

runner = CliRunner()
SMALL = ["--param", "g_hidden=[32]", "--param", "d_hidden=[32,16]", "--param", "c_hidden=[16,8]", "--quiet"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_user_error(result, *words):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in errors[0], errors[0]


@pytest.fixture(scope="module")
def h5ad_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cells.h5ad"
    simulate({"B_cell": 80, "T_cell": 60, "NK": 20}, n_genes=40, covariates={"donor": 2}, seed=5).write_h5ad(
        path
    )
    return path


@pytest.fixture(scope="module")
def model_dir(h5ad_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("m") / "model"
    r = invoke(
        "fit",
        h5ad_path,
        "--label-key",
        "cell_type",
        "--condition-key",
        "donor",
        "--epochs",
        3,
        "--out",
        out,
        *SMALL,
    )
    assert r.exit_code == 0, r.output
    return out


def test_fit_writes_a_model_directory(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "weights.safetensors"]


def test_sample_h5ad_with_per_type_counts(model_dir, tmp_path):
    out = tmp_path / "s.h5ad"
    r = invoke("sample", model_dir, "--n", 30, "--per-type", "NK=10", "--seed", 1, "--out", out)
    assert r.exit_code == 0, r.output
    s = ad.read_h5ad(out)
    assert s.n_obs == 40
    assert s.obs["cell_type"].value_counts()["NK"] >= 10
    assert "donor" in s.obs
    assert np.array_equal(s.X.data, np.round(s.X.data))


def test_sample_csv_writes_matrix_and_labels(model_dir, tmp_path):
    out = tmp_path / "s.csv"
    r = invoke("sample", model_dir, "--n", 12, "--proportions", "uniform", "--out", out)
    assert r.exit_code == 0, r.output
    X = pd.read_csv(out, index_col=0)
    labels = pd.read_csv(tmp_path / "s_labels.csv", index_col=0)
    assert X.shape == (12, 40)
    assert (X.index == labels.index).all()
    assert labels["cell_type"].value_counts().to_dict() == {"B_cell": 4, "T_cell": 4, "NK": 4}


def test_sample_mix(model_dir, tmp_path):
    out = tmp_path / "mix.h5ad"
    r = invoke("sample", model_dir, "--n", 5, "--mix", "B_cell=0.5,T_cell=0.5", "--out", out)
    assert r.exit_code == 0, r.output
    assert set(ad.read_h5ad(out).obs["cell_type"]) == {"mix(B_cell=0.50,T_cell=0.50)"}


def test_models_lists_cgan():
    r = invoke("models")
    assert r.exit_code == 0 and "cgan" in r.output


def test_missing_file(tmp_path):
    r = invoke("fit", tmp_path / "nope.h5ad", "--label-key", "cell_type", "--out", tmp_path / "m")
    assert_user_error(r, "nope.h5ad")
    assert not (tmp_path / "m").exists()


def test_missing_label_key(h5ad_path, tmp_path):
    r = invoke("fit", h5ad_path, "--label-key", "celltype", "--out", tmp_path / "m", *SMALL)
    assert_user_error(r, "celltype", "--label-key")
    assert not (tmp_path / "m").exists()


def test_unknown_label_when_sampling(model_dir, tmp_path):
    out = tmp_path / "s.h5ad"
    r = invoke("sample", model_dir, "--per-type", "Neuron=5", "--out", out)
    assert_user_error(r, "Neuron")
    assert not out.exists() and not list(tmp_path.iterdir())


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "Inf"), (-2.0, "negative")])
def test_bad_values(tmp_path, value, word):
    a = simulate((20, 20), n_genes=10, seed=0)
    a.X = a.X.toarray()
    a.X[0, 0] = value
    path = tmp_path / "bad.h5ad"
    a.write_h5ad(path)
    rep = ["--representation", "counts"] if word == "negative" else []
    r = invoke("fit", path, "--label-key", "cell_type", "--out", tmp_path / "m", *rep, *SMALL)
    assert_user_error(r, word)
    assert not (tmp_path / "m").exists()


def test_truncated_model_is_one_line(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    w = broken / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    r = invoke("sample", broken, "--n", 5, "--out", tmp_path / "s.h5ad")
    assert_user_error(r, "weights.safetensors")
    assert not (tmp_path / "s.h5ad").exists()


def test_sample_needs_a_count_and_a_known_format(model_dir, tmp_path):
    assert_user_error(invoke("sample", model_dir, "--out", tmp_path / "s.h5ad"), "--n")
    assert_user_error(invoke("sample", model_dir, "--n", 3, "--out", tmp_path / "s.xlsx"), ".h5ad")


def test_parse_pairs_keeps_label_spaces_and_rejects_garbage():
    assert parse_pairs("CD4+ T cell=3, B=2", "--per-type", int) == {"CD4+ T cell": 3, "B": 2}
    from cellsynth import InputError

    with pytest.raises(InputError):
        parse_pairs("B:2", "--per-type", int)


def test_cli_fits_garage_and_samples_the_size_ladder(h5ad_path, tmp_path):
    model_dir = tmp_path / "g"
    result = runner.invoke(
        app,
        [
            "fit", str(h5ad_path), "--model", "garage", "--leakage", "0.2", "--gat-k", "4", "--epochs", "3",
            "--param", "g_hidden=[32,64]", "--param", "d_hidden=[64,32]", "--param", "c_hidden=[32,16]",
            "--param", 'gat={"max_epochs": 20}', "--out", str(model_dir), "--quiet",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    import json

    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["params"]["leakage"] == 0.2 and cfg["data"]["seeding"]["details"]["k"] == 4
    result = runner.invoke(app, ["sample", str(model_dir), "--ladder", "--out", str(tmp_path / "s.h5ad")])
    assert result.exit_code == 0, result.output
    n_train = cfg["data"]["n_train_cells"]
    for f in (0.25, 0.5, 0.75, 1, 1.25, 1.5):
        out = ad.read_h5ad(tmp_path / f"s_{f:g}x.h5ad")
        assert out.n_obs == round(f * n_train) and "from_seed" in out.obs


def test_cli_rejects_garage_options_for_other_models(h5ad_path, tmp_path):
    result = runner.invoke(app, ["fit", str(h5ad_path), "--leakage", "0.2", "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and "--model garage" in result.output
