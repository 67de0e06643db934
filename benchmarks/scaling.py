"""Scaling: quality and training minutes of a model against the number of training cells.

Run from the repository root::

    .venv/bin/python benchmarks/scaling.py --cells 1000 10000 100000 --out docs/scaling.csv
    .venv/bin/python benchmarks/scaling.py --real baron_mouse_pancreas --out docs/scaling.csv
    .venv/bin/python benchmarks/scaling.py --table --out docs/scaling.csv     # the Markdown table
    .venv/bin/python benchmarks/scaling.py --smoke                            # tiny data, seconds

Simulated data (``cellsynth.data.datasets.simulate``): ``--genes`` genes, eight cell types at fixed shares
(the rarest 1% of the cells), NB counts with ``--programs`` gene programs varying within every type (genes
co-vary, as in real cells). Each size N is simulated as N training cells plus ``--eval-cells`` held-out
cells of the same distribution; ``--real NAME`` takes a dataset of ../shared/data (or pbmc68k) split
50/50 by type instead. The model (``--model``, default: the package's default) is fitted with its own
default schedule — its epochs, early stopping and learning rates, no time budget chosen per size — under
a safety cap of ``--max-minutes``; then as many cells as the held-out set (its types) are sampled and the
benchmark's detector scores them against it (``detection_auc``, a forest in the union PCA; the held-out
cells subsampled to ``--eval-cells``).

Each configuration runs in its own process (its peak memory is its own; a failure is recorded, the
others still run) and is appended to ``--out`` at once; a rerun skips the configurations already there.
``--plot`` draws detection AUC against cells and against minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import smoke  # benchmarks/ is the script's directory

#: cell-type shares of the simulated data: common types and a rare one (1%)
SHARES = {"t1": 0.30, "t2": 0.20, "t3": 0.15, "t4": 0.12, "t5": 0.10, "t6": 0.08, "t7": 0.04, "rare": 0.01}
COLUMNS = [
    "data", "model", "train_cells", "genes", "fit_minutes", "loop_minutes", "steps", "stopped",
    "detection_auc", "peak_rss_gb", "data_peak_gb", "fit_peak_gb", "status", "error",
]  # fmt: skip


def high_water_gb(reset: bool = False) -> float | None:
    """This process's peak resident memory so far (VmHWM, GB); ``reset``: start a new peak from the
    current size (Linux ``clear_refs``), so that a later call measures what came after. None: not on
    Linux, or the reset was refused."""
    try:
        if reset:
            Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 2**20, 2)
    except OSError:
        return None
    return None


def simulated(n_train: int, n_eval: int, genes: int, programs: int, seed: int):
    """``(train, test, label_key)``: ``n_train`` + ``n_eval`` simulated cells, split by type."""
    from cellsynth.data.datasets import simulate
    from cellsynth.data.split import split_by_type

    total = n_train + n_eval
    sizes = {t: max(2, round(share * total)) for t, share in SHARES.items()}
    adata = simulate(sizes, n_genes=genes, n_markers=max(5, genes // 40), programs=programs, seed=seed)
    train, test = split_by_type(adata, label_key="cell_type", test_fraction=n_eval / total, seed=seed)
    return train, test, "cell_type"


def run_one(config: dict) -> dict:
    """Fit, sample and score one configuration (in this process); the row for the CSV."""
    from cgan_quality import halves

    from cellsynth import models
    from cellsynth.metrics import evaluate

    if config["data"] == "simulated":
        train, test, key = simulated(
            config["train_cells"], config["eval_cells"], config["genes"], config["programs"], config["seed"]
        )
    else:
        train, test, key = halves(config["data"])
    if test.n_obs > config["eval_cells"]:
        rows = np.random.default_rng(0).choice(test.n_obs, config["eval_cells"], replace=False)
        test = test[np.sort(rows)].copy()
    params = {"max_minutes": config["max_minutes"], **config["params"]}
    model = models.get(config["model"], **params)
    data_peak = high_water_gb()  # building the data (the simulation's arrays) ...
    high_water_gb(reset=True)  # ... and, from here, the fit's own
    started = time.perf_counter()
    model.fit(train, label_key=key, seed=config["seed"], progress=False)
    minutes = (time.perf_counter() - started) / 60
    fit_peak = high_water_gb()
    counts = test.obs[key].astype(str).value_counts()
    synthetic = model.sample(per_type={str(k): int(v) for k, v in counts.items() if v}, seed=0)
    settings = smoke.EVALUATE if config["smoke"] else {}
    met = evaluate(test, synthetic, label_key=key, seed=0, settings=settings, families=["detection"])
    history = model.history or [{}]
    last = history[-1]
    # the training loops' own clock (the last record's seconds, autoencoder included): the rest of
    # fit_minutes is set-up and wrap-up outside the budgeted loops
    loop = last.get("seconds")
    return {
        "data": config["data"], "model": config["model"], "train_cells": train.n_obs, "genes": train.n_vars,
        "fit_minutes": round(minutes, 2), "loop_minutes": None if loop is None else round(loop / 60, 2),
        "steps": int(last.get("g_step", last.get("step", 0)) or 0),
        "stopped": model.fit_record.get("stopped_because", ""),
        "detection_auc": round(float(met.overall["detection_auc"]), 4),
        # the process's peak: the larger of the data's and the fit's (the reset restarts ru_maxrss too)
        "peak_rss_gb": max(
            round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2), data_peak or 0.0
        ),
        "data_peak_gb": data_peak, "fit_peak_gb": fit_peak,
        "status": "done", "error": "",
    }  # fmt: skip


def configurations(args) -> list[dict]:
    common = {
        "model": args.model, "genes": args.genes, "programs": args.programs, "eval_cells": args.eval_cells,
        "max_minutes": args.max_minutes, "seed": args.seed, "params": args.params, "smoke": args.smoke,
    }  # fmt: skip
    out = [{**common, "data": "simulated", "train_cells": n} for n in args.cells]
    out += [{**common, "data": name, "train_cells": None} for name in args.real]
    return out


def done_keys(path: Path) -> set[tuple]:
    if not path.exists():
        return set()
    table = pd.read_csv(path)
    table = table[table["status"] == "done"]
    return {(r.data, r.model, int(r.train_cells)) for r in table.itertuples()} | {
        (r.data, r.model, None) for r in table.itertuples() if r.data != "simulated"
    }


def append(path: Path, row: dict) -> None:
    frame = pd.DataFrame([{c: row.get(c, "") for c in COLUMNS}])
    if path.exists() and list(pd.read_csv(path, nrows=0).columns) != COLUMNS:  # written with other columns
        frame = pd.concat([pd.read_csv(path), frame], ignore_index=True).reindex(columns=COLUMNS)
        frame.to_csv(path, index=False)
        return
    frame.to_csv(path, mode="a", header=not path.exists(), index=False)


def markdown(table: pd.DataFrame) -> str:
    """``table`` as a Markdown table (empty cells for missing values)."""
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + "---|" * len(table.columns)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines)


def plot(path: Path, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(path)
    table = table[table["status"] == "done"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for (data, model), part in table.groupby(["data", "model"]):
        part = part.sort_values("train_cells")
        label = f"{model}, {data}"
        axes[0].plot(part["train_cells"], part["detection_auc"], "o-", label=label)
        axes[1].plot(part["fit_minutes"], part["detection_auc"], "o-", label=label)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("training cells")
    axes[1].set_xlabel("training minutes")
    axes[0].set_ylabel("detection AUC (0.5 ideal)")
    for ax in axes:
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def main() -> None:
    from cellsynth import models
    from cellsynth.cli import parse_key_values

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="*", default=[1000, 10000, 100000], help="training cells")
    ap.add_argument("--real", nargs="*", default=[], help="datasets of ../shared/data (or pbmc68k) too")
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--programs", type=int, default=5, help="gene programs varying within types")
    ap.add_argument("--eval-cells", type=int, default=2000, help="held-out cells scored (at most)")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--param", action="append", default=[], help="KEY=JSON parameter of the model")
    ap.add_argument("--max-minutes", type=float, default=60.0, help="safety cap of each fit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("scaling.csv"))
    ap.add_argument("--plot", type=Path, default=None, help="PNG of AUC against cells and minutes")
    ap.add_argument("--table", action="store_true", help="print --out as a Markdown table and exit")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # a configuration (JSON), run in this process
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    args = ap.parse_args()
    if args.one:
        print("ROW " + json.dumps(run_one(json.loads(args.one))))
        return
    if args.table:
        print(markdown(pd.read_csv(args.out)))
        return
    args.params = parse_key_values(args.param, "--param")
    if args.smoke:
        args.cells, args.real, args.genes, args.eval_cells = [200, 400], [], smoke.GENES, 150
        args.params = {**smoke.fit_params(args.model), **args.params}
    done = done_keys(args.out)
    for config in configurations(args):
        key = (config["data"], config["model"], config["train_cells"])
        if key in done:
            print(f"kept {key}")
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--one", json.dumps(config)], capture_output=True, text=True
        )
        rows = [line[4:] for line in proc.stdout.splitlines() if line.startswith("ROW ")]
        if proc.returncode == 0 and rows:
            row = json.loads(rows[-1])
        else:
            error = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            row = {**config, "status": "failed", "error": error, "detection_auc": math.nan}
            row["train_cells"] = config["train_cells"] or 0
        append(args.out, row)
        print(json.dumps(row))
    if args.plot:
        plot(args.out, args.plot)
    table = pd.read_csv(args.out)
    ok = table[table["status"] == "done"]
    print(f"RESULT configurations={len(ok)} failed={len(table) - len(ok)}")


if __name__ == "__main__":
    main()
