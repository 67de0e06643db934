"""The conditioning math: noise modulation, covariates, mixing, the sparsity objective."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from cellsynth.nn.blocks import ConditionalNoise, one_hot_conditions
from cellsynth.train.adversarial import soft_cross_entropy, soft_zero, sparsity_loss


def test_noise_is_mean_plus_z_times_positive_deviation():
    torch.manual_seed(0)
    noise = ConditionalNoise([3], dim=5)
    with torch.no_grad():
        noise.mean[0].copy_(torch.arange(15.0).reshape(3, 5))
        noise.dev[0].copy_(torch.full((3, 5), -2.0))
    z = torch.randn(4, 5)
    codes = torch.tensor([[0], [1], [2], [1]])
    out = noise(z, one_hot_conditions(codes, [3]))
    expected = noise.mean[0][codes[:, 0]] + z * F.softplus(torch.tensor(-2.0))
    torch.testing.assert_close(out, expected)
    assert (F.softplus(noise.dev[0]) > 0).all()


def test_deviation_starts_at_one_so_noise_passes_unchanged():
    noise = ConditionalNoise([4, 2], dim=8)
    torch.testing.assert_close(F.softplus(noise.dev[0]), torch.ones(4, 8))
    w = one_hot_conditions(torch.tensor([[2, 1]]), [4, 2])
    z = torch.randn(1, 8)
    torch.testing.assert_close(
        noise(z, w) - z,
        noise.mean[0][2:3] + noise.mean[1][1:2] + z * (F.softplus(noise.dev[0][2] + noise.dev[1][1]) - 1),
    )


def test_covariates_change_the_modulated_noise():
    torch.manual_seed(1)
    noise = ConditionalNoise([2, 3], dim=6)
    z = torch.randn(1, 6)
    a = noise(z, one_hot_conditions(torch.tensor([[0, 0]]), [2, 3]))
    b = noise(z, one_hot_conditions(torch.tensor([[0, 2]]), [2, 3]))
    assert not torch.allclose(a, b)


def test_label_mixing_interpolates_the_embeddings():
    torch.manual_seed(2)
    noise = ConditionalNoise([3], dim=4)
    z = torch.zeros(1, 4)  # with z = 0 the output is the mean embedding alone
    half = noise(z, [torch.tensor([[0.5, 0.5, 0.0]])])
    torch.testing.assert_close(half[0], 0.5 * (noise.mean[0][0] + noise.mean[0][1]))


def test_soft_cross_entropy_equals_cross_entropy_for_one_hot_targets():
    logits = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(
        soft_cross_entropy(logits, F.one_hot(y, 4).float()), F.cross_entropy(logits, y)
    )


def test_sparsity_loss_has_a_gradient_and_vanishes_when_zero_fractions_match():
    target = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # label 0: gene 0 always zero; label 1: gene 1
    labels = F.one_hot(torch.tensor([0, 0, 1, 1]), 2).float()
    matched = torch.tensor([[-9.0, 9.0], [-9.0, 9.0], [9.0, -9.0], [9.0, -9.0]])
    assert sparsity_loss(soft_zero(matched, 0.1), labels, target) < 1e-6
    wrong = torch.zeros(4, 2, requires_grad=True)
    loss = sparsity_loss(soft_zero(wrong, 0.1), labels, target)
    loss.backward()
    assert loss > 0.1
    # descending the gradient pushes label-0 cells' gene 0 below zero (towards exact zeros)
    assert wrong.grad[0, 0] > 0 and wrong.grad[0, 1] < 0


def test_count_observation_matches_real_normalisation_and_passes_gradients():
    """Generated profiles go through the same count draw + normalisation as real cells."""
    from cellsynth.train.observe import CountObservation

    g = torch.Generator().manual_seed(0)
    x = torch.log1p(torch.tensor([[0.0, 1.0, 3.0, 6.0]]) * 1e3).repeat(4000, 1).requires_grad_(True)
    library = torch.full((4000,), 20.0)
    scale = 1e4 / library  # all genes are training genes
    obs, p0 = CountObservation("poisson")(x, library, scale, g)
    # rows are normalised to the target sum like real cells, and entries lie on the count lattice
    torch.testing.assert_close(torch.expm1(obs.detach()).sum(1), torch.full((4000,), 1e4), rtol=1e-4, atol=1)
    zero_rate = (obs.detach() == 0).float().mean(0)
    # a gene with no expression is always zero; the others are zero with probability exp(-rate)
    assert zero_rate[0] == 1.0
    rate = torch.tensor([0.0, 2.0, 6.0, 12.0])
    torch.testing.assert_close(p0[0], torch.exp(-rate))
    assert abs(zero_rate[1] - torch.exp(torch.tensor(-2.0))) < 0.02
    obs.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[:, 1:].abs().sum() > 0
    rounded, p0r = CountObservation("rounding")(x.detach(), library, scale, g)
    # stochastic rounding never zeroes a gene whose rate is at least one count
    assert (rounded[:, 1:] > 0).all() and torch.equal(p0r[0], torch.tensor([1.0, 0.0, 0.0, 0.0]))
