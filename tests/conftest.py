"""Shared fixtures: small seeded count data and one small fitted cgan per session."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture(scope="session")
def counts_adata():
    """595 cells × 120 genes of NB counts: 4 types (one rare), a donor, 3 never-expressed genes."""
    from cellsynth.data.datasets import simulate

    ad = simulate(
        {"alpha": 250, "beta": 200, "gamma": 120, "rare": 25}, n_genes=120, covariates={"donor": 2}, seed=3
    )
    X = ad.X.tolil()
    for j in (5, 50, 100):
        X[:, j] = 0
    ad.X = X.tocsr()
    ad.X.eliminate_zeros()
    return ad


@pytest.fixture(scope="session")
def fitted_cgan(counts_adata):
    from cellsynth import models

    model = models.get(
        "cgan", epochs=25, val_every_steps=20, g_hidden=(64, 128), d_hidden=(128, 64), c_hidden=(64, 32)
    )
    model.fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False, seed=0)
    return model


@pytest.fixture(scope="session")
def fitted_cgan_dir(fitted_cgan, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "cgan"
    fitted_cgan.save(path)
    return path


def shared_file(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"{path} is not present")
    return path


def assert_integer(values) -> None:
    values = np.asarray(values)
    assert np.array_equal(values, np.round(values))


def assert_labelled_counts(out, requested: dict[str, int], real) -> None:
    """``out`` holds exactly the ``requested`` cells per type, as non-negative integer counts (not all
    zero), with covariate values seen in ``real``."""
    assert out.obs["cell_type"].astype(str).value_counts().to_dict() == requested
    X = out.X.toarray()
    assert np.array_equal(X, np.round(X)) and X.min() >= 0 and (X > 0).any()
    assert set(out.obs["donor"]) <= set(real.obs["donor"])


def sigterm_at_step(monkeypatch, plan_class, step: int) -> Callable[[], None]:
    """Make ``plan_class.training_step`` raise SIGTERM at its ``step``-th call (1-based), as a stop from
    outside would; returns the function that puts the original ``training_step`` back."""
    original = plan_class.training_step
    calls = {"n": 0}

    def stopping(self, rows):
        calls["n"] += 1
        if calls["n"] == step:
            signal.raise_signal(signal.SIGTERM)
        return original(self, rows)

    monkeypatch.setattr(plan_class, "training_step", stopping)
    return lambda: monkeypatch.setattr(plan_class, "training_step", original)


@pytest.fixture(scope="session")
def scripts(tmp_path_factory) -> Path:
    """A copy of ``benchmarks/`` in a tree where the scripts' ``../shared/data`` does not exist."""
    from tests.benchmark_runs import copy_benchmarks

    return copy_benchmarks(tmp_path_factory.mktemp("checkout"))


def pytest_configure(config):
    # one BLAS/OpenMP thread per xdist worker: the workers already fill the cores
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)
