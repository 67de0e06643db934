"""Detection: can a classifier tell the compared cells from real ones? (a classifier two-sample test)

Both sets are subsampled to the same size, so that 0.5 is chance whatever the set sizes, and the
classifier sees the union PCA (fitted on both sets, so that neither side is privileged).
"""

from __future__ import annotations

import numpy as np

from .base import EvalContext, family, metric

DETECTION_AUC = metric(
    "detection_auc",
    "detection",
    "target",
    "Random-forest ROC AUC (5-fold CV) separating compared from real cells in union PCA; 0.5 ideal.",
    target=0.5,
    per_type=True,
)
DETECTION_AUC_LOGREG = metric(
    "detection_auc_logreg",
    "detection",
    "target",
    "Logistic-regression ROC AUC (5-fold CV), same set-up; a weak detector: do not judge by it alone.",
    target=0.5,
)


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


@family("detection")
def detection(ctx: EvalContext) -> dict[str, float]:
    """Random-forest and logistic-regression detection AUCs; the random forest per type too."""
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
    return out
