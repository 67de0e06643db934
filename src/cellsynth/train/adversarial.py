"""The one adversarial training loop, on Lightning Fabric.

Every GAN in cellsynth trains here; they differ in their networks and their `AdversarialLoss`.
Per step: a critic update on a fresh real minibatch (with the auxiliary classifier learning the real
labels); every ``loss.d_steps`` critic updates, ``g_steps`` generator updates whose loss is the
adversarial term + the classifier's cross-entropy against the requested (possibly mixed) condition +
a differentiable zero-fraction match + a per-type, per-gene mean and variance match (``MomentMatch``, its
gradient taken to each gene's own pre-activation: ``per_gene_path``).
Minibatches come from tensors (rows of a CSR matrix densified per batch), validation is a multi-bandwidth
MMD in a PCA space of the training cells, the best (EMA) generator is kept, and a time budget or Ctrl-C
stops training cleanly.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from ..data.celldata import CellData
from ..metrics.distribution import mmd2, mmd_rbf
from ..nn.blocks import one_hot_conditions
from .device import make_fabric
from .losses import AdversarialLoss
from .observe import COUNT_NOISE, CountObservation


@dataclass
class TrainSettings:
    """Optimisation settings shared by every adversarial model."""

    epochs: int = 300
    max_minutes: float | None = None
    batch_size: int = 128
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    optimizer: str = "adam"  # adam | rmsprop
    g_steps: int = 1
    grad_clip: float | None = None
    class_weight: float = 1.0
    conditional: bool = True  # False: the networks never see the cell type (GARAGE's unconditional mode)
    sparsity_weight: float = 50.0
    sparsity_temperature: float = 0.1
    moment_weight: float = 0.0  # per-(type, gene) mean and variance match (pull per gene), see MomentMatch
    moment_decay: float = 0.9  # running estimate of the generated moments (per generator step)
    lr_marginal: float | None = None  # learning rate of per-(type, gene) parameters (None: lr_g)
    mmd_weight: float = 5.0
    pack: int = 1  # PacGAN: the critic judges this many cells of one type at a time (see same_label_partners)
    r1_weight: float = 10.0
    mix_prob: float = 0.1
    balance: float = 0.5
    ema_decay: float | None = 0.999
    val_fraction: float = 0.1
    val_min_cells: int = 100  # small data: hold out up to 25% to reach this many validation cells
    val_every_steps: int = 100
    patience: int = 15
    mixed_precision: bool = False
    checkpoint_minutes: float = 2.0
    count_noise: str = "poisson"  # poisson | pln | rounding | none: see train.observe
    extra: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    generator_state: dict
    history: list[dict]
    stopped_because: str
    best_val_mmd: float | None


def split_validation(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split; types too small to spare a cell stay whole in train."""
    train, val = [], []
    for code in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == code))
        k = int(math.floor(fraction * len(idx)))
        val.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


def label_indicator(data: CellData, rows: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """labels × len(rows) sparse one-hot of the rows' labels, and each label's cell count (≥ 1)."""
    codes = data.label.codes[rows]
    onehot = sp.csr_matrix(
        (np.ones(len(rows)), (codes, np.arange(len(rows)))), shape=(data.label.n, len(rows))
    )
    return onehot, np.maximum(np.asarray(onehot.sum(axis=1)).ravel(), 1)


def zero_fraction_by_label(data: CellData, rows: np.ndarray) -> np.ndarray:
    """labels × genes fraction of exact zeros among ``rows`` (computed sparsely)."""
    X = data.X[rows]
    nz = (X != 0) if sp.issparse(X) else sp.csr_matrix(np.asarray(X) != 0)
    onehot, counts = label_indicator(data, rows)
    frac_nonzero = np.asarray((onehot @ nz.astype(np.float64)).todense()) / counts[:, None]
    return (1.0 - frac_nonzero).astype(np.float32)


def principal_axes(
    data: CellData,
    rows: np.ndarray,
    n_comps: int,
    rng: np.random.Generator,
    *,
    within_labels: bool = False,
    max_cells: int = 5000,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal axes of the cells ``rows`` (at most ``max_cells`` of them, drawn with ``rng``), taken
    around their mean or, ``within_labels``, each cell around its type's mean.

    Returns ``(mean, components, sd)``: the cells' overall mean (genes), ``k`` orthonormal axes (k ×
    genes) and the standard deviation along each (k); ``k`` is capped by the data.
    """
    from sklearn.utils.extmath import randomized_svd

    take = rows if len(rows) <= max_cells else rng.choice(rows, max_cells, replace=False)
    take = np.sort(take)
    X = data.dense_rows(take).astype(np.float32, copy=False)
    mean = X.mean(0)
    if within_labels:
        onehot, counts = label_indicator(data, take)
        X = X.copy()
        X -= onehot.T @ ((onehot @ X) / counts[:, None]).astype(np.float32)
    else:
        X = X - mean
    k = max(1, min(n_comps, X.shape[0] - 1, X.shape[1]))
    # randomized SVD seeded from our own generator: a full SVD of 2,000 × 15,000 takes ~10 s here
    _, s, vh = randomized_svd(X, k, random_state=int(rng.integers(2**31)))
    return mean, vh.astype(np.float32), (s / np.sqrt(len(take))).astype(np.float32)


def balanced_row_weights(labels: np.ndarray, balance: float) -> np.ndarray | None:
    """Per-cell sampling probabilities giving each type a mass ∝ n_type^(1 - balance).

    ``balance = 0`` is plain shuffling (None); 1 samples every type equally often. Rare types are seen
    more often without being drawn so often that the generator learns their few cells by heart.
    """
    if not balance:
        return None
    counts = np.bincount(labels)
    w = counts[labels].astype(np.float64) ** (-balance)
    return w / w.sum()


def moments_by_label(data: CellData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels × genes mean and variance of the training representation among ``rows`` (sparse sums)."""
    X = data.X[rows]
    X = sp.csr_matrix(X if sp.issparse(X) else np.asarray(X), dtype=np.float64)
    onehot, n = label_indicator(data, rows)
    mean = np.asarray((onehot @ X).todense()) / n[:, None]
    sq = np.asarray((onehot @ X.multiply(X)).todense()) / n[:, None]
    return mean.astype(np.float32), np.maximum(sq - mean**2, 0).astype(np.float32)


class MomentMatch:
    """Per-(type, gene) mean and variance of generated (observed) cells pulled towards the real ones.

    A squared error of minibatch moments would be biased: with ~10 cells of a type per batch, the
    batch moment's own variance is part of the error, and its gradient shrinks the spread of generated
    cells. Instead a running estimate ``m̄`` of the generated moments (no gradient, ``decay`` per step)
    supplies the residual and the batch supplies the direction: the surrogate ``Σ (m̄ − m*) · m_batch``
    has the gradient of ``½ Σ (m̄ − m*)²`` without the variance term. Types weigh by their share of the
    batch; genes are summed, so the weight is a pull per gene, whatever the number of genes (averaged,
    a 765-gene panel pulled each gene 19× harder than Baron's 14,634 genes and lost its zeros).
    """

    def __init__(self, mean: torch.Tensor, var: torch.Tensor, decay: float):
        self.target = torch.stack([mean, var])  # 2 × labels × genes
        self.running = torch.zeros_like(self.target)
        self.seen = torch.zeros(mean.shape[0], dtype=torch.bool, device=mean.device)
        self.decay = decay
        self.is_var = torch.tensor([False, True], device=mean.device)[:, None, None]
        self.error = 0.0  # share-weighted mean squared residual of the running moments (for the history)

    def __call__(self, x: torch.Tensor, label_w: torch.Tensor) -> torch.Tensor:
        x = x.float()
        mass = label_w.sum(0)
        present = mass > 0
        if not bool(present.any()):
            return torch.zeros((), device=x.device)
        w = label_w[:, present].T.float()  # present labels × cells
        m = mass[present, None]
        mean = (w @ x) / m
        # unbiased within the batch (a label's single cell says nothing about its variance)
        var = ((w @ (x * x)) / m - mean**2) * (m / (m - 1).clamp_min(1e-6)) * (m > 1.5)
        batch = torch.stack([mean, var])
        with torch.no_grad():
            idx = torch.nonzero(present).ravel()
            old = self.running[:, idx]
            first = ~self.seen[idx]
            upd = torch.where(first[None, :, None], batch, self.decay * old + (1 - self.decay) * batch)
            single = (m[:, 0] < 1.5)[None, :, None] & self.is_var
            upd = torch.where(single, old, upd)  # keep the variance estimate of single-cell labels
            self.running[:, idx] = upd
            self.seen[idx] = True
            resid = (upd - self.target[:, idx]) * ~single
            share = (m / m.sum())[None]
            self.error = float((resid.pow(2) * share).sum() / x.shape[1])  # what is logged
        return (resid * batch * share).sum()


def per_gene_path(observed: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """The observed values, with the gradient of each gene going straight to that gene's pre-activation.

    The moment match judges what the critic sees (counts drawn and normalised), but its gradient must
    not take the exact path back: the straight-through count draw and the normalisation by the cell's
    total couple every gene to the most expressed ones, and the sum of thousands of small variance
    residuals then moves the top genes (measured on a pbmc68k model whose FTL, 9% of a monocyte's
    counts, was 1.2 log units low in every type: the adversarial term raised it, the match's exact
    gradient lowered it, through the 764 other genes' variance residuals). Observed log values follow
    the pre-activation one to one where a gene is expressed, so each gene's residual moves that gene,
    and also where relu zeroed it.
    """
    return pre + (observed - pre).detach()


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -(target * F.log_softmax(logits, dim=-1)).sum(-1).mean()


def soft_zero(pre: torch.Tensor, temperature: float, p_zero_observed: torch.Tensor | None = None):
    """Differentiable probability that each generated entry is zero in the output.

    The generator's output is ``relu(pre)``, so an entry is exactly zero when ``pre <= 0``; the soft
    indicator ``sigmoid(-pre / T)`` carries a gradient for both directions (also where relu has none).
    When counts are drawn from the output (``p_zero_observed``: the draw's zero probability), a positive
    entry can still come out zero.
    """
    s = torch.sigmoid(-pre / temperature)
    return s if p_zero_observed is None else s + (1.0 - s) * p_zero_observed


def sparsity_loss(zero_prob: torch.Tensor, label_w: torch.Tensor, target_zero: torch.Tensor):
    """Per-(label, gene) zero-fraction match: the batch's per-label expected zero fraction against the
    real one, weighted by label frequency."""
    mass = label_w.sum(0)  # per label, in this batch
    present = mass > 0
    gen = (label_w.T @ zero_prob)[present] / mass[present, None]
    real = target_zero[present]
    return ((gen - real) ** 2).mean(-1).mul(mass[present] / mass.sum()).sum()


def same_label_partners(labels: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """For each row, another row of the same label (random order within the label, cyclic); a label's
    only row is its own partner.

    PacGAN (Lin et al. 2018) with packing 2: the critic judges a cell together with a second cell of
    its type, so it can see when generated cells of a type are too alike (a generator that only makes
    typical cells passes a critic that sees one cell at a time).
    """
    n = len(labels)
    noise = torch.randperm(n, generator=gen, device=labels.device)
    order = torch.argsort(labels * n + noise)  # by label, randomly within a label
    _, counts = torch.unique_consecutive(labels[order], return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    sizes = torch.repeat_interleave(counts, counts)
    pos = torch.arange(n, device=labels.device)
    nxt = starts + (pos - starts + 1) % sizes
    partner = torch.empty_like(order)
    partner[order] = order[nxt]
    return partner


def train_adversarial(
    generator: nn.Module,
    discriminator: nn.Module,
    classifier: nn.Module | None,
    data: CellData,
    loss: AdversarialLoss,
    settings: TrainSettings,
    *,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    latent_fn: Callable | None = None,
    checkpoint: Callable[[dict, list[dict]], None] | None = None,
) -> TrainResult:
    """Train ``generator`` against ``discriminator`` (and ``classifier``) on ``data``.

    ``generator(z, weights) -> (x, pre)``, ``discriminator(x, weights) -> logits``,
    ``classifier(x) -> list of logits per condition key``. Returns the best generator state (EMA
    weights when enabled) and the per-epoch history. Nothing global is seeded: the numpy and torch
    generators here come from ``seed``. ``latent_fn(weights, rows, gen, device) -> (z, weights, rows)``
    draws the generator's input for a batch whose conditions are ``weights``, paired with real ``rows``
    (whose library sizes the count draw uses); a seeded GAN replaces some rows by seed cells there.
    ``checkpoint(best_state, history)``, when given, is called after
    a validation improvement at most every ``settings.checkpoint_minutes``, so a crash loses little.
    """
    rng = np.random.default_rng(seed)
    fabric = make_fabric(device, mixed_precision=settings.mixed_precision)
    dev = fabric.device
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    sizes = [c.n for c in data.conditions]
    z_dim = generator.z_dim
    if latent_fn is None:

        def latent_fn(weights, rows, g, d):
            return torch.randn(len(rows), z_dim, generator=g, device=d), weights, rows

    observe = None
    if settings.count_noise not in COUNT_NOISE:
        raise ValueError(f"count_noise must be one of {COUNT_NOISE}, got {settings.count_noise!r}")
    if settings.count_noise != "none" and data.library is not None:
        if settings.count_noise == "pln" and getattr(generator, "dispersion", None) is None:
            raise ValueError("count_noise='pln' needs a generator with a dispersion(weights) method")
        observe = CountObservation(settings.count_noise)
        library_all = torch.from_numpy(data.library)
        scale_all = torch.from_numpy(data.scale)

    def observed(x, rows, weights, pre=None, net=generator):
        """What the critic sees of generated ``x`` for cells paired with real ``rows``: (x, soft zeros)."""
        if observe is None:
            zeros = None if pre is None else soft_zero(pre.float(), settings.sparsity_temperature)
            return x, zeros
        phi = net.dispersion(weights) if settings.count_noise == "pln" else None
        x_obs, p0 = observe(x, library_all[rows].to(dev), scale_all[rows].to(dev), gen, phi)
        zeros = None if pre is None else soft_zero(pre.float(), settings.sparsity_temperature, p0)
        return x_obs, zeros

    # early stopping must judge generalisation: with too few held-out cells the score is noise, and a
    # score against training cells rewards reproducing the training sample itself
    fraction = settings.val_fraction
    if settings.val_min_cells and data.n_cells:
        fraction = max(fraction, min(0.25, settings.val_min_cells / data.n_cells))
    train_rows, val_rows = split_validation(data.label.codes, fraction, rng)
    target_zero = torch.from_numpy(zero_fraction_by_label(data, train_rows)).to(dev)
    moments = None
    if settings.moment_weight and settings.conditional:
        mean_t, var_t = moments_by_label(data, train_rows)
        moments = MomentMatch(
            torch.from_numpy(mean_t).to(dev), torch.from_numpy(var_t).to(dev), settings.moment_decay
        )
    codes_all = torch.from_numpy(data.codes)
    pca_mean, pca_axes, _ = principal_axes(data, train_rows, 50, rng)
    pca_mean = torch.from_numpy(pca_mean).to(dev)
    pca_basis = torch.from_numpy(np.ascontiguousarray(pca_axes.T)).to(dev)
    if len(val_rows) >= 50:
        ref_rows = val_rows
    else:  # too few held-out cells for a stable score: compare with a training subsample instead
        ref_rows = rng.choice(train_rows, min(len(train_rows), 1000), replace=False)
    ref_rows = np.sort(ref_rows)
    ref_pcs = (torch.from_numpy(data.dense_rows(ref_rows)).to(dev) - pca_mean) @ pca_basis
    ref_codes = codes_all[ref_rows].to(dev)
    n_val_gen = max(len(ref_rows), 500)
    val_pick = rng.integers(0, len(ref_rows), n_val_gen)
    val_gen_codes = ref_codes[torch.from_numpy(val_pick).to(dev)]
    val_gen_rows = ref_rows[val_pick]
    prior = None
    if not settings.conditional:  # every cell is given the training label frequencies instead of its label
        freq = np.bincount(data.label.codes, minlength=sizes[0]).astype(np.float32)
        prior = torch.from_numpy(freq / freq.sum()).to(dev)

    def as_given(w: list[torch.Tensor]) -> list[torch.Tensor]:
        """The conditions the networks see (the label hidden in unconditional training)."""
        return w if prior is None else [prior.expand(len(w[0]), -1), *w[1:]]

    def make_opt(params, lr):
        # foreach kernels: one launch per group, not per tensor (the CPU default is per tensor)
        if settings.optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr, foreach=True)
        return torch.optim.Adam(params, lr=lr, betas=settings.betas, foreach=True)

    marginal = list(getattr(generator, "marginal_parameters", list)()) if settings.lr_marginal else []
    if marginal:  # per-(type, gene) offsets and dispersions: one Adam step moves each by ~lr in log space
        ids = {id(q) for q in marginal}
        g_params = [
            {"params": [q for q in generator.parameters() if id(q) not in ids]},
            {"params": marginal, "lr": settings.lr_marginal},
        ]
    else:
        g_params = generator.parameters()
    opt_g = make_opt(g_params, settings.lr_g)
    d_params = list(discriminator.parameters()) + (
        list(classifier.parameters()) if classifier is not None else []
    )
    opt_d = make_opt(d_params, settings.lr_d)
    generator_f, opt_g = fabric.setup(generator, opt_g)
    discriminator_f = fabric.setup_module(discriminator)
    classifier_f = fabric.setup_module(classifier) if classifier is not None else None
    opt_d = fabric.setup_optimizers(opt_d)
    ema = None
    if settings.ema_decay:
        ema = torch.optim.swa_utils.AveragedModel(
            generator, multi_avg_fn=_ema_with_warmup(settings.ema_decay), use_buffers=True
        )

    def sampling_net() -> nn.Module:
        return ema.module if ema is not None else generator

    @torch.no_grad()
    def validate() -> float:
        net = sampling_net()
        was = net.training
        net.eval()
        w = one_hot_conditions(val_gen_codes, sizes)
        z, w, rows = latent_fn(w, val_gen_rows, gen, dev)
        w = as_given(w)
        x, _ = net(z, w)
        x, _ = observed(x, rows, w, net=net)
        net.train(was)
        return mmd_rbf((x.float() - pca_mean) @ pca_basis, ref_pcs)

    def fake_conditions(w_real: list[torch.Tensor]) -> list[torch.Tensor]:
        """The real batch's conditions, with a fraction of labels mixed with another cell's label."""
        if settings.mix_prob <= 0 or len(w_real[0]) < 2 or prior is not None:
            return w_real
        b = len(w_real[0])
        mixed = torch.rand(b, generator=gen, device=dev) < settings.mix_prob
        if not bool(mixed.any()):
            return w_real
        partner = torch.randperm(b, generator=gen, device=dev)
        alpha = torch.rand(b, 1, generator=gen, device=dev)
        lab = w_real[0]
        mix = alpha * lab + (1 - alpha) * lab[partner]
        return [torch.where(mixed[:, None], mix, lab), *w_real[1:]]

    steps_per_epoch = max(1, len(train_rows) // settings.batch_size)
    row_p = balanced_row_weights(data.label.codes[train_rows], settings.balance)
    deadline = time.monotonic() + 60 * settings.max_minutes if settings.max_minutes else math.inf
    history: list[dict] = []
    best = {"mmd": math.inf, "state": None, "step": 0}
    stale = 0
    g_step = 0
    d_count = 0
    stopped = "epochs"
    t0 = time.monotonic()
    last_val_step = 0
    last_checkpoint = time.monotonic()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # under a time budget the epoch count is only a cap: show a rate, not a misleading ETA
        total = None if settings.max_minutes else settings.epochs
        bar = tqdm(total=total, desc="training", unit="epoch", leave=False, mininterval=1.0)
    try:
        for epoch in range(settings.epochs):
            if row_p is None:
                perm = rng.permutation(train_rows)
            else:
                perm = rng.choice(train_rows, size=steps_per_epoch * settings.batch_size, p=row_p)
            sums = dict.fromkeys(
                ("d_loss", "g_loss", "class_real", "class_fake", "sparsity", "mmd", "moment"), 0.0
            )
            n_d = n_g = 0
            for b in range(steps_per_epoch):
                rows = np.sort(perm[b * settings.batch_size : (b + 1) * settings.batch_size])
                x_real = torch.from_numpy(data.dense_rows(rows)).to(dev, non_blocking=True)
                codes = codes_all[rows].to(dev)
                w_real = one_hot_conditions(codes, sizes)
                if settings.pack > 1:  # generated row i was drawn for real row i's label: same pairing
                    # unconditional: fake pairs cannot share a hidden label, so real pairs do not either
                    group = codes[:, 0] if prior is None else torch.zeros_like(codes[:, 0])
                    partners = [same_label_partners(group, gen) for _ in range(settings.pack - 1)]

                    def packed(x, partners=partners):
                        return torch.cat([x, *(x[p] for p in partners)], dim=1)
                else:

                    def packed(x):
                        return x

                # ---- critic (+ auxiliary classifier on real cells with their real labels)
                w_fake = fake_conditions(w_real)
                with torch.no_grad():
                    z, w_fake, fake_rows = latent_fn(w_fake, rows, gen, dev)
                    w_fake = as_given(w_fake)
                    x_fake, _ = generator_f(z, w_fake)
                    x_fake, _ = observed(x_fake, fake_rows, w_fake)
                if settings.r1_weight:
                    # the raw module under Fabric's autocast: Fabric forbids autograd.grad via its wrapper
                    x_real.requires_grad_(True)
                    with fabric.autocast():
                        real_logits = discriminator(packed(x_real), as_given(w_real))
                else:
                    real_logits = discriminator_f(packed(x_real), as_given(w_real))
                d_loss = loss.d_loss(real_logits, discriminator_f(packed(x_fake), w_fake))
                if settings.r1_weight:  # R1 (Mescheder et al. 2018): flat critic around real cells
                    (grad,) = torch.autograd.grad(real_logits.float().sum(), x_real, create_graph=True)
                    d_loss = d_loss + 0.5 * settings.r1_weight * grad.float().pow(2).sum(1).mean()
                    x_real = x_real.detach()
                if loss.gradient_penalty:
                    with fabric.autocast():
                        d_loss = d_loss + loss.gradient_penalty * _gradient_penalty(
                            discriminator, packed(x_real), packed(x_fake), as_given(w_real), gen
                        )
                c_loss = torch.zeros((), device=dev)
                if classifier_f is not None:
                    logits = classifier_f(x_real)
                    c_loss = sum(F.cross_entropy(lg, codes[:, k]) for k, lg in enumerate(logits)) / len(
                        logits
                    )
                opt_d.zero_grad(set_to_none=True)
                fabric.backward(d_loss + c_loss)
                if settings.grad_clip:
                    fabric.clip_gradients(discriminator_f, opt_d, max_norm=settings.grad_clip)
                opt_d.step()
                sums["d_loss"] += d_loss.item()
                sums["class_real"] += c_loss.item()
                n_d += 1
                d_count += 1
                if d_count % loss.d_steps:
                    continue

                # ---- generator (critic weights frozen: their gradients would be thrown away)
                _set_requires_grad(d_params, False)
                for _ in range(settings.g_steps):
                    w_fake = fake_conditions(w_real)
                    z, w_fake, fake_rows = latent_fn(w_fake, rows, gen, dev)
                    w_fake = as_given(w_fake)
                    x_fake, pre = generator_f(z, w_fake)
                    x_fake, zeros = observed(x_fake, fake_rows, w_fake, pre)
                    g_loss = loss.g_loss(discriminator_f(packed(x_fake), w_fake))
                    cf = torch.zeros((), device=dev)
                    if classifier_f is not None and settings.class_weight and prior is None:
                        logits = classifier_f(x_fake)
                        cf = sum(soft_cross_entropy(lg, w_fake[k]) for k, lg in enumerate(logits)) / len(
                            logits
                        )
                    sp_loss = torch.zeros((), device=dev)
                    if settings.sparsity_weight and zeros is not None:
                        sp_loss = sparsity_loss(zeros, w_fake[0], target_zero)
                    mmd_loss = torch.zeros((), device=dev)
                    pure = w_fake[0].max(1).values >= 1.0  # mixed-label rows have no real counterpart
                    if prior is not None and settings.mmd_weight:
                        with torch.autocast(device_type=dev.type, enabled=False):
                            mmd_loss = mmd2(
                                (x_fake.float() - pca_mean) @ pca_basis,
                                (x_real.detach() - pca_mean) @ pca_basis,
                            )
                    elif settings.mmd_weight and int(pure.sum()) >= 2:
                        with torch.autocast(device_type=dev.type, enabled=False):
                            mmd_loss = mmd2(
                                (x_fake[pure].float() - pca_mean) @ pca_basis,
                                (x_real.detach()[pure] - pca_mean) @ pca_basis,
                                cond_x=w_fake[0][pure],
                                cond_y=w_real[0][pure],
                                paired=True,
                            )
                    mom_loss = torch.zeros((), device=dev)
                    if moments is not None and int(pure.sum()) >= 2:
                        mom_loss = moments(per_gene_path(x_fake, pre)[pure], w_fake[0][pure])
                        sums["moment"] += moments.error
                    total = (
                        g_loss
                        + settings.class_weight * cf
                        + settings.sparsity_weight * sp_loss
                        + settings.mmd_weight * mmd_loss
                        + settings.moment_weight * mom_loss
                    )
                    opt_g.zero_grad(set_to_none=True)
                    fabric.backward(total)
                    if settings.grad_clip:
                        fabric.clip_gradients(generator_f, opt_g, max_norm=settings.grad_clip)
                    opt_g.step()
                    if ema is not None:
                        ema.update_parameters(generator)
                    sums["g_loss"] += g_loss.item()
                    sums["class_fake"] += cf.item()
                    sums["sparsity"] += sp_loss.item()
                    sums["mmd"] += mmd_loss.item()
                    n_g += 1
                    g_step += 1
                _set_requires_grad(d_params, True)
                if time.monotonic() > deadline:
                    stopped = "time budget"
                    break
            record = {
                "epoch": epoch + 1,
                "g_step": g_step,
                "seconds": round(time.monotonic() - t0, 3),
                "d_loss": sums["d_loss"] / max(n_d, 1),
                "class_loss_real": sums["class_real"] / max(n_d, 1),
                "g_loss": sums["g_loss"] / max(n_g, 1),
                "class_loss_fake": sums["class_fake"] / max(n_g, 1),
                "sparsity_loss": sums["sparsity"] / max(n_g, 1),
                "mmd_loss": sums["mmd"] / max(n_g, 1),
                "moment_loss": sums["moment"] / max(n_g, 1),
            }
            last_epoch = epoch + 1 == settings.epochs or stopped != "epochs"
            if g_step - last_val_step >= settings.val_every_steps or last_epoch:
                last_val_step = g_step
                score = validate()
                record["val_mmd"] = score
                if score < best["mmd"]:
                    best = {"mmd": score, "state": copy.deepcopy(sampling_net().state_dict()), "step": g_step}
                    stale = 0
                    if (
                        checkpoint is not None
                        and time.monotonic() - last_checkpoint >= 60 * settings.checkpoint_minutes
                    ):
                        checkpoint(best["state"], history + [record])
                        last_checkpoint = time.monotonic()
                else:
                    stale += 1
            history.append(record)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(
                    d=f"{record['d_loss']:.3f}",
                    g=f"{record['g_loss']:.3f}",
                    cls=f"{record['class_loss_fake']:.2f}",
                    zero=f"{record['sparsity_loss']:.4f}",
                    mmd=f"{best['mmd']:.4f}",
                )
            if stopped != "epochs":
                break
            if settings.patience and stale >= settings.patience:
                stopped = "early stopping"
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        warnings.warn("training interrupted: keeping the best generator so far", stacklevel=2)
    finally:
        if bar is not None:
            bar.close()
    if best["state"] is None:  # no validation ran (e.g. interrupted in the first epoch)
        best["state"] = copy.deepcopy(sampling_net().state_dict())
    state = {k: v.detach().to("cpu").clone() for k, v in best["state"].items()}
    return TrainResult(state, history, stopped, None if math.isinf(best["mmd"]) else best["mmd"])


def _set_requires_grad(params, flag: bool) -> None:
    for p in params:
        p.requires_grad_(flag)


def _ema_with_warmup(decay: float):
    """EMA whose effective decay ramps up (1/(n+1) at first), so early weights do not linger."""

    def update(averaged, current, num_averaged):
        weight = max(1.0 - decay, 1.0 / (float(num_averaged) + 1.0))
        torch._foreach_lerp_(averaged, current, weight)

    return update


def _gradient_penalty(critic, real, fake, weights, gen):
    eps = torch.rand(len(real), 1, generator=gen, device=real.device)
    mid = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(mid, weights)
    (grad,) = torch.autograd.grad(out.sum(), mid, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()
