"""Detection: can a classifier tell the compared cells from real ones? (a classifier two-sample test)

Both sets are subsampled to the same size, so that 0.5 is chance whatever the set sizes. The main
detectors see the union PCA (fitted on both sets, so that neither side is privileged) and are scored by
cross-validation. ``detection_auc_groundgan`` follows the published protocol of GRouNdGAN (Zinati et
al., Nat Commun 2024) instead, so that its value can be set beside the numbers of that paper: REAL's
1,000 most highly variable genes, each cell normalised to 20,000 total counts over those genes and
log1p-transformed, 1,000 real against 1,000 compared cells, a 70/30 stratified split, 50 principal
components fitted on the 70% training part only, a random forest of 1,000 trees, and the ROC AUC on
the 30% test part.
"""

from __future__ import annotations

import numpy as np

from .base import EvalContext, family, metric, register_settings

DETECTION_AUC = metric(
    "detection_auc",
    "detection",
    "target",
    "Random-forest ROC AUC (5-fold CV) separating compared from real cells in union PCA; 0.5 ideal.",
    target=0.5,
    per_type=True,
)
DETECTION_AUC_DRAWS = metric(
    "detection_auc_draws",
    "detection",
    "target",
    "detection_auc averaged over several synthetic sets drawn from the same model (set by `cellsynth "
    "benchmark --draws K`); 0.5 ideal.",
    target=0.5,
)
DETECTION_AUC_LOGREG = metric(
    "detection_auc_logreg",
    "detection",
    "target",
    "Logistic-regression ROC AUC (5-fold CV), same set-up; a weak detector: do not judge by it alone.",
    target=0.5,
)

DETECTION_AUC_GROUNDGAN = metric(
    "detection_auc_groundgan",
    "detection",
    "target",
    "GRouNdGAN protocol: random-forest ROC AUC (1,000 trees) on a 30% test split, 1,000 HVGs, 50 PCs "
    "fitted on the training split; 0.5 ideal.",
    target=0.5,
)

#: Options of the GRouNdGAN-protocol detector and their published values.
GROUNDGAN_SETTINGS = {
    "groundgan_cells": 1000,  # cells per side (fewer when a side has fewer: equal sizes)
    "groundgan_genes": 1000,  # REAL's most highly variable genes
    "groundgan_target_sum": 20000,  # total per cell over those genes, before log1p
    "groundgan_pcs": 50,  # fitted on the training part only
    "groundgan_trees": 1000,
    "groundgan_test_fraction": 0.3,
}
register_settings(GROUNDGAN_SETTINGS)


def classifier_auc(
    real: np.ndarray,
    synth: np.ndarray,
    *,
    model: str = "forest",
    folds: int = 5,
    trees: int = 100,
    random_state: int = 0,
    n_jobs: int | None = -1,
) -> float:
    """Mean cross-validated ROC AUC of a classifier separating ``synth`` (positive) from ``real`` rows.

    Parameters
    ----------
    real, synth
        Cells × features, ideally of equal sizes (the AUC is insensitive to the class balance, the
        classifier less so).
    model
        ``"forest"`` (random forest) or ``"logreg"`` (standardised logistic regression).
    folds
        Stratified folds (reduced to the smaller class size when needed, at least 2).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    folds = int(min(folds, len(real), len(synth)))
    if folds < 2:
        return float("nan")
    X = np.concatenate([real, synth]).astype(np.float32)
    y = np.concatenate([np.zeros(len(real), dtype=np.int8), np.ones(len(synth), dtype=np.int8)])
    if model == "forest":
        clf = RandomForestClassifier(n_estimators=int(trees), random_state=random_state, n_jobs=n_jobs)
    elif model == "logreg":
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    else:
        raise ValueError(f"unknown detection model {model!r}")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=random_state)
    return float(np.mean(cross_val_score(clf, X, y, cv=cv, scoring="roc_auc")))


def groundgan_auc(
    real: np.ndarray,
    synth: np.ndarray,
    *,
    n_pcs: int = 50,
    trees: int = 1000,
    test_fraction: float = 0.3,
    random_state: int = 0,
    n_jobs: int | None = -1,
) -> float:
    """ROC AUC of a random forest separating ``synth`` (positive) from ``real`` cells, GRouNdGAN's way.

    The cells (rows, already normalised and log-transformed) are split into a stratified training part
    and a ``test_fraction`` test part; a PCA with ``n_pcs`` components is fitted on the training part
    only, a random forest of ``trees`` trees is trained on its components, and the AUC of its
    probabilities is measured on the test part. NaN when a side has fewer than 4 cells.
    """
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    if min(len(real), len(synth)) < 4:
        return float("nan")
    X = np.concatenate([real, synth]).astype(np.float32)
    y = np.concatenate([np.zeros(len(real), dtype=np.int8), np.ones(len(synth), dtype=np.int8)])
    X_fit, X_test, y_fit, y_test = train_test_split(
        X, y, test_size=test_fraction, stratify=y, random_state=random_state
    )
    k = int(min(n_pcs, X_fit.shape[0] - 1, X_fit.shape[1]))
    pca = PCA(n_components=max(k, 1), random_state=random_state).fit(X_fit)
    clf = RandomForestClassifier(n_estimators=int(trees), random_state=random_state, n_jobs=n_jobs)
    clf.fit(pca.transform(X_fit), y_fit)
    return float(roc_auc_score(y_test, clf.predict_proba(pca.transform(X_test))[:, 1]))


def groundgan_values(space, idx: np.ndarray, genes: np.ndarray, *, target_sum: float, counts: bool):
    """The cells ``idx`` over ``genes``, each normalised to ``target_sum`` over those genes, then log1p.

    From the raw counts when ``counts`` (``space.counts``), else from the log values (``expm1`` of
    ``space.X`` undoes log1p). A cell with nothing over ``genes`` stays all zero.
    """
    if counts:
        E = space.counts[idx][:, genes].toarray().astype(np.float64)
    else:
        E = np.expm1(np.asarray(space.X[idx][:, genes], dtype=np.float64))
    totals = E.sum(axis=1, keepdims=True)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(E * scale).astype(np.float32)


def _groundgan(ctx: EvalContext) -> float | None:
    """``detection_auc_groundgan``, or ``None`` for input used as is (no counts to normalise)."""
    if "as_is" in (ctx.real.representation, ctx.synth.representation):
        return None
    s = {key: ctx.settings.setdefault(key, value) for key, value in GROUNDGAN_SETTINGS.items()}
    ri, si = ctx.equal_subsample(
        np.arange(len(ctx.real)), np.arange(len(ctx.synth)), int(s["groundgan_cells"]), "detection_groundgan"
    )
    genes = np.sort(np.asarray(ctx.hvg[: int(s["groundgan_genes"])], dtype=np.int64))
    counts = ctx.real.counts is not None and ctx.synth.counts is not None
    opts = {"target_sum": float(s["groundgan_target_sum"]), "counts": counts}
    ctx.note("detection_groundgan", {"cells_per_side": len(ri), "genes": len(genes), "from_counts": counts})
    return groundgan_auc(
        groundgan_values(ctx.real, ri, genes, **opts),
        groundgan_values(ctx.synth, si, genes, **opts),
        n_pcs=int(s["groundgan_pcs"]),
        trees=int(s["groundgan_trees"]),
        test_fraction=float(s["groundgan_test_fraction"]),
        random_state=ctx.random_state("detection_auc_groundgan"),
        n_jobs=ctx.settings.get("n_jobs", -1),
    )


@family("detection")
def detection(ctx: EvalContext) -> dict[str, float]:
    """Random-forest and logistic-regression detection AUCs (the random forest per type too), and the
    GRouNdGAN-protocol AUC."""
    pcs = ctx.union_pca()
    s = ctx.settings
    folds = int(s.get("detection_folds", 5))
    n_jobs = s.get("n_jobs", -1)
    # only cells the PCA was fitted on, on both sides (see UnionPCA)
    ri, si = ctx.equal_subsample(pcs.real_fit, pcs.synth_fit, s.get("max_cells_detection", 2500), "detection")
    ctx.note("detection_cells_per_side", len(ri))
    out = {
        "detection_auc": classifier_auc(
            pcs.real[ri],
            pcs.synth[si],
            folds=folds,
            trees=int(s.get("detection_trees", 100)),
            random_state=ctx.random_state("detection_auc"),
            n_jobs=n_jobs,
        ),
        "detection_auc_logreg": classifier_auc(
            pcs.real[ri],
            pcs.synth[si],
            model="logreg",
            folds=folds,
            random_state=ctx.random_state("detection_auc_logreg"),
        ),
    }
    per_type = {}
    min_cells = int(s.get("min_cells_per_type", 20))
    for t in ctx.types():
        rt, st = (
            pcs.real_fit[ctx.real.labels[pcs.real_fit] == t],
            pcs.synth_fit[ctx.synth.labels[pcs.synth_fit] == t],
        )
        if min(len(rt), len(st)) < min_cells:
            continue
        rt, st = ctx.equal_subsample(rt, st, s.get("max_cells_per_type", 300), f"detection:{t}")
        per_type[t] = classifier_auc(
            pcs.real[rt],
            pcs.synth[st],
            folds=folds,
            trees=int(s.get("per_type_trees", 50)),
            random_state=ctx.random_state(f"detection_auc:{t}"),
            n_jobs=1,  # a few hundred cells: threads cost more than they save
        )
    ctx.add_per_type("detection_auc", per_type)
    groundgan = _groundgan(ctx)
    if groundgan is not None:
        out["detection_auc_groundgan"] = groundgan
    return out
