"""Quality of a model fitted on one half of a dataset, evaluated against the other half.

Run from the repository root::

    .venv/bin/python benchmarks/cgan_quality.py --dataset baron_mouse_pancreas --minutes 10
    .venv/bin/python benchmarks/cgan_quality.py --dataset pbmc68k --minutes 5 --param critic_components=30
    .venv/bin/python benchmarks/cgan_quality.py --smoke   # the same path on tiny simulated data, seconds

The dataset is split 50/50 by type (``split_by_type``, seed 0); the model (default ``cgan`` with its default
settings, plus any ``--param KEY=JSON``) is fitted on TRAIN under ``--minutes`` with seed ``--seed`` (default
0); as many cells as TEST holds are sampled (same seed) and ``evaluate(test, synthetic, train=train, seed=0)``
runs every family. Prints one JSON line with the fit record and the headline metrics beside their
real-vs-real control; ``--save DIR`` keeps the model. The acceptance bar (Baron mouse, 10 minutes):
detection_auc ≤ 0.75, dcr_ratio ≥ 0.9, every type generated. ``--smoke`` runs the same steps on 300
simulated cells (:mod:`smoke`) with a 2-epoch fit and light evaluation settings: a check that the script
works, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import smoke  # benchmarks/ is the script's directory

from cellsynth import models
from cellsynth.cli import parse_key_values
from cellsynth.data.datasets import pbmc68k
from cellsynth.data.split import split_by_type
from cellsynth.metrics import evaluate

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
KEYS = [
    "detection_auc", "detection_auc_logreg", "mmd", "wasserstein", "dcr_ratio", "mia_auc", "trts_accuracy",
    "tstr_macro_f1", "tstr_rare_macro_f1", "zero_fraction_pearson", "ks_cell_zero_fraction",
    "ks_library_size", "gene_corr_pearson",
]  # fmt: skip


def load_dataset(name: str) -> tuple[ad.AnnData, str]:
    """``(adata, label_key)`` of pbmc68k, of the smoke runs' simulated cells (``"smoke"``) or of
    ``../shared/data/NAME.h5ad`` (exits when it is absent)."""
    if name == "smoke":
        return smoke.smoke_cells(), "cell_type"
    if name == "pbmc68k":
        return pbmc68k(), "bulk_labels"
    path = SHARED / f"{name}.h5ad"
    if not path.exists():
        raise SystemExit(f"{path} is not present")
    return ad.read_h5ad(path), "cell_type"


def halves(name: str):
    """``(train, test, label_key)``: dataset ``name`` split 50/50 by type (seed 0), as every script here."""
    adata, label_key = load_dataset(name)
    train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=0)
    return train, test, label_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--dataset", default="baron_mouse_pancreas", help="pbmc68k, smoke or a file in ../shared/data"
    )
    ap.add_argument("--model", default="cgan")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--param", action="append", default=[], help="KEY=JSON model parameter (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the fit and of the sampling (the split: 0)")
    ap.add_argument("--save", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.dataset = "smoke"
    adata, label_key = load_dataset(args.dataset)
    train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=0)
    params = parse_key_values(args.param, "--param")
    epochs = smoke.EPOCHS if args.smoke else 100_000  # else the time budget ends the fit
    model = models.get(args.model, max_minutes=args.minutes, epochs=epochs, **params)
    t = time.perf_counter()
    model.fit(train, label_key=label_key, seed=args.seed, progress=False)
    fit_s = time.perf_counter() - t
    syn = model.sample(n=test.n_obs, seed=args.seed)
    settings = smoke.EVALUATE if args.smoke else None
    met = evaluate(test, syn, label_key=label_key, train=train, seed=0, settings=settings)
    if args.save:
        model.save(args.save)
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "model": args.model,
                "params": params,
                "seed": args.seed,
                "fit_seconds": round(fit_s),
                "steps": model.history[-1]["g_step"] if model.history else 0,
                "stopped": model.fit_record.get("stopped_because"),
                "types": f"{syn.obs[label_key].nunique()}/{adata.obs[label_key].nunique()}",
                "overall": {k: round(met.overall[k], 3) for k in KEYS if k in met.overall},
                "control": {k: round(met.control[k], 3) for k in KEYS if k in met.control},
            }
        )
    )


if __name__ == "__main__":
    main()
