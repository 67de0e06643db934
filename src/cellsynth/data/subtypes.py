"""Sub-populations within a cell type: each type's training cells split into Leiden clusters, which a
model can condition on in place of the type.

A label is often coarser than the cells it names: pbmc68k's "Dendritic" cells are conventional dendritic
cells, CD16 monocytes and plasmacytoid dendritic cells (FCER1A, FCGR3A and IRF8 clusters of 62, 20 and
15 % of its training cells). A generator that draws each type's cells from one Gaussian of latent codes
makes the largest of them and loses the others (1 % of its generated "Dendritic" cells fall in the FCGR3A
cluster). Conditioned on the clusters and sampled at their training shares, each is made.

Per type (at least ``2 · min_cells`` cells): a PCA of its cells' most variable genes (in the training
representation), a kNN graph and Leiden clusters (scanpy's, as a user sub-clustering a type would run
them) at each of :data:`RESOLUTIONS`; clusters of fewer than ``min_cells`` cells join the nearest larger
one, by the centres in that PCA, and the partition whose clusters stand apart best (their silhouette in
the type's leading components) is kept if it reaches :data:`SEPARATION`. A type left with one cluster, or
whose clusters do not stand apart, stays whole. One resolution alone is not enough: at 0.2 Leiden finds
pbmc68k's three "Dendritic" populations with one seed and merges two of them with three others. Above
:data:`MAX_CELLS` cells a seeded sample is clustered and every other cell joins the nearest centre, so
the cost does not grow with the cells.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from .celldata import CellData, Condition, densify, library_records

#: cells of a type clustered at most (the others join the nearest cluster centre)
MAX_CELLS = 5000
#: the most variable genes of the type, the PCA's components and the graph's neighbours
GENES = 1000
COMPONENTS = 20
NEIGHBOURS = 10
#: the Leiden resolutions tried (the split kept is the one whose clusters stand apart best)
RESOLUTIONS = (0.1, 0.2, 0.5, 1.0)
#: a split is kept where its clusters' silhouette in the type's leading components reaches SEPARATION: Leiden
#: cuts a continuum into pieces too (immune_spectra's CD4 and CD8 T cells: 0.17–0.27), which conditioning
#: on would pull apart; distinct populations stand apart (pbmc68k's "Dendritic": 0.42)
SEPARATION_COMPONENTS = 5
SEPARATION = 0.3
#: cells the silhouette is computed on at most (a seeded sample)
SILHOUETTE_CELLS = 2000
#: rows projected onto a type's axes at a time when assigning the cells left out of its sample
ASSIGN_ROWS = 4096


def split_types(data: CellData, min_cells: int, seed: int) -> tuple[CellData, dict | None]:
    """``data`` with its label replaced by the sub-types (``"<type> #<k>"`` where a type was split, the
    type's own name where not), and the record that maps them back: ``{"types": the label's categories,
    "parent": the type of each sub-type (index into types)}``; ``(data, None)`` where no type is split."""
    label = data.conditions[0]
    names: list[str] = []
    parent: list[int] = []
    codes = np.empty_like(label.codes)
    taken = set(label.categories)
    for t, name in enumerate(label.categories):
        rows = np.flatnonzero(label.codes == t)
        groups = _clusters(data, rows, min_cells, seed + t)
        n_groups = int(groups.max()) + 1 if len(groups) else 1
        base = len(names)
        if n_groups == 1:
            names.append(name)
        else:
            for k in range(n_groups):
                sub = f"{name} #{k + 1}"
                while sub in taken:  # a category already named so: another mark
                    sub += "'"
                taken.add(sub)
                names.append(sub)
        parent += [t] * n_groups
        codes[rows] = base + groups
    if len(names) == len(label.categories):
        return data, None
    sub_label = Condition(label.key, names, codes, label.integer, label.boolean)
    pre = data.preprocessing
    if data.library is not None and pre.library_sizes:
        pre = replace(pre, library_sizes=library_records(data.library, sub_label))
    out = CellData(
        data.X, [sub_label, *data.conditions[1:]], pre, obs_names=data.obs_names,
        library=data.library, scale=data.scale,
    )  # fmt: skip
    out.storage = data.storage
    return out, {"types": list(label.categories), "parent": parent}


def _clusters(data: CellData, rows: np.ndarray, min_cells: int, seed: int) -> np.ndarray:
    """Each of ``rows``' cluster (0, 1, ...; all 0 where the type stays whole)."""
    whole = np.zeros(len(rows), dtype=np.int64)
    if len(rows) < 2 * min_cells:
        return whole
    rng = np.random.default_rng(seed)
    fit = rows if len(rows) <= MAX_CELLS else np.sort(rng.choice(rows, MAX_CELLS, replace=False))
    genes, mean, axes, points = _principal_points(data, fit, seed)
    best = _best_partition(points, min_cells, seed)
    if best is None:
        return whole
    groups, centres = best
    out = np.empty(len(rows), dtype=np.int64)
    in_fit = np.isin(rows, fit)
    out[in_fit] = groups
    rest = rows[~in_fit]
    assigned = [
        _nearest((densify(data.rows(rest[i : i + ASSIGN_ROWS])[:, genes]) - mean) @ axes.T, centres)
        for i in range(0, len(rest), ASSIGN_ROWS)
    ]
    if assigned:
        out[~in_fit] = np.concatenate(assigned)
    return out


def _principal_points(data: CellData, fit: np.ndarray, seed: int):
    """``(genes, mean, axes, points)``: the GENES most variable genes of cells ``fit``, their mean, the
    leading principal axes (components × genes) and the cells' coordinates on them."""
    from sklearn.utils.extmath import randomized_svd

    stored = data.rows(fit)  # the most variable genes found without densifying every gene
    every_mean = np.asarray(stored.mean(0), dtype=np.float64).ravel()
    square = stored.multiply(stored) if sp.issparse(stored) else np.square(stored, dtype=np.float64)
    variance = np.asarray(square.mean(0), dtype=np.float64).ravel() - every_mean**2
    genes = np.argsort(-variance, kind="stable")[: min(GENES, len(variance))]
    X = densify(stored[:, genes]).astype(np.float64)
    mean = X.mean(0)
    k = max(1, min(COMPONENTS, len(fit) - 1, len(genes)))
    u, s, axes = randomized_svd(X - mean, k, random_state=seed)
    return genes, mean, axes, u * s


def _best_partition(points: np.ndarray, min_cells: int, seed: int):
    """``(each point's cluster, the clusters' centres)`` of the Leiden partition, among RESOLUTIONS, whose
    clusters (the small ones joined to the nearest larger) stand apart best; None where none of them
    reaches SEPARATION or none has two clusters of ``min_cells``."""
    import anndata as ad
    import scanpy as sc
    from sklearn.metrics import silhouette_score

    graph = ad.AnnData(points.astype(np.float32))
    sc.pp.neighbors(graph, n_neighbors=min(NEIGHBOURS, len(points) - 1), use_rep="X", random_state=seed)
    best, best_score = None, SEPARATION
    for resolution in RESOLUTIONS:
        sc.tl.leiden(graph, resolution=resolution, flavor="igraph", n_iterations=2, random_state=seed)
        found = graph.obs["leiden"].astype(int).to_numpy()
        kept = np.flatnonzero(np.bincount(found) >= min_cells)
        if len(kept) < 2:
            continue
        centres = np.stack([points[found == c].mean(0) for c in kept])
        groups = _nearest(points, centres)
        big = np.isin(found, kept)
        groups[big] = np.searchsorted(kept, found[big])
        score = silhouette_score(
            points[:, :SEPARATION_COMPONENTS], groups, sample_size=min(len(points), SILHOUETTE_CELLS),
            random_state=seed,
        )  # fmt: skip
        if score >= best_score:  # ties: the finer partition
            best, best_score = (groups, centres), score
    return best


def _nearest(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of each point's nearest centre (Euclidean)."""
    d = (points**2).sum(1)[:, None] - 2 * points @ centres.T + (centres**2).sum(1)[None]
    return d.argmin(1).astype(np.int64)


__all__ = ["split_types"]
