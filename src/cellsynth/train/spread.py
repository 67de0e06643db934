"""Spread calibration: each type's within-type covariance along the training cells' principal axes topped up
to its training cells'.

A count decoder fed each type's Gaussian of codes gives cells whose spread within their type, along the
leading principal axes of the training cells, is a fraction of the real cells' (on immune_spectra's CD8 T
cells about 40 % of the variance in the first 30 components, of which the count draw alone gives two
thirds); scaling the codes up does not close the gap, since the decoder saturates. A random forest in a
principal component space splits on exactly those components. After training, this step adds to each
generated cell's log-rates a Gaussian term along the ``rank`` leading axes, ``axes · L[c] ε``, with ``L[c]``
fitted so that the generated cells' covariance there meets the training cells':

1. cells are generated for every type at its training cells' conditions and library sizes (the type's rows
   repeated up to ``min_cells``), with the model's own count draw, and projected on the axes;
2. per type, the deficit is the real covariance less the generated one, shrunk towards the deficit pooled
   over the types by ``cells / (cells + SHRINK_CELLS)`` (a type of a dozen cells estimates a 30 × 30
   covariance poorly), and ``L[c] L[c]ᵀ`` grows by it (its positive semi-definite part);
3. after ``rounds`` such steps (the count draw damps a log-rate term on rarely detected genes, so one step
   falls short), the generated cells are compared with the training cells by the benchmark's detector (a
   random forest in a PCA fitted on both sets, over the same genes), with and without the term; the term is
   kept only if the forest finds the cells harder to tell apart with it. On a dataset whose cells vary
   within a type along discrete sub-populations rather than a continuum (pbmc68k's sorted populations) a
   Gaussian term makes them easier to tell apart, and the check drops it.

Only the spread along the axes is changed: each type's mean log-rate stays (the term has mean zero).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..metrics.detection import classifier_auc
from .calibration import CHUNK

#: principal axes the term moves along, of this many highly variable genes (the others keep no term)
RANK = 30
GENES = 2000
#: cells at which a type's own deficit and the pooled one weigh the same
SHRINK_CELLS = 50.0
#: generated cells per type and round, at least
MIN_CELLS = 300
#: cells per side of the check's forest, at most, and the components of its PCA (the benchmark's)
CHECK_CELLS = 1500
CHECK_COMPONENTS = 50
#: the check's two forests, in seconds: a fixed part (the PCA, the workers' start) and a part per training
#: cell compared, on one thread (docs/benchmarks.md, "Short time budgets")
CHECK_FIXED_SECONDS, CHECK_CELL_SECONDS = 1.0, 3e-3


def leading_axes(real: np.ndarray, representation: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training cells' mean (genes) and RANK principal axes (RANK × genes, zero outside the GENES most
    variable genes; fewer axes than RANK where the data allow fewer are zero rows)."""
    from sklearn.utils.extmath import randomized_svd

    from ..data.preprocess import highly_variable_genes

    n_genes = real.shape[1]
    genes = np.arange(n_genes)
    if n_genes > GENES:
        genes = highly_variable_genes(real, representation, GENES)
    part = real[:, genes].astype(np.float64)
    mean = part.mean(0)
    k = max(1, min(RANK, part.shape[0] - 1, len(genes)))
    _, _, vh = randomized_svd(part - mean, k, random_state=seed)
    full_mean, axes = np.zeros(n_genes), np.zeros((RANK, n_genes))
    full_mean[genes], axes[:k, genes] = mean, vh
    return full_mean, axes


def union_pca_auc(real: np.ndarray, synth: np.ndarray, seed: int) -> float:
    """The benchmark's detector (``detection_auc``) on two sets of equal size: a random forest in a PCA
    (CHECK_COMPONENTS components) fitted on both sets together, the mean AUC over shuffled folds. A PCA of
    one side only is no substitute: in the training cells' own axes a forest separates generated cells that
    the detector finds close (pbmc68k: 0.96 against 0.59)."""
    from sklearn.utils.extmath import randomized_svd

    both = np.concatenate([real, synth]).astype(np.float64)
    both -= both.mean(0)
    k = max(1, min(CHECK_COMPONENTS, both.shape[0] - 1, both.shape[1]))
    _, _, vh = randomized_svd(both, k, random_state=seed)
    coords = both @ vh.T
    threads = torch.get_num_threads()  # the fit's threads; the trees do not depend on them
    return classifier_auc(coords[: len(real)], coords[len(real) :], random_state=seed, n_jobs=threads)


def check_seconds(n_cells: int) -> float:
    """Seconds the check of :func:`calibrate_spread` is expected to take for ``n_cells`` training cells, on
    torch's threads (its forests use them)."""
    cells = min(int(n_cells), CHECK_CELLS)
    return 2 * (CHECK_FIXED_SECONDS + CHECK_CELL_SECONDS * cells / torch.get_num_threads())


def type_covariances(scores: np.ndarray, labels: np.ndarray, n_types: int) -> dict[int, np.ndarray]:
    """Each type's covariance (rank × rank) of ``scores`` (cells × rank), for types with 3 cells or more."""
    return {c: np.cov(scores[labels == c].T) for c in range(n_types) if (labels == c).sum() > 2}


def top_up(
    current: np.ndarray,
    real: dict[int, np.ndarray],
    generated: dict[int, np.ndarray],
    cells: np.ndarray,
) -> np.ndarray:
    """``current`` (types × rank × rank covariances of the term) grown by each type's deficit, real minus
    generated, shrunk towards the pooled deficit; only its positive semi-definite part is kept."""
    deficit = {c: real[c] - generated[c] for c in real if c in generated}
    if not deficit:
        return current
    pooled = sum(cells[c] * d for c, d in deficit.items()) / sum(cells[c] for c in deficit)
    out = current.copy()
    for c, d in deficit.items():
        w = cells[c] / (cells[c] + SHRINK_CELLS)
        grown = current[c] + w * d + (1 - w) * pooled
        values, vectors = np.linalg.eigh(0.5 * (grown + grown.T))
        out[c] = (vectors * np.clip(values, 0.0, None)) @ vectors.T
    return out


def cholesky_factors(cov: np.ndarray) -> np.ndarray:
    """Lower-triangular factors of the types' covariances (a small ridge keeps them defined)."""
    ridge = 1e-6 * np.eye(cov.shape[1])
    return np.stack([np.linalg.cholesky(c + ridge) for c in cov])


@torch.no_grad()
def calibrate_spread(
    generate: Callable[[np.ndarray], torch.Tensor],
    set_term: Callable[[np.ndarray | None], None],
    real: np.ndarray,
    axes: tuple[np.ndarray, np.ndarray],
    rows: np.ndarray,
    labels: np.ndarray,
    n_types: int,
    rounds: int,
    seed: int,
) -> dict:
    """Fit the term, check it, and leave it set (or not); returns a record of what was done.

    ``generate(rows)`` returns cells generated (with the term, once ``set_term`` gave one) for those
    training rows' conditions and library sizes in the training representation; ``set_term(factors)``
    sets each type's lower-triangular factor (types × rank × rank; None removes the term); ``real`` are
    the training cells' values (cells × genes, the rows ``rows``, types ``labels``); ``axes`` the
    training cells' mean (genes) and principal axes (rank × genes).
    """
    mean, components = axes
    rank = components.shape[0]
    labels = np.asarray(labels, dtype=np.int64)
    cells = np.bincount(labels, minlength=n_types)
    real_cov = type_covariances((real - mean) @ components.T, labels, n_types)
    gen_rows = np.concatenate([np.resize(rows[labels == c], max(cells[c], MIN_CELLS)) for c in range(n_types)
                               if cells[c]])  # fmt: skip
    gen_labels = np.concatenate([np.full(max(cells[c], MIN_CELLS), c) for c in range(n_types) if cells[c]])

    genes = np.flatnonzero(np.abs(components).sum(0) > 0)

    def generated(which: np.ndarray, keep: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """``keep`` of the cells generated for rows ``which``, a chunk at a time (only a chunk is dense)."""
        chunks = (generate(which[s : s + CHUNK]).double().cpu().numpy() for s in range(0, len(which), CHUNK))
        return np.concatenate([keep(x) for x in chunks])

    cov = np.zeros((n_types, rank, rank))
    for _ in range(rounds):
        scores = generated(gen_rows, lambda x: (x - mean) @ components.T)
        cov = top_up(cov, real_cov, type_covariances(scores, gen_labels, n_types), cells)
        set_term(cholesky_factors(cov))
    # the check: the benchmark's detector with the training cells as the real side, with the term and without
    rng = np.random.default_rng(seed)
    take = np.sort(rng.permutation(len(rows))[:CHECK_CELLS])
    with_term = union_pca_auc(real[take][:, genes], generated(rows[take], lambda x: x[:, genes]), seed)
    set_term(None)
    without = union_pca_auc(real[take][:, genes], generated(rows[take], lambda x: x[:, genes]), seed)
    kept = with_term < without
    if kept:
        set_term(cholesky_factors(cov))
    return {
        "kept": bool(kept),
        "auc_with": round(float(with_term), 4),
        "auc_without": round(float(without), 4),
        "rounds": rounds,
        "rank": rank,
    }


__all__ = [
    "GENES",
    "RANK",
    "calibrate_spread",
    "check_seconds",
    "cholesky_factors",
    "leading_axes",
    "top_up",
    "union_pca_auc",
    "type_covariances",
]
