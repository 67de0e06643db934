"""Large CPU draws split over threads: the same numbers for any thread count, and the right law."""

from __future__ import annotations

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
