"""Mean calibration: each type's mean log-expression of generated cells moved onto its training cells'.

A generator whose cells are counts drawn from a per-type expected profile (a softmax over genes with a
per-(type, gene) offset) can end training with each type's mean log-expression of many genes a few
hundredths off its training cells'. No single gene's error is large, but a random forest in a principal
component space sees their sum as shifts of each type along the middle components. Calibration is a fixed
number of rounds, each one:

1. cells are generated for every type at its training cells' conditions and library sizes (the type's rows
   repeated up to ``min_cells``, so that rare types' means are estimated from enough generated cells, and at
   most ``MAX_CELLS`` of them, evenly spaced), with the model's own sampling noise and count draw;
2. per type and gene, the mean of the generated cells' log-normalised values is compared with the
   training cells' (the training representation on both sides);
3. the type's log-rate offset of the gene moves by ``w · (real − generated) / slope``, where ``slope``
   (the generated mean clipped to [0.05, 1]) approximates the derivative of the mean log-expression
   with respect to the log-rate (equal to the mean for rarely detected genes, to 1 for highly expressed
   ones), and ``w = max(0, 1 − se² / d²)`` (positive-part James–Stein) keeps only the part of a
   difference ``d`` beyond its standard error ``se`` (of the real mean and the generated one: a type
   with few training cells, a gene whose generated values vary widely); each step is clipped to ±2.

The shrinkage keeps calibration from replacing a small systematic error with sampling noise: where the
two means agree within their noise, the offsets do not move.

Rarely expressed genes (``rates``): a gene's mean log-expression tells little where a type's cells hold a
handful of its counts, and each such gene's difference stays within its noise, so the steps above leave it
where training left it, which can be well under its training rate (docs/benchmarks.md, "Rarely expressed
genes calibrated in rates"). Where the model expects fewer than ``RATE_GENES_BELOW`` counts per cell of a
gene in a type, the gene's expected counts are moved, in every round, onto an empirical-Bayes target fixed
in the first one: per type, the genes binned by the model's expected counts ``E``, each bin's ratio of the
training cells' counts ``k`` to ``E`` taken as the prior's mean ``r`` (a bin pools hundreds of genes, so the
shared error is estimated with little noise), and each gene's ratio the gamma–Poisson posterior mean
``(k + a) / (E + a / r)`` with ``a = RATE_PRIOR`` pseudo-counts (a gene with a few counts keeps most of
the prior; one with dozens follows its own counts). The target is fixed in the first round, since a posterior
recomputed about the moved rates would drift to the raw counts.

Only means move: the model's co-expression (which cells are high in which genes together) is untouched.
The statistics used are per-type gene means of the training cells, the same kind as the model's
per-type offsets already hold.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from ..data import draws
from ..data.stats import evenly_spaced
from ..nn.blocks import one_hot_conditions

#: generated cells per type and round, at least (a type's training rows are repeated up to it)
MIN_CELLS = 500
#: ... and at most (evenly spaced rows of a larger type): the standard error of a mean over this many cells is
#: far below any difference worth a step, and a round's time no longer grows with the data
MAX_CELLS = 20_000
MAX_STEP = 2.0  # per round, on the log-rate scale
CHUNK = 512  # cells generated at a time (bounds the cells × genes work arrays)
#: genes a type's cells are expected to hold fewer counts of per cell than this are calibrated in rates
RATE_GENES_BELOW = 0.3
RATE_PRIOR = 4.0  # the gamma prior's shape: the pseudo-counts a gene's own counts are weighed against
RATE_BINS, RATE_BIN_GENES = 20, 50  # a type's rare genes in at most this many bins of at least this many


def type_moments(
    values: Callable[[np.ndarray], torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    rows: np.ndarray,
    labels: np.ndarray,
    n_types: int,
    n_genes: int,
) -> tuple[np.ndarray, ...]:
    """types × genes means and variances of ``values(rows chunk)`` (cells × genes) over each label's rows;
    where ``values`` gives a pair (values, expected counts), the expected counts' means too."""
    sums = torch.zeros(3, n_types, n_genes, dtype=torch.float64)
    paired = False
    for start in range(0, len(rows), CHUNK):
        part = slice(start, start + CHUNK)
        out = values(rows[part])
        paired = isinstance(out, tuple)
        x = (out[0] if paired else out).double().cpu()
        onehot = torch.nn.functional.one_hot(torch.from_numpy(labels[part]), n_types).double()
        sums[0] += onehot.T @ x
        sums[1] += onehot.T @ x.square()
        if paired:
            sums[2] += onehot.T @ out[1].double().cpu()
    counts = np.maximum(np.bincount(labels, minlength=n_types), 1).astype(np.float64)[:, None]
    mean = sums[0].numpy() / counts
    moments = mean, np.maximum(sums[1].numpy() / counts - mean**2, 0.0)
    return (*moments, sums[2].numpy() / counts) if paired else moments


def calibration_cells(labels: np.ndarray, n_types: int, min_cells: int = MIN_CELLS) -> int:
    """Cells generated in each round for training cells of types ``labels``."""
    n = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_types)
    return int(np.clip(n[n > 0], min_cells, max(min_cells, MAX_CELLS)).sum())


def _generated_rows(rows: np.ndarray, size: int) -> np.ndarray:
    """A type's training ``rows`` repeated up to ``size``, or ``size`` of them evenly spaced."""
    return np.resize(rows, size) if len(rows) <= size else evenly_spaced(rows, size)


@torch.no_grad()
def expected_seconds(net, noise, data, rounds: int) -> float:
    """Seconds ``rounds`` of calibration of generator ``net`` (input ``noise(n, generator, device)``) are
    expected to take on the CPU for ``data``: a timed forward and count draw of up to CHUNK cells, scaled
    to the calibration's cells and rounds, × 1.5 for the draw's log-normal factor, the normalisation and
    the sums the probe leaves out (on immune_spectra: 8.6 s estimated without the factor, 12.4 s taken)."""
    rows = np.arange(min(CHUNK, data.n_cells))
    w = one_hot_conditions(torch.from_numpy(data.codes[rows]), [c.n for c in data.conditions])
    library = torch.from_numpy(data.library[rows]).float()[:, None]
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    rho = net(noise(len(rows), gen, "cpu"), w, with_profile=True)[2]
    draws.poisson(rho * library, gen)
    per_cell = (time.perf_counter() - started) / len(rows)
    return 1.5 * rounds * calibration_cells(data.label.codes, data.label.n) * per_cell


@torch.no_grad()
def calibrate_means(
    shift: Callable[[torch.Tensor], None],
    generate: Callable[[np.ndarray], torch.Tensor],
    real: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    labels: np.ndarray,
    n_types: int,
    n_genes: int,
    rounds: int,
    *,
    min_cells: int = MIN_CELLS,
    stop: Callable[[], bool] | None = None,
    pool_bins: int = 0,
    rates: np.ndarray | None = None,
) -> list[float]:
    """Run ``rounds`` of calibration; returns the mean absolute difference (real − generated, over types
    and genes, weighted by training cells) measured at each round, before its step.

    ``shift(delta)`` adds ``delta`` (types × genes, float32) to the generator's per-type log-rate
    offsets; ``generate(rows)`` returns cells generated for those training rows' conditions and library
    sizes in the training representation; ``real`` the training cells' types × genes means and variances
    in it (:func:`~cellsynth.data.stats.moments_by_label`); ``rows`` are the training rows and ``labels``
    their types' codes. ``stop()`` true after a round ends the calibration
    there (a time budget spent). ``pool_bins`` > 0 shrinks each gene's step towards the mean step of the
    type's genes of similar training mean (:func:`pooled_steps`) instead of towards zero. ``rates``: the
    training cells' types × genes mean counts per cell; given, ``generate`` returns a pair (values, expected
    counts) and the rarely expressed genes are moved in rates (:func:`rate_targets`).
    """
    rows, labels = np.asarray(rows), np.asarray(labels, dtype=np.int64)
    n = np.bincount(labels, minlength=n_types)
    m_real, v_real = (np.asarray(a, dtype=np.float64) for a in real)
    # each type's rows repeated up to min_cells (at most MAX_CELLS of them): the generated cells' conditions
    sizes = np.clip(n, min_cells, max(min_cells, MAX_CELLS))
    gen_rows = [_generated_rows(rows[labels == c], sizes[c]) for c in range(n_types) if n[c]]
    gen_labels = [np.full(len(r), c) for c, r in zip(np.flatnonzero(n), gen_rows, strict=True)]
    gen_rows, gen_labels = np.concatenate(gen_rows), np.concatenate(gen_labels)
    n_gen = np.maximum(np.bincount(gen_labels, minlength=n_types), 1)[:, None]
    share = (n / n.sum())[:, None]
    trace, target = [], None
    for _ in range(rounds):
        m_gen, v_gen, *e_gen = type_moments(generate, gen_rows, gen_labels, n_types, n_genes)
        diff = np.where(n[:, None] > 0, m_real - m_gen, 0.0)
        trace.append(float((np.abs(diff) * share).sum() / n_genes))
        se2 = v_real / np.maximum(n, 1)[:, None] + v_gen / n_gen
        slope = np.clip(m_gen, 0.05, 1.0)
        raw, var = diff / slope, se2 / slope**2
        prior = pooled_steps(raw, var, m_real, pool_bins) if pool_bins else np.zeros_like(raw)
        weight = np.clip(1.0 - var / np.maximum((raw - prior) ** 2, 1e-12), 0.0, 1.0)
        step = prior + weight * (raw - prior)
        if rates is not None:
            target = rate_targets(rates, e_gen[0], n) if target is None else target
            rare = np.isfinite(target)
            step[rare] = np.log(target[rare] / np.maximum(e_gen[0][rare], 1e-12))
        step = np.clip(step, -MAX_STEP, MAX_STEP)
        shift(torch.from_numpy(step.astype(np.float32)))
        if stop is not None and stop():
            break
    return trace


def pooled_steps(raw: np.ndarray, var: np.ndarray, m_real: np.ndarray, bins: int) -> np.ndarray:
    """types × genes prior steps: per type, the mean of the raw steps ``raw`` over the genes in the same
    quantile bin (of ``bins``) of training mean ``m_real``, itself shrunk towards zero by its standard error
    (from the steps' variances ``var``); 0 for genes the type's training cells never express. (Not
    weighted by precision: a rare gene's variance falls with its sampled mean, so weights would favour the
    genes sampled low.)

    Shrinking towards zero discards a small error that every rarely detected gene shares (each one within
    its own noise, their sum a shift along the components a forest splits on); pooled over a bin of
    hundreds of genes, that shared error is estimated with little noise and kept (Efron and Morris's
    shrinkage towards a group mean)."""
    prior = np.zeros_like(raw)
    for c in range(raw.shape[0]):
        expressed = np.flatnonzero(m_real[c] > 0)
        if len(expressed) < bins:
            continue
        order = expressed[np.argsort(m_real[c, expressed], kind="stable")]
        for part in np.array_split(order, bins):
            mean, se2 = raw[c, part].mean(), var[c, part].mean() / len(part)
            prior[c, part] = mean * max(0.0, 1.0 - se2 / max(mean**2, 1e-12))
    return prior


def rate_targets(real: np.ndarray, expected: np.ndarray, n: np.ndarray) -> np.ndarray:
    """types × genes targets of the expected counts per cell of the genes a type's cells are expected to
    hold fewer than RATE_GENES_BELOW counts of (NaN elsewhere, and for types without training cells).

    ``real``: the training cells' mean counts per cell, ``expected``: the model's, ``n``: training cells
    per type. Per type, the genes are binned (quantiles of the model's expected counts, so that a bin is
    not chosen by the training counts' own noise); a bin's ratio ``r`` of training to expected counts is
    the prior mean of its genes' ratios, and a gene's target is its expected counts times the gamma–Poisson
    posterior mean ratio ``(k + a) / (E + a / r)`` (``k``, ``E``: the type's training and expected counts of
    the gene summed over its cells; ``a`` = RATE_PRIOR)."""
    target = np.full(expected.shape, np.nan)
    for c in np.flatnonzero(n > 0):
        low = np.flatnonzero(expected[c] < RATE_GENES_BELOW)
        if len(low) == 0:
            continue
        k, e = real[c] * n[c], expected[c] * n[c]
        order = low[np.argsort(e[low], kind="stable")]
        for part in np.array_split(order, max(1, min(RATE_BINS, len(low) // RATE_BIN_GENES))):
            prior = (k[part].sum() + 1.0) / (e[part].sum() + 1.0)  # +1: a bin of zeros has a finite ratio
            ratio = (k[part] + RATE_PRIOR) / (e[part] + RATE_PRIOR / prior)
            target[c, part] = expected[c, part] * ratio
    return target


__all__ = [
    "calibrate_means",
    "calibration_cells",
    "expected_seconds",
    "pooled_steps",
    "rate_targets",
    "type_moments",
]
