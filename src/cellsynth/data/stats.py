"""Statistics of the training data, computed sparsely: what training needs to know about the cells.

Everything here reads a :class:`~cellsynth.data.CellData` (or plain labels) and returns numpy arrays:
the stratified split, the label indicator, per-type moments, zero fractions, mean profiles and count
dispersions, and principal axes. The training plans and the models' initialisations take them from
here; none of them changes the data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:  # pragma: no cover
    from .celldata import CellData


def stratified_split(
    labels: np.ndarray,
    fraction: float,
    rng: np.random.Generator,
    *,
    rounding: str = "floor",
    order_keys: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split cells into a kept and a held-out part, type by type.

    Each type's cells are put in a random order (``rng``) or, with ``order_keys``, in the order of their
    keys (a split that does not depend on the row order), and the first ``k`` are held out:
    ``rounding="floor"``: ``k = floor(fraction × n)``, so a type too small to spare a cell stays whole;
    ``rounding="nearest"``: ``k`` is ``fraction × n`` rounded half up, at least one and never all cells,
    a type of one cell staying whole.

    Returns
    -------
    ``(kept, held)``: sorted row indices.
    """
    if rounding not in ("floor", "nearest"):
        raise ValueError(f"rounding must be 'floor' or 'nearest', got {rounding!r}")
    labels = np.asarray(labels)
    kept, held = [], []
    for code in np.unique(labels):
        idx = np.flatnonzero(labels == code)
        idx = (
            idx[np.argsort(order_keys[idx], kind="stable")]
            if order_keys is not None
            else rng.permutation(idx)
        )
        n = len(idx)
        if rounding == "floor":
            k = int(math.floor(fraction * n))
        else:
            k = 0 if n < 2 else int(np.clip(math.floor(n * fraction + 0.5), 1, n - 1))
        held.append(idx[:k])
        kept.append(idx[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def split_validation(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation split; types too small to spare a cell stay whole in train."""
    return stratified_split(labels, fraction, rng)


def label_indicator(data: CellData, rows: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """labels × len(rows) sparse one-hot of the rows' labels, and each label's cell count (≥ 1)."""
    codes = data.label.codes[rows]
    onehot = sp.csr_matrix(
        (np.ones(len(rows)), (codes, np.arange(len(rows)))), shape=(data.label.n, len(rows))
    )
    return onehot, np.maximum(np.asarray(onehot.sum(axis=1)).ravel(), 1)


def zero_fraction_by_label(data: CellData, rows: np.ndarray) -> np.ndarray:
    """labels × genes fraction of exact zeros among ``rows`` (computed sparsely, block by block)."""
    onehot, counts = label_indicator(data, rows)
    nonzero = np.zeros((data.label.n, data.n_genes))
    for part, X in data.row_blocks(rows):
        nz = (X != 0) if sp.issparse(X) else sp.csr_matrix(np.asarray(X) != 0)
        nonzero += np.asarray((onehot[:, part] @ nz.astype(np.float64)).todense())
    return (1.0 - nonzero / counts[:, None]).astype(np.float32)


def _csr(X) -> sp.csr_matrix:
    """Rows as stored (:meth:`CellData.row_blocks`) as a float64 CSR matrix (a dense input converted)."""
    return sp.csr_matrix(X if sp.issparse(X) else np.asarray(X), dtype=np.float64)


def moments_by_label(data: CellData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels × genes mean and variance of the training representation among ``rows`` (sparse sums)."""
    onehot, n = label_indicator(data, rows)
    sums = np.zeros((2, data.label.n, data.n_genes))
    for part, block in data.row_blocks(rows):
        X, w = _csr(block), onehot[:, part]
        sums[0] += np.asarray((w @ X).todense())
        sums[1] += np.asarray((w @ X.multiply(X)).todense())
    mean = sums[0] / n[:, None]
    sq = sums[1] / n[:, None]
    return mean.astype(np.float32), np.maximum(sq - mean**2, 0).astype(np.float32)


def count_means_by_label(data: CellData, rows: np.ndarray) -> np.ndarray:
    """labels × genes mean counts per cell among ``rows`` of count input (the training representation's
    normalisation undone: ``expm1(x) / scale``; sparse sums)."""
    if data.scale is None:
        raise ValueError("count means need count input (the cells' normalisation factors)")
    onehot, n = label_indicator(data, rows)
    total = np.zeros((data.label.n, data.n_genes))
    for part, block in data.row_blocks(rows):
        X = _csr(block)
        X.data = np.expm1(X.data)
        counts = sp.diags(1.0 / np.asarray(data.scale[rows[part]], dtype=np.float64)) @ X
        total += np.asarray((onehot[:, part] @ counts).todense())
    return total / n[:, None]


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


def evenly_spaced(rows: np.ndarray, size: int) -> np.ndarray:
    """``size`` of ``rows`` at evenly spaced positions (first and last included); all of them if fewer."""
    if len(rows) <= size:
        return rows
    return rows[np.linspace(0, len(rows) - 1, size).round().astype(np.int64)]


def per_type_rows(labels: np.ndarray, cap: int) -> np.ndarray:
    """Sorted rows with at most ``cap`` cells of each type (:func:`evenly_spaced` among a larger type's)."""
    if np.bincount(labels).max(initial=0) <= cap:
        return np.arange(len(labels))
    return np.sort(
        np.concatenate([evenly_spaced(np.flatnonzero(labels == c), cap) for c in np.unique(labels)])
    )


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


def label_mean_profile(data) -> np.ndarray:
    """labels × genes: each type's mean expression in the training representation.

    For log1p data (incl. normalised counts) the mean is taken on the linear scale and logged again
    (``log1p(mean(expm1(x)))``): the log of the type's average profile, which is what count draws
    from a generated profile reproduce on average.
    """
    codes = data.label.codes
    log_scale = data.preprocessing.representation in ("counts", "log1p")
    out = np.zeros((data.label.n, data.n_genes), dtype=np.float32)
    for c in range(data.label.n):
        rows = np.flatnonzero(codes == c)
        if len(rows) == 0:
            continue
        if not sp.issparse(data.X):
            part = np.asarray(data.X[rows], dtype=np.float64)
            mean = (np.expm1(part) if log_scale else part).mean(0)
        else:
            mean, total = None, np.zeros(data.n_genes)
            for where, part in data.row_blocks(rows):  # a fresh copy of the rows each
                if log_scale:
                    np.expm1(part.data, out=part.data)
                if where == slice(None):  # every row in one block
                    mean = np.asarray(part.mean(0)).ravel()
                else:  # a type of many cells (on disk): summed block by block
                    total += np.asarray(part.sum(0), dtype=np.float64).ravel()
            mean = total / len(rows) if mean is None else mean
        out[c] = np.log1p(mean) if log_scale else mean
    return out


def within_type_axes(data, n_comps: int, seed: int = 0, max_cells: int = 5000):
    """Principal axes (k × genes) and standard deviations (k) of the cells around their type means."""
    rows = np.arange(data.n_cells)
    rng = np.random.default_rng(seed)
    _, components, sd = principal_axes(data, rows, n_comps, rng, within_labels=True, max_cells=max_cells)
    return components, sd


def label_dispersion(data, floor: float = 1e-3, cap: float = 1e2) -> np.ndarray | None:
    """labels × genes over-dispersion φ of each type's counts (method of moments).

    With per-cell library sizes L_i and a type profile p, counts have mean L_i·p and variance
    L_i·p + φ·(L_i·p)²; φ = (Σ(y − L_i p)² − Σ L_i p) / Σ (L_i p)², clipped to [floor, cap]. Computed
    from sparse sums (Σy, Σy², Σ L·y), so no type's matrix is densified. None unless the data are
    counts (``data.library`` set).
    """
    if data.library is None:
        return None
    codes = data.label.codes
    out = np.full((data.label.n, data.n_genes), 0.1, dtype=np.float32)
    for c in range(data.label.n):
        rows = np.flatnonzero(codes == c)
        if len(rows) < 2:
            continue
        lib = data.library[rows].astype(np.float64)
        s1, s2, sl = (np.zeros(data.n_genes) for _ in range(3))
        for part, block in data.row_blocks(rows):  # sums over the type's cells, block by block
            y = sp.csr_matrix(block, dtype=np.float64)
            np.expm1(y.data, out=y.data)
            y = sp.diags(1.0 / data.scale[rows[part]].astype(np.float64)) @ y  # back to counts
            s1 += np.asarray(y.sum(0)).ravel()
            s2 += np.asarray(y.multiply(y).sum(0)).ravel()
            sl += np.asarray(y.T @ lib[part]).ravel()
        p = s1 / lib.sum()
        # Σ(y − Lp)² = Σy² − 2pΣLy + p²ΣL²;  Σ Lp = p ΣL;  Σ(Lp)² = p² ΣL²
        num = s2 - 2 * p * sl + p**2 * (lib**2).sum() - p * lib.sum()
        den = p**2 * (lib**2).sum()
        phi = np.divide(num, den, out=np.full_like(num, 0.1), where=den > 0)
        out[c] = np.clip(phi, floor, cap)
    return out
