"""Each model's defaults, decided across datasets: a small sweep of the knobs a fixed budget is most
sensitive to, judged on every dataset at once.

Run from the repository root::

    .venv/bin/python benchmarks/default_sweep.py --root /tmp/sweep --minutes 3 --out docs/default_sweep.csv \\
        --defaults-from baron_mouse_pancreas=B/leaderboard.csv \\
        --defaults-from immune_spectra=I/leaderboard.csv --defaults-from pbmc68k=P/leaderboard.csv
    .venv/bin/python benchmarks/default_sweep.py --table --out docs/default_sweep.csv
    .venv/bin/python benchmarks/default_sweep.py --smoke --root /tmp/sweep-smoke --out /tmp/sweep.csv

Every variant of every model is one cell of ``cellsynth benchmark`` (``run_benchmark``: the split by type
with seed 0, TEST for judging, ``--minutes`` of wall clock per fit, seed 0), one benchmark folder per
dataset × variant under ``--root`` (a rerun resumes it). The variants (:data:`VARIANTS`) move the knob
that decides most what a model makes of a fixed budget, the same way for every model:

- ``lr x3`` and ``lr /3``: three times and a third of the learning rate(s);
- ``patience x3`` (not run by default): three times the early-stopping patience. Every model keeps its best
  validation state, so a longer patience changes the output only when the validation score improves after
  the default patience would have stopped; on pbmc68k it changed no model's output (docs/benchmarks.md).

``default`` is the model as shipped. Its rows can be read from a leaderboard already measured with the
same budget and seed (``--defaults-from DATASET=leaderboard.csv``, e.g. the 3-minute leaderboards of
docs/benchmarks.md) instead of being fitted again.

The decision: per model, the variant with the lowest detection AUC (our random forest) averaged over the
datasets, if it beats the default's average by at least ``--tolerance`` and is nowhere worse than the
default by more than ``--tolerance`` (a default that helps one dataset and hurts another is a regression;
a difference smaller than run-to-run noise is not a reason to change one).
``--table`` prints one Markdown table: a row per model × variant (AUC per dataset, the mean, the
GRouNdGAN-protocol AUC and the verdict). One CSV row per dataset × model × variant, written after each
benchmark.

The scvi peer is not swept: it is run with scvi-tools' own defaults, as a user would run it.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import smoke  # benchmarks/ is the script's directory
from cgan_quality import load_dataset

from cellsynth._io import write_atomic
from cellsynth.benchmark import run_benchmark

DATASETS = ["pbmc68k", "immune_spectra", "baron_mouse_pancreas"]  # fastest first
ADVERSARIAL = ["cgan", "garage", "gan", "wgan", "fgan", "fishergan", "lshgan"]
LIKELIHOOD = ["nbvae", "vae"]
MODELS = ["nbvae", "cgan", "garage", "vae", "gan", "wgan", "fgan", "fishergan", "lshgan"]


def _variants() -> dict[str, dict[str, dict]]:
    """``{variant: {model: params}}`` with the models' own defaults read from their declarations."""
    from cellsynth.models.registry import param_spec

    def default(model: str, name: str):
        return next(p.default for p in param_spec(model) if p.name == name)

    def lr(factor: float) -> dict[str, dict]:
        keys = {m: ("lr_g", "lr_d") for m in ADVERSARIAL} | {m: ("lr",) for m in LIKELIHOOD}
        return {m: {k: factor * default(m, k) for k in ks} for m, ks in keys.items()}

    patience = {m: {"patience": 3 * default(m, "patience")} for m in ADVERSARIAL + LIKELIHOOD}
    return {
        "default": {m: {} for m in ADVERSARIAL + LIKELIHOOD},
        "lr x3": lr(3.0),
        "lr /3": lr(1 / 3),
        "patience x3": patience,
    }


VARIANTS = _variants()
RUN_BY_DEFAULT = ["default", "lr x3", "lr /3"]
COLUMNS = [
    "detection_auc", "detection_auc_groundgan", "properties_mean", "tstr_rare_macro_f1", "dcr_ratio",
    "fit_seconds", "stop_reason", "epochs", "status", "error",
]  # fmt: skip


def _rows(frame: pd.DataFrame, dataset: str, variant: str, models: list[str], source: str) -> list[dict]:
    """The sweep's rows from a benchmark frame (seed 0 of each model)."""
    prop = [c for c in frame.columns if c.startswith("prop_")]
    out = []
    for model in models:
        hit = frame[(frame["model"] == model) & (frame["seed"].astype(int) == 0)]
        if hit.empty:
            continue
        r = hit.iloc[0]
        row = {"dataset": dataset, "model": model, "variant": variant, "source": source}
        row["params"] = json.dumps(VARIANTS[variant].get(model, {}), sort_keys=True)
        values = pd.to_numeric(r[prop], errors="coerce") if prop else pd.Series(dtype=float)
        row["properties_mean"] = float(values.mean()) if values.notna().any() else np.nan
        for c in COLUMNS:
            if c != "properties_mean":
                row[c] = r.get(c, np.nan)
        out.append(row)
    return out


def _save(table: pd.DataFrame, rows: list[dict], path: Path) -> pd.DataFrame:
    key = ["dataset", "model", "variant"]
    new = pd.DataFrame(rows)
    if not table.empty and not new.empty:
        old = table.set_index(key)
        old = old[~old.index.isin(new.set_index(key).index)].reset_index()
        table = pd.concat([old, new], ignore_index=True)
    elif not new.empty:
        table = new
    write_atomic(path, lambda tmp: table.to_csv(tmp, index=False))
    return table


def decide(table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per model and variant: the mean detection AUC over the datasets the default finished on, and the
    variant kept: the lowest mean among the variants finished on all of them, if it beats the default's by
    ≥ ``tolerance`` and is nowhere worse than the default by > ``tolerance``; else the default."""
    done = table[table["status"] == "done"].copy()
    done["detection_auc"] = pd.to_numeric(done["detection_auc"], errors="coerce")
    verdicts = []
    for model, rows in done.groupby("model", sort=False):
        wide = rows.pivot_table(index="variant", columns="dataset", values="detection_auc")
        if "default" not in wide.index:
            continue
        wide = wide.loc[:, wide.loc["default"].notna()]
        complete = wide.notna().all(axis=1)
        mean = wide.mean(axis=1)
        worst_gap = (wide - wide.loc["default"]).max(axis=1)
        better = complete & (mean <= mean["default"] - tolerance) & (worst_gap <= tolerance)
        kept = mean[better].idxmin() if better.any() else "default"
        for variant in wide.index:
            verdicts.append({
                "model": model, "variant": variant, "datasets": int(wide.loc[variant].notna().sum()),
                "of": wide.shape[1], "mean_auc": mean[variant], "worst_vs_default": worst_gap[variant],
                "kept": variant == kept,
            })  # fmt: skip
    return pd.DataFrame(verdicts)


def markdown(table: pd.DataFrame, tolerance: float) -> str:
    done = table[table["status"] == "done"].copy()
    for c in ("detection_auc", "detection_auc_groundgan"):
        done[c] = pd.to_numeric(done[c], errors="coerce")
    verdict = decide(table, tolerance).set_index(["model", "variant"]) if len(done) else pd.DataFrame()
    seen = list(dict.fromkeys(done["dataset"]))
    datasets = [d for d in DATASETS if d in seen] + [d for d in seen if d not in DATASETS]
    head = ["model", "variant", *datasets, "mean", "groundgan mean", "kept"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model in [m for m in MODELS if m in set(done["model"])]:
        for variant in VARIANTS:
            rows = done[(done["model"] == model) & (done["variant"] == variant)].set_index("dataset")
            if rows.empty:
                continue
            cells = [f"{rows.loc[d, 'detection_auc']:.3f}" if d in rows.index else "" for d in datasets]
            v = verdict.loc[(model, variant)] if (model, variant) in verdict.index else None
            mean = f"{v['mean_auc']:.3f}" if v is not None else ""
            if v is not None and v["datasets"] < v["of"]:
                mean += f" ({v['datasets']} of {v['of']})"
            gg = rows["detection_auc_groundgan"].mean()
            kept = "**kept**" if v is not None and v["kept"] else ""
            lines.append(f"| {model} | {variant} | " + " | ".join(cells) + f" | {mean} | {gg:.3f} | {kept} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    ap.add_argument("--variants", nargs="+", default=RUN_BY_DEFAULT, choices=list(VARIANTS))
    ap.add_argument("--minutes", type=float, default=3.0, help="every fit's wall-clock budget")
    ap.add_argument("--root", type=Path, help="benchmark folders, one per dataset × variant (resumed)")
    ap.add_argument("--out", type=Path, required=True, help="the sweep's CSV, written after each benchmark")
    ap.add_argument(
        "--defaults-from", action="append", default=[], metavar="DATASET=CSV",
        help="read the default variant's rows from a leaderboard.csv measured with the same budget and seed",
    )  # fmt: skip
    ap.add_argument(
        "--tolerance", type=float, default=0.01, help="largest loss on any dataset a change may cost"
    )
    ap.add_argument(
        "--smoke", action="store_true", help="tiny simulated data, seconds per fit: checks the script"
    )
    ap.add_argument("--table", action="store_true", help="fit nothing: print --out as Markdown tables")
    args = ap.parse_args()
    if args.table:
        print(markdown(pd.read_csv(args.out), args.tolerance))
        return
    if args.root is None:
        ap.error("--root is required to run the sweep")
    if args.smoke:
        args.datasets, args.minutes, args.models = ["smoke"], 0.05, ["nbvae"]
        args.variants = ["default", "lr x3"]
    reuse = dict(item.split("=", 1) for item in args.defaults_from)
    table = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame()
    for dataset in args.datasets:
        adata, label_key = load_dataset(dataset)
        for variant in args.variants:
            if variant == "default" and dataset in reuse:
                frame = pd.read_csv(reuse[dataset])
                table = _save(table, _rows(frame, dataset, variant, args.models, reuse[dataset]), args.out)
                continue
            folder = args.root / dataset / re.sub(r"[^a-z0-9]+", "_", variant)  # "lr /3": lr_3
            params = {m: p for m, p in VARIANTS[variant].items() if m in args.models and p}
            if args.smoke:
                params = {m: {**params.get(m, {}), "epochs": 2} for m in args.models}
            frame = run_benchmark(
                adata, label_key=label_key, out=folder, models=args.models, max_minutes=args.minutes, seeds=1,
                params=params, reports="none", settings=smoke.EVALUATE if args.smoke else None,
            )  # fmt: skip
            table = _save(table, _rows(frame, dataset, variant, args.models, str(folder)), args.out)
            print(f"{dataset} / {variant}: {len(frame)} cells, in {args.out}", flush=True)
    print(markdown(table, args.tolerance))


if __name__ == "__main__":
    main()
