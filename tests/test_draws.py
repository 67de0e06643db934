"""Large CPU draws split over threads: the same numbers for any thread count, and the right law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellsynth.data import draws
from cellsynth.data.preprocess import CountObservation


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _rates(n=256, g=2048, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, g, generator=gen) * 2.0


@pytest.mark.parametrize("draw", [draws.poisson, draws.randn_like, draws.rand_like])
def test_a_seed_gives_the_same_numbers_with_one_thread_or_two(draw, threads):
    rate = _rates()
    out = {}
    for n in (1, 2):
        threads(n)
        out[n] = draw(rate, torch.Generator().manual_seed(7))
    assert torch.equal(out[1], out[2])
    assert out[1].shape == rate.shape and out[1].dtype == rate.dtype
    # another seed, other numbers; and the row blocks are not copies of one another
    assert not torch.equal(out[1], draw(rate, torch.Generator().manual_seed(8)))
    quarter = len(rate) // draws.PARTS
    assert not torch.equal(out[1][:quarter], out[1][quarter : 2 * quarter])


def test_split_draws_follow_their_laws(threads):
    threads(2)
    gen = torch.Generator().manual_seed(0)
    rate = torch.full((512, 1024), 0.3)
    rate[256:] = 4.0  # the last blocks at another rate: each block draws at its own rows' rates
    counts = draws.poisson(rate, gen)
    for rows, lam in ((slice(0, 256), 0.3), (slice(256, 512), 4.0)):
        c = counts[rows]
        assert abs(c.mean().item() - lam) < 0.01 * lam + 0.005
        assert abs(c.var().item() - lam) < 0.03 * lam + 0.01
        assert torch.equal(c, c.round())
    z = draws.randn_like(rate, gen)
    assert abs(z.mean().item()) < 0.01 and abs(z.std().item() - 1.0) < 0.01
    u = draws.rand_like(rate, gen)
    assert 0.0 <= u.min().item() and u.max().item() < 1.0 and abs(u.mean().item() - 0.5) < 0.01


def test_small_draws_are_torchs_own():
    rate = _rates(n=8, g=64)
    assert rate.numel() < draws.MIN_SPLIT
    expected = torch.poisson(rate, generator=torch.Generator().manual_seed(3))
    assert torch.equal(draws.poisson(rate, torch.Generator().manual_seed(3)), expected)


@pytest.mark.parametrize("noise", ["poisson", "pln", "rounding"])
def test_a_whole_transcriptome_batch_observes_the_same_cells_for_any_thread_count(noise, threads):
    profile = torch.softmax(torch.randn(128, 4096, generator=torch.Generator().manual_seed(1)), -1)
    x = torch.log1p(profile * 1e4).requires_grad_()
    library = torch.full((128,), 3000.0)
    dispersion = torch.full((128, 4096), 0.5) if noise == "pln" else None
    out = []
    for n in (1, 2):
        threads(n)
        observed, _ = CountObservation(noise)(
            x, library, torch.ones(128), torch.Generator().manual_seed(5), dispersion
        )
        (grad,) = torch.autograd.grad(observed.sum(), x)
        out.append((observed.detach(), grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.allclose(out[0][1], out[1][1])
    assert (out[0][0] == 0).float().mean() > 0.2  # real zeros were drawn


@pytest.fixture
def inversion(monkeypatch):
    """The inversion draw on the tests' batch sizes (a fresh compiled function: shapes count per fit)."""
    from cellsynth.data import fused

    monkeypatch.setattr(fused, "MIN_ENTRIES", 1000)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    monkeypatch.setattr(draws, "_INVERSION", fused.Fused(draws._inverse_poisson, grad_only=False))
    return draws._INVERSION


#: rates across the inversion's range, at its limit and above it (torch's sampler), and none
_LAWS = (0.0, 1e-4, 0.05, 0.3, 1.0, 1.99, 2.0, 2.5, 9.0, 40.0)


def test_the_inversion_draw_follows_the_poisson_law(inversion, threads):
    from scipy import stats

    threads(2)
    rate = torch.tensor(_LAWS).repeat_interleave(200).repeat(64, 1)  # 64 × 2,000
    counts = torch.cat(
        [draws.poisson(rate, torch.Generator().manual_seed(s), by_inversion=True) for s in range(8)]
    )
    assert tuple(rate.shape) in inversion.shapes  # drawn by inversion, not torch's sampler
    assert torch.equal(counts, counts.round()) and counts.min() >= 0
    for j, lam in enumerate(_LAWS):
        x = counts[:, j * 200 : (j + 1) * 200].reshape(-1).numpy()  # 102,400 draws
        if lam == 0:
            assert (x == 0).all()
            continue
        sd = (lam / x.size) ** 0.5
        assert abs(x.mean() - lam) < 5 * sd
        ks = np.arange(int(lam + 6 * lam**0.5 + 6))
        expected = stats.poisson.pmf(ks, lam) * x.size
        seen = np.array([(x == k).sum() for k in ks])
        keep = expected > 5
        if keep.sum() > 1:  # a chi-square test of the counts' frequencies
            chi2 = (((seen - expected) ** 2 / expected)[keep]).sum()
            assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4, lam


def test_each_count_is_the_poisson_quantile_of_its_uniform(inversion):
    """Inversion: a count is the Poisson quantile of its uniform. In float32, uniforms within 1e-6 of a
    quantile's edge are left out."""
    from scipy import stats

    g = torch.Generator().manual_seed(0)
    lam = torch.tensor([1e-3, 0.5, 1.0, 2.0]).repeat_interleave(500).repeat(8, 1)
    u = torch.rand(lam.shape, generator=g)
    u[:4] = (1 - torch.logspace(-1, -6, 2000, dtype=torch.float64)).float()  # counts past the terms
    counts = draws._the_rest(draws._inverse_poisson(u, lam), u, lam, g)
    ud, ld = u.double().numpy(), lam.double().numpy()
    expected = stats.poisson.ppf(ud, ld)
    clear = (stats.poisson.ppf(ud - 1e-6, ld) == expected) & (stats.poisson.ppf(ud + 1e-6, ld) == expected)
    assert clear.mean() > 0.95
    np.testing.assert_array_equal(counts.numpy()[clear], expected[clear])


def test_counts_past_the_compiled_terms_are_found_by_the_inversion_continued_in_float64():
    """Uniforms close to 1 (to float32's last below 1): the compiled pass leaves the counts past its terms
    to the continuation, which finds each the quantile of its uniform exactly."""
    from scipy import stats

    lam = torch.tensor([1e-3, 0.5, 1.0, 2.0]).repeat_interleave(300)
    u = (1 - torch.logspace(-0.5, -7.2, 300, dtype=torch.float64)).float().repeat(4)
    expected = stats.poisson.ppf(u.double().numpy(), lam.double().numpy())
    assert (expected >= draws.TERMS).sum() > 10
    left = (draws._inverse_poisson(u, lam) < 0).numpy()
    assert left[expected > draws.TERMS].all()  # (a count of TERMS itself may round either way)
    counts = draws._the_rest(torch.full_like(u, -1.0), u, lam, torch.Generator().manual_seed(1))
    np.testing.assert_array_equal(counts.numpy(), expected)


def test_the_inversion_draw_gives_the_same_numbers_with_one_thread_or_two(inversion, threads):
    rate = _rates() * 2  # rates up to 4: some above the limit
    out = []
    for n in (1, 2):
        threads(n)
        out.append(draws.poisson(rate, torch.Generator().manual_seed(7), by_inversion=True))
    assert torch.equal(out[0], out[1])
    assert tuple(rate.shape) in inversion.shapes
    assert not torch.equal(out[0], draws.poisson(rate, torch.Generator().manual_seed(7)))  # not torch's


def test_the_inversion_draw_is_torchs_sampler_where_nothing_is_compiled(inversion, monkeypatch):
    rate = _rates()
    expected = draws.poisson(rate, torch.Generator().manual_seed(3))
    monkeypatch.setenv("CELLSYNTH_COMPILE", "0")
    assert torch.equal(draws.poisson(rate, torch.Generator().manual_seed(3), by_inversion=True), expected)
    small = rate[:2, :8]  # below the size compiled for
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    got = draws.poisson(small, torch.Generator().manual_seed(3), by_inversion=True)
    assert torch.equal(got, draws.poisson(small, torch.Generator().manual_seed(3)))
    assert not inversion.shapes
