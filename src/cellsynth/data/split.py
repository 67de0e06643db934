"""Stratified train/test split of labelled cells (for fitting on one part and evaluating on the other)."""

from __future__ import annotations

import anndata as ad
import numpy as np

from ..errors import InputError
from .stats import stratified_split


def split_by_type(
    adata: ad.AnnData, *, label_key: str, test_fraction: float = 0.5, seed: int = 0
) -> tuple[ad.AnnData, ad.AnnData]:
    """Split cells into TRAIN and TEST, stratified by cell type.

    Each type sends ``round(n × test_fraction)`` of its ``n`` cells to TEST, at least one and never
    all of them; a type with a single cell stays in TRAIN. Cells keep their original order.

    Parameters
    ----------
    adata
        Labelled cells.
    label_key
        ``obs`` column with the cell type.
    test_fraction
        Share of each type's cells in TEST, in (0, 1).
    seed
        Seed of the draw.

    Returns
    -------
    tuple of AnnData
        ``(train, test)``, copies.

    Raises
    ------
    InputError
        A missing label column or a fraction outside (0, 1).
    """
    if label_key not in adata.obs.columns:
        available = ", ".join(map(str, adata.obs.columns[:12])) or "none"
        raise InputError(
            f"obs column {label_key!r} not found (available: {available}); "
            "pass the cell type column with --label-key"
        )
    if not 0 < test_fraction < 1:
        raise InputError(f"--test-fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    labels = adata.obs[label_key]
    if labels.isna().any():
        raise InputError(
            f"obs[{label_key!r}] has {int(labels.isna().sum())} missing values; drop those cells"
        )
    labels = np.asarray(labels.astype(str))
    _, held = stratified_split(labels, test_fraction, np.random.default_rng(seed), rounding="nearest")
    test = np.zeros(adata.n_obs, dtype=bool)
    test[held] = True
    return adata[~test].copy(), adata[test].copy()
