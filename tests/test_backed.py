"""Out of core: an .h5ad's matrix read from disk block by block gives the training data, the statistics and
the model that the same file read into memory gives, and the CLI chooses and refuses it in one line."""

from __future__ import annotations

import gc
import mmap
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from typer.testing import CliRunner

from cellsynth import models
from cellsynth.cli import app
from cellsynth.data import BackedCells, CellData, celldata, stats
from cellsynth.data.backed import backed_celldata
from cellsynth.errors import InputError

TINY = dict(epochs=2, val_every_steps=5, z_dim=8, g_hidden=(32, 32), d_hidden=(32, 16), c_hidden=(16,))
TINY["ae"] = {"epochs": 2}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of at most 2,000 stored values: the counts fixture's file is read in about 20 of them."""
    monkeypatch.setattr(celldata, "BLOCK_ENTRIES", 2000)


def _write(adata: ad.AnnData, path: Path) -> Path:
    adata.write_h5ad(path, compression="gzip")
    return path


def _mapped(array) -> bool:
    """Whether ``array``'s memory is a mapped file (a view of a view of an ``mmap``)."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def _same_training_data(a: CellData, b: CellData) -> None:
    for part in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(a.X, part), getattr(b.X, part), err_msg=part)
    assert a.X.shape == b.X.shape
    assert a.preprocessing.to_dict() == b.preprocessing.to_dict()
    for x, y in ((a.library, b.library), (a.scale, b.scale)):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.codes, b.codes)
    assert [c.categories for c in a.conditions] == [c.categories for c in b.conditions]


@pytest.mark.parametrize(
    "case", ["counts", "counts_top_genes", "log1p", "fractional_counts_rounded"], ids=lambda c: c
)
def test_the_training_data_read_block_by_block_is_the_data_read_into_memory(
    counts_adata, tmp_path, small_blocks, case
):
    adata = counts_adata.copy()
    options = {"label_key": "cell_type", "condition_keys": ["donor"]}
    if case == "counts_top_genes":
        options["n_genes"] = 40
    if case == "log1p":
        adata.X = sp.csr_matrix(np.log1p(adata.X.toarray() / 3.0), dtype=np.float32)
    if case == "fractional_counts_rounded":
        adata.X = sp.csr_matrix(adata.X.toarray() * 7.3, dtype=np.float32)  # values beyond log1p's range
        options["representation"] = "counts"
    path = _write(adata, tmp_path / "cells.h5ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        whole = CellData.from_anndata(ad.read_h5ad(path), **options)
        with BackedCells(path, cache_dir=tmp_path) as cells:
            assert len(cells.bounds()) > 5  # read in many blocks
            backed = backed_celldata(cells, **options)
    rounded = [w for w in caught if "rounded to whole counts" in str(w.message)]
    assert len(rounded) == (2 if case == "fractional_counts_rounded" else 0)  # once per path
    _same_training_data(whole, backed)
    # the training matrix lies in files of the cache folder, mapped, not read into memory
    folder = Path(backed.storage.name)
    assert folder.parent == tmp_path and {p.name for p in folder.iterdir()} >= {"data.f32", "indices"}
    assert all(_mapped(getattr(backed.X, part)) for part in ("data", "indices", "indptr"))
    del backed
    gc.collect()
    assert not folder.exists()  # removed with the data


def test_statistics_summed_block_by_block_equal_those_of_the_whole_matrix(counts_adata, monkeypatch):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    rows = np.arange(data.n_cells)

    def everything():
        zeros = stats.zero_fraction_by_label(data, rows)
        mean, var = stats.moments_by_label(data, rows)
        return [
            zeros,
            mean,
            var,
            stats.count_means_by_label(data, rows),
            stats.label_mean_profile(data),
            stats.label_dispersion(data),
            data.pca(5)[0],
        ]

    assert len(list(data.row_blocks(rows))) == 1
    whole = everything()
    monkeypatch.setattr(celldata, "BLOCK_ENTRIES", 500)
    assert len(list(data.row_blocks(rows))) > 20
    for a, b in zip(whole, everything(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_a_model_fitted_out_of_core_is_the_model_fitted_in_memory(counts_adata, tmp_path, small_blocks):
    path = _write(counts_adata, tmp_path / "cells.h5ad")
    options = dict(label_key="cell_type", condition_keys=["donor"], progress=False, seed=2)
    in_memory = models.get("nbgan", **TINY).fit(ad.read_h5ad(path), **options)
    with BackedCells(path, cache_dir=tmp_path) as cells:
        backed = models.get("nbgan", **TINY).fit(cells, **options)
    for name, module in in_memory.modules.items():
        for (key, a), b in zip(
            module.state_dict().items(), backed.modules[name].state_dict().values(), strict=True
        ):
            assert torch_equal(a, b), f"{name}.{key}"
    assert (
        in_memory.sample(n=50, seed=1).X.toarray().tolist()
        == backed.sample(n=50, seed=1).X.toarray().tolist()
    )
    assert not list(tmp_path.glob("cellsynth-data-*"))  # the training matrix's files are gone


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))


def test_files_that_cannot_be_read_out_of_core_are_refused_in_one_line(counts_adata, tmp_path):
    csc = counts_adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    with pytest.raises(InputError, match=r"stored by genes \(CSC\).*tocsr"):
        BackedCells(_write(csc, tmp_path / "csc.h5ad"))
    with pytest.raises(InputError, match="layer 'counts' not found"):
        BackedCells(_write(counts_adata, tmp_path / "x.h5ad"), layer="counts")
    (tmp_path / "broken.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable .h5ad"):
        BackedCells(tmp_path / "broken.h5ad")

    nan = counts_adata.copy()
    nan.X = nan.X.astype(np.float32)
    nan.X.data[3] = np.nan
    with (
        BackedCells(_write(nan, tmp_path / "nan.h5ad")) as cells,
        pytest.raises(InputError, match="NaN or Inf"),
    ):
        backed_celldata(cells, label_key="cell_type")
    empty = counts_adata.copy()
    empty.X = sp.csr_matrix(empty.X.toarray() * (np.arange(empty.n_obs) % 50 != 0)[:, None])
    with (
        BackedCells(_write(empty, tmp_path / "empty.h5ad")) as cells,
        pytest.raises(InputError, match="no counts"),
    ):
        backed_celldata(cells, label_key="cell_type")
    normalised = counts_adata.copy()
    normalised.X = sp.csr_matrix(np.log1p(normalised.X.toarray()), dtype=np.float32)
    path = _write(normalised, tmp_path / "log.h5ad")
    with BackedCells(path) as cells, pytest.raises(InputError, match="--representation log1p"):
        backed_celldata(cells, label_key="cell_type", representation="counts")
    with BackedCells(path) as cells, pytest.raises(InputError, match="obs column 'batch' not found"):
        backed_celldata(cells, label_key="batch")


def test_the_cli_fits_out_of_core_from_the_count_layer_and_leaves_nothing_beside_out(counts_adata, tmp_path):
    adata = counts_adata.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray() / 2.5), dtype=np.float32)  # X log-normalised
    path = _write(adata, tmp_path / "cells.h5ad")
    out = tmp_path / "models" / "m"
    runner = CliRunner()
    args = ["fit", str(path), "--out", str(out), "--out-of-core", "--max-minutes", "0.1", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "out of core" in result.output and "layers['counts']" in result.output
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no cache folder left
    model = models.load(out)
    assert model.info["preprocessing"]["layer"] == "counts"
    synthetic = model.sample(n=40, seed=0)
    assert synthetic.n_obs == 40 and np.array_equal(synthetic.X.data, np.round(synthetic.X.data))

    text = tmp_path / "cells.csv"
    text.write_text("cell,g1,g2\nc1,1,2\nc2,0,3\n")
    result = runner.invoke(app, ["fit", str(text), "--out", str(tmp_path / "t"), "--out-of-core"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --out-of-core reads .h5ad files")


def test_an_h5ad_is_fitted_in_memory_unless_memory_is_short_or_out_of_core_is_asked(
    counts_adata, tmp_path, monkeypatch
):
    from cellsynth import cli_fit
    from cellsynth.data import backed

    path = _write(counts_adata, tmp_path / "cells.h5ad")
    options = dict(labels=None, label_key="cell_type", make_unique=False, layer=None, representation="auto")
    got, _ = cli_fit.fit_input(path, out_of_core=None, cache_dir=tmp_path, **options)
    assert isinstance(got, ad.AnnData)
    monkeypatch.setattr(backed, "available_memory", lambda: 10_000)  # less than the matrix needs
    got, _ = cli_fit.fit_input(path, out_of_core=None, cache_dir=tmp_path, **options)
    assert isinstance(got, BackedCells)
    got.close()
    got, _ = cli_fit.fit_input(path, out_of_core=False, cache_dir=tmp_path, **options)
    assert isinstance(got, ad.AnnData)
    # a labels file is put into an AnnData in memory; out of core the labels come from obs
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(["cell,cell_type", *[f"{c},x" for c in counts_adata.obs_names]]) + "\n")
    options["labels"] = labels
    got, _ = cli_fit.fit_input(path, out_of_core=None, cache_dir=tmp_path, **options)
    assert isinstance(got, ad.AnnData) and set(got.obs["cell_type"]) == {"x"}
    with pytest.raises(InputError, match="drop --labels"):
        cli_fit.fit_input(path, out_of_core=True, cache_dir=tmp_path, **options)


@pytest.mark.parametrize("mode", ["--in-memory", "--out-of-core"])
def test_drop_missing_leaves_out_the_cells_without_a_label_and_fits_the_rest(counts_adata, tmp_path, mode):
    adata = counts_adata.copy()
    labels = adata.obs["cell_type"].astype(object)
    labels.iloc[::7] = None  # 85 cells without a type
    adata.obs["cell_type"] = labels.astype("category")
    path = _write(adata, tmp_path / "cells.h5ad")
    runner = CliRunner()
    base = ["fit", str(path), "--max-minutes", "0.1", "--quiet", mode]
    refused = runner.invoke(app, [*base, "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert "obs['cell_type'] has 85 missing values" in refused.output and "--drop-missing" in refused.output
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "m"), "--drop-missing"])
    assert result.exit_code == 0, result.output
    assert "left out 85 cells missing a value of cell_type" in result.output
    model = models.load(tmp_path / "m")
    assert model.info["n_train_cells"] == counts_adata.n_obs - 85
    assert set(model.info["categories"]["cell_type"]) == set(counts_adata.obs["cell_type"].astype(str))


def test_cells_kept_out_of_core_give_the_training_data_of_the_same_cells_in_memory(
    counts_adata, tmp_path, small_blocks
):
    keep = np.arange(counts_adata.n_obs) % 3 != 1
    path = _write(counts_adata, tmp_path / "cells.h5ad")
    whole = CellData.from_anndata(counts_adata[keep].copy(), label_key="cell_type", condition_keys=["donor"])
    with BackedCells(path, cache_dir=tmp_path) as cells:
        cells.keep(keep)
        assert cells.n_obs == keep.sum() and len(cells.bounds()) > 5
        backed = backed_celldata(cells, label_key="cell_type", condition_keys=["donor"])
    _same_training_data(whole, backed)
    np.testing.assert_array_equal(backed.obs_names, counts_adata.obs_names[keep])


def test_a_file_opened_on_a_layer_is_fitted_on_that_layer(counts_adata, tmp_path):
    adata = counts_adata.copy()
    adata.layers["counts"] = adata.X.copy()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()), dtype=np.float32)
    path = _write(adata, tmp_path / "cells.h5ad")
    with BackedCells(path, layer="counts", cache_dir=tmp_path) as cells:
        model = models.get("nbgan", **TINY).fit(cells, label_key="cell_type", progress=False)
    pre = model.info["preprocessing"]
    assert pre["layer"] == "counts" and pre["representation"] == "counts"


def test_a_training_matrix_that_cannot_be_written_leaves_nothing_and_says_so(
    counts_adata, tmp_path, monkeypatch
):
    from cellsynth.data import backed

    def full_disk(cells, genes, folder, *args):
        (folder / "data.f32").write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backed, "_write_training_matrix", full_disk)
    path = _write(counts_adata, tmp_path / "cells.h5ad")
    cache = tmp_path / "cache"
    cache.mkdir()
    with (
        BackedCells(path, cache_dir=cache) as cells,
        pytest.raises(InputError, match="No space left on device"),
    ):
        backed_celldata(cells, label_key="cell_type")
    assert not list(cache.iterdir())


def test_top_genes_are_chosen_on_a_seeded_sample_of_cells_beyond_hvg_cells(
    counts_adata, tmp_path, monkeypatch
):
    from cellsynth.data import backed

    monkeypatch.setattr(backed, "HVG_CELLS", 200)
    path = _write(counts_adata, tmp_path / "cells.h5ad")
    chosen = []
    for seed in (0, 0, 1):
        with BackedCells(path) as cells:
            data = backed_celldata(cells, label_key="cell_type", n_genes=30, seed=seed)
        chosen.append(data.preprocessing.output_genes)
        assert data.n_genes == 30 and data.X.shape == (counts_adata.n_obs, 30)  # every cell is trained on
    assert chosen[0] == chosen[1]  # the same seed, the same sample and genes
    whole = CellData.from_anndata(counts_adata, label_key="cell_type", n_genes=30).preprocessing.output_genes
    assert len(set(chosen[0]) & set(whole)) >= 20  # a sample of 200 cells finds most of the same genes


def test_the_folders_of_killed_fits_are_removed_and_those_of_running_ones_kept(counts_adata, tmp_path):
    """A fit killed outright leaves its training matrix's folder; the next out-of-core fit in the same
    folder removes it (its process no longer runs), with a warning, and leaves the folders of processes
    that still run and of other hosts."""
    import os
    import socket
    import subprocess
    import sys

    from cellsynth.data.storage import STORAGE_PREFIX

    host = socket.gethostname()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    killed = tmp_path / f"{STORAGE_PREFIX}{host}-{int(dead.stdout)}-abc"
    running = tmp_path / f"{STORAGE_PREFIX}{host}-{os.getpid()}-def"
    elsewhere = tmp_path / f"{STORAGE_PREFIX}{host}x-{int(dead.stdout)}-ghi"
    longer_name = tmp_path / f"{STORAGE_PREFIX}{host}-2-{int(dead.stdout)}-jkl"  # host "<host>-2"
    for folder in (killed, running, elsewhere, longer_name):
        folder.mkdir()
        (folder / "data.f32").write_bytes(b"\0" * 64)
    path = _write(counts_adata, tmp_path / "cells.h5ad")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with BackedCells(path, cache_dir=tmp_path) as cells:
            data = backed_celldata(cells, label_key="cell_type")
            own = Path(data.storage.name)
            assert own.name.startswith(f"{STORAGE_PREFIX}{host}-{os.getpid()}-")
    assert not killed.exists() and running.exists() and elsewhere.exists() and longer_name.exists()
    assert [str(w.message) for w in caught if "killed" in str(w.message)] == [
        f"removed 1 training-matrix folder(s) left in {tmp_path} by fits that were killed"
    ]
    del data
    gc.collect()
    assert not own.exists()
