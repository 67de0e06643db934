"""The published baselines: each trains in the one adversarial plan with its own loss; losses against
closed forms; fit, labelled sample, save/load and determinism for every model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cellsynth import models
from cellsynth.train.losses import FDivergenceLoss, FisherLoss, WGANClipLoss

TINY = dict(
    epochs=2, val_every_steps=5, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8), z_dim=8,
    critic_components=8, init_variation=0,
)  # fmt: skip

CASES = {
    "gan": {},
    "wgan": {},
    "wgan-clip": {"loss": "wgan-clip"},
    "fgan": {"divergence": "pearson"},
    "fishergan": {},
    "lshgan": {"leakage": 0.2},
}


def _model(case: str, **extra):
    name = "wgan" if case == "wgan-clip" else case
    params = {**TINY, **CASES[case], **extra}
    if name == "lshgan":
        params.pop("z_dim")  # the genes input space sets it
    return models.get(name, **params)


# ---------------------------------------------------------------------------- the losses
P = np.array([0.2, 0.5, 0.3])  # real
Q = np.array([0.4, 0.4, 0.2])  # generated


def _closed_form(divergence: str) -> float:
    if divergence == "kl":
        return float(np.sum(P * np.log(P / Q)))
    if divergence == "reverse-kl":
        return float(np.sum(Q * np.log(Q / P)))
    if divergence == "pearson":
        return float(np.sum((P - Q) ** 2 / Q))
    m = (P + Q) / 2  # f-GAN's "GAN" divergence is twice the Jensen–Shannon divergence
    return float(np.sum(P * np.log(P / m)) + np.sum(Q * np.log(Q / m)))


def _optimal_logit(divergence: str, u: np.ndarray) -> np.ndarray:
    """The critic logit v with g_f(v) = f'(u), u = p/q (Nowozin et al. 2016, table 2 and 6)."""
    return {"kl": 1 + np.log(u), "reverse-kl": np.log(u), "pearson": 2 * (u - 1), "js": np.log(u)}[divergence]


def _weighted_samples(values: np.ndarray, probs: np.ndarray) -> torch.Tensor:
    """Rows repeated in proportion to ``probs`` (exact expectations by means)."""
    counts = np.round(probs * 1000).astype(int)
    return torch.tensor(np.repeat(values, counts), dtype=torch.float64)


@pytest.mark.parametrize("divergence", ["kl", "reverse-kl", "js", "pearson"])
def test_f_gan_bound_at_the_optimal_critic_is_the_divergence(divergence):
    loss = FDivergenceLoss(divergence, logit_clip=50.0)
    v = _optimal_logit(divergence, P / Q)
    real, fake = _weighted_samples(v, P), _weighted_samples(v, Q)
    assert float(-loss.d_loss(real, fake)) == pytest.approx(_closed_form(divergence), rel=1e-4, abs=1e-6)
    # any other critic gives a lower bound (the bound is variational)
    for shift in (-0.3, 0.2):
        worse = FDivergenceLoss(divergence, logit_clip=50.0).bound(real + shift, fake + shift)
        assert float(worse) < _closed_form(divergence)


def test_f_gan_generator_loss_and_unknown_divergence():
    loss = FDivergenceLoss("js")
    fake = torch.tensor([0.0, 1.0])
    expected = -np.mean(math.log(2) - np.log1p(np.exp(-np.array([0.0, 1.0]))))
    assert float(loss.g_loss(fake)) == pytest.approx(expected)
    from cellsynth.errors import InputError

    with pytest.raises(InputError, match="f-divergence"):
        FDivergenceLoss("hellinger")


def test_fisher_loss_is_the_augmented_lagrangian_and_its_multiplier_follows_the_constraint():
    loss = FisherLoss(rho=0.1)
    real, fake = torch.full((4,), 2.0), torch.full((4,), 1.0)
    omega = 0.5 * (4.0 + 1.0)
    # λ = 0: the IPM and the quadratic penalty only
    assert float(loss.d_loss(real, fake)) == pytest.approx(-(1.0 - 0.05 * (1 - omega) ** 2))
    loss.after_critic_step(torch.nn.Linear(1, 1))
    assert float(loss.lam) == pytest.approx(-0.1 * (1 - omega))  # Ω > 1: λ grows, penalising Ω
    state = loss.state_dict()
    other = FisherLoss(rho=0.1)
    other.load_state_dict(state)
    assert float(other.d_loss(real, fake)) == pytest.approx(float(loss.d_loss(real, fake)))
    assert float(loss.g_loss(fake)) == -1.0


def test_weight_clipping_clips_the_critic_but_not_its_input_projection():
    from cellsynth.nn.blocks import InputProjection, Projected, ProjectionDiscriminator

    critic = Projected(InputProjection(20, 4), ProjectionDiscriminator(4, [3], (8,)))
    critic.projection.set(torch.zeros(20), torch.full((20, 4), 5.0))
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(100.0)
    WGANClipLoss(clip=0.01).after_critic_step(critic)
    for name, p in critic.named_parameters():
        if p.requires_grad:
            assert float(p.detach().abs().max()) <= 0.01 + 1e-7, name
    assert float(critic.projection.basis.abs().max()) == 5.0


def test_a_critic_fed_projected_cells_has_the_gene_space_r1_penalty():
    """The plan feeds a PCA-space critic projected cells (packed after the projection) and takes R1 in
    that space: the same logits, and the same penalty as in gene space when the basis is orthonormal."""
    from cellsynth.nn.blocks import InputProjection, Projected, ProjectionDiscriminator
    from cellsynth.train.objectives import r1_penalty

    torch.manual_seed(0)
    critic = Projected(InputProjection(30, 6), ProjectionDiscriminator(12, [3], (16, 8)))
    basis, _ = torch.linalg.qr(torch.randn(30, 6))
    critic.projection.set(torch.randn(30), basis)
    x = torch.randn(10, 30)
    w = [torch.nn.functional.one_hot(torch.arange(10) % 3, 3).float()]
    partners = [torch.roll(torch.arange(10), 1)]
    # packing after the projection = projecting each packed slot
    slots = torch.cat([critic.projection(x), critic.projection(x[partners[0]])], 1)
    assert torch.allclose(critic(x, w, partners=partners), critic.module(slots, w), atol=1e-6)
    xg = x.clone().requires_grad_(True)
    gene_r1 = r1_penalty(critic(xg, w, partners=partners), xg)
    v = critic.projection(x).requires_grad_(True)
    view_r1 = r1_penalty(critic(v, w, partners=partners, projected=True), v)
    assert float(gene_r1) > 0
    assert float(view_r1) == pytest.approx(float(gene_r1), rel=1e-4)
    assert critic.projection.is_orthonormal()
    critic.projection.set(torch.zeros(30), 2.0 * basis)  # not orthonormal: the plan projects in gene space
    assert not critic.projection.is_orthonormal()
    assert not InputProjection(30, 6).is_orthonormal()  # unset


# ---------------------------------------------------------------------------- the models
@pytest.fixture(scope="module")
def fitted(counts_adata):
    return {
        case: _model(case).fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False)
        for case in CASES
    }


@pytest.mark.parametrize("case", list(CASES))
def test_every_baseline_fits_and_samples_labelled_count_cells(fitted, case, counts_adata):
    model = fitted[case]
    assert len(model.history) == 2
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in model.history)
    out = model.sample(per_type={"alpha": 20, "rare": 10}, seed=0)
    assert out.obs["cell_type"].astype(str).value_counts().to_dict() == {"alpha": 20, "rare": 10}
    assert out.obs["donor"].notna().all()
    assert set(out.obs["donor"].astype(str)) <= set(counts_adata.obs["donor"].astype(str))
    values = out.X.data
    assert np.isfinite(values).all() and np.array_equal(values, np.round(values))
    assert "log1p" in out.layers


@pytest.mark.parametrize("case", list(CASES))
def test_every_baseline_round_trips_and_is_deterministic(fitted, case, counts_adata, tmp_path):
    model = fitted[case]
    model.save(tmp_path / case)
    back = models.load(tmp_path / case)
    a, b = model.sample(150, seed=3), back.sample(150, seed=3)
    assert (a.X != b.X).nnz == 0
    assert (a.X != model.sample(150, seed=4).X).nnz > 0
    again = _model(case).fit(counts_adata, label_key="cell_type", condition_keys=["donor"], progress=False)
    assert (again.sample(150, seed=3).X != a.X).nnz == 0


def test_baselines_train_without_the_cgans_additions(fitted):
    gan = fitted["gan"]
    assert "classifier" not in gan.modules  # no auxiliary classifier loss: none is trained
    for key in ("class_weight", "sparsity_weight", "mmd_weight", "moment_weight", "r1_weight"):
        assert gan.params[key] == 0
    assert gan.params["pack"] == 1
    assert models.get("cgan").params["class_weight"] > 0
    assert fitted["lshgan"].info["seeding"]["method"] == "lsh"
    assert fitted["wgan-clip"].params["loss"] == "wgan-clip"


def test_the_fisher_multiplier_is_part_of_the_training_state(counts_adata, tmp_path):
    from cellsynth.train.checkpoint import read_training_state

    model = _model("fishergan", checkpoint_minutes=0.0)
    model.fit(counts_adata, label_key="cell_type", progress=False, checkpoint_dir=tmp_path / "ck")
    state, _ = read_training_state(tmp_path / "ck")
    assert float(state["parts"]["loss"]["lam"]) != 0.0


def test_an_unconditional_gan_labels_its_cells_by_a_classifier(counts_adata):
    model = models.get("gan", **{**TINY, "epochs": 3}, conditional=False)
    model.fit(counts_adata, label_key="cell_type", progress=False)
    assert "classifier" in model.modules
    out = model.sample(200, seed=0)
    assert "predicted" in out.uns["cellsynth"]["labels"]
    assert out.obs["cell_type"].notna().all()
