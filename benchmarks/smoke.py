"""Tiny simulated data and light settings for the benchmarks' ``--smoke`` runs (not a benchmark itself).

A smoke run takes each benchmark's own code path end to end (fit, sample, evaluate, print) on a few hundred
simulated cells, in seconds and without ``../shared/data``; its numbers say nothing about quality or speed.
``tests/test_benchmarks.py`` runs every benchmark this way.
"""

from __future__ import annotations

import anndata as ad

from cellsynth.data.datasets import simulate

#: cells per type: four common types and one under 5% of the cells, so that the rare-type metrics run
TYPES = {"alpha": 120, "beta": 80, "gamma": 60, "delta": 30, "rare": 10}
GENES = 100
#: training epochs of a smoke fit (instead of a time budget)
EPOCHS = 2
#: ``evaluate`` settings of a smoke run: fewer trees, folds, components and projections than the defaults
EVALUATE = {
    "n_pcs": 10,
    "sliced_projections": 20,
    "detection_trees": 10,
    "detection_folds": 2,
    "per_type_trees": 10,
    "groundgan_trees": 10,
    "n_jobs": 1,
}


def fit_params(model: str) -> dict:
    """A smoke fit's epochs for ``model``: ``EPOCHS``, in each stage (nbgan: its autoencoder's too)."""
    from cellsynth.models.registry import param_spec

    params = {"epochs": EPOCHS}
    if "ae" in param_spec(model):
        params["ae"] = {"epochs": EPOCHS}
    return params


def smoke_cells(seed: int = 0) -> ad.AnnData:
    """300 cells × 100 genes of simulated counts, label ``obs["cell_type"]``."""
    return simulate(TYPES, n_genes=GENES, n_markers=10, seed=seed)
