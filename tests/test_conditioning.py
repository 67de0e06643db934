"""The conditioning math: noise modulation, covariates, mixing, the sparsity objective."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
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
    # the deviation is positive whatever its raw parameter: a negative one never flips the noise's sign
    with torch.no_grad():
        noise.dev[0].copy_(torch.full((3, 5), -8.0))
    shift = noise(z, one_hot_conditions(codes, [3])) - noise.mean[0][codes[:, 0]]
    assert torch.equal(torch.sign(shift), torch.sign(z))


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
    from cellsynth.data.preprocess import CountObservation

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


def test_poisson_lognormal_observation_has_the_requested_overdispersion_and_learns_it():
    """count_noise="pln": counts have mean rate and variance rate + φ·rate² (an NB's first two moments)."""
    from cellsynth.data.preprocess import CountObservation

    g = torch.Generator().manual_seed(0)
    n = 20000
    # a fourth gene with a large, nearly Poisson count keeps each cell's total (the normaliser) stable
    x = torch.log1p(torch.tensor([[10.0, 10.0, 20.0, 10000.0]])).repeat(n, 1)
    library = torch.full((n,), 10040.0)  # rates 10, 10, 20, 10000
    phi = torch.tensor([[0.01, 0.5, 0.5, 1e-6]]).repeat(n, 1).requires_grad_(True)
    obs, p0 = CountObservation("pln")(x, library, 1e4 / library, g, phi)
    counts = torch.expm1(obs.detach()) * library[:, None] / 1e4  # ≈ counts (totals vary by ~1%)
    rate = torch.tensor([10.0, 10.0, 20.0])
    var = counts[:, :3].var(0)
    expected = rate + phi[0, :3].detach() * rate**2  # 11, 60, 220
    assert torch.allclose(counts[:, :3].mean(0), rate, rtol=0.03)
    assert torch.allclose(var, expected, rtol=0.1), (var, expected)
    # the zero probability is an unbiased estimate of the draw's own zero frequency
    assert abs(p0.mean(0)[1] - (counts[:, 1] == 0).float().mean()) < 0.01
    # the dispersion is reparameterised: it receives a gradient through the observed values
    obs.pow(2).sum().backward()
    assert torch.isfinite(phi.grad).all() and phi.grad[:, 1:3].abs().sum() > 0
    with pytest.raises(ValueError, match="dispersion"):
        CountObservation("pln")(x, library, 1e4 / library, g)


def test_paired_conditional_mmd_is_not_biased_below_zero():
    """Generated cells drawn for a real batch's own labels: leaving out the (i, i) pairs removes the bias."""
    from cellsynth.metrics.distribution import mmd2

    g = torch.Generator().manual_seed(0)
    plain, paired = [], []
    for _ in range(200):
        labels = torch.randint(0, 3, (64,), generator=g)
        w = F.one_hot(labels, 3).float()
        centre = labels[:, None].float() * 2.0
        x = centre + torch.randn(64, 5, generator=g)  # same distribution per label on both sides
        y = centre + torch.randn(64, 5, generator=g)
        plain.append(float(mmd2(x, y, cond_x=w, cond_y=w)))
        paired.append(float(mmd2(x, y, cond_x=w, cond_y=w, paired=True)))
    se = np.std(paired) / np.sqrt(len(paired))
    assert np.mean(plain) < -5 * se  # the unpaired estimate is biased below zero
    assert abs(np.mean(paired)) < 3 * se
    with pytest.raises(ValueError, match="paired"):
        mmd2(x, y[:10], paired=True)


def test_packing_partners_share_the_label_and_are_other_cells():
    from cellsynth.train.objectives import same_label_partners

    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 1, 1, 3, 3])
    partner = same_label_partners(labels, g)
    assert torch.equal(labels[partner], labels)
    assert torch.equal(partner.sort().values, torch.arange(10))  # every cell is someone's partner once
    alone = labels == 2
    assert torch.equal(partner[alone], torch.nonzero(alone).ravel())  # a label's only cell pairs with itself
    assert (partner[~alone] != torch.arange(10)[~alone]).all()
    # random within a label: another draw pairs label 1's four cells differently
    draws = {tuple(same_label_partners(labels, g)[labels == 1].tolist()) for _ in range(20)}
    assert len(draws) > 1


def _fit_spread(loss_fn, steps=1500):
    """Fit x = mu + s·eps per (label, gene) to targets with ``loss_fn(x, label_w)``; small batches."""
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(2, 3, requires_grad=True)
    log_s = torch.zeros(2, 3, requires_grad=True)
    opt = torch.optim.Adam([mu, log_s], lr=0.01)
    for _ in range(steps):
        labels = torch.randint(0, 2, (12,), generator=g)  # ~6 cells per label and batch
        w = F.one_hot(labels, 2).float()
        x = mu[labels] + torch.exp(log_s[labels]) * torch.randn(12, 3, generator=g)
        opt.zero_grad()
        loss_fn(x, w).backward()
        opt.step()
    return mu.detach(), torch.exp(2 * log_s.detach())


def test_moment_match_recovers_mean_and_variance_without_shrinking_the_spread():
    from cellsynth.train.adversarial import MomentMatch

    mean = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, 1.0]])
    var = torch.tensor([[4.0, 1.0, 2.0], [0.5, 9.0, 1.0]])
    match = MomentMatch(mean, var, decay=0.9)
    mu, v = _fit_spread(match)
    assert torch.allclose(mu, mean, atol=0.3)
    assert 0.8 < float((v / var).mean()) < 1.25
    assert torch.allclose(v.log(), var.log(), atol=0.5)

    def naive(x, w):  # squared error of the batch's own moments: its variance term shrinks the spread
        m = w.sum(0)[:, None].clamp_min(2)
        bm = (w.T @ x) / m
        bv = (w.T @ (x * x)) / m - bm**2
        return ((bm - mean) ** 2).sum() + ((bv - var) ** 2).sum()

    _, v_naive = _fit_spread(naive)
    assert (v_naive / var).mean() < 0.9 * (v / var).mean()


def test_moments_and_zero_fractions_by_label_match_dense_computation():
    from cellsynth.train.adversarial import moments_by_label, zero_fraction_by_label

    rng = np.random.default_rng(0)
    X = sp.random(40, 7, density=0.4, random_state=0, format="csr", dtype=np.float32)
    codes = rng.integers(0, 3, 40)

    from cellsynth.data.celldata import CellData, Condition, Preprocessing

    genes = [f"g{j}" for j in range(7)]
    pre = Preprocessing("log1p", genes, list(range(7)))
    data = CellData(X, [Condition("cell_type", ["a", "b", "c"], codes)], pre)
    rows = np.arange(3, 37)
    mean, var = moments_by_label(data, rows)
    zeros = zero_fraction_by_label(data, rows)
    dense = X.toarray()
    for c in range(3):
        part = dense[rows][codes[rows] == c]
        np.testing.assert_allclose(mean[c], part.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var[c], part.var(0), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(zeros[c], (part == 0).mean(0), rtol=1e-6)
    data.X = dense  # dense input gives the same
    np.testing.assert_allclose(zero_fraction_by_label(data, rows), zeros)
    np.testing.assert_allclose(moments_by_label(data, rows)[0], mean, rtol=1e-6)
    data.X = X
    for max_entries in (10, 1):  # summed block by block (a matrix read from disk): the same figures
        blocks = data.row_blocks
        data.row_blocks = lambda idx, blocks=blocks, m=max_entries: blocks(idx, m)
        np.testing.assert_allclose(zero_fraction_by_label(data, rows), zeros)
        np.testing.assert_allclose(moments_by_label(data, rows)[1], var, rtol=1e-5, atol=1e-7)
        del data.row_blocks


def test_moment_match_pull_per_gene_does_not_depend_on_the_gene_count():
    """The weight is a pull per gene: a gene's gradient is the same among 3 genes as among 300."""
    from cellsynth.train.adversarial import MomentMatch

    g = torch.Generator().manual_seed(0)
    w = F.one_hot(torch.randint(0, 2, (16,), generator=g), 2).float()
    x = torch.randn(16, 3, generator=g)
    grads = []
    for copies in (1, 100):
        mean = torch.zeros(2, 3 * copies)
        var = torch.ones(2, 3 * copies) * 2.0
        xi = x.repeat(1, copies).requires_grad_(True)
        MomentMatch(mean + 1.0, var, decay=0.9)(xi, w).backward()
        grads.append(xi.grad[:, :3])
    torch.testing.assert_close(grads[0], grads[1])


def test_moment_match_moves_each_gene_by_its_own_residual_through_the_count_draw():
    """Through the count draw and normalisation the exact gradient couples every gene to the dominant
    one: other genes' variance residuals alone move it. ``per_gene_path`` gives each gene only its own
    residual, in the right direction."""
    from cellsynth.data.preprocess import CountObservation
    from cellsynth.train.objectives import MomentMatch, per_gene_path

    n, genes = 64, 40
    pre0 = torch.cat([torch.full((n, 1), 7.0), torch.full((n, genes - 1), 1.0)], 1)
    pre0 = pre0 + 0.3 * torch.randn(n, genes, generator=torch.Generator().manual_seed(0))
    library = torch.full((n,), 2000.0)
    w = torch.ones(n, 1)

    def loss_grad(path: bool, mean_shift: float) -> torch.Tensor:
        pre = pre0.clone().requires_grad_(True)
        x = torch.relu(pre)
        obs, _ = CountObservation("poisson")(x, library, 1e4 / library, torch.Generator().manual_seed(1))
        with torch.no_grad():  # targets: the batch's own moments, then changed
            mean, var = obs.mean(0, keepdim=True), obs.var(0, keepdim=True)
            mean[0, 0] += mean_shift
            var[0, 1:] *= 0.5  # the other genes are too variable
        value = per_gene_path(obs, pre) if path else obs
        MomentMatch(mean, var, decay=0.9)(value, w).backward()
        return pre.grad[:, 0].sum()

    # the dominant gene is right; only the other genes' variances are off
    coupled = abs(float(loss_grad(False, 0.0)))  # the exact path moves it anyway
    assert abs(float(loss_grad(True, 0.0))) < 1e-3 * coupled  # its own residual is zero: it stays
    # the dominant gene is too low: its own residual raises it (descent: negative gradient)
    assert float(loss_grad(True, 0.5)) < 0


def test_one_product_gives_every_networks_projection_of_a_batch():
    """The critic's, the classifier's and the MMD's views of a batch, from one product, are each
    ``(x − mean) @ basis``; the classifier is fed the critic's projection only when it is the same one."""
    from cellsynth.nn.blocks import InputProjection, Projected
    from cellsynth.train.views import CellViews

    g = torch.Generator().manual_seed(0)
    genes = 40

    def projection(k: int, shift: float = 0.0) -> InputProjection:
        p = InputProjection(genes, k)
        p.set(torch.rand(genes, generator=g) + shift, torch.linalg.qr(torch.randn(genes, k, generator=g))[0])
        return p

    critic = Projected(projection(6), torch.nn.Identity())
    same = Projected(projection(6), torch.nn.Identity())
    same.projection.set(critic.projection.mean, critic.projection.basis)
    mmd_mean, mmd_basis = (
        torch.rand(genes, generator=g),
        torch.linalg.qr(torch.randn(genes, 4, generator=g))[0],
    )
    x = (3 * torch.rand(9, genes, generator=g)).requires_grad_(True)

    views = CellViews(critic, same, mmd_mean, mmd_basis)
    v = views(x)
    torch.testing.assert_close(v.critic, critic.projection(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v.mmd, (x - mmd_mean) @ mmd_basis, rtol=1e-5, atol=1e-5)
    assert views.classifier_projected and views.critic_kwargs == {"projected": True}
    v.critic.sum().backward()  # the gradient reaches the cells through the product
    torch.testing.assert_close(x.grad, critic.projection.basis.sum(1).expand(9, -1), rtol=1e-5, atol=1e-6)
    alone = views(x, mmd=False)
    assert alone.mmd is None
    torch.testing.assert_close(alone.critic, v.critic.detach(), rtol=1e-5, atol=1e-5)

    # another projection for the classifier: it projects the cells itself
    assert not CellViews(
        critic, Projected(projection(6, 1.0), torch.nn.Identity()), mmd_mean, mmd_basis
    ).classifier_projected
    # a critic in gene space is fed the cells themselves
    genes_critic = CellViews(torch.nn.Identity(), None, mmd_mean, mmd_basis)
    w = genes_critic(x)
    assert w.critic is not None and torch.equal(w.critic, x.float()) and genes_critic.critic_kwargs == {}
    torch.testing.assert_close(w.mmd, (x - mmd_mean) @ mmd_basis, rtol=1e-5, atol=1e-5)
    assert not genes_critic.classifier_projected


@pytest.mark.parametrize("sparse", [True, False])
def test_stored_views_of_real_cells_are_their_batch_views(sparse, monkeypatch):
    """The real cells' views stored once (from their sparse rows when sparse) are what projecting each batch
    gives; they are stored only when the networks see real cells through them alone, on wide batches."""
    import scipy.sparse as sp

    from cellsynth.nn.blocks import InputProjection, Projected
    from cellsynth.train import views as views_module
    from cellsynth.train.views import CellViews

    g = torch.Generator().manual_seed(1)
    genes, cells = 30, 50
    critic = Projected(InputProjection(genes, 5), torch.nn.Identity())

    def orthonormal(k: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(genes, k, generator=g))[0]

    critic.projection.set(torch.rand(genes, generator=g), orthonormal(5))
    mmd_mean, mmd_basis = torch.rand(genes, generator=g), orthonormal(3)
    dense = np.log1p(np.random.default_rng(0).poisson(0.5, (cells, genes))).astype(np.float32)

    class Data:  # the two things of a CellData that the views read
        n_genes, n_cells = genes, cells

        def rows(self, idx):
            return sp.csr_matrix(dense[idx]) if sparse else dense[idx]

    views = CellViews(critic, None, mmd_mean, mmd_basis)
    table = views.of_stored(Data(), np.arange(cells), chunk=16)  # several chunks
    rows = np.array([3, 7, 41, 49])
    stored, batch = views.split(table[rows]), views(torch.from_numpy(dense[rows]))
    torch.testing.assert_close(stored.critic, batch.critic, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stored.mmd, batch.mmd, rtol=1e-5, atol=1e-5)

    assert views.stored(Data(), batch_size=8) is None  # 8 × 30 entries: projected batch by batch
    monkeypatch.setattr(views_module, "STORED_MIN_ENTRIES", 8 * genes)
    torch.testing.assert_close(views.stored(Data(), batch_size=8), table)
    # a classifier behind its own projection needs the cells themselves: nothing stored
    other = Projected(InputProjection(genes, 5), torch.nn.Identity())
    other.projection.set(torch.zeros(genes), orthonormal(5))
    assert CellViews(critic, other, mmd_mean, mmd_basis).stored(Data(), batch_size=8) is None
    assert CellViews(torch.nn.Identity(), None, mmd_mean, mmd_basis).stored(Data(), batch_size=8) is None


def test_a_cgan_trains_on_the_stored_views_of_its_real_cells(monkeypatch):
    from cellsynth import models
    from cellsynth.data.datasets import simulate
    from cellsynth.train import views as views_module
    from cellsynth.train.adversarial import AdversarialPlan

    monkeypatch.setattr(views_module, "STORED_MIN_ENTRIES", 1)
    seen = []
    step = AdversarialPlan.batch_step

    def recording(self, x_real, codes, rows, real_view=None):
        seen.append((x_real is None, real_view is not None))
        return step(self, x_real, codes, rows, real_view)

    monkeypatch.setattr(AdversarialPlan, "batch_step", recording)
    adata = simulate({"a": 60, "b": 40}, n_genes=40, seed=3)
    model = models.get("cgan", epochs=2, g_hidden=(16,), d_hidden=(16,), c_hidden=(16,), z_dim=4)
    model.fit(adata, label_key="cell_type", progress=False)
    assert seen and all(a and b for a, b in seen)  # no real batch densified or projected in a step
    assert all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in model.history)
    assert model.sample(n=20, seed=0).n_obs == 20


def test_the_mmd_noise_is_the_spread_of_the_estimate_between_two_samples_of_one_distribution():
    import torch

    from cellsynth.metrics.distribution import mmd_rbf, mmd_rbf_noise

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(80, 6, generator=gen), torch.randn(90, 6, generator=gen) + 0.5
    value, noise = mmd_rbf_noise(x, y)
    assert value == pytest.approx(mmd_rbf(x, y), rel=1e-9) and value > 5 * noise  # a real difference
    pairs = [(torch.randn(80, 6, generator=gen), torch.randn(90, 6, generator=gen)) for _ in range(120)]
    spread = np.std([mmd_rbf(a, b) for a, b in pairs])
    noises = [mmd_rbf_noise(a, b, seed=i)[1] for i, (a, b) in enumerate(pairs[:20])]
    assert np.mean(noises) == pytest.approx(spread, rel=0.3)


@pytest.mark.parametrize("n", [3, 57, 400])
def test_the_scores_kernel_is_the_differentiable_kernel_to_the_bit(n):
    """Scores (no gradient) build the pooled kernel in place; it must be the training loss's kernel
    exactly (same median bandwidth, same sum over scales, zero diagonal), so a faster validation keeps
    the same states."""
    import torch

    from cellsynth.metrics.distribution import _pooled_kernel

    z = torch.randn(n, 5, generator=torch.Generator().manual_seed(n), dtype=torch.float64) * 3.0
    scales = (0.25, 0.5, 1.0, 2.0, 4.0)
    zg = z.clone().requires_grad_(True)
    differentiable = _pooled_kernel(zg, scales)
    differentiable.sum().backward()  # the training path still carries gradients
    with torch.no_grad():
        score = _pooled_kernel(z, scales)
    assert torch.equal(score, differentiable.detach()) and zg.grad is not None
    d2 = torch.cdist(z, z).pow(2)
    off = ~torch.eye(n, dtype=torch.bool)
    med2 = d2[off].median()
    assert torch.equal(score.diagonal(), torch.zeros(n))
    expected = sum(torch.exp(-d2 / (2 * s * s * med2)) for s in scales)
    torch.testing.assert_close(score[off], expected[off], rtol=0, atol=0)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_moment_match_gradient_in_closed_form_is_autograds(compiled, monkeypatch):
    """On wide batches the per-gene gradient is taken in closed form, one pass over the batch (compiled,
    or eager where compiling is off): the same loss, the same running moments, the same gradient as
    autograd through ``per_gene_path``, for types of many cells, of a few, of one, and rows of no type."""
    from cellsynth.data import fused
    from cellsynth.train import objectives
    from cellsynth.train.objectives import MomentMatch, per_gene_path

    monkeypatch.setattr(objectives, "MIN_ENTRIES", 1000)
    monkeypatch.setattr(fused, "MIN_ENTRIES", 1000)
    monkeypatch.setenv("CELLSYNTH_COMPILE", "1" if compiled else "0")
    g = torch.Generator().manual_seed(0)
    n, genes, types = 64, 300, 5
    target_mean, target_var = torch.rand(types, genes, generator=g), torch.rand(types, genes, generator=g)
    by_autograd, closed = MomentMatch(target_mean, target_var, 0.9), MomentMatch(target_mean, target_var, 0.9)
    taken = []
    monkeypatch.setattr(objectives, "_closed_form", lambda *a: taken.append(1) or True)
    for _ in range(3):  # the running moments carry over steps
        labels = torch.randint(0, 3, (n,), generator=g)
        labels[:3] = 3  # three cells of type 3, one of type 4 (its variance is not matched)
        labels[3] = 4
        w = F.one_hot(labels, types).float()
        w[10:16] = 0  # mixed-label rows weigh nothing
        pre = torch.randn(n, genes, generator=g, requires_grad=True)
        x = pre.detach().relu() + 0.2 * torch.rand(n, genes, generator=g)
        expected = by_autograd(per_gene_path(x, pre), w)
        (grad_expected,) = torch.autograd.grad(2.5 * expected, pre)
        got = closed(x, w, pre)
        (grad_got,) = torch.autograd.grad(2.5 * got, pre)
        torch.testing.assert_close(got, expected)
        torch.testing.assert_close(grad_got, grad_expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(closed.running, by_autograd.running)
        assert (grad_got[10:16] == 0).all() and grad_got.abs().sum() > 0
    assert len(taken) == 3


def test_the_moment_match_takes_its_closed_form_only_on_wide_batches_of_whole_types(monkeypatch):
    from cellsynth.train import objectives

    monkeypatch.setattr(objectives, "MIN_ENTRIES", 1000)
    one_hot = F.one_hot(torch.arange(8) % 3, 3).float()
    one_hot[0] = 0
    assert objectives._closed_form(torch.zeros(8, 200), one_hot)
    assert not objectives._closed_form(torch.zeros(8, 100), one_hot)  # 800 entries: autograd's
    mixed = one_hot.clone()
    mixed[1] = torch.tensor([0.5, 0.5, 0.0])
    assert not objectives._closed_form(torch.zeros(8, 200), mixed)
