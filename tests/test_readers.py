"""`cellsynth.data.readers.read`: every input format round-trips values, names and labels."""

from __future__ import annotations

import gzip
import warnings

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.io import mmwrite

from cellsynth.data.readers import FORMATS, common, read
from cellsynth.errors import InputError

N_CELLS, N_GENES = 40, 30
TYPES = np.array(["alpha", "beta", "gamma"])


@pytest.fixture(scope="module")
def data():
    """40 cells × 30 genes of counts (~70% zeros), cell and gene names, 3 types."""
    rng = np.random.default_rng(7)
    counts = rng.poisson(3.0, size=(N_CELLS, N_GENES)).astype(np.float32)
    counts[rng.random(counts.shape) < 0.7] = 0
    cells = np.array([f"AAAC{i:03d}-1" for i in range(N_CELLS)])
    genes = np.array([f"GENE{j}" for j in range(N_GENES)])
    labels = TYPES[rng.integers(0, 3, size=N_CELLS)]
    return counts, cells, genes, labels


def dense(adata: ad.AnnData) -> np.ndarray:
    return adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)


def assert_matches(adata, data, *, names: bool = True, labels: bool = True, label_key: str = "cell_type"):
    counts, cells, genes, types = data
    assert adata.shape == (N_CELLS, N_GENES)
    np.testing.assert_array_equal(dense(adata), counts)
    if names:
        assert list(adata.obs_names) == list(cells)
        assert list(adata.var_names) == list(genes)
    if labels:
        assert isinstance(adata.obs[label_key].dtype, pd.CategoricalDtype)
        assert list(adata.obs[label_key].astype(str)) == list(types)


def frame(data) -> pd.DataFrame:
    counts, cells, genes, _ = data
    return pd.DataFrame(counts.astype(int), index=pd.Index(cells, name="cell"), columns=genes)


# ------------------------------------------------------------------------------------------- h5ad
def test_h5ad_round_trip(tmp_path, data):
    counts, cells, genes, types = data
    src = ad.AnnData(
        sp.csr_matrix(counts), obs=pd.DataFrame({"cell_type": pd.Categorical(types)}, index=cells)
    )
    src.var_names = genes
    src.write_h5ad(tmp_path / "cells.h5ad")
    adata = read(tmp_path / "cells.h5ad")
    assert_matches(adata, data)
    assert adata.uns["cellsynth_read"]["format"] == "h5ad"


def test_h5ad_with_labels_file_by_cell_id(tmp_path, data):
    counts, cells, genes, types = data
    ad.AnnData(counts, obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes)).write_h5ad(
        tmp_path / "x.h5ad"
    )
    order = np.random.default_rng(0).permutation(N_CELLS)
    pd.DataFrame({"barcode": cells[order], "annotation": types[order]}).to_csv(
        tmp_path / "l.csv", index=False
    )
    adata = read(tmp_path / "x.h5ad", labels=tmp_path / "l.csv", label_key="annotation")
    assert_matches(adata, data, label_key="annotation")


# ------------------------------------------------------------------------------------------- 10x
def write_mtx_folder(folder, data, *, gz_matrix=True, features_name="features.tsv.gz", prefix=""):
    counts, cells, genes, _ = data
    folder.mkdir()
    matrix = folder / (prefix + ("matrix.mtx.gz" if gz_matrix else "matrix.mtx"))
    opener = gzip.open if gz_matrix else open
    with opener(matrix, "wb") as fh:
        mmwrite(fh, sp.coo_matrix(counts.T.astype(int)))  # 10x stores genes × cells
    feats = pd.DataFrame({"id": [f"ENSG{j:05d}" for j in range(N_GENES)], "name": genes})
    feats["type"] = "Gene Expression"
    if features_name.startswith("genes"):
        feats = feats[["id", "name"]]
    feats.to_csv(folder / (prefix + features_name), sep="\t", header=False, index=False)
    pd.Series(cells).to_csv(folder / (prefix + "barcodes.tsv.gz"), header=False, index=False)
    return matrix


def test_10x_mtx_folder(tmp_path, data):
    matrix = write_mtx_folder(tmp_path / "filtered", data)
    adata = read(tmp_path / "filtered")
    assert_matches(adata, data, labels=False)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert adata.var["gene_ids"].iloc[0] == "ENSG00000"
    assert adata.uns["cellsynth_read"] == {"format": "10x_mtx"}
    assert_matches(read(matrix), data, labels=False)  # the matrix file itself


def test_10x_mtx_mixed_layout_with_prefix_and_labels(tmp_path, data):
    # uncompressed matrix, gzipped 2-column genes file, a prefix: not one of scanpy's layouts
    counts, cells, _, types = data
    write_mtx_folder(tmp_path / "s", data, gz_matrix=False, features_name="genes.tsv.gz", prefix="donorA_")
    pd.DataFrame({"cell": cells, "cell_type": types}).to_csv(tmp_path / "types.tsv", sep="\t", index=False)
    adata = read(tmp_path / "s", labels=tmp_path / "types.tsv")
    assert_matches(adata, data)


def test_10x_h5(tmp_path, data):
    counts, cells, genes, _ = data
    csc = sp.csc_matrix(counts.T.astype(np.int32))  # genes × cells, CSC: one column per cell
    with h5py.File(tmp_path / "filtered_feature_bc_matrix.h5", "w") as f:
        m = f.create_group("matrix")
        m["data"], m["indices"], m["indptr"] = (
            csc.data,
            csc.indices.astype(np.int64),
            csc.indptr.astype(np.int64),
        )
        m["shape"] = np.array([N_GENES, N_CELLS], dtype=np.int32)
        m["barcodes"] = cells.astype("S")
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{j:05d}" for j in range(N_GENES)], dtype="S")
        feats["name"] = genes.astype("S")
        feats["feature_type"] = np.array(["Gene Expression"] * N_GENES, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * N_GENES, dtype="S")
    adata = read(tmp_path / "filtered_feature_bc_matrix.h5")
    assert_matches(adata, data, labels=False)
    assert adata.uns["cellsynth_read"] == {"format": "10x_h5"}


def test_10x_duplicate_gene_names_are_an_error_unless_made_unique(tmp_path, data):
    counts, cells, genes, _ = data
    dup = genes.copy()
    dup[5] = dup[4]
    write_mtx_folder(tmp_path / "d", (counts, cells, dup, None))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no library warning on the way to the error
        with pytest.raises(
            InputError, match=rf"1 gene name occurs more than once \('{genes[4]}' ×2\).*--make-unique"
        ):
            read(tmp_path / "d")
        adata = read(tmp_path / "d", make_unique=True)
    assert adata.var_names.is_unique
    assert list(adata.var_names[4:6]) == [genes[4], f"{genes[4]}-1"]
    assert adata.uns["cellsynth_read"] == {"format": "10x_mtx", "made_unique": {"genes": 1}}


# ------------------------------------------------------------------------------------------- CSV / TSV
def test_csv_cells_by_genes_header_index_and_two_column_labels(tmp_path, data):
    counts, cells, genes, types = data
    frame(data).to_csv(tmp_path / "counts.csv")
    order = np.random.default_rng(1).permutation(N_CELLS)  # labels in another order: matched by cell id
    pd.DataFrame({"cell": cells[order], "cell_type": types[order]}).to_csv(
        tmp_path / "labels.csv", index=False
    )
    adata = read(tmp_path / "counts.csv", labels=tmp_path / "labels.csv")
    assert_matches(adata, data)
    assert sp.isspmatrix_csr(adata.X) and adata.X.dtype == np.float32
    assert adata.uns["cellsynth_read"] == {"format": "csv", "transposed": False, "delimiter": "comma"}


def test_tsv_genes_by_cells_detected_from_label_count(tmp_path, data):
    frame(data).T.to_csv(tmp_path / "counts.tsv", sep="\t")
    pd.DataFrame({"cell_type": data[3]}).to_csv(tmp_path / "labels.tsv", sep="\t", index=False)
    adata = read(tmp_path / "counts.tsv", labels=tmp_path / "labels.tsv")
    assert_matches(adata, data)
    assert adata.uns["cellsynth_read"]["transposed"] is True
    assert adata.uns["cellsynth_read"]["delimiter"] == "tab"


def test_csv_no_header_no_index_with_headerless_one_column_labels(tmp_path, data):
    counts, _, _, types = data
    np.savetxt(tmp_path / "m.csv", counts, fmt="%d", delimiter=",")
    (tmp_path / "y.csv").write_text("\n".join(types) + "\n")
    adata = read(tmp_path / "m.csv", labels=tmp_path / "y.csv")
    assert_matches(adata, data, names=False)
    assert adata.obs_names[0] == "cell_0" and adata.var_names[-1] == f"gene_{N_GENES - 1}"


def test_gzipped_csv_without_labels_and_explicit_transpose(tmp_path, data):
    frame(data).to_csv(tmp_path / "counts.csv.gz")
    assert_matches(read(tmp_path / "counts.csv.gz"), data, labels=False)
    frame(data).T.to_csv(tmp_path / "genes_by_cells.csv.gz")
    assert_matches(read(tmp_path / "genes_by_cells.csv.gz", transpose=True), data, labels=False)


def test_csv_read_in_many_chunks_r_style_header_and_dense_output(tmp_path, data, monkeypatch):
    monkeypatch.setattr(common, "CHUNK_VALUES", 50)  # a couple of rows per chunk
    counts, cells, genes, types = data
    full = counts + 1  # no zeros: stored dense
    # R's write.csv(row.names=TRUE) without the corner cell, space-free whitespace-separated values
    lines = [" ".join(genes)] + [
        " ".join([c, *map(str, row.astype(int))]) for c, row in zip(cells, full, strict=True)
    ]
    (tmp_path / "r.txt").write_text("\n".join(lines) + "\n")
    adata = read(tmp_path / "r.txt", labels=None)
    assert isinstance(adata.X, np.ndarray) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X, full)
    assert list(adata.obs_names) == list(cells) and list(adata.var_names) == list(genes)


def test_csv_numeric_index_under_empty_corner(tmp_path, data):
    counts, _, genes, _ = data
    pd.DataFrame(counts.astype(int), columns=genes).to_csv(tmp_path / "plain.csv")  # index 0..39, corner ""
    adata = read(tmp_path / "plain.csv")
    np.testing.assert_array_equal(dense(adata), counts)
    assert list(adata.var_names) == list(genes) and adata.obs_names[3] == "3"


def test_csv_duplicate_cell_and_gene_names(tmp_path, data):
    counts, cells, genes, types = data
    df = frame(data)
    df.index = [cells[0]] * 3 + list(cells[3:])  # one cell name three times
    df.columns = [f"G{j % 25}" for j in range(N_GENES)]  # G0..G4 twice each
    df.to_csv(tmp_path / "dup.csv")
    pd.DataFrame({"cell_type": types}).to_csv(tmp_path / "labels.csv", index=False)
    message = r"dup\.csv: 5 gene names occur more than once \('G0' ×2, 'G1' ×2, 'G2' ×2, and 2 more\) — make"
    with pytest.raises(InputError, match=message):
        read(tmp_path / "dup.csv", labels=tmp_path / "labels.csv")
    df.columns = genes
    df.to_csv(tmp_path / "dup.csv")
    with pytest.raises(InputError, match=rf"1 cell name occurs more than once \('{cells[0]}' ×3\)"):
        read(tmp_path / "dup.csv", labels=tmp_path / "labels.csv")
    adata = read(tmp_path / "dup.csv", labels=tmp_path / "labels.csv", make_unique=True)
    assert list(adata.obs_names[:4]) == [cells[0], f"{cells[0]}-1", f"{cells[0]}-2", cells[3]]
    assert list(adata.obs["cell_type"].astype(str)) == list(types)  # labels by order, untouched
    assert adata.uns["cellsynth_read"]["made_unique"] == {"cells": 2}


def test_h5ad_duplicate_cell_names_checked_before_labels_are_matched(tmp_path, data):
    counts, cells, genes, types = data
    dup = cells.copy()
    dup[1] = dup[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's own warning when writing the fixture
        ad.AnnData(counts, obs=pd.DataFrame(index=dup), var=pd.DataFrame(index=genes)).write_h5ad(
            tmp_path / "x.h5ad"
        )
    pd.DataFrame({"cell": cells, "cell_type": types}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(InputError, match="1 cell name occurs more than once"):
        read(tmp_path / "x.h5ad", labels=tmp_path / "l.csv")
    # made unique first, so the renamed cell has no row in the labels file
    with pytest.raises(InputError, match=rf"1 of the 40 cells .* have no label .*'{cells[0]}-1'"):
        read(tmp_path / "x.h5ad", labels=tmp_path / "l.csv", make_unique=True)


def test_public_import_paths():
    import cellsynth
    import cellsynth.data

    assert cellsynth.read is read and cellsynth.data.read is read
    assert FORMATS == ("auto", "h5ad", "10x_mtx", "10x_h5", "csv", "kaggle")


# ------------------------------------------------------------------------------------------- Kaggle
@pytest.fixture
def kaggle(tmp_path, data):
    """``train_cite_inputs.h5`` exactly as Kaggle ships it, plus ``metadata.csv`` with hidden cells."""
    pytest.importorskip("tables")
    counts, cells, genes, types = data
    rng = np.random.default_rng(3)
    cell_ids = np.array([f"{rng.integers(16**11):012x}" for _ in range(N_CELLS)])
    gene_ids = np.array([f"ENSG{j:011d}_{g}" for j, g in enumerate(genes)])
    df = pd.DataFrame(
        counts, index=pd.Index(cell_ids, name="cell_id"), columns=pd.Index(gene_ids, name="gene_id")
    )
    folder = tmp_path / "kaggle"
    folder.mkdir()
    df.to_hdf(folder / "train_cite_inputs.h5", key="train_cite_inputs")
    cell_type = types.astype(object)
    hidden = np.zeros(N_CELLS, bool)
    hidden[[2, 11, 25]] = True
    cell_type[hidden] = "hidden"
    meta = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "day": rng.choice([2, 3, 10], N_CELLS),
            "donor": rng.choice([13176, 31800, 32606], N_CELLS),
            "technology": "citeseq",
            "cell_type": cell_type,
        }
    )
    extra = pd.DataFrame({"cell_id": ["multiome_cell"], "day": [7], "donor": [1], "technology": ["multiome"]})
    pd.concat([meta.iloc[::-1], extra.assign(cell_type="HSC")]).to_csv(folder / "metadata.csv", index=False)
    return folder, df, meta, hidden


def test_kaggle_cite_layout(kaggle):
    folder, df, meta, hidden = kaggle
    adata = read(folder / "train_cite_inputs.h5")
    keep = ~hidden
    assert adata.shape == (keep.sum(), N_GENES)
    np.testing.assert_array_equal(dense(adata), df.to_numpy()[keep])
    assert list(adata.obs_names) == list(df.index[keep])
    assert list(adata.var_names) == list(df.columns)
    assert "hidden" not in set(adata.obs["cell_type"])
    assert list(adata.obs["cell_type"].astype(str)) == list(meta["cell_type"][keep])
    for col in ("day", "donor", "technology"):
        assert isinstance(adata.obs[col].dtype, pd.CategoricalDtype)
    assert list(adata.obs["day"].cat.categories) == ["2", "3", "10"]  # strings, numeric order
    assert list(adata.obs["donor"].astype(str)) == [str(d) for d in meta["donor"][keep]]
    assert adata.uns["cellsynth_read"] == {"format": "kaggle_cite", "covariates": ["day", "donor"]}


def test_kaggle_chunks_several_blocks_and_missing_cells(kaggle, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CHUNK_VALUES", 70)  # 2 rows per chunk
    folder, df, meta, hidden = kaggle
    stranger = pd.DataFrame(1.0, index=pd.Index(["stranger"], name="cell_id"), columns=df.columns)
    mixed = pd.concat([df, stranger])
    mixed = mixed.astype({c: np.int64 for c in df.columns[::3]})  # a second (int64) block
    path = tmp_path / "mixed.h5"
    mixed.to_hdf(path, key="cite")
    with h5py.File(path) as f:
        assert f["cite"].attrs["nblocks"] == 2
    with pytest.warns(UserWarning, match="1 of the 41 cells"):
        adata = read(path, labels=folder / "metadata.csv", label_key="celltype")
    np.testing.assert_array_equal(dense(adata), df.to_numpy()[~hidden])
    assert list(adata.obs["celltype"].astype(str)) == list(meta["cell_type"][~hidden])


def test_kaggle_table_format_and_key_choice(kaggle, tmp_path):
    folder, df, meta, hidden = kaggle
    path = folder / "two.h5"
    df.to_hdf(path, key="inputs", format="table")
    df.iloc[:, :3].to_hdf(path, key="targets")
    with pytest.raises(InputError, match="several tables.*key="):
        read(path)
    adata = read(path, key="inputs")
    np.testing.assert_array_equal(dense(adata), df.to_numpy()[~hidden])


def test_kaggle_without_metadata(kaggle, tmp_path):
    folder, df, _, _ = kaggle
    df.to_hdf(tmp_path / "alone.h5", key="train_cite_inputs")
    with pytest.raises(InputError, match="no metadata.csv next to .*--labels"):
        read(tmp_path / "alone.h5")


# ------------------------------------------------------------------------------------------- errors
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match=r"file not found: .*nope\.h5ad — check the path"):
        read(tmp_path / "nope.h5ad")


def test_unknown_extension(tmp_path):
    (tmp_path / "x.foo").write_text("1,2\n")
    with pytest.raises(InputError, match=r"cannot tell the format of 'x\.foo': use \.h5ad"):
        read(tmp_path / "x.foo")


def test_label_count_mismatch_names_both_numbers(tmp_path, data):
    frame(data).to_csv(tmp_path / "counts.csv")
    (tmp_path / "labels.csv").write_text("\n".join(data[3][:37]) + "\n")
    with pytest.raises(InputError, match=r"37 labels .*40 rows × 30 columns"):
        read(tmp_path / "counts.csv", labels=tmp_path / "labels.csv")
    with pytest.raises(InputError, match=r"37 labels .*40 cells"):
        read(tmp_path / "counts.csv", labels=tmp_path / "labels.csv", transpose=False)


def test_missing_labels_file(tmp_path, data):
    frame(data).to_csv(tmp_path / "counts.csv")
    with pytest.raises(InputError, match=r"labels file not found: .*missing\.csv"):
        read(tmp_path / "counts.csv", labels=tmp_path / "missing.csv")


def test_unlabelled_cells_by_id(tmp_path, data):
    counts, cells, _, types = data
    frame(data).to_csv(tmp_path / "counts.csv")
    pd.DataFrame({"cell": cells[:-2], "cell_type": types[:-2]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(InputError, match="2 of the 40 cells .* have no label"):
        read(tmp_path / "counts.csv", labels=tmp_path / "l.csv")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("text.csv", "a,b\nc,1\nd,x\n", "text inside the matrix"),
        ("empty.csv", "", "is empty"),
        ("broken.h5ad", "not hdf5", "cannot read .*broken.h5ad as an AnnData"),
        ("broken.h5", "not hdf5", "not a readable HDF5 file"),
    ],
)
def test_malformed_inputs_raise_input_error(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=match):
        read(tmp_path / name)


def test_bad_format_and_incomplete_10x_folder(tmp_path, data):
    frame(data).to_csv(tmp_path / "counts.csv")
    with pytest.raises(InputError, match="format='loom' is not one of"):
        read(tmp_path / "counts.csv", format="loom")
    (tmp_path / "tenx").mkdir()
    with pytest.raises(InputError, match="no matrix.mtx"):
        read(tmp_path / "tenx")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_mtx_folder(tmp_path / "half", data)
    (tmp_path / "half" / "barcodes.tsv.gz").unlink()
    with pytest.raises(InputError, match="no barcodes.tsv"):
        read(tmp_path / "half")
