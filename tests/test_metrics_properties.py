"""SimBench data properties, the GRouNdGAN-protocol detector, DE log fold changes, and their report."""

from __future__ import annotations

import itertools
import re
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import ks_2samp, spearmanr

from cellsynth.data.datasets import simulate
from cellsynth.metrics import Space, evaluate
from cellsynth.metrics.detection import groundgan_values
from cellsynth.metrics.gene_sets import log_fold_changes, logfc_correlations
from cellsynth.metrics.properties import (
    PROPERTIES,
    TWO_D,
    compare_values,
    ks_2d,
    ks_statistic,
    property_values,
    scaled_dispersion,
    spearman_upper,
)

FAST = {"detection_trees": 20, "per_type_trees": 10, "groundgan_trees": 60, "n_jobs": 1}


def brute_ks_2d(a: np.ndarray, b: np.ndarray) -> float:
    """Peacock's statistic by its definition: every origin (x_i, y_j) of pooled values, four quadrants."""
    pooled = np.concatenate([a, b])
    best = 0.0
    for x0, y0 in itertools.product(np.unique(pooled[:, 0]), np.unique(pooled[:, 1])):
        for left, low in itertools.product((True, False), (True, False)):

            def frac(p, left=left, low=low, x0=x0, y0=y0):
                inx = p[:, 0] <= x0 if left else p[:, 0] > x0
                iny = p[:, 1] <= y0 if low else p[:, 1] > y0
                return np.mean(inx & iny)

            best = max(best, abs(frac(a) - frac(b)))
    return best


def counts_space(counts, labels=None, extra_total=0.0) -> Space:
    """A Space of counts; library sizes include ``extra_total`` counts of genes outside the matrix."""
    counts = np.asarray(counts, dtype=np.float32)
    library = counts.sum(axis=1) + extra_total
    X = np.log1p(counts / library[:, None] * 1e4).astype(np.float32)
    labels = np.array(["t"] * len(counts)) if labels is None else np.asarray(labels)
    return Space(
        X=X, labels=labels, counts=sp.csr_matrix(counts), library_size=library, representation="counts"
    )


# ------------------------------------------------------------------------------------------ statistics
def test_ks_statistic_is_scipys_with_ties():
    rng = np.random.default_rng(0)
    a, b = rng.poisson(2.0, 40).astype(float), rng.poisson(2.6, 25).astype(float)
    assert ks_statistic(a, b) == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    assert ks_statistic(a, a.copy()) == 0.0
    assert ks_statistic([0, 1], [5, 6]) == 1.0
    assert np.isnan(ks_statistic([], [1.0]))


def test_ks_2d_known_cases_and_definition():
    # by hand: a on the diagonal, b on the anti-diagonal; the quadrant x<=0, y<=0 holds half of a only
    a = np.array([[0.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert ks_2d(a, b) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 2))
    assert ks_2d(x, x.copy()) == 0.0  # identical samples
    assert ks_2d(x, x + 100.0) == 1.0  # fully separated
    assert ks_2d(x, -x + 100.0) == 1.0  # separated along a different diagonal
    y = rng.normal(0.5, 1.0, size=(45, 2))
    assert ks_2d(x, y) == pytest.approx(ks_2d(y, x), abs=1e-12)  # symmetric
    # the vectorised statistic is the definition, also with ties and unequal sizes
    xt, yt = rng.integers(0, 4, size=(30, 2)).astype(float), rng.integers(1, 5, size=(22, 2)).astype(float)
    for p, q in ((x, y), (xt, yt)):
        assert ks_2d(p, q) == pytest.approx(brute_ks_2d(p, q), abs=1e-12)


def test_scaled_dispersion_by_hand():
    # three genes of one mean share a bin: log dispersions 0, log 2, log 4 -> z = -1, 0, 1
    z = scaled_dispersion(np.array([1.0, 1.0, 1.0, 2.0, 0.0]), np.array([1.0, 2.0, 4.0, 8.0, 0.0]))
    np.testing.assert_allclose(z[:4], [-1.0, 0.0, 1.0, 0.0], atol=1e-12)  # the lone gene scores 0
    assert np.isnan(z[4])  # never expressed: no dispersion


def test_spearman_upper_is_scipys():
    rng = np.random.default_rng(2)
    X = rng.poisson(1.0, size=(12, 5)).astype(float)
    X[:, 3] = 0.0  # a constant gene has no correlation
    expected = spearmanr(X[:, [0, 1, 2, 4]]).statistic
    np.testing.assert_allclose(spearman_upper(X, axis=0), expected[np.triu_indices(4, k=1)], atol=1e-12)
    by_cell = spearmanr(X[:4].T).statistic
    np.testing.assert_allclose(spearman_upper(X[:4], axis=1), by_cell[np.triu_indices(4, k=1)], atol=1e-12)


# ------------------------------------------------------------------------------------------ the values
REAL_COUNTS = [[0, 2, 1, 0], [3, 0, 0, 1], [1, 1, 1, 0]]
SYNTH_COUNTS = [[0, 0, 2, 0], [5, 1, 0, 1], [2, 0, 0, 0], [1, 1, 1, 1]]


def test_property_values_by_hand():
    space = counts_space(REAL_COUNTS, extra_total=10.0)
    v = property_values(space, mode="counts", top_genes=np.array([0, 1, 2]))
    np.testing.assert_allclose(v["prop_library_size"], [13, 14, 13])
    np.testing.assert_allclose(v["prop_detected_genes"], [2, 2, 3])
    np.testing.assert_allclose(v["prop_cell_zero_fraction"], [0.5, 0.5, 0.25])
    np.testing.assert_allclose(v["prop_gene_zero_fraction"], [1 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(v["prop_gene_mean"], [4 / 3, 1, 2 / 3, 1 / 3])
    np.testing.assert_allclose(v["prop_gene_variance"], [7 / 3, 1, 1 / 3, 1 / 3])  # ddof=1
    np.testing.assert_allclose(
        v["prop_mean_variance"], np.column_stack([[4 / 3, 1, 2 / 3, 1 / 3], [7 / 3, 1, 1 / 3, 1 / 3]])
    )
    np.testing.assert_allclose(v["prop_library_size_zero_fraction"][:, 1], [0.5, 0.5, 0.25])
    assert set(v) == set(PROPERTIES)
    # without counts: the same zeros and fractions from the log values, no library size
    logged = Space(X=space.X, labels=space.labels, representation="log1p")
    w = property_values(logged, mode="log", top_genes=np.array([0, 1, 2]))
    assert "prop_library_size" not in w and "prop_library_size_zero_fraction" not in w
    np.testing.assert_allclose(w["prop_gene_zero_fraction"], v["prop_gene_zero_fraction"])
    np.testing.assert_allclose(w["prop_gene_mean"], space.X.mean(axis=0), rtol=1e-6)
    # values used as is: nothing that needs zeros
    as_is = property_values(logged, mode="as_is")
    assert set(as_is) == {"prop_gene_mean", "prop_gene_variance", "prop_mean_variance"}


def test_every_statistic_against_scipy_and_the_definition():
    real = property_values(counts_space(REAL_COUNTS), mode="counts", top_genes=np.arange(4))
    synth = property_values(counts_space(SYNTH_COUNTS), mode="counts", top_genes=np.arange(4))
    stats = compare_values(real, synth)
    assert set(stats) == set(PROPERTIES)
    for name in PROPERTIES:
        if name in TWO_D:
            assert stats[name] == pytest.approx(brute_ks_2d(real[name], synth[name]), abs=1e-12), name
        else:
            a, b = real[name][np.isfinite(real[name])], synth[name][np.isfinite(synth[name])]
            assert stats[name] == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12), name
    # library sizes 3, 4, 3 against 2, 7, 2, 4: by hand, the CDFs differ most at 2 and at 3 (2/4 - 0)
    assert stats["prop_library_size"] == pytest.approx(0.5)
    assert compare_values(real, real) == {name: 0.0 for name in PROPERTIES}


# ------------------------------------------------------------------------------------------ the family
@pytest.fixture(scope="module")
def three_draws():
    """REAL, SYNTH and TRAIN: three disjoint draws of one simulation (SYNTH is an independent sample)."""
    cells = simulate({"alpha": 450, "beta": 300, "gamma": 150}, n_genes=150, seed=5)
    part = np.random.default_rng(0).permutation(cells.n_obs) % 3
    return tuple(cells[part == k].copy() for k in range(3))


def test_weighted_by_real_type_proportions(three_draws):
    real, _, _ = three_draws
    real = real[real.obs["cell_type"].isin(["alpha", "gamma"])].copy()  # about 150 and 50 cells
    synth = real.copy()
    gamma = (synth.obs["cell_type"] == "gamma").to_numpy()
    X = synth.X.toarray()
    X[gamma] *= 3  # alpha identical, gamma shifted
    synth.X = sp.csr_matrix(X)
    m, ctx = evaluate(real, synth, label_key="cell_type", families=["properties"], return_context=True)
    per_type = ctx.cache["properties:per_type"]
    assert all(v == 0.0 for v in per_type["alpha"].values())
    assert per_type["gamma"]["prop_library_size"] > 0.5
    share = gamma.mean()
    for name in PROPERTIES:
        assert m.overall[name] == pytest.approx(share * per_type["gamma"][name], abs=1e-12), name
    assert m.per_type.loc["alpha", "properties_mean"] == 0.0
    assert m.overall["properties_mean"] == pytest.approx(share * m.per_type.loc["gamma", "properties_mean"])


def test_same_distribution_scores_near_the_control_and_a_shift_worse(three_draws):
    real, synth, train = three_draws
    m = evaluate(real, synth, label_key="cell_type", train=train, families=["properties"])
    assert set(PROPERTIES) | {"properties_mean"} == set(m.overall) == set(m.control)
    assert m.control["properties_mean"] < 0.15
    assert abs(m.overall["properties_mean"] - m.control["properties_mean"]) < 0.04
    shifted = synth.copy()
    shifted.X = shifted.X * 2
    worse = evaluate(real, shifted, label_key="cell_type", train=train, families=["properties"])
    assert worse.overall["properties_mean"] > m.control["properties_mean"] + 0.1
    assert worse.overall["prop_library_size"] > 0.5 > m.control["prop_library_size"]
    assert worse.control == pytest.approx(m.control)  # the control does not depend on SYNTH's values
    # the zeros did not move: their statistics stay at the control's
    assert worse.overall["prop_gene_zero_fraction"] == pytest.approx(m.overall["prop_gene_zero_fraction"])
    assert "properties_mean_control" in m.per_type.columns


def test_log_input_leaves_the_count_properties_out(three_draws):
    import scanpy as sc

    logged = []
    for part in three_draws[:2]:
        part = part.copy()
        sc.pp.normalize_total(part, target_sum=1e4)
        sc.pp.log1p(part)
        logged.append(part)
    m = evaluate(*logged, label_key="cell_type", families=["properties"])
    assert "prop_library_size" not in m.overall and "prop_library_size_zero_fraction" not in m.overall
    assert {"prop_gene_mean", "prop_scaled_variance", "prop_cell_correlation"} <= set(m.overall)
    assert m.settings["diagnostics"]["properties_values"] == "log"
    # counts REAL and TRAIN, log SYNTH: the control compares the same properties as the synthetic set
    real, _, train = three_draws
    mixed = evaluate(real, logged[1], label_key="cell_type", train=train, families=["properties"])
    assert set(mixed.control) == set(mixed.overall) == set(m.overall)
    assert mixed.settings["control_diagnostics"]["properties_values"] == "log"


# ------------------------------------------------------------------------------------------ GRouNdGAN
def test_groundgan_normalisation_from_counts_or_from_log_values():
    space = counts_space([[0, 2, 1, 5], [3, 0, 0, 1], [0, 0, 0, 4]], extra_total=7.0)
    genes = np.array([0, 1, 2])
    from_counts = groundgan_values(space, np.arange(3), genes, target_sum=20000, counts=True)
    from_log = groundgan_values(space, np.arange(3), genes, target_sum=20000, counts=False)
    np.testing.assert_allclose(np.expm1(from_counts[:2]).sum(axis=1), 20000, rtol=1e-5)
    np.testing.assert_allclose(np.expm1(from_counts[0]), [0, 20000 * 2 / 3, 20000 / 3], rtol=1e-5)
    np.testing.assert_allclose(from_log, from_counts, rtol=1e-4)
    assert np.all(from_counts[2] == 0)  # nothing over these genes


def shuffled_genes(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    X = adata.X.toarray()
    rng = np.random.default_rng(seed)
    X = np.stack([rng.permutation(X[:, j]) for j in range(X.shape[1])], axis=1)
    return ad.AnnData(sp.csr_matrix(X), obs=adata.obs.copy(), var=adata.var.copy())


def test_groundgan_detector_chance_for_real_cells_and_high_for_noise(three_draws):
    real, synth, _ = three_draws
    settings = {**FAST, "groundgan_cells": 300, "min_cells_per_type": 10**6}
    m = evaluate(real, synth, label_key="cell_type", families=["detection"], settings=settings)
    assert abs(m.overall["detection_auc_groundgan"] - 0.5) < 0.1
    assert m.settings["diagnostics"]["detection_groundgan"]["cells_per_side"] == 300
    noise = evaluate(
        real, shuffled_genes(synth), label_key="cell_type", families=["detection"], settings=settings
    )
    assert noise.overall["detection_auc_groundgan"] > 0.9


# ------------------------------------------------------------------------------------------ DE
def test_logfc_correlation_is_one_for_the_same_data_and_drops_when_a_gene_flips():
    rng = np.random.default_rng(3)
    labels = np.repeat(["a", "b", "c"], [20, 15, 10])
    X = rng.gamma(1.0, 1.0, size=(45, 30))
    X[labels == "a", 0] += 3.0  # a strong marker of a
    real = log_fold_changes(X, labels, ["a", "b", "c"])
    np.testing.assert_allclose(real["a"], X[labels == "a"].mean(0) - X[labels != "a"].mean(0))
    same = logfc_correlations(real, log_fold_changes(X.copy(), labels, ["a", "b", "c"]))
    assert same == pytest.approx({"a": 1.0, "b": 1.0, "c": 1.0})
    flipped = X.copy()
    flipped[:, 0] = X[:, 0].max() - X[:, 0]  # every type's fold change of gene 0 changes sign
    got = logfc_correlations(real, log_fold_changes(flipped, labels, ["a", "b", "c"]))
    for t in "abc":
        expected = real[t].copy()
        expected[0] *= -1
        assert got[t] == pytest.approx(np.corrcoef(real[t], expected)[0, 1], abs=1e-12)
    assert got["a"] < 0.5  # the marker of a dominated its fold changes


def test_de_logfc_correlation_through_evaluate_flags_swapped_types(three_draws):
    real, synth, _ = three_draws
    swapped = synth.copy()
    labels = swapped.obs["cell_type"].astype(str)
    swapped.obs["cell_type"] = labels.replace({"alpha": "beta", "beta": "alpha"}).astype("category")
    settings = {"max_cells_biology": 300}
    bad = evaluate(real, swapped, label_key="cell_type", families=["biology"], settings=settings)
    assert bad.per_type.loc["gamma", "de_logfc_correlation"] > 0.8
    assert bad.per_type.loc["alpha", "de_logfc_correlation"] < 0.5


# ------------------------------------------------------------------------------------------ report
def test_report_shows_the_properties_beside_their_control(three_draws, tmp_path):
    from cellsynth.report import write_report

    real, synth, train = three_draws
    shifted = synth.copy()
    shifted.X = shifted.X * 2
    m, ctx = evaluate(
        real, shifted, label_key="cell_type", train=train, families=["properties"], return_context=True
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = write_report(tmp_path / "r.html", m, ctx, umap_cap=100).read_text(encoding="utf-8")
    section = re.search(r'<section id="properties">(.*?)</section>', html, flags=re.S).group(1)
    assert section.count("data:image/png;base64,") == 1 and '<a href="#properties">' in html
    assert "open circle is the control" in section and "Computed on the raw counts" in section
    assert "could not be drawn" not in html
    summary = re.search(r'<section id="summary">(.*?)</section>', html, flags=re.S).group(1)
    assert "<code>prop_library_size</code>" in summary and "Properties:" in summary
    # without the family, no section
    m2, ctx2 = evaluate(real, synth, label_key="cell_type", families=["genes"], return_context=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html2 = write_report(tmp_path / "r2.html", m2, ctx2, umap_cap=100).read_text(encoding="utf-8")
    assert 'id="properties"' not in html2
