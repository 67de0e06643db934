"""GARAGE's leakage experiment: λ ∈ {0, 0.1, 0.2, 0.3} × datasets × seeds, plus rare-cell augmentation.

Run from the repository root (the shared datasets are used when present, pbmc68k always)::

    .venv/bin/python benchmarks/garage_leakage.py --minutes 3 --out docs/garage_leakage.csv
    .venv/bin/python benchmarks/garage_leakage.py --datasets pbmc68k --leakages 0,0.2 --seeds 0 --minutes 1
    .venv/bin/python benchmarks/garage_leakage.py --smoke   # λ ∈ {0, 0.2}, seed 0, tiny simulated data

Per dataset and seed, cells are split 50/50 by type (``split_by_type``). Each λ fits ``garage`` on TRAIN
with the same budget (``--minutes``, identical networks and settings; λ = 0 is the cgan), samples as
many cells as TEST has and evaluates against TEST with TRAIN as the control/privacy reference:
``wasserstein_garage``, ``wasserstein``, ``mmd``, ``detection_auc``, ``tstr_rare_macro_f1``,
``dcr_ratio``, plus the copying guard's median seed-distance ratio.

Rare-cell augmentation (the paper's test, same classifier for every arm): the rarest type with ≥ 4
TRAIN cells loses half of its TRAIN cells to TEST; the classifier (random forest, 300 trees, balanced
class weights off, seed fixed, on log-normalised expression of TRAIN's 2,000 most variable genes) is
trained on (a) TRAIN as is, (b) TRAIN + the real rare cells resampled to 10× their number, (c) TRAIN +
10× as many GARAGE cells of that type (model fitted on the reduced TRAIN), and scored on TEST: recall
and F1 of the rare type. Results are printed as a table and written to ``--out`` (CSV).

``--smoke`` runs the same steps for λ ∈ {0, 0.2} and seed 0 on 300 simulated cells (:mod:`smoke`; dataset
``smoke``), with 2-epoch fits, 25 trees and light evaluation settings: a check that the script works, not a
measurement.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import smoke  # benchmarks/ is the script's directory

from cellsynth import models
from cellsynth.data.datasets import pbmc68k
from cellsynth.data.split import split_by_type
from cellsynth.metrics import evaluate

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
KEYS = ["wasserstein_garage", "wasserstein", "mmd", "detection_auc", "tstr_rare_macro_f1", "dcr_ratio"]


def load(name: str) -> tuple[ad.AnnData, str]:
    if name == "smoke":
        return smoke.smoke_cells(), "cell_type"
    if name == "pbmc68k":
        return pbmc68k(), "bulk_labels"
    path = SHARED / f"{name}.h5ad"
    if not path.exists():
        raise FileNotFoundError(path)
    return ad.read_h5ad(path), "cell_type"


def fit_garage(train, label_key, leakage, minutes, seed, epochs=100_000):
    """GARAGE fitted on ``train`` under ``minutes`` (``epochs`` is only a cap)."""
    m = models.get("garage", leakage=leakage, max_minutes=minutes, epochs=epochs)
    m.fit(train, label_key=label_key, seed=seed, progress=False)
    return m


def log_hvg(adata, genes=None):
    x = adata.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    if genes is None:
        genes = sc.pp.highly_variable_genes(x, n_top_genes=min(2000, x.n_vars), inplace=False)
        genes = np.asarray(x.var_names[genes["highly_variable"].to_numpy()])
    return x[:, genes].X, genes


def augmentation(adata, label_key, leakage, minutes, seed, epochs=100_000, trees=300):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score, recall_score

    train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=seed)
    counts = train.obs[label_key].value_counts()
    rare = counts[counts >= 4].index[-1]
    rng = np.random.default_rng(seed)
    rare_rows = np.flatnonzero(train.obs[label_key] == rare)
    moved = rng.choice(rare_rows, len(rare_rows) // 2, replace=False)
    keep = np.setdiff1d(np.arange(train.n_obs), moved)
    test = ad.concat([test, train[moved]])
    train = train[keep].copy()
    n_rare = int((train.obs[label_key] == rare).sum())
    X_tr, genes = log_hvg(train)
    X_te, _ = log_hvg(test, genes)
    y_tr, y_te = np.asarray(train.obs[label_key]).astype(str), np.asarray(test.obs[label_key]).astype(str)
    model = fit_garage(train, label_key, leakage, minutes, seed, epochs)
    syn = model.sample(per_type={rare: 10 * n_rare}, seed=seed)
    X_syn, _ = log_hvg(syn, genes)
    rows = np.flatnonzero(y_tr == rare)
    over = rng.choice(rows, 10 * n_rare, replace=True)
    arms = {
        "none": (X_tr, y_tr),
        "oversample": (sc_vstack(X_tr, X_tr[over]), np.r_[y_tr, y_tr[over]]),
        "garage": (sc_vstack(X_tr, X_syn), np.r_[y_tr, np.full(X_syn.shape[0], rare)]),
    }
    out = {"rare_type": rare, "rare_train_cells": n_rare}
    for arm, (X, y) in arms.items():
        rf = RandomForestClassifier(n_estimators=trees, n_jobs=2, random_state=seed).fit(X, y)
        pred = rf.predict(X_te)
        out[f"{arm}_recall"] = recall_score(y_te == rare, pred == rare)
        out[f"{arm}_f1"] = f1_score(y_te == rare, pred == rare)
    return out


def sc_vstack(a, b):
    import scipy.sparse as sp

    return sp.vstack([sp.csr_matrix(a), sp.csr_matrix(b)]).tocsr()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="pbmc68k,baron_mouse_pancreas,immune_spectra")
    ap.add_argument("--leakages", default="0,0.1,0.2,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per fit")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--smoke", action="store_true", help="tiny simulated data, 2-epoch fits: checks the script"
    )
    args = ap.parse_args()
    epochs, trees, settings = 100_000, 300, None  # the time budget ends each fit
    if args.smoke:
        args.datasets, args.leakages, args.seeds = "smoke", "0,0.2", "0"
        epochs, trees, settings = smoke.EPOCHS, 25, smoke.EVALUATE
    rows = []
    for name in args.datasets.split(","):
        try:
            adata, label_key = load(name)
        except FileNotFoundError as e:
            print(f"skipping {name}: {e} is absent")
            continue
        for seed in [int(s) for s in args.seeds.split(",")]:
            train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=seed)
            for lam in [float(x) for x in args.leakages.split(",")]:
                t = time.perf_counter()
                model = fit_garage(train, label_key, lam, args.minutes, seed, epochs)
                syn = model.sample(n=test.n_obs, seed=seed)
                met = evaluate(test, syn, label_key=label_key, train=train, seed=seed, settings=settings)
                guard = syn.uns["cellsynth"].get("copying_guard", {})
                row = {"dataset": name, "seed": seed, "leakage": lam}
                row.update({k: met.overall.get(k, np.nan) for k in KEYS})
                row["seed_distance_ratio_median"] = guard.get("median_ratio", np.nan)
                row["steps"] = model.history[-1]["g_step"] if model.history else 0
                if lam > 0:
                    row.update(augmentation(adata, label_key, lam, args.minutes, seed, epochs, trees))
                row["seconds"] = round(time.perf_counter() - t)
                rows.append(row)
                print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                if args.out:
                    pd.DataFrame(rows).to_csv(args.out, index=False)
    if not rows:
        raise SystemExit(f"none of the datasets {args.datasets} is present")
    table = pd.DataFrame(rows)
    cols = [*KEYS, "seed_distance_ratio_median"]
    aug = [c for c in table.columns if c.startswith(("none_", "oversample_", "garage_"))]
    summary = table.groupby(["dataset", "leakage"])[cols + aug].agg(["mean", "std"])
    print(summary.round(3).to_string())


if __name__ == "__main__":
    main()
