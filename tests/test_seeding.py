"""Seed selection: attention comes from the attention tensor, seeds follow scores, quotas hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cellsynth.seeding import attention_scores, choose_seeds, knn_graph, select_seed_cells
from cellsynth.seeding.select import lsh_subsample, name_keys


def star_edges(n_leaves: int) -> torch.Tensor:
    """Node 0 is the hub; every leaf sends to and receives from the hub only."""
    leaves = torch.arange(1, n_leaves + 1)
    hub = torch.zeros(n_leaves, dtype=torch.int64)
    return torch.stack([torch.cat([hub, leaves]), torch.cat([leaves, hub])])


def test_attention_scores_average_the_weights_on_edges_a_node_sends():
    # edges in PyG order (source, target); one self loop that must be ignored
    edge_index = torch.tensor([[0, 0, 1, 2, 2], [1, 2, 2, 0, 2]])
    alpha = torch.tensor([[0.2, 0.4], [0.6, 0.8], [1.0, 1.0], [0.0, 0.5], [9.0, 9.0]])
    s = attention_scores(edge_index, alpha, 4)
    # node 0 sends edges 0 and 1: mean over heads 0.3 and 0.7; node 1 sends edge 2; node 2 sends edge 3
    torch.testing.assert_close(s, torch.tensor([0.5, 1.0, 0.25, 0.0]))


def test_a_star_graph_forces_the_hub_to_the_top_of_the_real_gat_attention():
    """Through an actual GATConv: every leaf attends only to the hub (and itself), the hub to many."""
    from cellsynth.nn.gat import GATEncoder

    torch.manual_seed(0)
    edge_index = star_edges(30)
    x = torch.randn(31, 8)
    net = GATEncoder(8, 3, hidden=4, heads=2).eval()
    _, attention = net(x, edge_index, return_attention=True)
    for ei, alpha in attention:
        assert ei.shape[0] == 2 and alpha.shape[0] == ei.shape[1]  # (edge_index, weights), not swapped
        scores = attention_scores(ei, alpha, 31)
        assert int(scores.argmax()) == 0
        assert scores[0] > 3 * scores[1:].max()


def test_knn_graph_is_symmetric_without_self_loops():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    ei = knn_graph(X, k=4)
    src, dst = ei.numpy()
    assert not np.any(src == dst)
    pairs = set(zip(src.tolist(), dst.tolist(), strict=True))
    assert all((d, s) in pairs for s, d in pairs)
    assert np.bincount(dst, minlength=60).min() >= 4


def test_seeds_follow_the_score_and_quotas_put_rare_types_first():
    codes = np.array([0] * 50 + [1] * 30 + [2] * 3)
    scores = np.linspace(1.0, 0.0, 83)  # type 2 scores lowest
    plain = choose_seeds(scores, codes, 0.1)
    assert plain.sum() == 9 and np.array_equal(np.flatnonzero(plain), np.arange(9))
    quota = choose_seeds(scores, codes, 0.1, min_per_type=2)
    assert quota.sum() == 9
    for t in (0, 1, 2):
        assert quota[codes == t].sum() >= 2
    # within a type the quota takes its best-scoring cells
    assert quota[80] and quota[81] and not quota[82]
    # a budget too small for every quota serves the smallest types first
    tiny = choose_seeds(scores, codes, 3 / 83, min_per_type=2)
    assert tiny[codes == 2].sum() == 2 and tiny.sum() == 3
    assert not choose_seeds(scores, codes, 0.0).any()


def test_ties_are_broken_by_name_not_by_row_position():
    names = np.array([f"cell{i}" for i in range(40)])
    scores = np.zeros(40)
    codes = np.zeros(40, dtype=int)
    perm = np.random.default_rng(1).permutation(40)
    a = choose_seeds(scores, codes, 0.25, tie_break=name_keys(names, 0))
    b = choose_seeds(scores[perm], codes[perm], 0.25, tie_break=name_keys(names[perm], 0))
    assert set(names[a]) == set(names[perm][b])


def test_lsh_subsample_keeps_one_cell_of_a_crowd_and_every_loner():
    """LSH-GAN's rule: a kept cell discards its near neighbours, so duplicates collapse to one cell and
    isolated cells survive, whatever the size asked for."""
    rng = np.random.default_rng(0)
    crowd = np.ones((150, 3))  # identical cells: one bucket at any resolution
    spread = rng.normal(0, 3.0, size=(60, 3)) + 20
    lonely = np.array([[-40.0, 30.0, -25.0], [45.0, -35.0, 30.0]])
    X = np.vstack([crowd, spread, lonely])
    for size in (5, 40):
        kept = lsh_subsample(X, size, seed=1)
        assert kept[:150].sum() == 1 and kept[:150][0]  # the first visited of the crowd
        assert kept[-2:].all()
        assert kept.sum() >= min(size, 63)
    # finer hashing for a larger subsample; the same seed, the same cells
    assert lsh_subsample(X, 40, seed=1).sum() > lsh_subsample(X, 5, seed=1).sum()
    assert np.array_equal(lsh_subsample(X, 40, seed=2), lsh_subsample(X, 40, seed=2))


def test_lsh_seed_selection_takes_the_lsh_subsample(counts_adata):
    from cellsynth.seeding.select import select_seeds

    X = np.asarray(counts_adata.X.todense(), dtype=np.float64)
    X = np.log1p(X)
    X[:40] = X[0]  # 40 copies of one cell: LSH keeps at most one of them
    names = np.asarray(counts_adata.obs_names)
    sel = select_seeds(
        X, np.asarray(counts_adata.obs["cell_type"]), names, method="lsh", leakage=0.1, min_per_type=0, seed=0
    )
    assert sel.is_seed.sum() == int(np.ceil(0.1 * len(X)))
    assert sel.is_seed[:40].sum() <= 1
    assert set(np.unique(sel.scores)) <= {0.0, 1.0}


@pytest.fixture(scope="module")
def gat_selection(counts_adata):
    adata = counts_adata.copy()
    sel = select_seed_cells(
        adata, label_key="cell_type", leakage=0.2, seed=0, progress=False, gat={"max_epochs": 60}
    )
    return adata, sel


def test_gat_selection_writes_scores_and_covers_every_type(gat_selection):
    adata, sel = gat_selection
    assert adata.obs["is_seed"].sum() == int(np.ceil(0.2 * adata.n_obs))
    seeds = adata.obs.loc[adata.obs["is_seed"], "cell_type"]
    assert set(seeds) == set(adata.obs["cell_type"])  # the rare type too (quota)
    assert "rare" in sel.rare_types
    assert adata.uns["seed_selection"]["method"] == "gat"
    assert sel.details["gat_val_balanced_accuracy"] > 0.8  # the types are separable in this data
    # the seeds are the top-scoring cells outside the quotas: scores are not constant
    assert adata.obs["seed_score"].std() > 0


def test_gat_seeds_do_not_depend_on_row_order(counts_adata, gat_selection):
    adata, _ = gat_selection
    perm = np.random.default_rng(5).permutation(counts_adata.n_obs)
    shuffled = counts_adata[perm].copy()
    select_seed_cells(
        shuffled, label_key="cell_type", leakage=0.2, seed=0, progress=False, gat={"max_epochs": 60}
    )
    a = adata.obs["seed_score"]
    b = shuffled.obs["seed_score"].reindex(a.index)
    from scipy.stats import spearmanr

    assert spearmanr(a, b).statistic > 0.99
    seeds_a = set(adata.obs_names[adata.obs["is_seed"]])
    seeds_b = set(shuffled.obs_names[shuffled.obs["is_seed"]])
    assert seeds_a == seeds_b


def test_large_graphs_train_on_cluster_subgraphs_and_still_score_every_node(counts_adata):
    """Above ``batch_nodes`` the GAT trains on k-means-cluster subgraphs; scores cover the whole graph."""
    from cellsynth.seeding.attention import _cluster_batches, train_gat_scores

    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(3), 120)
    features = rng.normal(size=(360, 8)).astype(np.float32) + codes[:, None] * 3.0
    edges = knn_graph(features, 5)
    batches = _cluster_batches(features, edges, batch_nodes=100, seed=0)
    assert len(batches) == 4
    nodes = torch.cat([b[0] for b in batches])
    assert torch.equal(nodes.sort().values, torch.arange(360))  # a partition of the nodes
    kept = sum(b[1].shape[1] for b in batches)
    assert kept > 0.8 * edges.shape[1]  # clusters follow the graph: few edges are cut
    for sub_nodes, sub in batches:  # relabelled to the subgraph's own node numbers
        assert int(sub.max()) < len(sub_nodes)
    result = train_gat_scores(
        features, edges, codes, batch_nodes=100, max_epochs=40, patience=10, progress=False
    )
    assert result.scores.shape == (360,) and np.isfinite(result.scores).all() and result.scores.std() > 0
    assert result.val_balanced_accuracy > 0.9
