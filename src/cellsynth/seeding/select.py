"""Seed-cell selection: score cells (GAT attention, an LSH subsample or at random) and take the top λ·n.

Seeds are the real cells GARAGE (and LSH-GAN) mix into the generator's input batch. The selection
depends on the cells, not on the order of the rows: the score of a cell comes from the graph and the
network (GAT), from its bucket (LSH); held-out nodes and tie-breaks are keyed by cell name.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from ..errors import InputError

Method = Literal["gat", "lsh", "random"]
METHODS = ("gat", "lsh", "random")


@dataclass
class SeedSelection:
    """The outcome of a seed selection: per-cell scores, the chosen cells and how they were chosen."""

    scores: np.ndarray
    is_seed: np.ndarray
    method: str
    leakage: float
    rare_types: list[str]
    details: dict = field(default_factory=dict)

    def record(self) -> dict:
        """JSON-able description (for ``uns`` and model configs); without the per-cell arrays."""
        d = asdict(self)
        d.pop("scores")
        d.pop("is_seed")
        d["n_seeds"] = int(self.is_seed.sum())
        return d


def name_keys(names, seed: int) -> np.ndarray:
    """A uniform [0, 1) number per cell name: the same for the same name wherever its row is."""
    out = np.empty(len(names), dtype=np.float64)
    salt = str(seed).encode()
    for i, name in enumerate(names):
        h = hashlib.blake2b(str(name).encode(), digest_size=8, key=salt).digest()
        out[i] = int.from_bytes(h, "little") / 2.0**64
    return out


def choose_seeds(
    scores: np.ndarray,
    codes: np.ndarray,
    leakage: float,
    *,
    min_per_type: int = 0,
    tie_break: np.ndarray | None = None,
) -> np.ndarray:
    """The top ``ceil(leakage · n)`` cells by score, after each type's quota of ``min_per_type`` seeds.

    Quotas are filled smallest type first, so when the budget is too small for every type the rare
    ones come first; each type's quota takes that type's best-scoring cells. Ties are broken by
    ``tie_break`` (e.g. :func:`name_keys`), never by row position. Returns a boolean mask.
    """
    if not 0.0 <= leakage <= 1.0:
        raise InputError(f"leakage must lie in [0, 1], got {leakage}")
    n = len(scores)
    budget = int(math.ceil(leakage * n - 1e-9))
    chosen = np.zeros(n, dtype=bool)
    if budget == 0:
        return chosen
    tb = np.zeros(n) if tie_break is None else np.asarray(tie_break, dtype=np.float64)
    order = np.lexsort((tb, -np.asarray(scores, dtype=np.float64)))  # best first
    if min_per_type > 0:
        types, counts = np.unique(codes, return_counts=True)
        for t in types[np.argsort(counts, kind="stable")]:
            if chosen.sum() >= budget:
                break
            members = order[codes[order] == t]
            take = min(min_per_type, len(members), budget - int(chosen.sum()))
            chosen[members[:take]] = True
    rest = order[~chosen[order]][: budget - int(chosen.sum())]
    chosen[rest] = True
    return chosen


def lsh_subsample(features: np.ndarray, size: int, *, n_projections: int = 8, seed: int = 0) -> np.ndarray:
    """LSH-GAN's subsample (Lall et al. 2022): a cell is kept, and its near neighbours discarded.

    Cells are hashed with p-stable LSH (Datar et al. 2004: ``n_projections`` random directions, each cut
    into bins of a width relative to the projection's standard deviation, with a random offset; a bucket
    is the tuple of bins). Visiting the cells in row order, an unvisited cell is kept and every cell of
    its bucket (its near neighbours) is marked visited, so one cell per bucket remains. The bins are made
    finer (their width halved from 4 standard deviations) until at least ``size`` cells are kept, or no
    finer hashing separates more cells.

    Returns
    -------
    numpy.ndarray
        A boolean mask of the kept cells.
    """
    rng = np.random.default_rng(seed)
    X = np.asarray(features, dtype=np.float64)
    proj = X @ rng.standard_normal((X.shape[1], n_projections))
    proj /= proj.std(0).clip(1e-12)
    offset = rng.random(n_projections)
    kept = np.zeros(len(X), dtype=bool)
    width, last = 4.0, -1
    while True:
        bins = np.floor(proj / width + offset).astype(np.int64)
        # the first cell of each bucket in row order is the one kept; its bucket-mates are discarded
        _, first = np.unique(bins, axis=0, return_index=True)
        if len(first) >= size or len(first) == last or width < 1e-3:
            kept[first] = True
            return kept
        last, width = len(first), width / 2


def rare_threshold_from(labels: np.ndarray) -> int:
    """Default rare threshold (in cells): the largest type the evaluation suite calls rare."""
    from ..metrics.biology import rare_types

    rare = rare_types(labels)
    if not rare:
        return 0
    types, counts = np.unique(np.asarray(labels).astype(str), return_counts=True)
    return int(max(counts[types == r][0] for r in rare))


def select_seeds(
    features: np.ndarray,
    labels: np.ndarray,
    names,
    *,
    method: Method = "gat",
    leakage: float = 0.2,
    k: int = 5,
    rare_threshold: int | None = None,
    min_per_type: int = 2,
    gat: dict | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> SeedSelection:
    """Score and choose seeds among cells given as a feature matrix (e.g. a PCA) with labels and names.

    The array-level core of :func:`select_seed_cells` (which GARAGE calls on its training data).
    """
    if method not in METHODS:
        raise InputError(f"unknown seed selection method {method!r}; use one of {', '.join(METHODS)}")
    labels = np.asarray(labels).astype(str)
    keys = name_keys(names, seed)
    # one canonical row order (by hashed cell name): shuffling the input's rows changes nothing
    order = np.argsort(keys, kind="stable")
    if not np.array_equal(order, np.arange(len(order))):
        sel = select_seeds(
            np.asarray(features)[order], labels[order], np.asarray(names)[order], method=method,
            leakage=leakage, k=k, rare_threshold=rare_threshold, min_per_type=min_per_type, gat=gat,
            device=device, seed=seed, progress=progress,
        )  # fmt: skip
        back = np.empty_like(order)
        back[order] = np.arange(len(order))
        sel.scores, sel.is_seed = sel.scores[back], sel.is_seed[back]
        return sel
    cats, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes)
    if rare_threshold is None:
        rare_threshold = rare_threshold_from(labels)
    rare_types = [str(c) for c, m in zip(cats, counts, strict=True) if m <= rare_threshold]
    rare = np.isin(labels, rare_types)
    details: dict = {"rare_threshold": int(rare_threshold), "min_per_type": int(min_per_type)}
    if method == "gat":
        from .attention import train_gat_scores
        from .graph import knn_graph

        edge_index = knn_graph(features, k)
        opts = dict(gat or {})
        result = train_gat_scores(
            features,
            edge_index,
            codes,
            rare=rare,
            device=device,
            seed=seed,
            progress=progress,
            node_keys=keys,
            **opts,
        )
        scores = result.scores
        details.update(
            k=int(k),
            n_edges=int(edge_index.shape[1]),
            gat_epochs=result.epochs,
            gat_val_accuracy=result.val_accuracy,
            gat_val_balanced_accuracy=result.val_balanced_accuracy,
            **{f"gat_{key}": value for key, value in opts.items()},
        )
    elif method == "lsh":
        size = int(math.ceil(leakage * len(labels) - 1e-9))
        scores = lsh_subsample(features, size, seed=seed).astype(np.float64)  # kept cells first
    else:
        scores = np.random.default_rng(seed).random(len(labels))
    is_seed = choose_seeds(scores, codes, leakage, min_per_type=min_per_type, tie_break=keys)
    details["seeds_per_type"] = {str(c): int(is_seed[codes == i].sum()) for i, c in enumerate(cats)}
    return SeedSelection(scores, is_seed, method, float(leakage), rare_types, details)


def select_seed_cells(
    adata,
    *,
    label_key: str = "cell_type",
    method: Method = "gat",
    leakage: float = 0.2,
    k: int = 5,
    use_rep: str | None = None,
    n_comps: int = 50,
    rare_threshold: int | None = None,
    min_per_type: int = 2,
    layer: str | None = None,
    gat: dict | None = None,
    key_added: str = "seed",
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> SeedSelection:
    """Choose seed cells of ``adata`` and write ``obs[f"{key_added}_score"]`` and ``obs[f"is_{key_added}"]``.

    Parameters
    ----------
    adata
        Cells × genes; counts are normalised (1e4) and log1p-transformed as for training.
    label_key
        ``obs`` column with the cell type.
    method
        ``"gat"`` (GARAGE: attention of a graph attention network trained to classify types on the
        kNN graph), ``"lsh"`` (LSH-GAN's locality-sensitive hashing) or ``"random"``.
    leakage
        λ, the fraction of cells to choose (``ceil(λ·n)``); 0 chooses none.
    k
        Neighbours per cell in the kNN graph.
    use_rep
        ``obsm`` key of the features to use; default a ``n_comps`` PCA of the training representation.
        ``"X"`` uses the full (normalised) matrix.
    rare_threshold
        Types with at most this many cells are rare (class-weighted loss, quotas first); default: the
        largest type the evaluation suite calls rare (fewer than 5% of cells).
    min_per_type
        Every type gets at least this many seeds (or all its cells), rare types first.
    gat
        Options for the GAT (``hidden``, ``heads``, ``n_layers``, ``dropout``, ``lr``, ``max_epochs``,
        ``patience``, ``rare_feature_weight``).
    seed
        Seeds the network, the held-out nodes and the tie-breaks.

    Returns
    -------
    SeedSelection
        Also recorded (without the arrays) in ``uns[key_added + "_selection"]``.
    """
    from ..data.celldata import CellData

    # the features too are computed in the canonical order, so that they do not depend on the rows'
    order = np.argsort(name_keys(adata.obs_names, seed), kind="stable")
    view = adata[order]
    data = CellData.from_anndata(view, label_key=label_key, layer=layer)
    features_sorted = training_features(data, use_rep=use_rep, adata=view, n_comps=n_comps, seed=seed)
    features = np.empty_like(features_sorted)
    features[order] = features_sorted
    sel = select_seeds(
        features,
        np.asarray(adata.obs[label_key]).astype(str),
        adata.obs_names,
        method=method,
        leakage=leakage,
        k=k,
        rare_threshold=rare_threshold,
        min_per_type=min_per_type,
        gat=gat,
        device=device,
        seed=seed,
        progress=progress,
    )
    adata.obs[f"{key_added}_score"] = sel.scores
    adata.obs[f"is_{key_added}"] = sel.is_seed
    adata.uns[f"{key_added}_selection"] = sel.record()
    return sel


def training_features(data, *, use_rep: str | None = None, adata=None, n_comps: int = 50, seed: int = 0):
    """Features for the graph: ``obsm[use_rep]``, the full matrix (``"X"``) or a PCA of ``data.X``."""
    import scipy.sparse as sp

    if use_rep == "X":
        X = data.X
        return X.toarray() if sp.issparse(X) else np.asarray(X)
    if use_rep is not None:
        if adata is None or use_rep not in adata.obsm:
            raise InputError(f"use_rep={use_rep!r} is not in adata.obsm; available: {list(adata.obsm)}")
        return np.asarray(adata.obsm[use_rep], dtype=np.float32)
    return data.pca(n_comps, seed)[2]
