"""Fused element-wise chains: compiled on large CPU training batches, else eager, eager after a failure."""

from __future__ import annotations

import warnings

import pytest
import torch

from cellsynth.data import fused
from cellsynth.data.fused import Fused
from cellsynth.data.preprocess import _observe
from cellsynth.models.nbvae import _expected_counts, _profile_values, _zero_term


def _batch(seed=0, n=64, g=256):
    gen = torch.Generator().manual_seed(seed)
    rate = (torch.rand(n, g, generator=gen) * 3).requires_grad_()
    counts = torch.poisson(rate.detach(), generator=gen)
    return rate, counts, torch.ones(n), torch.full((n,), 500.0)


def _run(f, rate, counts, scale, library):
    observed, p_zero = f(rate, counts, scale, library, poisson=True)
    (grad,) = torch.autograd.grad(observed.square().mean() + p_zero.mean(), rate)
    return observed.detach(), p_zero.detach(), grad


def test_the_compiled_chain_computes_what_the_eager_one_does(monkeypatch):
    monkeypatch.setattr(fused, "MIN_ENTRIES", 0)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    f = Fused(_observe)
    args = _batch()
    got, want = _run(f, *args), _run(_observe, *args)
    assert f.compiled is not None and not f.failed
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # another batch of the same shape reuses it
    torch.testing.assert_close(_run(f, *_batch(1))[0], _run(_observe, *_batch(1))[0], rtol=1e-5, atol=1e-6)
    assert f.shapes == {(64, 256)}


def _logits(seed):
    return torch.randn(32, 300, generator=torch.Generator().manual_seed(seed)) * 2


# each fused chain of the training steps, with its inputs (the first: what the gradient is taken for)
CHAINS = {
    "profile values": (_profile_values, lambda: (_logits(0),)),
    "expected counts": (_expected_counts, lambda: (_logits(1), torch.linspace(200.0, 5000.0, 32))),
    "zero term": (_zero_term, lambda: (_logits(2).exp(), _logits(3).abs() * 2)),
}


@pytest.mark.parametrize("name", CHAINS)
def test_each_training_chain_compiled_gives_the_eager_values_and_gradients(name, monkeypatch):
    monkeypatch.setattr(fused, "MIN_ENTRIES", 0)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    fn, inputs = CHAINS[name]
    f = Fused(fn)

    def run(chain):
        args = [a.clone().requires_grad_(i == 0) for i, a in enumerate(inputs())]
        outs = chain(*args)
        outs = outs if isinstance(outs, tuple) else (outs,)
        # every output in the loss, with unequal weights per entry (a softmax's gradient sums to zero)
        loss = sum(((k + 1.0) * torch.linspace(-1, 2, o.numel()).view_as(o) * o).sum()
                   for k, o in enumerate(outs))  # fmt: skip
        return [o.detach() for o in outs] + [torch.autograd.grad(loss, args[0])[0]]

    got, want = run(f), run(fn)
    assert f.compiled is not None and not f.failed
    for a, b in zip(got, want, strict=True):  # roundings differ: absolute error relative to the largest
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()))


def test_each_fits_batch_shape_is_compiled_up_to_a_limit(compile_calls, monkeypatch):
    monkeypatch.setattr(fused, "MAX_SHAPES", 2)
    f = Fused(_observe)
    for n in (64, 32, 64, 16):  # a second fit's batch gets its own; past the limit, eager
        want = _run(_observe, *_batch(n=n))
        for a, b in zip(_run(f, *_batch(n=n)), want, strict=True):
            assert torch.equal(a, b)
    assert f.shapes == {(64, 256), (32, 256)} and compile_calls == [_observe]


@pytest.fixture
def compile_calls(monkeypatch):
    calls = []

    def fake_compile(fn, **kwargs):
        calls.append(fn)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(fused, "MIN_ENTRIES", 1000)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    return calls


def test_small_batches_validation_and_the_switch_stay_eager(compile_calls, monkeypatch):
    Fused(_observe)(*_batch(n=2, g=100), poisson=True)  # 200 entries: below MIN_ENTRIES
    with torch.no_grad():  # validation and sampling
        Fused(_observe)(*_batch(), poisson=True)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "0")
    Fused(_observe)(*_batch(), poisson=True)
    assert compile_calls == []
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    Fused(_observe)(*_batch(), poisson=True)  # a large training batch
    assert compile_calls == [_observe]


def test_a_failed_compile_warns_once_and_the_chain_runs_eagerly(monkeypatch):
    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("InductorError: no C++ compiler found\nmore lines")

        return run

    monkeypatch.setattr(torch, "compile", broken)
    monkeypatch.setattr(fused, "MIN_ENTRIES", 0)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1")
    f, args = Fused(_observe), _batch()
    with pytest.warns(RuntimeWarning, match="compiling _observe failed .no C.. compiler|InductorError"):
        got = _run(f, *args)
    assert f.failed
    for a, b in zip(got, _run(_observe, *args), strict=True):
        assert torch.equal(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _run(f, *args)  # no second warning, no second try
