"""nbgarage: GARAGE's seeds as latent codes of nbgan's generator — the codes, sampling, round trip, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cellsynth import models
from cellsynth.models.nbgarage import SEED_CODES
from cellsynth.models.type_noise import TypeGaussianNoise
from cellsynth.train.adversarial import AdversarialPlan
from cellsynth.train.checkpoint import read_training_state
from tests.conftest import sigterm_at_step
from tests.test_nbgan import TINY as NBGAN_TINY

TINY = {**NBGAN_TINY, "leakage": 0.25, "gat": {"max_epochs": 20}}


@pytest.fixture(scope="module")
def fitted(counts_adata):
    m = models.get("nbgarage", **TINY)
    return m.fit(counts_adata, label_key="cell_type", progress=False, seed=0)


def test_a_seeds_input_is_what_the_modulation_turns_into_its_code():
    torch.manual_seed(0)
    noise = TypeGaussianNoise([3, 2], 4)
    with torch.no_grad():
        noise.mean[0].copy_(torch.randn(3, 4))
        noise.dev.copy_(torch.randn(3, 4, 4) + 3 * torch.eye(4))
    codes, labels = torch.randn(10, 4), torch.tensor([0, 1, 2, 2, 1, 0, 0, 1, 2, 0])
    z = noise.whiten(codes, labels)
    weights = [F.one_hot(labels, 3).float(), F.one_hot(labels % 2, 2).float()]  # covariates start at zero
    torch.testing.assert_close(noise(z, weights), codes, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(z, codes)


def test_nbgarage_mixes_seed_codes_into_its_cells_and_round_trips(fitted, counts_adata, tmp_path):
    seeding = fitted.info["seeding"]
    assert seeding["n_seeds"] == int(np.ceil(0.25 * counts_adata.n_obs))
    bank = fitted.modules["seeds"]
    assert torch.isfinite(bank.latent).all() and bank.latent.abs().sum(1).min() > 0  # every seed has a code
    assert {r["stage"] for r in fitted.history} == {"autoencoder", "gan"}
    out = fitted.sample(800, proportions="uniform", seed=0)
    assert set(out.obs["cell_type"]) == {"alpha", "beta", "gamma", "rare"}
    from_seed = out.obs["from_seed"].to_numpy()
    assert 0.15 < from_seed.mean() < 0.35  # λ = 0.25 of the rows come from seeds
    assert np.isfinite(out.obs["seed_distance_ratio"].to_numpy()[from_seed]).all()
    fitted.save(tmp_path / "m")
    back = models.load(tmp_path / "m")
    again = back.sample(800, proportions="uniform", seed=0)
    assert (out.X != again.X).nnz == 0 and out.obs["from_seed"].equals(again.obs["from_seed"])


def test_a_run_stopped_in_the_adversarial_stage_resumes_with_the_same_seed_codes(
    counts_adata, tmp_path, monkeypatch
):
    """The encoder is not kept: the codes travel in the checkpoint, and the resumed run ends as an
    uninterrupted one."""
    whole = models.get("nbgarage", **TINY).fit(counts_adata, label_key="cell_type", progress=False, seed=1)

    restore = sigterm_at_step(monkeypatch, AdversarialPlan, 6)
    ckpt = tmp_path / "ckpt"
    with pytest.warns(UserWarning, match="interrupted"):
        models.get("nbgarage", **TINY).fit(
            counts_adata, label_key="cell_type", progress=False, seed=1, checkpoint_dir=ckpt
        )
    state, _ = read_training_state(ckpt)
    torch.testing.assert_close(state[SEED_CODES], whole.modules["seeds"].latent)
    restore()

    resumed = models.get("nbgarage", **TINY).fit(
        counts_adata, label_key="cell_type", progress=False, seed=1, checkpoint_dir=ckpt, resume=True
    )
    torch.testing.assert_close(resumed.modules["seeds"].latent, whole.modules["seeds"].latent)
    cells = [m.sample(n=60, seed=3).X.toarray() for m in (resumed, whole)]
    np.testing.assert_array_equal(*cells)
