"""Time to fidelity: how soon our model is as hard to detect as the scvi-tools peer, and training speeds.

Run from the repository root::

    .venv/bin/python benchmarks/time_to_fidelity.py                       # Baron mouse, 10-minute budget
    .venv/bin/python benchmarks/time_to_fidelity.py --dataset immune_spectra --minutes 5
    .venv/bin/python benchmarks/time_to_fidelity.py --smoke               # tiny simulated data, seconds

The dataset is split 50/50 by type (``split_by_type``, seed 0). The peer (``scvi``: scvi-tools' CondSCVI
with its own defaults, 300 epochs) is fitted on TRAIN and timed; its cells (as many as TEST, TEST's types)
are scored with the benchmark's detector (``detection_auc``: a random forest in the union PCA, 5-fold)
against TEST. ``--peer-epochs`` fits it again at fewer epochs for its curve of quality against time.
Our model (``--model``, default: the package's default model, its default parameters) is fitted on TRAIN
with a budget of ``--minutes`` and a monitor: at every validation, a copy of the model samples as many
cells as TEST and the same detector scores them (monitor time is not training time; nbgan: in its
autoencoder's stage too, the model started from the autoencoder's state then, as a checkpoint of that stage
holds it). Then

- ``time_to_peer_ratio``: the first training time at which our detection AUC is at or below the peer's
  final one, over the peer's training time (``inf`` when never reached within the budget). The monitored
  states are scored as they are in training; the model as fitted (its kept state after the calibration
  that ends nbgan's fit) is the trace's last point, ``stage="final"``, at the training loops' seconds plus
  the calibration's;
- ``throughput_ratio``: our training cells per second over the peer's. Ours counts the cells through the
  generator in its optimisation steps (batch × generator steps; a likelihood model: cells through the
  model; nbgan: its autoencoder's cells, then its generator's), the peer's cells × epochs through its
  model, each over its own training loop's seconds (nbgan's: both stages; set-up and scvi's imports left
  out on both sides). The quality fits run minutes apart, and a shared host's speed drifts over that time
  (measured: our steps 4.3–5.2 a second in one run and 2.4–3.9 in the next), so the ratio printed is the
  median over ``--throughput-rounds`` rounds of short fits of both, in alternation (the order swapped
  every round; ours with a budget of ``--probe-minutes``, the same stage shares as the quality fit; the peer
  for as many epochs as take it about as long). The quality fits' own ratio is recorded beside it
  (``throughput_of_the_fits``), with the host's steal (CPU seconds given to other guests) during every fit.
  Both sides train as shipped (ours at its default precision, ``precision`` in the record; the peer at its
  own, float32), with the same allocator: glibc's thresholds that our CPU fits set
  (``cellsynth.train.device.keep_freed_buffers``) are set before the first fit, for the whole process.

Prints one ``RESULT time_to_peer_ratio=<x> throughput_ratio=<y>`` line (ours over the peer's) after a JSON
record; ``--out DIR`` writes ``trace.csv`` (both curves) and ``time_to_fidelity.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import pandas as pd
import smoke  # benchmarks/ is the script's directory
from cgan_quality import halves

from cellsynth import models
from cellsynth.cli import parse_key_values
from cellsynth.metrics import evaluate
from cellsynth.train.device import keep_freed_buffers

#: the detector's own settings; its extras (the published-protocol forest, the per-type forests) lighter,
#: since only ``detection_auc`` is read here
MONITOR_SETTINGS = {"groundgan_trees": 50, "per_type_trees": 10}


def detection(test, synthetic, label_key: str, settings: dict) -> float:
    met = evaluate(test, synthetic, label_key=label_key, seed=0, settings=settings, families=["detection"])
    return float(met.overall["detection_auc"])


def test_request(test, label_key: str) -> dict[str, int]:
    counts = test.obs[label_key].astype(str).value_counts()
    return {str(k): int(v) for k, v in counts.items() if v}


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave other guests so far (``/proc/stat``'s steal column, all CPUs; NaN
    where there is none): a fit's share of it says how much of its wall time the host took away."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def fit_peer(train, test, label_key: str, epochs: int, settings: dict | None) -> dict:
    """The peer fitted for ``epochs``: its training loop's seconds (scvi's imports and set-up left out, as
    ours are), cells/s through it and, with ``settings``, its cells' detection AUC."""
    peer = models.get("scvi", epochs=epochs)
    stolen, t = steal_seconds(), time.perf_counter()
    peer.fit(train, label_key=label_key, seed=0, progress=False)
    wall, stolen = time.perf_counter() - t, steal_seconds() - stolen
    seconds = float(peer.history[-1]["seconds"])
    row = {"model": "scvi", "epochs": epochs, "seconds": seconds, "wall_seconds": wall, "steal_s": stolen,
           "cells_per_s": train.n_obs * len(peer.history) / seconds}  # fmt: skip
    if settings is not None:
        row["detection_auc"] = detection(
            test, peer.sample(per_type=test_request(test, label_key), seed=0), label_key, settings
        )
    return row


def fit_ours(train, label_key: str, model: str, minutes: float, params: dict, monitor=None, seed: int = 0):
    """Our model fitted with a budget of ``minutes``; its training seconds, cells through it, the cells/s and
    the host's steal during the fit."""
    ours = models.get(model, max_minutes=minutes, **params)
    stolen = steal_seconds()
    ours.fit(train, label_key=label_key, seed=seed, progress=False, monitor=monitor)
    seconds = float(ours.history[-1]["seconds"]) if ours.history else math.nan
    cells, steps = cells_through(ours)
    rate = cells / seconds if seconds > 0 else math.nan
    return ours, {"seconds": seconds, "cells": cells, "steps": steps, "cells_per_s": rate,
                  "steal_s": steal_seconds() - stolen}  # fmt: skip


def alternated_throughput(train, label_key: str, args, params: dict, peer_rate: float) -> list[dict]:
    """Short fits of the peer and ours in alternation (the order swapped every round), each about
    ``--probe-minutes`` of training: each round's ratio of cells/s is taken over minutes a few apart, so a
    host whose speed drifts over the half hour of the quality fits moves both sides of it alike."""
    epochs = max(1, round(60 * args.probe_minutes * peer_rate / train.n_obs))
    rounds = []
    for i in range(args.throughput_rounds):
        row = {"round": i, "peer_first": i % 2 == 0}
        for side in ("peer", "ours") if i % 2 == 0 else ("ours", "peer"):
            if side == "peer":
                r = fit_peer(train, None, label_key, epochs, None)
            else:
                r = fit_ours(train, label_key, args.model, args.probe_minutes, params)[1]
            row |= {
                f"{side}_cells_per_s": round(r["cells_per_s"], 1),
                f"{side}_steal_s": round(r["steal_s"], 1),
            }
        row["ratio"] = round(row["ours_cells_per_s"] / row["peer_cells_per_s"], 3)
        rounds.append(row)
    return rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baron_mouse_pancreas", help="pbmc68k, or a file in ../shared/data")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--minutes", type=float, default=10.0, help="our model's training budget")
    ap.add_argument("--param", action="append", default=[], help="KEY=JSON parameter of our model")
    ap.add_argument(
        "--peer-epochs", type=int, nargs="*", default=[], help="the peer also at these epochs (its curve)"
    )
    ap.add_argument("--seed", type=int, default=0, help="our quality fit's seed (the split's and peer's: 0)")
    ap.add_argument("--no-peer", action="store_true", help="our model's trace only (no RESULT line)")
    ap.add_argument(
        "--throughput-rounds", type=int, default=3, help="alternated short fits of both for the throughput"
    )
    ap.add_argument("--probe-minutes", type=float, default=1.0, help="each alternated fit's training time")
    ap.add_argument("--out", type=Path, default=None, help="write trace.csv and time_to_fidelity.png here")
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.dataset, args.probe_minutes = "smoke", min(args.probe_minutes, 0.02)
    train, test, label_key = halves(args.dataset)
    settings = {**MONITOR_SETTINGS, **(smoke.EVALUATE if args.smoke else {})}
    peer_epochs = 3 if args.smoke else 300  # CondSCVI.train's default
    # glibc's allocator set as our CPU fits set it, before any fit: a process-wide setting, so the peer's
    # fits (first and alternated with ours) run with the same allocator as ours
    allocator = keep_freed_buffers()

    rows, peer = [], None
    if not args.no_peer:
        rows = [fit_peer(train, test, label_key, peer_epochs, settings)]
        peer = rows[0]
        for e in sorted(set(args.peer_epochs) - {peer_epochs}):
            rows.append(fit_peer(train, test, label_key, e, settings))

    params = parse_key_values(args.param, "--param")
    # smoke: a few epochs in each stage; else the budget (or early stopping) ends the fit
    params = {**(smoke.fit_params(args.model) if args.smoke else {"epochs": 1_000_000}), **params}
    request = test_request(test, label_key)

    def monitor(snapshot, step: int, seconds: float) -> dict:
        auc = detection(test, snapshot.sample(per_type=request, seed=0), label_key, settings)
        return {"test_detection_auc": auc}

    ours, fitted = fit_ours(train, label_key, args.model, args.minutes, params, monitor, args.seed)
    history = ours.history
    # the monitored validations, with the model's own validation scores beside the detector's
    trace = [
        {
            "model": args.model,
            "stage": r.get("stage", ""),
            "step": r["g_step"],
            "seconds": r["seconds"],
            "detection_auc": r["test_detection_auc"],
        }
        | {k: v for k, v in r.items() if k.startswith("val_")}
        for r in history
        if "test_detection_auc" in r
    ]
    final = detection(test, ours.sample(per_type=request, seed=0), label_key, settings)
    # the model as the user gets it: the kept state after the calibration that ends the fit, at the
    # seconds of the training loops plus the calibration's (the monitored states are uncalibrated)
    calibration = ours.fit_record.get("calibration") or {}
    finished = fitted["seconds"] + float(calibration.get("seconds", 0.0))
    trace.append({"model": args.model, "stage": "final", "step": trace[-1]["step"] if trace else 0,
                  "seconds": round(finished, 1), "detection_auc": final})  # fmt: skip
    monitored = [r["detection_auc"] for r in trace if r["stage"] != "final"]
    record = {
        "dataset": args.dataset,
        "model": args.model,
        "seed": args.seed,
        "params": params,
        "allocator_thresholds_set": allocator,
        "ours": {
            "train_seconds": round(fitted["seconds"], 1),
            "steps": fitted["steps"],
            "cells_per_s": round(fitted["cells_per_s"], 1),
            "steal_s": round(fitted["steal_s"], 1),
            "stopped": ours.fit_record.get("stopped_because"),
            "kept_detection_auc": round(final, 4),  # the model as fitted: its kept (best-validation) state
            "calibration_s": round(float(calibration.get("seconds", 0.0)), 1),
            "best_monitored_detection_auc": round(min(monitored), 4) if monitored else None,
            "val_metric": ours.fit_record.get("val_metric"),
            "precision": ours.fit_record.get("precision"),
            "autoencoder_precision": (ours.fit_record.get("autoencoder") or {}).get("precision"),
            "selection": selection(trace),
        },
    }
    if peer is not None:
        reached = [r["seconds"] for r in trace if r["detection_auc"] <= peer["detection_auc"]]
        first = min(reached) if reached else math.inf
        record["peer"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in peer.items()}
        record["ours"]["first_at_peer_seconds"] = first if math.isinf(first) else round(first, 1)
        # the quality fits' own rates are minutes apart; the alternated short fits (when asked) decide
        record["throughput_of_the_fits"] = round(fitted["cells_per_s"] / peer["cells_per_s"], 3)
        record["throughput_rounds"] = rounds = (
            alternated_throughput(train, label_key, args, params, peer["cells_per_s"])
            if args.throughput_rounds
            else []
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame([*rows, *trace])
        frame.to_csv(args.out / "trace.csv", index=False)
        plot(frame, peer, args.out / "time_to_fidelity.png", args.dataset)
    print(json.dumps(record))
    if peer is not None:
        ratio = first / peer["seconds"]
        ratios = [r["ratio"] for r in rounds]
        throughput = statistics.median(ratios) if ratios else record["throughput_of_the_fits"]
        print(f"RESULT time_to_peer_ratio={ratio:.3g} throughput_ratio={throughput:.3g}")


def cells_through(model) -> tuple[int, int]:
    """Training cells through the model and its optimisation steps, over every stage (nbgan: the
    autoencoder's steps at its batch size, then the generator's at the GAN's)."""
    last = {}
    for r in model.history:  # each stage's step counter runs from 0; its last record holds the total
        last[r.get("stage", "")] = int(r.get("g_step", 0))
    batch = {"": int(model.params.get("batch_size", 0)), "gan": int(model.params.get("batch_size", 0))}
    if "autoencoder" in last:
        batch["autoencoder"] = int(model._autoencoder().params["batch_size"])
    return sum(batch[k] * n for k, n in last.items()), sum(last.values())


def selection(trace: list[dict]) -> dict[str, dict]:
    """For each validation score in the trace: its Spearman correlation with the detector over the
    validations, and the detector's AUC at the validation that score would keep (its minimum)."""
    from scipy.stats import spearmanr

    frame = pd.DataFrame(trace)
    out = {}
    for column in [c for c in frame.columns if c.startswith("val_") and not c.endswith("_sd")]:  # not noises
        part = frame.dropna(subset=[column])
        if len(part) < 2:
            continue
        rho = spearmanr(part[column], part["detection_auc"]).statistic
        kept = part.loc[part[column].idxmin(), "detection_auc"]
        out[column] = {"spearman": round(float(rho), 3), "detection_at_its_best": round(float(kept), 4)}
    return out


def plot(frame: pd.DataFrame, peer: dict | None, path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    final = frame["stage"].eq("final")  # the trace always ends with the fitted model's point
    for name, part in frame[~final].groupby("model", sort=False):
        part = part.sort_values("seconds")
        line = ax.plot(part["seconds"], part["detection_auc"], marker="o", ms=3, label=name)[0]
        end = frame[final & frame["model"].eq(name)]
        if len(end):  # the fitted model after its calibration
            ax.plot(end["seconds"], end["detection_auc"], marker="*", ms=11, ls="", color=line.get_color(),
                    label=f"{name}, as fitted (calibrated)")  # fmt: skip
    if peer is not None:
        ax.axhline(peer["detection_auc"], color="grey", ls="--", lw=1, label="peer's final AUC")
        ax.axvline(peer["seconds"] / 2, color="grey", ls=":", lw=1, label="half the peer's time")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("detection AUC (0.5: indistinguishable)")
    ax.set_title(f"quality against training time: {dataset}")
    ax.set_ylim(0.45, 1.01)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
