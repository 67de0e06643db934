"""Preprocessing in both directions: representation, normalisation, HVGs, and the count draws back."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellsynth.data import preprocess
from cellsynth.data.preprocess import (
    TARGET_SUM,
    CountObservation,
    detect_representation,
    draw_counts,
    normalize_log1p,
)


def poisson_counts(n_cells: int = 40, n_genes: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = rng.lognormal(1.0, 1.2, size=(1, n_genes)) * rng.uniform(0.5, 2.0, size=(n_cells, 1))
    counts = rng.poisson(rates).astype(np.float32)
    counts[:, 3] = 0  # a never-expressed gene
    return counts


# ---------------------------------------------------------------------- representation
def test_detect_representation():
    counts = poisson_counts()
    log = np.log1p(counts * 1.7)
    assert detect_representation(counts) == "counts"
    assert detect_representation(sp.csr_matrix(counts)) == "counts"
    assert detect_representation(log) == "log1p"
    assert detect_representation(sp.csr_matrix(log)) == "log1p"
    # any negative value: scaled data, used as is (also when the values are integers)
    assert detect_representation(log - log.mean(0)) == "as_is"
    assert detect_representation(sp.csr_matrix(-counts)) == "as_is"
    # nothing to judge: counts
    assert detect_representation(np.zeros((0, 5), np.float32)) == "counts"
    assert detect_representation(sp.csr_matrix((4, 5), dtype=np.float32)) == "counts"


# ---------------------------------------------------------------------- normalisation
def test_normalisation_of_dense_and_sparse_input_agrees_and_reaches_the_target_sum():
    counts = poisson_counts()
    counts[7] = 0  # a cell without counts stays all zero
    dense = normalize_log1p(counts)
    sparse = normalize_log1p(sp.csr_matrix(counts))
    assert sp.isspmatrix_csr(sparse) and sparse.dtype == np.float32 and dense.dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), dense)
    sums = np.expm1(dense.astype(np.float64)).sum(1)
    np.testing.assert_allclose(np.delete(sums, 7), TARGET_SUM, rtol=1e-5)
    assert sums[7] == 0
    # totals over more genes than the matrix holds: the part sums to its share of the target
    half = normalize_log1p(counts[:, :15], counts.sum(1), target_sum=100.0)
    share = counts[:, :15].sum(1) / np.maximum(counts.sum(1), 1)
    np.testing.assert_allclose(np.expm1(half.astype(np.float64)).sum(1), 100.0 * share, rtol=1e-5)


def test_highly_variable_genes_come_from_the_candidates():
    counts = poisson_counts(n_cells=200, n_genes=200, seed=1)
    markers = [10, 20, 30]  # expressed in a fifth of the cells only
    counts[:, markers] = 0
    counts[:40, markers] = np.random.default_rng(2).poisson(8.0, size=(40, 3))
    candidates = np.ones(200, dtype=bool)
    candidates[20] = False
    genes = preprocess.highly_variable_genes(normalize_log1p(counts), "counts", 5, candidates=candidates)
    assert len(genes) == 5 and np.all(np.diff(genes) > 0)
    assert {10, 30} <= set(genes.tolist()) and 20 not in genes


def test_training_evaluation_and_sampling_share_one_preprocessing(counts_adata):
    """One TARGET_SUM, one normalisation: CellData and the evaluation's space hold the same values."""
    from cellsynth.data import celldata
    from cellsynth.data.celldata import CellData
    from cellsynth.metrics import space
    from cellsynth.models import model

    assert celldata.TARGET_SUM is TARGET_SUM and space.TARGET_SUM is TARGET_SUM
    assert model.draw_counts is draw_counts and model.normalize_log1p is normalize_log1p
    expected = normalize_log1p(counts_adata.X).toarray()

    data = CellData.from_anndata(counts_adata, label_key="cell_type")
    assert data.preprocessing.target_sum == TARGET_SUM
    np.testing.assert_array_equal(data.X.toarray(), expected[:, data.preprocessing.train_genes])
    np.testing.assert_array_equal(data.scale, (TARGET_SUM / counts_adata.X.sum(1).A1).astype(np.float32))

    ctx = space.build_context(counts_adata[:300], counts_adata[300:], label_key="cell_type")
    cols = counts_adata.var_names.get_indexer(ctx.genes)
    np.testing.assert_array_equal(ctx.real.X, expected[:300][:, cols])
    assert ctx.real.representation == "counts"


# ---------------------------------------------------------------------- the count draws
RATES = np.array([0.0, 0.5, 2.0, 10.0, 40.0])  # counts at the library size below
LIBRARY = RATES.sum()


def numpy_and_torch_draws(noise: str, n: int = 20000, phi: float = 0.5):
    """The same profile drawn ``n`` times by :func:`draw_counts` and :class:`CountObservation`."""
    values = np.log1p(RATES * 3.0)[None].repeat(n, 0).astype(np.float32)  # profile ∝ RATES
    library = np.full(n, LIBRARY)
    dispersion = np.full(values.shape, phi) if noise == "pln" else None
    np_counts = draw_counts(values, library, np.random.default_rng(0), noise=noise, dispersion=dispersion)
    th_counts, rate = CountObservation(noise).draw(
        torch.from_numpy(values),
        torch.from_numpy(library).float(),
        torch.Generator().manual_seed(0),
        None if dispersion is None else torch.from_numpy(dispersion).float(),
    )
    return np_counts.toarray(), th_counts.numpy(), rate


@pytest.mark.parametrize("noise", ["poisson", "pln", "rounding"])
def test_numpy_and_torch_draws_agree_in_distribution(noise):
    np_counts, th_counts, _ = numpy_and_torch_draws(noise)
    for counts in (np_counts, th_counts):
        np.testing.assert_array_equal(counts, np.round(counts))  # on the count lattice
        np.testing.assert_allclose(counts.mean(0), RATES, rtol=0.03, atol=0.02)
        assert np.all(counts[:, 0] == 0)
    if noise == "pln":  # a negative binomial's first two moments: variance rate + φ·rate²
        expected_var = RATES + 0.5 * RATES**2
        np.testing.assert_allclose(np_counts.var(0)[1:], expected_var[1:], rtol=0.1)
        np.testing.assert_allclose(th_counts.var(0)[1:], expected_var[1:], rtol=0.1)
    elif noise == "poisson":
        np.testing.assert_allclose(np_counts.var(0)[1:], RATES[1:], rtol=0.06)
        np.testing.assert_allclose(th_counts.var(0)[1:], RATES[1:], rtol=0.06)
    else:  # stochastic rounding: never more than one count from the rate
        assert np.all(np.abs(np_counts - RATES) < 1) and np.all(np.abs(th_counts - RATES) < 1)


@pytest.mark.parametrize("noise", ["poisson", "pln"])
def test_zero_probability_matches_the_empirical_zero_fraction(noise):
    n = 20000
    x = torch.from_numpy(np.log1p(RATES * 3.0)).float().repeat(n, 1)
    library = torch.full((n,), float(LIBRARY))
    phi = torch.full((n, len(RATES)), 0.5) if noise == "pln" else None
    observed, p_zero = CountObservation(noise)(
        x, library, TARGET_SUM / library, torch.Generator().manual_seed(0), phi
    )
    zero_fraction = (observed == 0).float().mean(0)
    assert torch.allclose(p_zero.mean(0), zero_fraction, atol=0.01), (p_zero.mean(0), zero_fraction)
    if noise == "poisson":
        torch.testing.assert_close(p_zero[0], torch.exp(-torch.from_numpy(RATES).float()))
    assert zero_fraction[0] == 1 and 0.05 < zero_fraction[2] < 0.5  # rate 2: e^-2 ≈ 0.14 (pln: more)


def test_torch_draw_passes_the_gradient_straight_through():
    x = torch.from_numpy(np.log1p(RATES * 3.0)).float().repeat(64, 1).requires_grad_(True)
    library = torch.full((64,), float(LIBRARY))
    counts, rate = CountObservation("poisson").draw(x, library, torch.Generator().manual_seed(0))
    assert torch.equal(counts.detach(), torch.round(counts.detach()))  # the value is the draw
    (counts * torch.arange(5.0)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().min() > 0
    # the gradient is the rate's: the same as without the draw
    through_draw, x.grad = x.grad, None
    (preprocess.profile(x) * library[:, None] * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(through_draw, x.grad)
    observed, _ = CountObservation("pln")(x, library, TARGET_SUM / library, None, torch.full((64, 5), 0.3))
    x.grad = None
    observed.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_draws_are_block_wise_and_widened():
    counts = poisson_counts(n_cells=25)
    values = normalize_log1p(counts)
    library = counts.sum(1)
    whole = draw_counts(values, library, np.random.default_rng(3))
    old = preprocess._BLOCK_ROWS
    seen = []

    def dispersion(sl: slice) -> np.ndarray:
        seen.append((sl.start, sl.stop))
        return np.full((len(values[sl]), values.shape[1]), 0.2)

    try:
        preprocess._BLOCK_ROWS = 7
        # Poisson draws fill the blocks in order: block-wise equals all at once
        blocked = draw_counts(values, library, np.random.default_rng(3))
        pln = draw_counts(values, library, np.random.default_rng(3), noise="pln", dispersion=dispersion)
    finally:
        preprocess._BLOCK_ROWS = old
    assert (blocked != whole).nnz == 0
    assert seen == [(0, 7), (7, 14), (14, 21), (21, 28)] and pln.shape == counts.shape
    columns = np.arange(30) * 2 + 1
    wide = draw_counts(values, library, np.random.default_rng(3), columns=columns, n_columns=61)
    assert wide.shape == (25, 61) and (wide[:, columns] != whole).nnz == 0 and wide[:, ::2].nnz == 0
    with pytest.raises(ValueError, match="dispersion"):
        draw_counts(values, library, np.random.default_rng(3), noise="pln")
    with pytest.raises(ValueError, match="count noise"):
        draw_counts(values, library, np.random.default_rng(3), noise="none")


def test_normalise_draw_normalise_keeps_each_cells_profile_on_average():
    counts = poisson_counts(n_cells=5, n_genes=30, seed=4) * 40  # libraries of a few thousand
    values = normalize_log1p(counts)
    reps = 2000
    drawn = draw_counts(np.repeat(values, reps, 0), np.repeat(counts.sum(1), reps), np.random.default_rng(5))
    again = np.expm1(normalize_log1p(drawn).toarray().astype(np.float64)).reshape(5, reps, -1).mean(1)
    expected = np.expm1(values.astype(np.float64))
    np.testing.assert_allclose(again, expected, rtol=0.05, atol=0.5)
    assert np.all(again[:, 3] == 0)


def test_the_numpy_side_does_not_import_torch():
    code = "import sys, cellsynth.data.preprocess; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
