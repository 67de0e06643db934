"""Biology metrics on simulated cells: a disjoint real half scores high, shuffled labels score low."""

from __future__ import annotations

import numpy as np
import pytest

from cellsynth.metrics import biology, gene_sets
from cellsynth.metrics.base import FAMILIES, METRICS, EvalContext, Space

TYPES = {"alpha": 360, "beta": 280, "gamma": 200, "delta": 90, "rare": 30}
NAMES = (
    "trts_accuracy",
    "tstr_macro_f1",
    "tstr_rare_macro_f1",
    "trtr_macro_f1",
    "ari",
    "nmi",
    "ari_real",
    "nmi_real",
    "marker_overlap",
    "de_logfc_correlation",
    "cv2_feature_overlap",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small matrices: BLAS and OpenMP threads only add contention on a shared machine (seconds, not ms)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def halves():
    """Three disjoint sets of one simulated population (log-normalised): REAL, SYNTH, TRAIN."""
    import scanpy as sc

    from cellsynth.data.datasets import simulate

    adata = simulate(TYPES, n_genes=300, n_markers=20, marker_fold=8.0, seed=11)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    X = adata.X.toarray().astype(np.float32)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    part = np.arange(len(y)) % 3  # simulate() shuffles the cells: every third one is a random third
    spaces = [Space(X[part == k], y[part == k]) for k in range(3)]
    real = adata[part == 0].copy()
    sc.pp.highly_variable_genes(real, n_top_genes=150)
    hvg = np.flatnonzero(real.var["highly_variable"].to_numpy())
    return spaces, np.asarray(adata.var_names), hvg


def make_context(halves, synth: Space | None = None, *, train: bool = True, **kw) -> EvalContext:
    (real, same, other), genes, hvg = halves
    return EvalContext(
        real=real,
        synth=same if synth is None else synth,
        genes=genes,
        hvg=hvg,
        train=other if train else None,
        settings={"n_pcs": 50},
        seed=0,
        **kw,
    )


@pytest.fixture(scope="module")
def real_vs_real(halves):
    ctx = make_context(halves)
    return ctx, FAMILIES["biology"](ctx)


def test_metrics_are_declared():
    assert FAMILIES["biology"] is biology.biology
    for name in NAMES:
        info = METRICS[name]
        assert info.family == "biology" and info.direction == "maximize" and info.description
    assert METRICS["trtr_macro_f1"].needs_train
    assert METRICS["trts_accuracy"].per_type


def test_real_vs_real_scores_high(real_vs_real):
    ctx, out = real_vs_real
    assert set(out) == set(NAMES)
    assert out["trts_accuracy"] >= 0.9
    assert out["tstr_macro_f1"] >= 0.85
    assert out["trtr_macro_f1"] >= 0.85
    assert out["tstr_rare_macro_f1"] >= 0.7
    assert out["ari"] >= 0.5 and out["nmi"] >= 0.5
    assert out["ari"] == pytest.approx(out["ari_real"], abs=0.25)
    assert out["marker_overlap"] >= 0.4
    assert out["de_logfc_correlation"] >= 0.8
    assert out["cv2_feature_overlap"] >= 0.4
    assert ctx.settings["leiden_resolution"] == 1.0  # the options used are recorded
    assert "biology_classifier" in ctx.settings


def test_per_type_columns_cover_every_type(real_vs_real):
    ctx, out = real_vs_real
    for column in ("tstr_f1", "trts_accuracy"):
        values = ctx.per_type[column]
        assert set(values) == set(TYPES)
        assert all(0.0 <= v <= 1.0 for v in values.values())
    n = {t: int(np.sum(ctx.synth.labels == t)) for t in TYPES}
    weighted = sum(ctx.per_type["trts_accuracy"][t] * n[t] for t in TYPES) / sum(n.values())
    assert weighted == pytest.approx(out["trts_accuracy"])
    assert np.mean(list(ctx.per_type["tstr_f1"].values())) == pytest.approx(out["tstr_macro_f1"])


def test_shuffled_labels_score_low(halves, real_vs_real):
    (_, same, _), _, _ = halves
    labels = np.random.default_rng(0).permutation(same.labels)
    ctx = make_context(halves, Space(same.X, labels), train=False)
    out = FAMILIES["biology"](ctx)
    assert "trtr_macro_f1" not in out  # needs TRAIN
    assert out["trts_accuracy"] <= 0.5
    assert out["tstr_macro_f1"] <= 0.4
    assert abs(out["ari"]) <= 0.1
    assert out["marker_overlap"] <= 0.2
    # label-free views of the same cells do not change
    assert out["cv2_feature_overlap"] == pytest.approx(real_vs_real[1]["cv2_feature_overlap"])
    assert out["ari_real"] == pytest.approx(real_vs_real[1]["ari_real"])


def test_control_context_reuses_real_side_and_is_deterministic(halves, real_vs_real):
    shared: dict = {}
    first = FAMILIES["biology"](make_context(halves, shared=shared))
    assert "biology:trts_model" in shared  # what depends on REAL only is kept for the control
    again = FAMILIES["biology"](make_context(halves, shared=shared, kind="control"))
    assert first == real_vs_real[1]
    assert again == first


def test_missing_type_scores_zero(halves):
    (_, same, _), _, _ = halves
    keep = same.labels != "rare"
    ctx = make_context(halves, Space(same.X[keep], same.labels[keep]), train=False)
    out = FAMILIES["biology"](ctx)
    assert ctx.per_type["tstr_f1"]["rare"] == 0.0  # never generated, never predicted
    assert "rare" not in ctx.per_type["trts_accuracy"]  # no compared cell claims it
    assert out["tstr_rare_macro_f1"] == 0.0  # "rare" is the only type under 5%


def test_rare_types_rule():
    # under 5% of the cells
    labels = ["a"] * 60 + ["b"] * 36 + ["c"] * 3 + ["d"]
    assert biology.rare_types(labels) == ["d", "c"]
    # exactly 5% is not rare
    assert biology.rare_types(["a"] * 95 + ["b"] * 5) == ["b", "a"]
    # none under 5%: the four smallest types with at least two cells, smallest first, ties by name
    labels = ["a"] * 30 + ["b"] * 20 + ["c"] * 12 + ["d"] * 12 + ["e"] * 10 + ["f"] * 16
    assert biology.rare_types(labels) == ["e", "c", "d", "f"]
    assert biology.rare_types(["a"] * 10 + ["b"] * 10) == ["a", "b"]
    assert biology.rare_types([]) == []


def test_marker_overlap_of_a_set_with_itself_is_one(halves):
    (real, _, _), _, _ = halves
    assert gene_sets.marker_overlap(real.X, real.labels, real.X, real.labels) == 1.0
    markers = gene_sets.marker_genes(real.X, real.labels, ["rare"], n_genes=20)
    assert len(markers["rare"]) == 20
    # a type with too few cells on one side is left out; none left is NaN
    assert np.isnan(gene_sets.marker_overlap(real.X, real.labels, real.X[:2], real.labels[:2]))


def test_cv2_feature_overlap(halves):
    (real, same, _), _, _ = halves
    assert gene_sets.cv2_feature_overlap(real.X, real.X) == 1.0
    # the rule on a tiny example: var/mean² of expm1(X), zero-mean genes never chosen
    E = np.array([[1.0, 2.0, 0.0, 5.0], [1.0, 4.0, 0.0, 0.0], [1.0, 6.0, 0.0, 1.0]])
    X = np.log1p(E)
    assert gene_sets.cv2_top_genes(X, 2).tolist() == [3, 1]
    assert gene_sets.cv2_top_genes(X, 10).tolist() == [3, 1, 0]
    assert gene_sets.cv2_top_genes(E, 1, log1p=False).tolist() == [3]
    # unrelated noise shares few of the top genes
    noise = np.random.default_rng(0).permuted(real.X, axis=1)
    assert gene_sets.cv2_feature_overlap(real.X, noise) < 0.3
