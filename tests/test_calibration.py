"""Mean calibration: each type's mean log-expression of generated cells moved onto its training cells'."""

from __future__ import annotations

import numpy as np
import torch

from cellsynth.train.calibration import RATE_GENES_BELOW, calibrate_means, rate_targets, type_moments

N_TYPES, N_GENES = 3, 40
SIZES = (300, 150, 5)  # the last type rare: its noisy means get a shrunk step


def _world(seed: int = 0):
    """Real cells: Poisson counts from per-type profiles; a generator whose log-rate offsets are off."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(N_TYPES), SIZES)
    library = rng.integers(800, 4000, len(labels)).astype(np.float64)
    truth = rng.normal(0.0, 1.5, (N_TYPES, N_GENES))
    profile = np.exp(truth) / np.exp(truth).sum(1, keepdims=True)
    counts = rng.poisson(profile[labels] * library[:, None])
    x_real = torch.from_numpy(np.log1p(counts / library[:, None] * 1e4))
    offset = torch.from_numpy(truth + rng.normal(0.0, 0.6, truth.shape))
    gen = torch.Generator().manual_seed(seed)

    def generate(rows: np.ndarray) -> torch.Tensor:
        rate = torch.softmax(offset[labels[rows]], 1) * torch.from_numpy(library[rows])[:, None]
        counts = torch.poisson(rate, generator=gen)
        return torch.log1p(counts / torch.from_numpy(library[rows])[:, None] * 1e4)

    def shift(delta: torch.Tensor) -> None:
        offset.add_(delta.double())

    return labels, x_real, truth, offset, generate, shift


def _offset_error(offset: torch.Tensor, truth: np.ndarray) -> np.ndarray:
    """Per type, the mean absolute error of the log-rates up to the softmax's free constant."""
    d = offset.numpy() - truth
    return np.abs(d - d.mean(1, keepdims=True)).mean(1)


def test_calibration_moves_each_types_mean_log_expression_onto_the_training_cells():
    labels, x_real, truth, offset, generate, shift = _world()
    rows = np.arange(len(labels))
    before = _offset_error(offset, truth)
    real = type_moments(lambda r: x_real[r], rows, labels, N_TYPES, N_GENES)
    trace = calibrate_means(shift, generate, real, rows, labels, N_TYPES, N_GENES, rounds=6)
    assert len(trace) == 6
    assert trace[-1] < 0.3 * trace[0]  # the generated means approach the real ones round after round
    after = _offset_error(offset, truth)
    assert (after[:2] < 0.4 * before[:2]).all()  # the well-sampled types' log-rates found again
    np.testing.assert_allclose(real[0][0], x_real[labels == 0].mean(0).numpy())


def test_a_rare_type_takes_a_shrunk_step_and_a_missing_type_none():
    labels, x_real, _, offset, generate, shift = _world(1)
    keep = labels != 1  # the middle type has no training cells here
    rows, lab = np.flatnonzero(keep), labels[keep]
    start = offset.clone()
    real = type_moments(lambda r: x_real[r], rows, lab, N_TYPES, N_GENES)
    calibrate_means(shift, generate, real, rows, lab, N_TYPES, N_GENES, rounds=1)
    moved = (offset - start).abs().mean(1).numpy()
    assert moved[1] == 0.0
    assert 0 < moved[2] < moved[0]  # 5 cells: a third of the step a 300-cell type takes


def test_an_error_shared_by_rarely_detected_genes_is_kept_when_steps_are_pooled_by_expression():
    """Every rare gene's rate a factor 2 too low: each gene's difference is within its noise (a step shrunk
    towards zero leaves most of it), their shared error is not (a step shrunk towards its bin's mean)."""
    rng = np.random.default_rng(3)
    n_cells, n_genes = 60, 1500
    labels = np.zeros(n_cells, dtype=np.int64)
    library = np.full(n_cells, 3000.0)
    truth = np.where(np.arange(n_genes) < 50, 2.0, -5.0)[None, :]  # 50 abundant genes, the rest rare
    rare = np.arange(n_genes) >= 50
    profile = np.exp(truth) / np.exp(truth).sum(1, keepdims=True)
    x_real = torch.from_numpy(np.log1p(rng.poisson(profile[labels] * library[:, None]) / 3000.0 * 1e4))
    real = type_moments(lambda r: x_real[r], np.arange(n_cells), labels, 1, n_genes)
    errors = {}
    for bins in (0, 10):
        offset = torch.from_numpy(truth - np.log(2.0) * rare)
        gen = torch.Generator().manual_seed(0)

        def generate(rows, offset=offset, gen=gen):
            rate = torch.softmax(offset[labels[rows]], 1) * 3000.0
            return torch.log1p(torch.poisson(rate, generator=gen) / 3000.0 * 1e4)

        calibrate_means(
            offset.add_, generate, real, np.arange(n_cells), labels, 1, n_genes, rounds=4, pool_bins=bins
        )
        d = (offset.numpy() - truth)[0]
        errors[bins] = abs(d[rare].mean() - d[~rare].mean())  # the rare genes' shared error left
    assert errors[10] < 0.3 * np.log(2.0) < errors[0]


def _rare_world(seed: int):
    """One type, 60 cells: 50 abundant genes and 1,450 rare ones (log-rates spread around −5), generated
    with every rare gene's rate a factor 2 too low."""
    rng = np.random.default_rng(seed)
    n_cells, n_genes, library = 60, 1500, 3000.0
    labels = np.zeros(n_cells, dtype=np.int64)
    rare = np.arange(n_genes) >= 50
    truth = np.where(rare, rng.normal(-5.0, 0.7, n_genes), 2.0)[None, :]
    profile = np.exp(truth) / np.exp(truth).sum(1, keepdims=True)
    counts = rng.poisson(profile[labels] * library)
    x_real = torch.from_numpy(np.log1p(counts / library * 1e4))
    offset = torch.from_numpy(truth - np.log(2.0) * rare)
    gen = torch.Generator().manual_seed(seed)

    def generate(rows):
        rho = torch.softmax(offset[labels[rows]], 1)
        x = torch.log1p(torch.poisson(rho * library, generator=gen) / library * 1e4)
        return x, rho * library

    real = type_moments(lambda r: x_real[r], np.arange(n_cells), labels, 1, n_genes)
    return labels, counts, truth, rare, offset, generate, real


def test_rare_genes_are_moved_onto_an_empirical_bayes_estimate_of_their_rates():
    """The shared factor 2 is removed, and each rare gene's rate ends nearer its true rate than its own
    training counts would put it (the posterior keeps the bin's ratio where a gene has few counts)."""
    labels, counts, truth, rare, offset, generate, real = _rare_world(5)
    n_cells, n_genes = counts.shape
    calibrate_means(
        offset.add_, generate, real, np.arange(n_cells), labels, 1, n_genes, rounds=4,
        rates=counts.mean(0, keepdims=True).astype(np.float64),
    )  # fmt: skip
    d = (offset.numpy() - truth)[0]
    d -= d[~rare].mean()  # the softmax's free constant
    assert abs(d[rare].mean()) < 0.15 * np.log(2.0)
    # the raw training counts' log-rates, relative to the abundant genes' (pseudo-count 0.5)
    raw = np.log(counts.sum(0) + 0.5) - truth[0]
    raw -= raw[~rare].mean()
    assert np.sqrt(np.mean(d[rare] ** 2)) < 0.7 * np.sqrt(np.mean(raw[rare] ** 2))


def test_without_rates_the_rare_genes_stay_low():
    labels, counts, truth, rare, offset, generate, real = _rare_world(5)
    n_cells, n_genes = counts.shape
    calibrate_means(offset.add_, generate, real, np.arange(n_cells), labels, 1, n_genes, rounds=4)
    d = (offset.numpy() - truth)[0]
    assert d[rare].mean() - d[~rare].mean() < -0.5 * np.log(2.0)


def test_rate_targets_follow_a_genes_counts_as_they_grow_and_leave_abundant_genes_and_missing_types():
    n = np.array([100, 0])
    expected = np.full((2, 400), 0.01)  # one count per 100 cells expected of every gene
    expected[:, :5] = 5.0  # abundant: no target
    real = np.full((2, 400), 0.02)  # the bin: twice the expected counts
    real[0, 5] = 0.0  # a gene never seen: the bin's prior, pulled down by a zero count
    real[0, 6] = 1.0  # a gene seen 100 times: its own counts
    target = rate_targets(real, expected, n)
    assert np.isnan(target[0, :5]).all() and np.isnan(target[1]).all()
    assert (expected[0, 5:] < RATE_GENES_BELOW).all() and np.isfinite(target[0, 5:]).all()
    # a bin away from the two odd genes: ratio (k + a) / (E + a / r), k = 2, E = 1, r ≈ 2 → 2
    np.testing.assert_allclose(target[0, -50:], 0.02, rtol=0.02)
    assert 0 < target[0, 5] < target[0, 7]  # no counts: below its bin-mates with 2 each
    # 100 counts where the model expects 1: most of the way there on the log scale, short of the counts
    assert 0.3 < target[0, 6] < 1.0


def test_a_large_types_generated_cells_are_capped_at_evenly_spaced_training_rows(monkeypatch):
    """A round generates at most MAX_CELLS cells per type, their conditions taken across the type's rows;
    the steps still move the means onto the training cells'."""
    from cellsynth.train import calibration

    monkeypatch.setattr(calibration, "MAX_CELLS", 100)
    labels, x_real, truth, offset, generate, shift = _world()
    rows = np.arange(len(labels))
    seen = []

    def recording(r: np.ndarray) -> torch.Tensor:
        seen.append(r)
        return generate(r)

    real = type_moments(lambda r: x_real[r], rows, labels, N_TYPES, N_GENES)
    before = _offset_error(offset, truth)
    calibrate_means(shift, recording, real, rows, labels, N_TYPES, N_GENES, rounds=3, min_cells=20)
    first = np.concatenate(seen)[: len(np.concatenate(seen)) // 3]  # the first round's rows
    per_type = np.bincount(labels[first], minlength=N_TYPES)
    assert per_type.tolist() == [100, 100, 20]  # 300 and 150 capped, the rare type's 5 repeated
    big = first[labels[first] == 0]
    assert big.min() == 0 and big.max() == 299 and len(np.unique(big)) == 100  # spread over the type
    assert calibration.calibration_cells(labels, N_TYPES, min_cells=20) == 220
    assert (_offset_error(offset, truth)[:2] < 0.5 * before[:2]).all()
