from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellsynth import InputError
from cellsynth.data import CellData
from cellsynth.data.datasets import simulate


def test_counts_are_normalised_and_log_transformed(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    assert data.preprocessing.representation == "counts"
    assert sp.issparse(data.X), "a sparse input must stay sparse"
    raw = counts_adata.X.toarray()
    expected = np.log1p(raw / raw.sum(1, keepdims=True) * 1e4)[:, data.preprocessing.train_genes]
    np.testing.assert_allclose(data.X.toarray(), expected, rtol=1e-5, atol=1e-5)


def test_never_expressed_genes_are_left_out_of_training_but_kept_for_output(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    pre = data.preprocessing
    assert pre.output_genes == list(counts_adata.var_names)
    assert data.n_genes == counts_adata.n_vars - 3
    assert not {5, 50, 100} & set(pre.train_genes)


def test_conditions_are_encoded_label_first(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type", condition_keys=["donor"])
    assert [c.key for c in data.conditions] == ["cell_type", "donor"]
    assert data.codes.shape == (counts_adata.n_obs, 2)
    decoded = np.asarray(data.label.categories)[data.label.codes]
    assert (decoded == counts_adata.obs["cell_type"].astype(str).to_numpy()).all()


def test_library_sizes_are_recorded_per_label(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    libs = data.preprocessing.library_sizes
    assert set(libs) == set(counts_adata.obs["cell_type"].astype(str))
    rare = counts_adata[counts_adata.obs["cell_type"] == "rare"]
    np.testing.assert_allclose(sorted(libs["rare"]), np.sort(np.asarray(rare.X.sum(1)).ravel()))


def test_log1p_and_as_is_are_detected():
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"cell_type": ["a", "b"] * 20}, index=[f"c{i}" for i in range(40)])
    logged = ad.AnnData(np.log1p(rng.poisson(2.0, (40, 10)).astype(np.float32) * 1.7), obs=obs)
    assert CellData.from_anndata(logged, label_key="cell_type").preprocessing.representation == "log1p"
    scaled = ad.AnnData(rng.normal(size=(40, 10)).astype(np.float32), obs=obs)
    pre = CellData.from_anndata(scaled, label_key="cell_type").preprocessing
    assert pre.representation == "as_is" and not pre.nonnegative


def test_n_genes_selects_highly_variable_genes(counts_adata):
    data = CellData.from_anndata(counts_adata, label_key="cell_type", n_genes=30)
    assert data.n_genes == 30
    assert data.preprocessing.gene_selection == "top30_hvg"
    # training and output are both restricted to the selected genes
    assert len(data.preprocessing.output_genes) == 30
    assert set(data.preprocessing.output_genes) <= set(counts_adata.var_names)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.obs.drop(columns="cell_type", inplace=True), "cell_type"),
        (lambda a: a.X.data.__setitem__(0, np.nan), "NaN"),
        (lambda a: a.X.data.__setitem__(0, -3), "negative"),
    ],
)
def test_bad_input_is_a_clear_error(mutate, message):
    a = simulate((30, 30), n_genes=20, seed=1)
    mutate(a)
    with pytest.raises(InputError, match=message):
        CellData.from_anndata(
            a, label_key="cell_type", representation="auto" if message != "negative" else "counts"
        )


@pytest.mark.parametrize("representation", ["auto", "log1p"])
def test_normalised_values_that_are_not_logged_are_refused(representation):
    # counts per 10,000 without the log: read as log values they would overflow in training
    a = simulate((30, 30), n_genes=20, seed=1)
    X = a.X.toarray()
    a.X = sp.csr_matrix(X / X.sum(1, keepdims=True) * 1e4)
    with pytest.raises(InputError, match="beyond log1p-normalised data"):
        CellData.from_anndata(a, label_key="cell_type", representation=representation)
    a.X = sp.csr_matrix(np.log1p(a.X.toarray()))  # logged, the same cells are accepted
    assert CellData.from_anndata(a, label_key="cell_type").preprocessing.representation == "log1p"


@pytest.mark.parametrize("dense", [False, True])
def test_fractional_counts_are_rounded_where_counts_are_asked_for_and_normalised_values_refused(dense):
    """EM quantification's fractional counts (multi-mapping reads shared): refused as log values, rounded
    to whole counts with a warning under representation counts; log-normalised values stay refused."""
    a = simulate((30, 30), n_genes=20, seed=1)
    counts = a.X.toarray()
    frac = counts + np.where(counts > 0, 0.3, 0.0)  # every count a fraction more
    frac[0, 0] = 0.4  # rounds to zero
    frac[1, 0] = 40.6  # beyond log1p's range
    a.X = frac if dense else sp.csr_matrix(frac)
    with pytest.raises(InputError, match="round fractional counts"):
        CellData.from_anndata(a, label_key="cell_type")
    with pytest.warns(UserWarning, match="rounded to whole counts"):
        data = CellData.from_anndata(a, label_key="cell_type", representation="counts")
    expected = np.rint(frac)
    assert data.preprocessing.representation == "counts"
    np.testing.assert_array_equal(data.library, expected.sum(1))
    logged = a.copy()
    logged.X = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    with pytest.raises(InputError, match="non-integer values; use --representation log1p"):
        CellData.from_anndata(logged, label_key="cell_type", representation="counts")


def test_cells_without_counts_are_rejected():
    a = simulate((30, 30), n_genes=20, seed=1)
    X = a.X.toarray()
    X[0] = 0
    a.X = sp.csr_matrix(X)
    with pytest.raises(InputError, match="no counts"):
        CellData.from_anndata(a, label_key="cell_type")


def test_simulate_is_seeded():
    a, b, c = simulate(seed=1), simulate(seed=1), simulate(seed=2)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0
    assert a.obs["cell_type"].value_counts()["type_3"] == 20


def test_pbmc68k_has_integer_counts_and_ten_types():
    from cellsynth.data.datasets import pbmc68k

    a = pbmc68k()
    assert a.shape == (700, 765)
    assert a.obs["bulk_labels"].nunique() == 10
    assert np.array_equal(a.X.data, np.round(a.X.data)) and a.X.data.min() > 0


@pytest.mark.parametrize(("axis", "noun"), [("var", "gene"), ("obs", "cell")])
def test_duplicate_names_are_an_input_error_naming_them(axis, noun):
    adata = simulate({"a": 10, "b": 10}, n_genes=8, seed=0)
    names = list(getattr(adata, f"{axis}_names"))
    names[3] = names[2]
    setattr(adata, f"{axis}_names", names)
    message = rf"adata: 1 {noun} name occurs more than once \('{names[2]}' ×2\) — call adata\.{axis}_"
    with pytest.raises(InputError, match=message):
        CellData.from_anndata(adata, label_key="cell_type")


def test_simulated_gene_programs_make_genes_co_vary_within_a_type():
    def within_type_corr(adata):
        counts = adata.X.toarray()[(adata.obs["cell_type"] == "a").to_numpy()]
        x = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)  # library size out
        x = x[:, x.mean(0) > 1.0]  # well-expressed genes: correlations not drowned by zeros
        c = np.corrcoef(x, rowvar=False)
        return np.abs(c[np.triu_indices_from(c, 1)]).mean()

    sizes, kw = {"a": 600, "b": 100}, dict(n_genes=100, mean_library=5000, seed=4)
    plain = simulate(sizes, **kw)
    programs = simulate(sizes, programs=3, program_sd=1.0, **kw)
    assert within_type_corr(programs) > 2 * within_type_corr(plain)
    # programs off: the draws are the ones the library always made
    again = simulate(sizes, programs=0, **kw)
    assert (plain.X != again.X).nnz == 0


def test_pca_of_many_cells_fits_axes_on_a_sample_and_projects_every_cell():
    sizes = {"a": 900, "b": 700, "c": 400}
    adata = simulate(sizes, n_genes=120, n_markers=10, programs=3, seed=3)
    data = CellData.from_anndata(adata, label_key="cell_type")
    mean, basis, coords = data.pca(5, seed=0)
    s_mean, s_basis, s_coords = data.pca(5, seed=0, max_cells=1000)
    np.testing.assert_allclose(s_mean, mean, rtol=1e-5, atol=1e-6)  # centred on every cell
    # the leading axes (the types) are found from 1,000 of the 2,000 cells
    cosines = np.linalg.svd(basis[:, :2].T @ s_basis[:, :2], compute_uv=False)
    assert cosines.min() > 0.98, cosines
    # every cell, sampled or not, gets its coordinates on the fitted axes
    assert s_coords.shape == coords.shape
    np.testing.assert_allclose(s_coords, (data.X.toarray() - mean) @ s_basis, rtol=1e-4, atol=1e-4)
    # below the cap nothing changes
    _, same_basis, same_coords = data.pca(5, seed=0, max_cells=data.n_cells)
    np.testing.assert_array_equal(same_basis, basis)
    np.testing.assert_array_equal(same_coords, coords)


def test_pca_of_a_wide_matrix_is_fitted_dense_on_fewer_cells(monkeypatch):
    from cellsynth.data import celldata

    adata = simulate({"a": 900, "b": 700, "c": 400}, n_genes=120, n_markers=10, programs=3, seed=3)
    data = CellData.from_anndata(adata, label_key="cell_type")
    mean, basis, coords = data.pca(5, seed=0)
    # as if the matrix were a wide transcriptome: the randomized solver on 1,000 cells' dense values
    monkeypatch.setattr(celldata, "ARPACK_MAX_ENTRIES", 10_000)
    monkeypatch.setattr(celldata, "DENSE_PCA_BYTES", 1000 * 4 * data.n_genes)
    w_mean, w_basis, w_coords = data.pca(5, seed=0)
    np.testing.assert_allclose(w_mean, mean, rtol=1e-5, atol=1e-6)
    cosines = np.linalg.svd(basis[:, :2].T @ w_basis[:, :2], compute_uv=False)
    assert cosines.min() > 0.98, cosines
    np.testing.assert_allclose(w_coords, (data.X.toarray() - mean) @ w_basis, rtol=1e-4, atol=1e-4)
    assert not np.array_equal(w_basis, basis)  # another solver, another sample: the dense path was taken


def test_a_counts_layer_is_found_only_beside_a_matrix_without_counts(counts_adata):
    from cellsynth.benchmark.options import read_labelled
    from cellsynth.data.celldata import counts_layer

    cells = counts_adata.copy()
    assert counts_layer(cells) is None  # X holds counts
    cells.layers["raw_counts"] = cells.X.copy()
    cells.X = np.log2(1 + cells.X.toarray() * 0.5)  # no counts to read back from these logarithms
    assert counts_layer(cells) == "raw_counts"
    cells.layers["counts"] = sp.csr_matrix(cells.shape, dtype=np.float32)  # empty: not counts to fit
    assert counts_layer(cells) == "raw_counts"
    cells.layers["counts"] = cells.X  # log-normalised too
    assert counts_layer(cells) == "raw_counts"
    swapped = read_labelled(cells, "cell_type", [])
    np.testing.assert_array_equal(swapped.X.toarray(), counts_adata.X.toarray())
    del cells.layers["raw_counts"]
    assert counts_layer(cells) is None


def test_counts_in_raw_are_found_beside_a_normalised_x(counts_adata):
    # CELLxGENE's layout: X normalised, raw.X the counts (here of more genes than X, in another order)
    from cellsynth.data.celldata import RAW_LAYER, counts_layer

    full = counts_adata.copy()
    full.var_names = [f"g{i}" for i in range(full.n_vars)]
    cells = full[:, full.var_names[::-2]].copy()
    cells.raw = full
    cells.X = np.log2(1 + cells.X.toarray() * 0.5)
    assert counts_layer(cells) == RAW_LAYER
    np.testing.assert_array_equal(cells.layers[RAW_LAYER].toarray(), full[:, cells.var_names].X.toarray())
    data = CellData.from_anndata(cells, label_key="cell_type", layer=RAW_LAYER)
    assert data.preprocessing.representation == "counts"
    # raw holding log values (scanpy's tutorials) is not counts: X stays
    logged = cells.copy()
    del logged.layers[RAW_LAYER]
    logged.raw = logged
    assert counts_layer(logged) is None


def test_counts_are_read_back_from_log_normalised_values_only_when_exact(counts_adata):
    import scanpy as sc

    from cellsynth.data.celldata import RECOVERED_LAYER, counts_layer
    from cellsynth.data.preprocess import recovered_counts

    counts = counts_adata.X.toarray()
    keep = (np.where(counts > 0, counts, np.inf).min(1) == 1) & (counts.sum(1) > 0)  # a count of 1 in each
    cells = counts_adata[keep].copy()
    counts = counts[keep]
    sc.pp.normalize_total(cells, target_sum=1e4)
    sc.pp.log1p(cells)
    np.testing.assert_array_equal(recovered_counts(cells.X).toarray(), counts)
    size_factors = np.random.default_rng(0).uniform(0.3, 3.0, (len(counts), 1))  # scran-like
    np.testing.assert_array_equal(recovered_counts(np.log1p(counts / size_factors)).toarray(), counts)
    assert counts_layer(cells) == RECOVERED_LAYER
    assert CellData.from_anndata(cells, label_key="cell_type", layer=RECOVERED_LAYER).n_cells == len(counts)
    # other transforms leave fractions: nothing is read back
    assert recovered_counts(np.log2(1 + counts)) is None
    assert recovered_counts(np.log1p(counts + 0.5)) is None
    assert recovered_counts(np.log1p(counts) * 0.9) is None
    with warnings.catch_warnings():  # values beyond log1p's range: not read as logarithms (no overflow)
        warnings.simplefilter("error")
        assert recovered_counts(counts * 1.13 + 1e3 * (counts > 0)) is None


def test_an_empty_x_needs_a_layer(counts_adata):
    cells = counts_adata.copy()
    cells.layers["spliced"] = cells.X.copy()
    cells.X = None
    with pytest.raises(
        InputError, match=r"X is empty; name the matrix to use with --layer \(layers: \['spliced'\]"
    ):
        CellData.from_anndata(cells, label_key="cell_type")
    assert CellData.from_anndata(cells, label_key="cell_type", layer="spliced").n_cells == cells.n_obs


def test_count_means_by_label_undo_the_normalisation(counts_adata):
    from cellsynth.data.stats import count_means_by_label

    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    rows = np.arange(10, 500)
    raw = counts_adata.X.toarray()[:, data.preprocessing.train_genes]
    means = count_means_by_label(data, rows)
    for c, name in enumerate(data.label.categories):
        part = raw[rows][counts_adata.obs["cell_type"].astype(str).to_numpy()[rows] == name]
        np.testing.assert_allclose(means[c], part.mean(0), rtol=1e-4, atol=1e-5)
