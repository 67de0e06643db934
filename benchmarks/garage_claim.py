"""GARAGE's claim on its own terms: does seeding stabilise the paper's unconditional GAN, reduce mode
collapse and accelerate convergence?

Run from the repository root::

    .venv/bin/python benchmarks/garage_claim.py --dataset baron_mouse_pancreas --minutes 3 --seeds 0 1 2 \\
        --out docs/garage_claim.csv
    .venv/bin/python benchmarks/garage_claim.py --smoke --out /tmp/claim.csv   # the same path, seconds

Three arms share every setting: the GARAGE paper's training (``PAPER_PARAMS``: genes input space, BCE,
5 critic steps per 2 generator steps, RMSprop, gradient clipping), unconditional (``conditional=False``:
cells labelled afterwards by a classifier trained on the real cells), without the cgan's additions
(``baselines.PLAIN``). They differ only in the generator's input batch: ``gan`` plain noise, ``garage``
a fraction λ = 0.2 of rows replaced by GAT-chosen seed cells, ``lshgan`` by LSH-chosen seed cells.

Each arm is fitted on TRAIN (``split_by_type``, seed 0) for ``--minutes`` per seed. Quality against
training steps: at every validation (every ``--val-every`` generator steps) a monitor samples 500 cells
and scores a random forest (50 trees, 3-fold) separating them from 500 TEST cells in a PCA of TEST's
highly variable genes (``curve_auc``; the same for every arm, cheaper than the full suite). At the end,
``evaluate(test, synthetic, train=train)``: the detection AUC, the per-type detection AUC of the labelled
output (mean over types), the types present, the share of rare-type cells against TEST's, the rare
types' TSTR F1. One CSV row per arm × seed (``curve`` as JSON); a summary per arm (mean ± sd over seeds) is
printed, and the curves of every dataset in the CSV are drawn beside it (``--out`` with ``.png``). Each
finished run is written at once: an interrupted study, run again, skips what the CSV holds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import smoke  # benchmarks/ is the script's directory
from cgan_quality import load_dataset

from cellsynth import models
from cellsynth._io import write_atomic
from cellsynth.data.split import split_by_type
from cellsynth.metrics import evaluate
from cellsynth.metrics.biology import rare_types
from cellsynth.metrics.detection import classifier_auc
from cellsynth.models.baselines import PLAIN
from cellsynth.models.garage import PAPER_PARAMS

ARMS = {"gan": {}, "garage": {"leakage": 0.2, "seed_method": "gat"}, "lshgan": {"leakage": 0.2}}
KEYS = ["detection_auc", "per_type_detection_auc", "types_present", "rare_share_ratio", "tstr_rare_macro_f1"]


class CurveScore:
    """A fixed yardstick for the monitor: TEST's HVG PCA, 500 TEST cells, a 50-tree forest."""

    def __init__(self, test, label_key: str, n_cells: int, trees: int, seed: int = 0):
        import scanpy as sc
        from sklearn.decomposition import PCA

        x = test.copy()
        sc.pp.normalize_total(x, target_sum=1e4)
        sc.pp.log1p(x)
        sc.pp.highly_variable_genes(x, n_top_genes=min(2000, x.n_vars - 1))
        self.genes = np.asarray(x.var_names[x.var["highly_variable"]])
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(x.n_obs, min(n_cells, x.n_obs), replace=False))
        real = _dense(x[rows, self.genes].X)
        self.pca = PCA(n_components=min(30, len(rows) - 1, len(self.genes)), random_state=seed).fit(real)
        self.real = self.pca.transform(real)
        self.n, self.trees, self.seed = len(rows), trees, seed

    def __call__(self, model, step: int, seconds: float) -> dict:
        out = model.sample(self.n, seed=self.seed)
        synth = self.pca.transform(_dense(out[:, self.genes].layers["log1p"]))
        auc = classifier_auc(self.real, synth, folds=3, trees=self.trees, random_state=self.seed)
        return {"curve_auc": round(auc, 4)}


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)


def run_arm(arm, train, test, label_key, *, minutes, seed, val_every, score, smoke_run) -> dict:
    params = {**PAPER_PARAMS, **PLAIN, "conditional": False, "val_every_steps": val_every, **ARMS[arm]}
    params["loss"] = "bce"
    if smoke_run:
        params.update(epochs=smoke.EPOCHS, batch_size=16, g_hidden=(32,), d_hidden=(32, 16), c_hidden=(16, 8))
        if arm == "garage":
            params["gat"] = {"max_epochs": 10}
    else:
        params.update(epochs=100_000, max_minutes=minutes)
    t = time.perf_counter()
    model = models.get(arm, **params)
    model.fit(train, label_key=label_key, seed=seed, progress=False, monitor=score)
    fit_s = time.perf_counter() - t
    synth = model.sample(test.n_obs, seed=seed)
    met = evaluate(
        test, synth, label_key=label_key, train=train, seed=0, settings=smoke.EVALUATE if smoke_run else None
    )
    real_labels = test.obs[label_key].astype(str).to_numpy()
    synth_labels = synth.obs[label_key].astype(str).to_numpy()
    rare = rare_types(np.asarray(train.obs[label_key].astype(str)))
    real_share = np.isin(real_labels, rare).mean() if rare else np.nan
    per_type = met.per_type["detection_auc"].dropna() if "detection_auc" in met.per_type else pd.Series([])
    curve = [
        {"step": r["g_step"], "seconds": r["seconds"], "auc": r["curve_auc"]}
        for r in model.history
        if "curve_auc" in r
    ]
    return {
        "arm": arm,
        "seed": seed,
        "fit_seconds": round(fit_s, 1),
        "steps": model.history[-1]["g_step"] if model.history else 0,
        "stopped": model.fit_record.get("stopped_because"),
        "detection_auc": met.overall["detection_auc"],
        "per_type_detection_auc": float(per_type.mean()) if len(per_type) else np.nan,
        "types_present": len(set(synth_labels)) / len(set(real_labels)),
        "rare_share_ratio": np.isin(synth_labels, rare).mean() / real_share if rare else np.nan,
        "tstr_rare_macro_f1": met.overall.get("tstr_rare_macro_f1", np.nan),
        "labeller_accuracy": model.fit_record.get("labeller_accuracy"),
        "curve": json.dumps(curve),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baron_mouse_pancreas", help="pbmc68k or a file in ../shared/data")
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget per arm and seed")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--val-every", type=int, default=50, help="generator steps between curve points")
    ap.add_argument(
        "--out", type=Path, required=True,
        help="CSV written after every run (runs in it are skipped, other datasets kept); a PNG beside it",
    )  # fmt: skip
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    ap.add_argument(
        "--table", action="store_true", help="fit nothing: print --out as a Markdown table, draw it"
    )
    args = ap.parse_args()
    if args.table:
        table = pd.read_csv(args.out)
        print(markdown(table))
        plot_curves(table, args.out.with_suffix(".png"))
        return
    if args.smoke:
        args.dataset, args.seeds, args.val_every = "smoke", [0], 2
    adata, label_key = load_dataset(args.dataset)
    train, test = split_by_type(adata, label_key=label_key, test_fraction=0.5, seed=0)
    score = CurveScore(test, label_key, n_cells=100 if args.smoke else 500, trees=10 if args.smoke else 50)
    table = pd.read_csv(args.out) if args.out.exists() else pd.DataFrame()
    for arm in args.arms:
        for seed in args.seeds:
            if _done(table, args.dataset, arm, seed, args.minutes):
                print(f"{args.dataset} {arm} seed {seed}: in {args.out} already", flush=True)
                continue
            row = run_arm(
                arm, train, test, label_key, minutes=args.minutes, seed=seed, val_every=args.val_every,
                score=score, smoke_run=args.smoke,
            )  # fmt: skip
            row = {"dataset": args.dataset, "minutes": args.minutes, **row}
            print(json.dumps({k: v for k, v in row.items() if k != "curve"}, default=float), flush=True)
            # Each finished run is saved at once, so an interrupted study resumes where it stopped.
            table = _replace(table, row)
            write_atomic(args.out, lambda tmp, table=table: table.to_csv(tmp, index=False))
    summary = table[table["dataset"] == args.dataset].groupby("arm")[KEYS].agg(["mean", "std"]).round(3)
    print(summary.to_string())
    figure = args.out.with_suffix(".png")
    plot_curves(table, figure)
    print(f"wrote {args.out} and {figure}")


def markdown(table: pd.DataFrame) -> str:
    """Mean ± sd over seeds per dataset and arm: the end-of-run scores and the curve's points."""
    table = table.copy()
    curves = [json.loads(c) for c in table["curve"]]
    table["curve_first"] = [c[0]["auc"] if c else np.nan for c in curves]
    table["curve_min"] = [min(p["auc"] for p in c) if c else np.nan for c in curves]
    table["curve_last"] = [c[-1]["auc"] if c else np.nan for c in curves]
    columns = ["steps", *KEYS, "curve_first", "curve_min", "curve_last"]
    lines = [
        "| dataset | arm | seeds | " + " | ".join(columns) + " |",
        "|---|---|---:|" + "---:|" * len(columns),
    ]
    for (dataset, arm), group in table.groupby(["dataset", "arm"], sort=False):
        cells = []
        for column in columns:
            values = group[column].astype(float)
            # steps as whole numbers; scores to three significant digits
            mean, sd = (f"{values.mean():.0f}", f"{values.std(ddof=1):.0f}") if column == "steps" else (
                f"{values.mean():.3g}", f"{values.std(ddof=1):.2g}"
            )  # fmt: skip
            cells.append(f"{mean} ± {sd}" if len(values) > 1 else mean)
        lines.append(f"| {dataset} | {arm} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _same_run(table: pd.DataFrame, dataset: str, arm: str, seed: int) -> pd.Series:
    """Which rows of ``table`` are runs of this dataset, arm and seed."""
    return (table["dataset"] == dataset) & (table["arm"] == arm) & (table["seed"] == seed)


def _done(table: pd.DataFrame, dataset: str, arm: str, seed: int, minutes: float) -> bool:
    if table.empty:
        return False
    return bool((_same_run(table, dataset, arm, seed) & (table["minutes"] == minutes)).any())


def _replace(table: pd.DataFrame, row: dict) -> pd.DataFrame:
    """The table with ``row`` in place of an earlier run of the same dataset, arm and seed."""
    if table.empty:
        return pd.DataFrame([row])
    same = _same_run(table, row["dataset"], row["arm"], row["seed"])
    return pd.concat([table[~same], pd.DataFrame([row])], ignore_index=True)


def plot_curves(table: pd.DataFrame, path: Path) -> None:
    """Quality against generator steps: one panel per dataset, one line per arm and seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    colours = {"gan": "tab:grey", "garage": "tab:red", "lshgan": "tab:blue"}
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for row in table[table["dataset"] == dataset].itertuples():
            curve = json.loads(row.curve)
            steps = [p["step"] for p in curve]
            ax.plot(steps, [p["auc"] for p in curve], color=colours.get(row.arm, "black"), alpha=0.7, lw=1.2,
                    label=row.arm if row.seed == min(table["seed"]) else None)  # fmt: skip
        ax.axhline(0.5, color="black", lw=0.6, ls=":")
        ax.set(title=dataset, xlabel="generator steps", ylim=(0.45, 1.02))
    axes[0][0].set_ylabel("detection AUC (0.5: indistinguishable)")
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
