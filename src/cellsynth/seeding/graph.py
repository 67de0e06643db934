"""kNN cell–cell graphs in PyG's edge order (row 0 = message source, row 1 = target)."""

from __future__ import annotations

import numpy as np
import torch


def knn_graph(X: np.ndarray, k: int = 5, *, symmetric: bool = True) -> torch.Tensor:
    """Edges of the ``k``-nearest-neighbour graph of the rows of ``X`` (Euclidean), without self loops.

    Each cell receives messages from its ``k`` nearest neighbours (edge ``neighbour → cell``); with
    ``symmetric`` the reverse edges are added too (an undirected graph, as scanpy's), so that every cell
    is also a message source. Built with scikit-learn (exact search); PyG's own ``knn_graph`` needs
    pyg-lib. Returns a ``2 × E`` int64 tensor, sorted by target then source.
    """
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    if n < 2:
        raise ValueError("a cell graph needs at least 2 cells")
    k = min(k, n - 1)
    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(X)
    _, idx = nn_.kneighbors(X)
    target = np.repeat(np.arange(n), k + 1)
    source = idx.ravel()
    keep = source != target  # duplicates of a cell can return another index first: drop self only
    source, target = source[keep], target[keep]
    if symmetric:
        source, target = np.concatenate([source, target]), np.concatenate([target, source])
    key = np.unique(target.astype(np.int64) * n + source)  # dedupe, sorted by (target, source)
    return torch.from_numpy(np.stack([key % n, key // n]).astype(np.int64))
