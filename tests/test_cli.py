"""The command line: fit / sample / models, and user errors as one line + exit 2 with nothing written."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellsynth.cli import app, parse_pairs
from cellsynth.data.datasets import simulate

runner = CliRunner()
SMALL = ["--param", "g_hidden=[32]", "--param", "d_hidden=[32,16]", "--param", "c_hidden=[16,8]", "--quiet"]
AE = ["--param", 'ae={"epochs": 3}']  # the default model on counts (nbgan): its autoencoder's stage


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
        *AE,
    )
    assert r.exit_code == 0, r.output
    assert "model: nbgan, the default for count data" in r.output
    assert "sub-populations" not in r.output  # its types are one population each
    return out


def test_fit_says_which_types_it_conditions_on_as_several_populations(tmp_path):
    adata = simulate({"m1": 150, "m2": 90, "plain": 100}, n_genes=150, mean_library=1500, seed=5)
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).replace({"m1": "mixed", "m2": "mixed"})
    adata.write_h5ad(tmp_path / "coarse.h5ad")
    r = invoke("fit", tmp_path / "coarse.h5ad", "--epochs", 2, "--out", tmp_path / "m", *SMALL, *AE)
    assert r.exit_code == 0, r.output
    assert "sub-populations conditioned on (output under their type's label): mixed (2)" in r.output


def test_fit_writes_a_model_directory(model_dir):
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "weights.safetensors"]


def test_sample_h5ad_with_per_type_counts(model_dir, tmp_path):
    out = tmp_path / "s.h5ad"
    r = invoke("sample", model_dir, "--n", 30, "--per-type", "NK=10", "--seed", 1, "--out", out)
    assert r.exit_code == 0, r.output
    s = ad.read_h5ad(out)
    assert s.n_obs == 40 and s.uns["cellsynth"]["model"] == "nbgan"
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


def test_sample_defaults_to_the_training_size_and_needs_a_known_format(model_dir, h5ad_path, tmp_path):
    r = invoke("sample", model_dir, "--out", tmp_path / "s.h5ad")
    assert r.exit_code == 0, r.output
    trained_on = ad.read_h5ad(h5ad_path).n_obs
    assert ad.read_h5ad(tmp_path / "s.h5ad").n_obs == trained_on
    assert f"as many cells as the model was fitted on ({trained_on})" in r.output
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


@pytest.mark.slow
def test_demo_fits_pbmc68k_and_writes_labelled_cells_with_the_extra_rare_cells(tmp_path):
    """The demo's own quick figures (a 200-tree forest) and the PCAs on 765 genes take ~10 s."""
    from cellsynth import load
    from cellsynth.data.datasets import pbmc68k

    out = tmp_path / "demo"
    r = invoke("demo", "--out", out, "--max-minutes", 0.05)
    assert r.exit_code == 0, r.output
    real = pbmc68k()
    real_counts = real.obs["bulk_labels"].value_counts()
    rarest = real_counts.idxmin()
    s = ad.read_h5ad(out / "synthetic.h5ad")
    assert list(s.var_names) == list(real.var_names)
    assert np.array_equal(s.X.data, np.round(s.X.data))
    # the real proportions over pbmc68k's size, plus the 200 cells of the rarest type the demo asks for
    synth_counts = s.obs["bulk_labels"].value_counts()
    assert s.n_obs == real.n_obs + 200
    for name, k in real_counts.items():
        assert synth_counts[name] == k + (200 if name == rarest else 0), name
    model = load(out / "model")
    assert model.name == "nbgan"  # the default model on counts
    assert model.fit_record["stopped_because"] == "time budget"
    assert model.sample(n=5, seed=0).obs["bulk_labels"].isin(real_counts.index).all()


def test_ladder_writes_exactly_six_files_sized_by_the_training_cells(model_dir, h5ad_path, tmp_path):
    n_train = ad.read_h5ad(h5ad_path).n_obs
    r = invoke("sample", model_dir, "--ladder", "--proportions", "uniform", "--out", tmp_path / "s.csv")
    assert r.exit_code == 0, r.output
    factors = ("0.25", "0.5", "0.75", "1", "1.25", "1.5")
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"s_{f}x.csv" for f in factors] + [f"s_{f}x_labels.csv" for f in factors])
    for f in factors:
        X = pd.read_csv(tmp_path / f"s_{f}x.csv", index_col=0)
        labels = pd.read_csv(tmp_path / f"s_{f}x_labels.csv", index_col=0)
        assert len(X) == len(labels) == round(float(f) * n_train)
        assert labels["cell_type"].isin(["B_cell", "T_cell", "NK"]).all()
    r = invoke("sample", model_dir, "--ladder", "--n", 10, "--out", tmp_path / "other.h5ad")
    assert_user_error(r, "--ladder", "--n")
    assert not list(tmp_path.glob("other*"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--n", 5, "--mix", "B_cell=1"], ["--mix", "two or more"]),
        (["--n", 5, "--mix", "B_cell=-0.5,T_cell=1.5"], ["--mix", "non-negative"]),
        (["--n", 5, "--mix", "B_cell=0.5,Neuron=0.5"], ["Neuron"]),
        (["--mix", "B_cell=0.5,T_cell=0.5"], ["--n"]),
    ],
    ids=["one-label", "negative-weight", "unknown-label", "no-n"],
)
def test_bad_mix_requests_are_one_line_errors(model_dir, tmp_path, args, words):
    out = tmp_path / "mix.h5ad"
    assert_user_error(invoke("sample", model_dir, *args, "--out", out), *words)
    assert not list(tmp_path.iterdir())


def test_fit_refuses_an_existing_file_as_the_model_directory(h5ad_path, tmp_path):
    target = tmp_path / "model"
    target.write_text("not a model directory")
    r = invoke("fit", h5ad_path, "--epochs", 1, "--out", target, *SMALL)
    assert_user_error(r, str(target), "not a directory")
    assert target.read_text() == "not a model directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_sample_refuses_a_directory_as_the_output_file(model_dir, tmp_path):
    target = tmp_path / "cells.h5ad"
    target.mkdir()
    r = invoke("sample", model_dir, "--n", 5, "--out", target)
    assert_user_error(r, str(target), "is a directory")
    assert not list(target.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["cells.h5ad"]


def test_an_output_under_a_file_is_a_one_line_error(h5ad_path, model_dir, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    r = invoke("sample", model_dir, "--n", 5, "--out", blocker / "sub" / "s.h5ad")
    assert_user_error(r, "--out", "blocker is a file, not a folder")
    r = invoke("fit", h5ad_path, "--epochs", 1, "--out", blocker / "model", *SMALL)
    assert_user_error(r, "--out", "blocker is a file, not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_an_unwritable_output_folder_is_a_one_line_error(model_dir, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write into a read-only folder")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        r = invoke("sample", model_dir, "--n", 5, "--out", locked / "s.h5ad")
        assert_user_error(r, "writable")
        assert not list(locked.iterdir())
    finally:
        locked.chmod(0o700)


def test_device_cuda_without_a_gpu_is_a_one_line_error(h5ad_path, model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    r = invoke("fit", h5ad_path, "--epochs", 1, "--device", "cuda", "--out", tmp_path / "m", *SMALL)
    assert_user_error(r, "--device cuda", "no CUDA GPU")
    r = invoke("sample", model_dir, "--n", 5, "--device", "cuda", "--out", tmp_path / "s.h5ad")
    assert_user_error(r, "--device cuda", "no CUDA GPU")
    assert not list(tmp_path.iterdir())


def test_as_is_input_with_n_genes_samples_scaled_values_over_the_selected_genes(tmp_path):
    import scanpy as sc

    scaled = simulate({"B_cell": 60, "T_cell": 60}, n_genes=50, seed=7)
    sc.pp.normalize_total(scaled, target_sum=1e4)
    sc.pp.log1p(scaled)
    sc.pp.scale(scaled)  # z-scores: negative values, no longer counts
    assert scaled.X.min() < 0
    path = tmp_path / "scaled.h5ad"
    scaled.write_h5ad(path)
    model = tmp_path / "m"
    r = invoke(
        "fit", path, "--representation", "as_is", "--n-genes", 20, "--epochs", 2, "--out", model, *SMALL
    )
    assert r.exit_code == 0, r.output
    assert "model: cgan, the default for as_is data (nbgan needs raw counts)" in r.output
    r = invoke("sample", model, "--n", 40, "--out", tmp_path / "s.h5ad")
    assert r.exit_code == 0, r.output
    s = ad.read_h5ad(tmp_path / "s.h5ad")
    assert s.uns["cellsynth"]["model"] == "cgan"
    assert s.n_vars == 20 and set(s.var_names) <= set(scaled.var_names)
    assert s.var_names.is_unique
    X = np.asarray(s.X.toarray() if hasattr(s.X, "toarray") else s.X)
    assert np.isfinite(X).all() and not np.array_equal(X, np.round(X))
    assert (X < 0).any()
    assert s.uns["cellsynth"]["representation"] == "as_is"


def test_counts_input_with_n_genes_samples_integer_counts_over_those_genes(h5ad_path, tmp_path):
    model = tmp_path / "m"
    r = invoke("fit", h5ad_path, "--n-genes", 30, "--epochs", 2, "--out", model, *SMALL, *AE)
    assert r.exit_code == 0, r.output
    r = invoke("sample", model, "--n", 40, "--out", tmp_path / "s.h5ad")
    assert r.exit_code == 0, r.output
    s = ad.read_h5ad(tmp_path / "s.h5ad")
    genes = list(ad.read_h5ad(h5ad_path).var_names)
    assert s.n_vars == 30 and set(s.var_names) <= set(genes)
    # the selected genes keep the input's order
    assert list(s.var_names) == [g for g in genes if g in set(s.var_names)]
    assert s.X.data.size and np.array_equal(s.X.data, np.round(s.X.data)) and s.X.data.min() >= 0


def test_duplicate_gene_names_stop_split_unless_make_unique(h5ad_path, tmp_path):
    adata = ad.read_h5ad(h5ad_path)
    genes = list(adata.var_names)
    genes[1] = genes[0]
    adata.var_names = genes
    adata.write_h5ad(tmp_path / "dup.h5ad")
    r = invoke("split", tmp_path / "dup.h5ad", "--out", tmp_path / "a")
    assert_user_error(r, "dup.h5ad", "1 gene name occurs more than once", repr(genes[0]), "--make-unique")
    assert not (tmp_path / "a" / "train.h5ad").exists()
    r = invoke("split", tmp_path / "dup.h5ad", "--out", tmp_path / "b", "--make-unique")
    assert r.exit_code == 0, r.output
    train = ad.read_h5ad(tmp_path / "b" / "train.h5ad")
    assert list(train.var_names[:2]) == [genes[0], f"{genes[0]}-1"]


def fit_and_sample_log_normalised(cells: ad.AnnData, tmp_path) -> tuple[Path, str]:
    """``cells`` normalised to 10,000 and logged, written, fitted with the defaults (which must fit the
    count model) and sampled (which must give counts); the file and the fit's output."""
    import scanpy as sc

    sc.pp.normalize_total(cells, target_sum=1e4)
    sc.pp.log1p(cells)
    path = tmp_path / "lognorm.h5ad"
    cells.write_h5ad(path)
    r = invoke("fit", path, "--epochs", 2, "--out", tmp_path / "m", *SMALL, *AE)
    assert r.exit_code == 0, r.output
    assert "model: nbgan, the default for count data" in r.output
    s = invoke("sample", tmp_path / "m", "--n", 20, "--out", tmp_path / "s.h5ad")
    assert s.exit_code == 0, s.output
    X = ad.read_h5ad(tmp_path / "s.h5ad").X
    X = X.toarray() if hasattr(X, "toarray") else X
    assert np.array_equal(X, np.round(X)) and X.sum() > 0
    return path, r.output


def test_a_counts_layer_beside_log_normalised_x_is_what_the_default_fits(tmp_path):
    """The scverse layout (log-normalised X, raw counts in layers["counts"]): the counts are fitted, with a
    note; --representation log1p keeps X."""
    cells = simulate({"B_cell": 60, "T_cell": 60}, n_genes=30, seed=8)
    cells.layers["counts"] = cells.X.copy()
    path, output = fit_and_sample_log_normalised(cells, tmp_path)
    assert "using layers['counts']" in output
    r = invoke("fit", path, "--representation", "log1p", "--epochs", 2, "--out", tmp_path / "m2", *SMALL)
    assert r.exit_code == 0, r.output
    assert "layers['counts']" not in r.output and "model: cgan" in r.output


def test_log_normalised_x_alone_is_fitted_on_the_counts_read_back_from_it(tmp_path):
    cells = simulate({"B_cell": 60, "T_cell": 60}, n_genes=30, seed=8)
    X = cells.X.toarray()
    cells = cells[(np.where(X > 0, X, np.inf).min(1) == 1)].copy()  # each cell has a count of 1
    _, output = fit_and_sample_log_normalised(cells, tmp_path)
    assert "counts can be read back" in output


def test_the_package_warnings_are_one_line_others_keep_their_source(monkeypatch):
    import warnings

    import cellsynth
    from cellsynth.cli_options import one_line_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    one_line_warnings()
    ours = str(Path(cellsynth.__file__).parent / "train" / "plan.py")
    assert warnings.formatwarning("rolled back", UserWarning, ours, 224) == "warning: rolled back\n"
    theirs = warnings.formatwarning("deprecated", FutureWarning, "/elsewhere/lib.py", 7)
    assert "/elsewhere/lib.py:7" in theirs and "FutureWarning" in theirs
