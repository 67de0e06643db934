"""Objectives of training: every loss term a generator is trained with besides the adversarial loss
(:mod:`.losses`).

The terms: the auxiliary classifier's soft cross-entropy, the zero-fraction (sparsity) match, the
per-(type, gene) moment match, the conditional MMD in the critic's PCA space, and the critic's
regularisers (R1 and the WGAN gradient penalty).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from ..data.fused import MIN_ENTRIES, Fused
from ..metrics.distribution import mmd2


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

    def __call__(
        self, x: torch.Tensor, label_w: torch.Tensor, pre: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The surrogate loss of generated ``x`` with type weights ``label_w``; with ``pre``, its gradient
        goes to ``pre``, each gene's to that gene (:func:`per_gene_path`). On a wide CPU batch with one-hot
        (or zero) rows, that gradient is taken in closed form, one compiled pass over the batch instead of
        the products' backward (the same gradient; docs/benchmarks.md, "A training step of the default
        model")."""
        closed = pre is not None and pre.requires_grad and _closed_form(x, label_w)
        if closed:
            x = x.detach()
        elif pre is not None:
            x = per_gene_path(x, pre)
        x = x.float()
        mass = label_w.sum(0)
        present = mass > 0
        if not bool(present.any()):
            return torch.zeros((), device=x.device)
        w = label_w[:, present].T.float()  # present labels × cells
        m = mass[present, None]
        mean = (w @ x) / m
        # unbiased within the batch (a label's single cell says nothing about its variance)
        unbiased = (m / (m - 1).clamp_min(1e-6)) * (m > 1.5)
        var = ((w @ (x * x)) / m - mean**2) * unbiased
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
        loss = (resid * batch * share).sum()
        if not closed:
            return loss
        # d loss / d x[i] for a cell of type t: g_mean[t] / m + g_var[t] · unbiased · 2 (x[i] − mean[t]) / m
        g_mean, g_var = resid[0] * share[0], resid[1] * share[0]
        offset = (g_mean - 2 * g_var * unbiased * mean) / m
        slope = 2 * g_var * unbiased / m
        return _ByCell.apply(pre, loss, x, offset, slope, w.T.argmax(1), w.sum(0) > 0)


def _closed_form(x: torch.Tensor, label_w: torch.Tensor) -> bool:
    """Whether the moment match's gradient is taken in closed form: wide CPU batches (small fits, the
    pinned outputs among them, keep autograd's arithmetic), each row one type's or none."""
    if x.device.type != "cpu" or x.numel() < MIN_ENTRIES:
        return False
    return bool(((label_w == 0) | (label_w == 1)).all() and (label_w.sum(1) <= 1).all())


def _by_cell_gradient(x, types, counted, offset, slope):
    """Each cell's gradient: its type's ``offset + slope · x`` (zero for a cell of no type)."""
    return (offset[types] + slope[types] * x) * counted[:, None]


_BY_CELL_GRADIENT = Fused(_by_cell_gradient, grad_only=False)


class _ByCell(torch.autograd.Function):
    """``loss`` (its value, computed without a graph) with the gradient to ``pre`` given in closed form,
    per cell from its type's row: ``offset[t] + slope[t] · x``."""

    @staticmethod
    def forward(ctx, pre, loss, x, offset, slope, types, counted):
        ctx.save_for_backward(x, offset, slope, types, counted)
        ctx.dtype = pre.dtype
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        x, offset, slope, types, counted = ctx.saved_tensors
        by_cell = _BY_CELL_GRADIENT(x, types, counted, offset, slope)
        return (grad * by_cell).to(ctx.dtype), None, None, None, None, None, None


def per_gene_path(observed: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """The observed values, with the gradient of each gene going straight to that gene's pre-activation.

    The moment match judges what the critic sees (counts drawn and normalised), but its gradient must
    not take the exact path back: the straight-through count draw and the normalisation by the cell's
    total couple every gene to the most expressed ones, so the sum of thousands of small variance
    residuals of other genes would move the top genes (docs/design-notes.md, "The gradient path: per
    gene"). Observed log values follow the pre-activation one to one where a gene is expressed, so each
    gene's residual moves that gene, and also where relu zeroed it.
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
    if p_zero_observed is None:
        return torch.sigmoid(-pre / temperature)
    return _OBSERVED_ZERO(pre, p_zero_observed, temperature=temperature)


def _observed_zero(pre: torch.Tensor, p_zero_observed: torch.Tensor, *, temperature: float) -> torch.Tensor:
    s = torch.sigmoid(-pre / temperature)
    return s + (1.0 - s) * p_zero_observed


_OBSERVED_ZERO = Fused(_observed_zero)  # one pass forward and one backward over a large batch (data.fused)


def sparsity_loss(zero_prob: torch.Tensor, label_w: torch.Tensor, target_zero: torch.Tensor):
    """Per-(label, gene) zero-fraction match: the batch's per-label expected zero fraction against the
    real one, weighted by label frequency."""
    mass = label_w.sum(0)  # per label, in this batch
    present = mass > 0
    gen = (label_w.T @ zero_prob)[present] / mass[present, None]
    real = target_zero[present]
    return ((gen - real) ** 2).mean(-1).mul(mass[present] / mass.sum()).sum()


def conditional_mmd(
    pc_fake: torch.Tensor,
    pc_real: torch.Tensor,
    w_fake: torch.Tensor,
    w_real: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """MMD between generated and real cells' principal components (float32), each compared only with
    cells of its type.

    Row ``i`` of ``pc_fake`` was generated for the conditions of real row ``i`` (``paired``); only the
    rows ``keep`` (a mask) count, selected after the projection (cheaper than selecting gene rows, and
    so is its gradient).
    """
    with torch.autocast(device_type=pc_fake.device.type, enabled=False):
        if keep is not None:
            pc_fake, pc_real, w_fake, w_real = pc_fake[keep], pc_real[keep], w_fake[keep], w_real[keep]
        return mmd2(pc_fake, pc_real, cond_x=w_fake, cond_y=w_real, paired=True)


def r1_penalty(real_logits: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): the squared gradient norm of the critic at real cells (a flat critic
    around the data); ``x_real`` must require grad and ``real_logits`` be computed from it."""
    (grad,) = torch.autograd.grad(real_logits.float().sum(), x_real, create_graph=True)
    return 0.5 * grad.float().pow(2).sum(1).mean()


def gradient_penalty(critic, real, fake, weights, gen):
    """WGAN-GP (Gulrajani et al. 2017): the critic's gradient norm pulled to 1 between real and fake."""
    eps = torch.rand(len(real), 1, generator=gen, device=real.device)
    mid = (eps * real + (1 - eps) * fake).requires_grad_(True)
    out = critic(mid, weights)
    (grad,) = torch.autograd.grad(out.sum(), mid, create_graph=True)
    return ((grad.norm(2, dim=1) - 1) ** 2).mean()


def mix_labels(w: list[torch.Tensor], prob: float, gen: torch.Generator | None = None) -> list[torch.Tensor]:
    """Conditions ``w`` (one weight matrix per key) with a share ``prob`` of the rows' labels (the first
    key) mixed with another row's: ``α · label + (1 − α) · other``, α uniform (label mixing)."""
    b = len(w[0])
    if prob <= 0 or b < 2:
        return w
    dev = w[0].device
    mixed = torch.rand(b, generator=gen, device=dev) < prob
    if not bool(mixed.any()):
        return w
    partner = torch.randperm(b, generator=gen, device=dev)
    alpha = torch.rand(b, 1, generator=gen, device=dev)
    lab = w[0]
    mix = alpha * lab + (1 - alpha) * lab[partner]
    return [torch.where(mixed[:, None], mix, lab), *w[1:]]


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
