"""Seed-cell selection for seeded GANs (GARAGE, LSH-GAN): kNN graph, GAT attention, LSH, quotas."""

from .attention import attention_scores, train_gat_scores
from .graph import knn_graph
from .select import SeedSelection, choose_seeds, select_seed_cells, select_seeds

__all__ = [
    "SeedSelection",
    "attention_scores",
    "choose_seeds",
    "knn_graph",
    "select_seed_cells",
    "select_seeds",
    "train_gat_scores",
]
