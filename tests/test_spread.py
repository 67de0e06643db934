"""The spread term: each type's within-type covariance along the training cells' principal axes topped up to
the training cells', kept only where a forest then tells generated from training cells less well."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellsynth.train.spread import RANK, calibrate_spread, top_up, type_covariances


def test_top_up_adds_the_deficit_and_never_a_negative_variance():
    real = {0: np.diag([4.0, 1.0]), 1: np.diag([1.0, 1.0])}
    generated = {0: np.diag([1.0, 1.0]), 1: np.diag([3.0, 1.0])}  # type 1 already spreads too far
    cells = np.array([10_000, 10_000])  # many cells: each type's own deficit, (almost) not the pooled one
    cov = top_up(np.zeros((2, 2, 2)), real, generated, cells)
    np.testing.assert_allclose(cov[0], np.diag([3.0, 0.0]), atol=0.05)
    assert np.linalg.eigvalsh(cov[1]).min() >= -1e-12  # its negative deficit is not a negative variance
    np.testing.assert_allclose(cov[1], 0.0, atol=0.05)


def test_a_type_of_few_cells_takes_mostly_the_pooled_deficit():
    real = {0: np.diag([5.0, 1.0]), 1: np.diag([1.0, 1.0])}
    generated = {0: np.diag([1.0, 1.0]), 1: np.diag([1.0, 1.0])}
    cells = np.array([5_000, 5])  # type 1: no deficit of its own, but 5 cells
    cov = top_up(np.zeros((2, 2, 2)), real, generated, cells)
    assert cov[1][0, 0] > 3.5  # the pooled deficit (about 4) carries it


class ToyGenerator:
    """Cells of two types around their means, with a within-type spread too small along the first axis;
    the spread term adds ``gain ×`` its Gaussian along the axes (``gain`` > 1: overshooting)."""

    def __init__(self, n_genes: int, gain: float, seed: int):
        self.n_genes, self.gain = n_genes, gain
        self.means = np.stack([np.zeros(n_genes), np.full(n_genes, 3.0)])
        self.factors = None
        self.axes = None
        self.gen = torch.Generator().manual_seed(seed)

    def set_term(self, axes, factors):
        self.axes, self.factors = axes, factors

    def __call__(self, labels: np.ndarray) -> torch.Tensor:
        n = len(labels)
        noise = torch.randn(n, self.n_genes, generator=self.gen).double()
        x = torch.from_numpy(self.means[labels]) + 0.3 * noise
        if self.factors is not None:
            eps = torch.randn(n, RANK, generator=self.gen).double()
            term = torch.einsum("nij,nj->ni", torch.from_numpy(self.factors[labels]), eps)
            x = x + self.gain * term @ torch.from_numpy(self.axes)
        return x


def real_cells(n_genes: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat([0, 1], [400, 300])
    x = np.where(labels[:, None] == 0, 0.0, 3.0) + 0.3 * rng.standard_normal((len(labels), n_genes))
    x[:, 0] += 2.0 * rng.standard_normal(len(labels))  # the real cells spread along gene 0
    return x, labels


@pytest.mark.parametrize("gain, kept", [(1.0, True), (4.0, False)])
def test_the_term_meets_the_real_spread_and_is_kept_only_if_the_forest_then_does_worse(gain, kept):
    rng = np.random.default_rng(0)
    n_genes = 40
    real, labels = real_cells(n_genes, rng)
    rows = np.arange(len(labels))
    mean = real.mean(0)
    _, _, vh = np.linalg.svd(real - mean, full_matrices=False)
    axes = np.zeros((RANK, n_genes))
    axes[: min(RANK, n_genes)] = vh[:RANK]
    toy = ToyGenerator(n_genes, gain, seed=1)

    def set_term(factors):
        toy.set_term(axes, factors)

    record = calibrate_spread(lambda r: toy(labels[r]), set_term, real, (mean, axes), rows, labels, 2, 2, 0)
    assert record["kept"] is kept
    assert (toy.factors is not None) is kept  # a dropped term is removed
    if kept:
        assert record["auc_with"] < record["auc_without"]
        toy_cells = toy(labels).numpy()
        spread = type_covariances((toy_cells - mean) @ axes.T, labels, 2)
        truth = type_covariances((real - mean) @ axes.T, labels, 2)
        for c in (0, 1):  # the generated spread along the leading axis now meets the real one
            assert spread[c][0, 0] == pytest.approx(truth[c][0, 0], rel=0.25)
    else:
        assert record["auc_with"] >= record["auc_without"]


def log_rates(net, n: int, seed: int) -> np.ndarray:
    """Log-rates of ``n`` cells of type 0 as the count draw makes them: the decoder's profile (with the
    spread term once set) times a mean-one log-normal factor of the generator's dispersion."""
    from cellsynth.models.decoder_generator import DecoderGenerator

    assert isinstance(net, DecoderGenerator)
    g = torch.Generator().manual_seed(seed)
    w = [torch.zeros(n, 2).index_fill_(1, torch.tensor([0]), 1.0)]
    with torch.no_grad():
        _, _, rho = net(torch.randn(n, net.noise_width(), generator=g), w, with_profile=True)
        s2 = torch.log1p(net.dispersion(w))
        return (rho.log() + s2.sqrt() * torch.randn(rho.shape, generator=g) - 0.5 * s2).double().numpy()


@pytest.mark.parametrize("from_noise", [False, True])
def test_a_term_taken_from_the_noise_correlates_genes_without_changing_their_variance_or_mean(from_noise):
    from cellsynth.models.decoder_generator import DecoderGenerator

    torch.manual_seed(0)
    n_genes, n = 400, 20_000
    net = DecoderGenerator(n_genes, [2], 4, (8, 8), dispersion=True, spread_from_noise=from_noise)
    with torch.no_grad():
        net.log_dispersion.fill_(0.0)  # σ² = log 2 in every gene
    before = log_rates(net, n, seed=1)
    axes = np.zeros((RANK, n_genes))
    axes[0, :10] = 1 / np.sqrt(10)  # one program over genes 0–9
    factors = np.zeros((2, RANK, RANK))
    factors[:, 0, 0] = np.sqrt(10 * 0.4)  # of variance 0.4 in each of those genes (below log 2)
    net.set_spread(axes, factors)
    after = log_rates(net, n, seed=2)
    program = np.corrcoef(after[:, :10].T)[np.triu_indices(10, 1)].mean()
    assert program > 0.3 if from_noise else program > 0.2  # the genes of the program vary together
    assert np.corrcoef(before[:, :10].T)[np.triu_indices(10, 1)].mean() < 0.1
    gained = after[:, :10].var(0).mean() - before[:, :10].var(0).mean()
    if from_noise:  # each gene's log-rate keeps its variance and its mean: only how genes co-vary changes
        assert abs(gained) < 0.05
        np.testing.assert_allclose(after[:, :10].mean(0), before[:, :10].mean(0), atol=0.03)
        np.testing.assert_allclose(net.noise_taken()[0, :10], 0.4, rtol=1e-5)
    else:  # the term adds its variance to the noise's
        assert gained == pytest.approx(0.4, abs=0.05)
        assert net.noise_taken() is None
    np.testing.assert_allclose(after[:, 10:].var(0).mean(), before[:, 10:].var(0).mean(), rtol=0.03)
