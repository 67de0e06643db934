"""`cellsynth.data.writers.write_synthetic`: what it writes reads back as the same cells."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth.data import read
from cellsynth.data.datasets import simulate
from cellsynth.data.writers import write_synthetic
from cellsynth.errors import InputError


@pytest.fixture
def cells():
    adata = simulate({"alpha": 6, "beta": 4}, n_genes=7, seed=1)
    adata.uns["cellsynth"] = {"representation": "counts"}
    return adata


def dense(X) -> np.ndarray:
    return np.asarray(X.todense() if hasattr(X, "todense") else X)


@pytest.mark.parametrize("name", ["s.h5ad", "s.csv", "s.tsv"])
def test_written_files_read_back(tmp_path, cells, name):
    out = tmp_path / name
    written = write_synthetic(cells, out)
    labels = None
    if out.suffix != ".h5ad":
        labels = tmp_path / f"s_labels{out.suffix}"
        assert written == [out, labels]
        first_row = out.read_text().splitlines()[1].split("," if out.suffix == ".csv" else "\t")
        assert all(v.isdigit() for v in first_row[1:])  # counts are written as whole numbers
    else:
        assert written == [out]
    back = read(out, labels=labels)
    np.testing.assert_array_equal(dense(back.X), dense(cells.X))
    assert list(back.obs_names) == list(cells.obs_names) and list(back.var_names) == list(cells.var_names)
    assert list(back.obs["cell_type"].astype(str)) == list(cells.obs["cell_type"].astype(str))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in written)  # no temp files


def test_unknown_suffix_is_an_input_error(tmp_path, cells):
    with pytest.raises(InputError, match=r"unknown output format '\.loom'; use \.h5ad or \.csv"):
        write_synthetic(cells, tmp_path / "s.loom")
    assert not list(tmp_path.iterdir())
