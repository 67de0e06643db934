"""Training throughput of cellsynth's cgan loop against the same step fed by a per-cell pandas data path.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py --data baron       # 3 epochs of Baron mouse pancreas
    .venv/bin/python benchmarks/throughput.py --data simulated   # 1 epoch of 20,000 simulated cells
    .venv/bin/python benchmarks/throughput.py --smoke            # 300 simulated cells, seconds

Both sides are ``CGAN.fit`` with the cgan's default parameters (plus ``--batch-size`` and the epochs):
the same networks and initialisation (``CGAN._build`` and the start ``CGAN._fit`` gives them, from the
same seed), the same losses and settings, the same training cells (the plan's stratified validation
split), the same number of epochs. Only the plan ``CGAN._fit`` trains them in differs:

* **ours**: the cgan's :class:`~cellsynth.train.adversarial.AdversarialPlan`, unchanged (Fabric,
  class-balanced minibatches densified from the CSR matrix, EMA as default, divergence checks), with
  validation pushed past the end of the run; it only notes when each step starts. Only the loop is timed:
  per epoch, from the loop's own clock at the end of each epoch (``history[i]["seconds"]``), which excludes
  the set-up before the loop and the final validation.
* **seed**: a plain training script's data path: a ``torch.utils.data.Dataset`` whose ``__getitem__`` does a
  pandas ``.loc[cell_id]`` on a dense cells × genes DataFrame of the training representation (float64, as
  ``pd.read_csv`` gives) and a ``.loc`` for the label, returning Python lists and values; a ``collate_fn``
  that builds tensors from lists; ``DataLoader(shuffle=True, num_workers=0)``; a plain ``for`` loop over it
  without EMA or validation. Each batch goes through the plan's own ``critic_step`` and ``generator_steps``
  (R1, packing, count draws, classifier, zero-fraction, MMD and moment terms included), so both sides do the
  same arithmetic per batch; the dataset also returns each cell's row, whose library size the count draw
  uses.

Cells processed are the real cells consumed by critic steps. The sides run ``--repeats`` times,
interleaved (order alternating), each run waiting first for the CPUs to be idle; runs during which
other processes took more than 15% of the machine's CPU time (read from ``/proc/stat``) are set aside
when any quieter run exists. Per batch, the 10th percentile of the time of a full batch estimates the
uncontended time; each side's whole-epoch throughput is its best epoch (cells / loop seconds), as
``timeit`` takes the minimum, and the median epoch is printed too. The last line printed is
``RESULT throughput_ratio=<ours / seed>``. ``--profile`` replaces the timing by one cProfiled run per
side (its timings carry the profiler's overhead; use the plain run for the throughput numbers).
``--smoke`` runs one 1-epoch run per side on 300 simulated cells (:mod:`smoke`) with batches of 32 and no
waiting: a check that the script works, not a measurement.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import io
import os
import platform
import pstats
import time
from functools import partial
from pathlib import Path
from unittest import mock

import anndata as ad
import numpy as np
import pandas as pd
import smoke  # benchmarks/ is the script's directory
import torch
from torch.utils.data import DataLoader, Dataset

import cellsynth.models.cgan as cgan_module
from cellsynth.data.celldata import CellData
from cellsynth.models.cgan import CGAN
from cellsynth.train.adversarial import AdversarialPlan
from cellsynth.train.plan import TrainResult

ROOT = Path(__file__).resolve().parent.parent
BARON = ROOT.parent / "shared" / "data" / "baron_mouse_pancreas.h5ad"
SIM_TYPES = (8000, 5000, 3000, 2000, 1200, 500, 200, 100)  # 20,000 cells, rare types included
SIM_GENES = 2000
PCT = 10  # per-batch times: the 10th percentile estimates the uncontended time (noise only adds)
QUIET = 0.15  # runs during which other processes took more of the CPUs than this are set aside
LABEL = "cell_type"


# ---------------------------------------------------------------------------------------------- data
def load_data(which: str, seed: int) -> tuple[ad.AnnData, str]:
    if which == "baron":
        if not BARON.exists():
            raise SystemExit(f"{BARON} not found; use --data simulated")
        return ad.read_h5ad(BARON), "Baron mouse pancreas"
    if which == "smoke":
        return smoke.smoke_cells(seed), "smoke.smoke_cells()"
    from cellsynth.data.datasets import simulate

    return simulate(SIM_TYPES, n_genes=SIM_GENES, seed=seed), "simulate(...)"


@contextlib.contextmanager
def cgan_trains_in(plan_factory):
    """``CGAN._fit`` builds its plan with ``plan_factory`` (same arguments as ``AdversarialPlan``): both sides
    then get exactly the cgan's networks, initialisation, losses and settings."""
    with mock.patch.object(cgan_module, "AdversarialPlan", plan_factory):
        yield


def fit_cgan(adata: ad.AnnData, params: dict, seed: int, plan_factory) -> CGAN:
    # validation pushed past the end of the run (the loop still scores the last epoch, after its clock)
    model = CGAN(**params, val_every_steps=10**9, patience=0)
    with cgan_trains_in(plan_factory):
        model.fit(adata, label_key=LABEL, device="cpu", seed=seed, progress=False)
    return model


# ---------------------------------------------------------------------------------------------- ours
class TimedPlan(AdversarialPlan):
    """The cgan's plan, unchanged, noting ``(epoch, start time, cells)`` of every training step."""

    def __init__(self, *args, steps: list, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps = steps

    def training_step(self, rows: np.ndarray) -> dict[str, float]:
        self.steps.append((self.loop["epoch"], time.perf_counter(), len(rows)))
        return super().training_step(rows)


def run_ours(adata: ad.AnnData, params: dict, seed: int) -> dict:
    steps: list[tuple[int, float, int]] = []
    t0 = time.perf_counter()
    model = fit_cgan(adata, params, seed, partial(TimedPlan, steps=steps))
    wall = time.perf_counter() - t0
    batch = params["batch_size"]
    # start to start within an epoch: one whole iteration of the loop (the end of an epoch is not a batch)
    batch_s = [b[1] - a[1] for a, b in zip(steps, steps[1:], strict=False) if a[0] == b[0] and a[2] == batch]
    # the loop's own clock at the end of each epoch (before any validation): per-epoch loop time
    ends = [0.0] + [r["seconds"] for r in model.history]
    epochs = [
        {"cells": sum(n for e, _, n in steps if e == i), "seconds": ends[i + 1] - ends[i]}
        for i in range(len(model.history))
    ]
    return {"epochs": epochs, "batch_s": batch_s, "wall_incl_setup": wall}


# ---------------------------------------------------------------------------------------------- seed
class SeedCells(Dataset):
    """A per-cell pandas lookup, Python lists out (and the cell's row, for its library size)."""

    def __init__(self, expr: pd.DataFrame, obs: pd.DataFrame, rows: np.ndarray, label_key: str):
        self.expr = expr
        self.obs = obs
        self.rows = rows
        self.cell_ids = [str(expr.index[r]) for r in rows]
        self.label_key = label_key
        self.label_to_code = {c: i for i, c in enumerate(sorted(obs[label_key].unique()))}

    def __len__(self) -> int:
        return len(self.cell_ids)

    def __getitem__(self, i: int):
        cell_id = self.cell_ids[i]
        x = self.expr.loc[cell_id].tolist()
        label = self.obs.loc[cell_id, self.label_key]
        return x, self.label_to_code[label], int(self.rows[i])


def seed_collate(batch):
    xs, ys, rows = zip(*batch, strict=True)
    return torch.tensor(list(xs)), torch.tensor(list(ys)), np.array(rows)


def seed_frames(data: CellData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dense cells × genes table (float64, as read from a CSV) and the labels, indexed by cell id."""
    genes = [data.preprocessing.output_genes[j] for j in data.preprocessing.train_genes]
    ids = [str(c) for c in data.obs_names]
    expr = pd.DataFrame(data.dense_rows(np.arange(data.n_cells)).astype(np.float64), index=ids, columns=genes)
    label = data.label
    obs = pd.DataFrame({LABEL: np.asarray(label.categories)[label.codes]}, index=ids)
    return expr, obs


class PandasLoopPlan(AdversarialPlan):
    """The cgan's training step in a plain loop over the pandas DataLoader: no EMA, no validation, no
    balanced draws, no checkpoints or divergence checks."""

    def __init__(self, generator, discriminator, classifier, loss, settings, *, frames, record, **kwargs):
        settings = dataclasses.replace(settings, ema_decay=None)
        super().__init__(generator, discriminator, classifier, loss, settings, **kwargs)
        self.frames = frames
        self.record = record

    def fit(self, data, *, resume=None) -> TrainResult:
        s = self.settings
        self.setup(data)  # device, random generators, the same training cells, statistics, optimisers
        expr, obs = self.frames
        assert list(expr.index) == [str(c) for c in data.obs_names], "frames of other cells"
        assert expr.shape[1] == data.n_genes, "frames of other genes"
        # the dataset's label codes (sorted names) must be CellData's, as the conditions index by them
        assert list(np.sort(data.label.categories)) == list(data.label.categories)
        assert len(data.conditions) == 1, "the dataset gives the label only"
        loader = DataLoader(
            SeedCells(expr, obs, self.train_rows, LABEL),
            batch_size=s.batch_size,
            shuffle=True,
            num_workers=0,
            collate_fn=seed_collate,
            generator=torch.Generator().manual_seed(self.seed),
        )
        records, batch_s, batch_data_s = [], [], []
        for _ in range(s.epochs):
            cells = 0
            data_s = 0.0
            t0 = time.perf_counter()
            it = iter(loader)
            while True:
                td = time.perf_counter()
                try:
                    x_real, y, rows = next(it)
                except StopIteration:
                    break
                data_s_batch = time.perf_counter() - td
                data_s += data_s_batch
                self.step_on(x_real, y, rows)
                cells += len(y)
                if len(y) == s.batch_size:  # the last, partial batch of an epoch is not comparable
                    batch_s.append(time.perf_counter() - td)
                    batch_data_s.append(data_s_batch)
            records.append({"cells": cells, "seconds": time.perf_counter() - t0, "data_s": data_s})
        self.record.update(epochs=records, batch_s=batch_s, batch_data_s=batch_data_s)
        state = {k: v.detach().clone() for k, v in self.generator.state_dict().items()}
        return TrainResult(state, [], "epochs", None)

    def step_on(self, x_real: torch.Tensor, labels: torch.Tensor, rows: np.ndarray) -> dict[str, float]:
        """``training_step``'s work on a batch the loader made dense (the label its only condition)."""
        return self.batch_step(x_real.to(self.device), labels[:, None].to(self.device), rows)


def run_seed(adata: ad.AnnData, frames: tuple[pd.DataFrame, pd.DataFrame], params: dict, seed: int) -> dict:
    record: dict = {}
    fit_cgan(adata, params, seed, partial(PandasLoopPlan, frames=frames, record=record))
    return record


# ---------------------------------------------------------------------------------------------- profile
def profiled(fn, *args, top: int = 12):
    prof = cProfile.Profile()
    prof.enable()
    out = fn(*args)
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[3] for k, v in stats.stats.items() if k[2] == fn.__name__)  # cumulative of fn itself
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(top)
    return out, stats, total, buf.getvalue()


def cumulative(stats: pstats.Stats, name: str, filename_part: str = "") -> float:
    return sum(v[3] for k, v in stats.stats.items() if k[2] == name and filename_part in k[0])


class CpuWatch:
    """Share of the machine's CPU time used by *other* processes between start and stop (Linux only).

    The benchmark shares its cores with whatever else runs; a run during which others took a large
    share is slowed by them, not by its own code.
    """

    def __init__(self):
        self.t, self.busy, self.own = time.perf_counter(), _busy_seconds(), _own_seconds()

    def others_share(self) -> float:
        wall = time.perf_counter() - self.t
        busy, own = _busy_seconds(), _own_seconds()
        if busy is None or self.busy is None or wall <= 0:
            return float("nan")
        return max(0.0, (busy - self.busy) - (own - self.own)) / (wall * (os.cpu_count() or 1))


def _busy_seconds() -> float | None:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_quiet(max_wait: float, threshold: float = 0.1) -> None:
    """Wait (at most ``max_wait`` s) until other processes use less than ``threshold`` of the CPUs."""
    if max_wait <= 0:
        return
    t_end = time.perf_counter() + max_wait
    while True:
        w = CpuWatch()
        time.sleep(2.0)
        share = w.others_share()
        if not share > threshold or time.perf_counter() > t_end:
            return
        print(f"  (waiting: other processes use {100 * share:.0f}% of the CPUs)", flush=True)


def summarise(name: str, runs: list[dict]) -> dict:
    eps = [e for r in runs for e in r["epochs"]]
    rates = [e["cells"] / e["seconds"] for e in eps]
    cells = sum(e["cells"] for e in eps)
    seconds = sum(e["seconds"] for e in eps)
    return {
        "name": name,
        "n_epochs": len(eps),
        "cells": cells,
        "seconds": seconds,
        "best": max(rates),
        "median": float(np.median(rates)),
        "overall": cells / seconds,
        "epoch_rates": rates,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", choices=["simulated", "baron"], default=None, help="default: baron when present"
    )
    ap.add_argument("--epochs", type=int, default=None, help="per run; default: 3 (baron), 1 (simulated)")
    ap.add_argument(
        "--repeats", type=int, default=None, help="interleaved runs per side (default 2 baron, 3 simulated)"
    )
    ap.add_argument(
        "--batch-size", type=int, default=None, help=f"default {CGAN.default_params['batch_size']}"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default 2)")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=None,
        help="max seconds to wait for idle CPUs before each run (300)",
    )
    ap.add_argument("--profile", action="store_true", help="one cProfiled run per side instead of timing")
    ap.add_argument(
        "--smoke", action="store_true", help="300 simulated cells, 1 run of 1 epoch: checks the script"
    )
    args = ap.parse_args(argv)
    if args.smoke:  # what the options do not set: tiny data, one short run per side, no waiting
        which = "smoke"
        defaults = {"epochs": 1, "repeats": 1, "batch_size": 32, "threads": 1, "wait_quiet": 0}
    else:
        which = args.data or ("baron" if BARON.exists() else "simulated")
        defaults = {
            "epochs": 3 if which == "baron" else 1,
            "repeats": 2 if which == "baron" else 3,
            "batch_size": CGAN.default_params["batch_size"],
            "threads": 2,
            "wait_quiet": 300.0,
        }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    epochs = args.epochs
    repeats = 1 if args.profile else args.repeats
    torch.set_num_threads(args.threads)

    adata, desc = load_data(which, args.seed)
    data = CellData.from_anndata(adata, label_key=LABEL)  # as CGAN.fit builds it
    params = {"epochs": epochs, "batch_size": args.batch_size}
    print(
        f"data: {desc}: {data.n_cells} cells x {data.n_genes} genes, {data.label.n} types; "
        f"epochs={epochs} repeats={repeats} batch_size={args.batch_size} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} python={platform.python_version()} cpus={os.cpu_count()}"
    )
    balance = CGAN.default_params["balance"]
    if balance:
        print(f"note: ours draws class-balanced minibatches (balance={balance}); the seed shuffles uniformly")
    t = time.perf_counter()
    frames = seed_frames(data)
    print(f"seed: dense float64 DataFrame built in {time.perf_counter() - t:.1f} s (setup, not timed)")

    if args.profile:
        ours, o_stats, o_total, o_txt = profiled(run_ours, adata, params, args.seed)
        seed, s_stats, s_total, s_txt = profiled(run_seed, adata, frames, params, args.seed)
        o_loop = sum(e["seconds"] for e in ours["epochs"])
        s_loop = sum(e["seconds"] for e in seed["epochs"])
        print("\n--- cProfile: ours (cumulative)\n" + o_txt)
        print("--- cProfile: seed (cumulative)\n" + s_txt)
        parts = [  # (label, function name, part of its file name): cumulative seconds in each
            ("autograd backward", "<method 'run_backward' of 'torch._C._EngineBase' objects>", ""),
            ("module forward (incl. validation for ours)", "_wrapped_call_impl", "module.py"),
            ("Adam steps", "adam", "optim/adam.py"),
            ("EMA update", "update_parameters", "swa_utils"),
            ("data: CSR rows -> dense (ours)", "dense_rows", "celldata"),
            ("data: pandas .loc + tolist (seed)", "__getitem__", "throughput"),
            ("data: torch.tensor from lists (seed)", "seed_collate", "throughput"),
            ("setup: principal axes (both, not timed)", "principal_axes", "stats"),
        ]
        print(f"{'where (cProfile cumulative s)':<42} {'ours':>7} {'% loop':>7} {'seed':>7} {'% loop':>7}")
        for label, name, file_part in parts:
            o, sd = cumulative(o_stats, name, file_part), cumulative(s_stats, name, file_part)
            print(f"{label:<42} {o:>7.2f} {100 * o / o_loop:>7.1f} {sd:>7.2f} {100 * sd / s_loop:>7.1f}")
        print(f"{'timed loop':<42} {o_loop:>7.2f} {100.0:>7.1f} {s_loop:>7.2f} {100.0:>7.1f}")
        print(
            f"ours: run_ours {o_total:.2f} s in all (set-up + loop + final validation); "
            f"seed: run_seed {s_total:.2f} s in all (set-up + loop)"
        )
        ours_runs, seed_runs = [ours], [seed]
    else:
        ours_runs, seed_runs = [], []
        for rep in range(repeats):  # alternate the order, so that neither side always goes first
            for side in ("ours", "seed") if rep % 2 == 0 else ("seed", "ours"):
                wait_quiet(args.wait_quiet)
                watch = CpuWatch()
                if side == "ours":
                    r = run_ours(adata, params, args.seed)
                    ours_runs.append(r)
                    extra = f" (wall incl. setup and final validation {r['wall_incl_setup']:.1f} s)"
                else:
                    r = run_seed(adata, frames, params, args.seed)
                    seed_runs.append(r)
                    d = sum(e["data_s"] for e in r["epochs"])
                    extra = f" (of which DataLoader: pandas + collate {d:.1f} s)"
                r["others"] = watch.others_share()
                sec = sum(e["seconds"] for e in r["epochs"])
                cells = sum(e["cells"] for e in r["epochs"])
                print(
                    f"  run {rep + 1} {side}: {cells} cells in {sec:.1f} s = {cells / sec:.1f} cells/s"
                    f"{extra}; other processes' CPU share {100 * r['others']:.0f}%",
                    flush=True,
                )

    B = args.batch_size
    quiet = {}
    for name, runs in (("ours", ours_runs), ("seed", seed_runs)):
        ok = [r for r in runs if not r.get("others", 0.0) > QUIET]
        quiet[name] = ok or runs
    o_b = np.array([x for r in ours_runs for x in r["batch_s"]])
    s_b = np.array([x for r in seed_runs for x in r["batch_s"]])
    s_d = np.array([x for r in seed_runs for x in r["batch_data_s"]])
    ours_e, seed_e = summarise("ours", quiet["ours"]), summarise("seed", quiet["seed"])
    print(
        f"\nper full batch of {B} cells, over every run ({len(o_b)} ours, {len(s_b)} seed batches): "
        f"p{PCT} = the time a batch takes when nothing else competes for the CPUs"
    )
    print(f"{'side':<6} {f'p{PCT} ms':>8} {'median ms':>10} {f'cells/s @p{PCT}':>14} {'cells/s @median':>16}")
    rows = {}
    for name, t in (("ours", o_b), ("seed", s_b)):
        lo, med = np.percentile(t, PCT), np.median(t)
        rows[name] = B / lo
        print(f"{name:<6} {1000 * lo:>8.0f} {1000 * med:>10.0f} {B / lo:>14.1f} {B / med:>16.1f}")
    d_lo = np.percentile(s_d, PCT)
    step_lo = np.percentile(s_b - s_d, PCT)
    print(
        f"seed per batch at p{PCT}: DataLoader (pandas .loc, lists, collate) {1000 * d_lo:.0f} ms, "
        f"training step {1000 * step_lo:.0f} ms "
        f"({100 * d_lo / (d_lo + step_lo):.0f}% of the batch in the data path)"
    )
    print(
        f"whole epochs (runs with other processes' CPU share <= {100 * QUIET:.0f}% when there are any; "
        f"ours {len(quiet['ours'])}/{len(ours_runs)}, seed {len(quiet['seed'])}/{len(seed_runs)} runs): "
        f"best epoch ours {ours_e['best']:.1f} cells/s, seed {seed_e['best']:.1f} cells/s, "
        f"ratio {ours_e['best'] / seed_e['best']:.2f}"
    )
    print(f"RESULT ours_cells_per_s={rows['ours']:.1f}")
    print(f"RESULT seed_cells_per_s={rows['seed']:.1f}")
    print(f"RESULT throughput_ratio={rows['ours'] / rows['seed']:.2f}")


if __name__ == "__main__":
    main()
