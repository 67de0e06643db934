"""How much of a saved model's detectability is in its per-type gene marginals, and how much in co-expression.

Run from the repository root, on a model saved by ``benchmarks/cgan_quality.py --save DIR``::

    .venv/bin/python benchmarks/marginal_oracle.py DIR --dataset baron_mouse_pancreas --type beta
    .venv/bin/python benchmarks/marginal_oracle.py --smoke   # a 2-epoch cgan on tiny simulated data

Same protocol as ``cgan_quality.py`` (50/50 split by type, seed 0, as many cells as TEST sampled with seed 0).
The synthetic cells' log-normalised values (normalize_total 1e4 + log1p) are evaluated three ways:

- ``as_sampled``: unchanged;
- ``mean_shift``: per type and gene, the detected values shifted so that the gene's mean is the TRAIN
  cells' mean of that type;
- ``quantile_map``: per type and gene, each synthetic value replaced by the TRAIN quantile of its rank among
  the synthetic cells of its type: every marginal is then TRAIN's, and only the model's co-expression (which
  cells are high in which genes together) is left of it;
- ``mean_shift_population``: the ``mean_shift`` of the model's population, not of the cells scored: each
  type's shift measured on another ``--calibration-cells`` cells a type (sampling seed 123) and applied to
  the scored cells. ``mean_shift`` also removes the scored cells' own sampling noise in each type's means,
  which no generator can do; this variant is what a correction built into the model could reach.

This is a diagnostic (an oracle that reads TRAIN at sampling time), not a generator. With ``--type``, the
spread of that type's cells along the first principal components of its TEST and synthetic cells (2,000 most
variable TEST genes) is printed for TEST, TRAIN and the synthetic cells (quantile-mapped), which shows along
which axes the model's cells vary too little or too much.

``--smoke`` needs no model directory: a cgan is fitted for 2 epochs on the TRAIN half of 300 simulated cells
(:mod:`smoke`), saved and loaded again, and the steps above run on it with light evaluation settings and
``--type`` defaulting to the largest type: a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp
import smoke  # benchmarks/ is the script's directory
from cgan_quality import load_dataset

from cellsynth import models
from cellsynth.data.split import split_by_type
from cellsynth.metrics import evaluate

KEYS = ["detection_auc", "detection_auc_logreg", "dcr_ratio", "mia_auc", "gene_corr_pearson"]


def log_normalised(X) -> np.ndarray:
    X = sp.csr_matrix(X, dtype=np.float64)
    totals = np.asarray(X.sum(1)).ravel()
    X = sp.diags(1e4 / np.maximum(totals, 1)) @ X
    X.data = np.log1p(X.data)
    return X.toarray()


def quantile_map(S: np.ndarray, T: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each column of S replaced by T's quantiles at S's within-column ranks (ties broken at random)."""
    ranks = np.argsort(np.argsort(S + 1e-9 * rng.random(S.shape), 0), 0)
    k = np.minimum(((ranks + 0.5) / len(S) * len(T)).astype(int), len(T) - 1)
    return np.take_along_axis(np.sort(T, 0), k, 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, nargs="?", help="model directory (none with --smoke)")
    ap.add_argument(
        "--dataset", default="baron_mouse_pancreas", help="pbmc68k, smoke or a file in ../shared/data"
    )
    ap.add_argument("--type", default=None, help="print within-type spread along principal components")
    ap.add_argument(
        "--calibration-cells", type=int, default=500, help="mean_shift_population: cells a type measured"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="fit a tiny model on simulated data: checks the script"
    )
    args = ap.parse_args()
    if args.smoke:
        args.dataset = "smoke"
    elif args.model is None:
        ap.error("the model directory is required (or --smoke)")
    adata, label_key = load_dataset(args.dataset)
    train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=0)
    settings = None
    if args.smoke:
        settings = smoke.EVALUATE
        args.type = args.type or str(train.obs[label_key].value_counts().index[0])
        with tempfile.TemporaryDirectory() as tmp:
            fitted = models.get("cgan", epochs=smoke.EPOCHS)
            fitted.fit(train, label_key=label_key, seed=0, progress=False).save(Path(tmp) / "model")
            model = models.load(Path(tmp) / "model")
    else:
        model = models.load(args.model)
    syn = model.sample(n=test.n_obs, seed=0)
    S, T = log_normalised(syn[:, train.var_names].X), log_normalised(train.X)
    lab_s = syn.obs[label_key].astype(str).to_numpy()
    lab_t = train.obs[label_key].astype(str).to_numpy()
    rng = np.random.default_rng(0)
    cal = model.sample(per_type={t: args.calibration_cells for t in np.unique(lab_s)}, seed=123)
    C, lab_c = log_normalised(cal[:, train.var_names].X), cal.obs[label_key].astype(str).to_numpy()
    variants = {"as_sampled": S, "mean_shift": S.copy(), "quantile_map": S.copy()}
    variants["mean_shift_population"] = S.copy()
    for t in np.unique(lab_s):
        i, j = np.flatnonzero(lab_s == t), np.flatnonzero(lab_t == t)
        if len(j) == 0:
            continue
        detected = S[i] > 0
        shift = (T[j].mean(0) - S[i].mean(0)) / np.maximum(detected.mean(0), 1e-3)
        variants["mean_shift"][i] = np.where(detected, np.maximum(S[i] + shift, 0), 0)
        variants["quantile_map"][i] = quantile_map(S[i], T[j], rng)
        k = lab_c == t
        shift = (T[j].mean(0) - C[k].mean(0)) / np.maximum((C[k] > 0).mean(0), 1e-3)
        variants["mean_shift_population"][i] = np.where(detected, np.maximum(S[i] + shift, 0), 0)
    out = {}
    for name, values in variants.items():
        s = ad.AnnData(sp.csr_matrix(values.astype(np.float32)), obs=syn.obs, var=train.var[[]])
        met = evaluate(
            test,
            s,
            label_key=label_key,
            train=train,
            seed=0,
            families=["detection", "privacy", "genes"],
            settings=settings,
        )
        out[name] = {k: round(met.overall[k], 3) for k in KEYS if k in met.overall}
        print(json.dumps({name: out[name]}), flush=True)
    if args.type:
        from sklearn.decomposition import PCA

        R = log_normalised(test.X)[test.obs[label_key].astype(str).to_numpy() == args.type]
        Sq = variants["quantile_map"][lab_s == args.type]
        Tt = T[lab_t == args.type]
        hv = np.argsort(-R.var(0))[:2000]
        pca = PCA(12, random_state=0).fit(np.vstack([Sq[:, hv], R[:, hv]]))
        sd = {
            n: pca.transform(M[:, hv]).std(0).round(2).tolist()
            for n, M in (("test", R), ("train", Tt), ("synthetic", Sq))
        }
        genes = np.asarray(train.var_names)[hv]
        for k in range(12):
            top = np.argsort(-np.abs(pca.components_[k]))[:4]
            print(
                f"PC{k + 1}: sd test {sd['test'][k]} train {sd['train'][k]} synthetic {sd['synthetic'][k]}",
                list(genes[top]),
            )


if __name__ == "__main__":
    main()
