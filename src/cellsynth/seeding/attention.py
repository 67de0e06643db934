"""Stage 1 of GARAGE: train a GAT to classify cell types on the kNN graph, score cells by attention."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..data.stats import stratified_split
from ..progress import Progress


def attention_scores(edge_index: torch.Tensor, alpha: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """How much its neighbours attend to each node.

    ``edge_index`` (2 × E, PyG order: row 0 = source, row 1 = target) and ``alpha`` (E × heads, or E)
    are what ``GATConv(..., return_attention_weights=True)`` returns. The score of node ``j`` is the
    mean attention weight, over heads and over the edges on which ``j`` is the source, self loops
    excluded. A node no other node attends to scores 0.
    """
    src, dst = edge_index[0], edge_index[1]
    a = alpha.float()
    a = a.mean(-1) if a.dim() == 2 else a
    keep = src != dst
    src, a = src[keep], a[keep]
    total = torch.zeros(n_nodes, dtype=a.dtype, device=a.device).index_add_(0, src, a)
    count = torch.zeros(n_nodes, dtype=a.dtype, device=a.device).index_add_(0, src, torch.ones_like(a))
    return total / count.clamp_min(1)


@dataclass
class GATResult:
    scores: np.ndarray  # per node, mean over layers of attention_scores
    val_accuracy: float
    val_balanced_accuracy: float
    epochs: int


def class_weights(codes: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency ("balanced") class weights: a rare type's cells count as much as a common type's."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def _balanced_accuracy(pred: np.ndarray, y: np.ndarray) -> float:
    recalls = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return float(np.mean(recalls)) if recalls else math.nan


def train_gat_scores(
    features: np.ndarray,
    edge_index: torch.Tensor,
    codes: np.ndarray,
    *,
    hidden: int = 32,
    heads: int = 8,
    n_layers: int = 2,
    dropout: float = 0.3,
    lr: float = 5e-3,
    weight_decay: float = 5e-4,
    max_epochs: int = 300,
    patience: int = 30,
    val_fraction: float = 0.2,
    rare_feature_weight: float = 1.0,
    rare: np.ndarray | None = None,
    node_keys: np.ndarray | None = None,
    batch_nodes: int = 20_000,
    max_minutes: float | None = None,
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> GATResult:
    """Train a GAT node classifier (class-weighted loss, early stopping on held-out nodes) and score nodes.

    ``rare`` (bool per node) with ``rare_feature_weight`` > 1 up-weights the features of rare-type nodes
    (the GARAGE paper's device); the class-weighted loss alone already gives rare types priority.
    Graphs of up to ``batch_nodes`` nodes train full-batch. Larger ones train on minibatches of
    subgraphs (Cluster-GCN, Chiang et al. 2019): the nodes are cut into ⌈n / batch_nodes⌉ k-means
    clusters of their features — the space the kNN graph was built in, so few edges cross clusters —
    and each step trains on one cluster's induced subgraph: an epoch makes as many updates as there
    are clusters for the cost of one full-batch step. Held-out evaluation and the final attention
    scores always use the whole graph. ``max_minutes`` caps training (the best model so far is kept).
    ``node_keys`` (a number per node, e.g. hashed cell names) pick the held-out nodes independently of
    the row order; the clustering is seeded and sees the rows in the caller's order, which
    ``select_seeds`` makes canonical.
    """
    from ..nn.gat import GATEncoder

    rng = np.random.default_rng(seed)
    torch_gen = torch.Generator().manual_seed(seed)
    n = len(codes)
    n_classes = int(codes.max()) + 1
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    if rare is not None and rare_feature_weight != 1.0:
        x = x * torch.where(torch.as_tensor(rare), rare_feature_weight, 1.0)[:, None]
    y = torch.as_tensor(codes, dtype=torch.int64)
    # held-out nodes, stratified; a type with a single cell keeps it for training
    val = np.zeros(n, dtype=bool)
    val[stratified_split(codes, val_fraction, rng, order_keys=node_keys)[1]] = True
    train_mask, val_mask = torch.as_tensor(~val), torch.as_tensor(val)

    with torch.random.fork_rng(devices=[]):  # GATConv's initialisers use the global generator
        torch.manual_seed(int(torch.randint(2**31, (1,), generator=torch_gen)))
        model = GATEncoder(
            x.shape[1], n_classes, hidden=hidden, heads=heads, n_layers=n_layers, dropout=dropout
        ).to(device)
    x, y, edge_index = x.to(device), y.to(device), edge_index.to(device)
    batches = _cluster_batches(features, edge_index, batch_nodes, seed)
    weights = class_weights(codes[~val], n_classes).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    best = (-math.inf, None, 0)
    stale = 0
    epoch = 0
    # where early stopping or a time budget can end it before max_epochs: a rate, not a misleading ETA
    capped = patience < max_epochs or max_minutes
    bar = Progress(total=None if capped else max_epochs, desc="GAT", unit="epoch", enabled=progress)
    # dropout draws from the global generator: keep it ours
    with bar, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else math.inf
        for epoch in range(1, max_epochs + 1):
            model.train()
            order = torch.randperm(len(batches)) if len(batches) > 1 else [0]
            for b in order:
                nodes, sub_edges = batches[int(b)]
                xb, yb, mb = (x, y, train_mask) if nodes is None else (x[nodes], y[nodes], train_mask[nodes])
                if not bool(mb.any()):
                    continue
                opt.zero_grad(set_to_none=True)
                logits = model(xb, sub_edges)
                loss = F.cross_entropy(logits[mb], yb[mb], weight=weights)
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                pred = model(x, edge_index).argmax(-1)
            if val_mask.any():
                score = _balanced_accuracy(pred[val_mask].cpu().numpy(), y[val_mask].cpu().numpy())
            else:  # nothing held out: keep the last model
                score = float(epoch)
            if score > best[0]:
                best = (score, copy.deepcopy(model.state_dict()), epoch)
                stale = 0
            else:
                stale += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", val=f"{best[0]:.3f}")
            bar.update(1)
            if stale >= patience or time.monotonic() > deadline:
                break
    model.load_state_dict(best[1])
    model.eval()
    with torch.no_grad():
        logits, attention = model(x, edge_index, return_attention=True)
    scores = torch.stack([attention_scores(ei, a, n) for ei, a in attention]).mean(0)
    pred = logits.argmax(-1).cpu().numpy()
    yv = codes[val]
    acc = float((pred[val] == yv).mean()) if val.any() else math.nan
    return GATResult(
        scores=scores.cpu().numpy().astype(np.float64),
        val_accuracy=acc,
        val_balanced_accuracy=_balanced_accuracy(pred[val], yv) if val.any() else math.nan,
        epochs=epoch,
    )


def _cluster_batches(features: np.ndarray, edge_index: torch.Tensor, batch_nodes: int, seed: int):
    """``[(nodes or None, edge_index)]``: the whole graph, or one induced subgraph per k-means cluster."""
    n = len(features)
    if batch_nodes is None or n <= batch_nodes:
        return [(None, edge_index)]
    from sklearn.cluster import MiniBatchKMeans
    from torch_geometric.utils import subgraph

    k = math.ceil(n / batch_nodes)
    parts = MiniBatchKMeans(k, random_state=seed, n_init=3, batch_size=4096).fit_predict(
        np.asarray(features, dtype=np.float32)
    )
    batches = []
    for c in range(k):
        nodes = torch.from_numpy(np.flatnonzero(parts == c)).to(edge_index.device)
        if len(nodes) == 0:
            continue
        sub, _ = subgraph(nodes, edge_index, relabel_nodes=True, num_nodes=n)
        batches.append((nodes, sub))
    return batches
