"""The rare-type augmentation test: do a model's synthetic cells help a classifier find rare types?

A classifier (logistic regression on a PCA of the log-normalised highly variable genes, both fitted on
TRAIN) is trained twice: on TRAIN, and on TRAIN plus synthetic cells of the rare types, as many as bring
each rare type up to the median type size of TRAIN. Both are tested on TEST. The rare types are those of
:func:`cellsynth.metrics.biology.rare_types` on TRAIN's labels; the scores are the recall and the F1
averaged over the rare types (macro) on TEST, and the gains are augmented minus plain. Everything is
deterministic for a seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: the values :func:`augmentation_test` returns, and which way is better
DIRECTIONS = {
    "augment_rare_recall_plain": "maximize",
    "augment_rare_recall": "maximize",
    "augment_rare_recall_gain": "maximize",
    "augment_rare_f1_plain": "maximize",
    "augment_rare_f1": "maximize",
    "augment_rare_f1_gain": "maximize",
}


def augmentation_plan(labels, *, fraction: float = 0.05, n_smallest: int = 4) -> dict[str, int]:
    """How many synthetic cells of each rare type bring it up to the median type size.

    Parameters
    ----------
    labels
        TRAIN's cell types.
    fraction, n_smallest
        Passed to :func:`cellsynth.metrics.biology.rare_types`.

    Returns
    -------
    dict
        ``{rare type: cells to add}`` (types already at or above the median are left out).
    """
    from ..metrics.biology import rare_types

    labels = np.asarray(labels).astype(str)
    types, counts = np.unique(labels, return_counts=True)
    size = dict(zip(types.tolist(), counts.tolist(), strict=True))
    median = int(math.ceil(float(np.median(counts)))) if counts.size else 0
    plan = {t: median - size[t] for t in rare_types(labels, fraction=fraction, n_smallest=n_smallest)}
    return {t: int(n) for t, n in plan.items() if n > 0}


def _features(sets: list, genes, n_hvg: int, n_pcs: int, seed: int) -> list[np.ndarray]:
    """Each set's cells in a PCA (fitted on the first set) of the first set's most variable genes."""
    from sklearn.decomposition import PCA

    from ..data.preprocess import detect_representation, normalize_log1p

    mats = []
    for adata in sets:
        X = adata[:, genes].X
        totals = np.asarray(adata.X.sum(axis=1)).ravel()  # over every gene, as the normalisation wants
        if detect_representation(adata.X) == "counts":
            X = normalize_log1p(X, totals)
        X = X.toarray() if hasattr(X, "toarray") else np.asarray(X)
        mats.append(np.asarray(X, dtype=np.float32))
    var = mats[0].var(axis=0)
    hvg = np.sort(np.argsort(-var, kind="stable")[: min(n_hvg, len(var))])
    mats = [m[:, hvg] for m in mats]
    k = int(max(1, min(n_pcs, mats[0].shape[0] - 1, len(hvg))))
    pca = PCA(n_components=k, random_state=seed).fit(mats[0])
    return [pca.transform(m) for m in mats]


def augmentation_test(
    train,
    test,
    synthetic,
    *,
    label_key: str,
    seed: int = 0,
    n_hvg: int = 1000,
    n_pcs: int = 30,
) -> dict[str, Any]:
    """Rare-type recall and F1 on TEST of a classifier trained on TRAIN, and on TRAIN + ``synthetic``.

    Parameters
    ----------
    train, test
        Real cells (AnnData; counts or log-normalised) with ``obs[label_key]``.
    synthetic
        Synthetic cells of the rare types (typically ``model.sample(per_type=augmentation_plan(...))``),
        or None when there is nothing to add.
    label_key
        ``obs`` column with the cell type in every set.
    seed
        Seed of the PCA.
    n_hvg, n_pcs
        Highly variable genes (by variance of the log-normalised TRAIN) and principal components.

    Returns
    -------
    dict
        The values of :data:`DIRECTIONS` (NaN when there is no rare type in TEST), ``augment_rare_types``,
        ``augment_added`` ``{type: cells}``, per-type recalls (``augment_recall_plain_by_type``,
        ``augment_recall_by_type``) and ``augment_note``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score, recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..metrics.biology import rare_types

    y_train = np.asarray(train.obs[label_key].astype(str))
    y_test = np.asarray(test.obs[label_key].astype(str))
    rare = [t for t in rare_types(y_train) if t in set(y_test)]
    out: dict[str, Any] = dict.fromkeys(DIRECTIONS, math.nan)
    out.update(augment_rare_types=rare, augment_added={}, augment_note="")
    if not rare or len(set(y_train)) < 2:
        out["augment_note"] = "no rare type with cells in TEST (or a single type): nothing to test"
        return out
    sets = [train, test]
    if synthetic is not None:
        y_synth = np.asarray(synthetic.obs[label_key].astype(str))
        keep = np.isin(y_synth, rare)
        if keep.any():
            synthetic, y_synth = synthetic[keep], y_synth[keep]
            sets.append(synthetic)
    genes = train.var_names
    for other in sets[1:]:
        genes = genes[genes.isin(other.var_names)]
    features = _features(sets, genes, n_hvg, n_pcs, seed)
    Z_train, Z_test = features[0], features[1]

    def scores(Z, y) -> tuple[float, float, np.ndarray]:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        predicted = clf.fit(Z, y).predict(Z_test)
        by_type = recall_score(y_test, predicted, labels=rare, average=None, zero_division=0)
        f1 = f1_score(y_test, predicted, labels=rare, average="macro", zero_division=0)
        return float(np.mean(by_type)), float(f1), by_type

    recall0, f10, by_type0 = scores(Z_train, y_train)
    out.update(augment_rare_recall_plain=recall0, augment_rare_f1_plain=f10)
    out["augment_recall_plain_by_type"] = dict(zip(rare, map(float, by_type0), strict=True))
    if len(features) < 3:
        out["augment_note"] = "no synthetic cells of the rare types to add"
        return out
    added = dict(zip(*np.unique(y_synth, return_counts=True), strict=True))
    recall1, f11, by_type1 = scores(
        np.concatenate([Z_train, features[2]]), np.concatenate([y_train, y_synth])
    )
    out.update(augment_rare_recall=recall1, augment_rare_f1=f11)
    out.update(augment_rare_recall_gain=recall1 - recall0, augment_rare_f1_gain=f11 - f10)
    out["augment_recall_by_type"] = dict(zip(rare, map(float, by_type1), strict=True))
    out["augment_added"] = {str(k): int(v) for k, v in added.items()}
    return out
