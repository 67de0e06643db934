"""Training throughput of cellsynth's cgan loop against a re-creation of the seed prototype's data path.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py --data baron       # 3 epochs of Baron mouse pancreas
    .venv/bin/python benchmarks/throughput.py --data simulated   # 1 epoch of 20,000 simulated cells

Both sides train the same networks (``CGAN._build``, same initial weights), with the same losses
(``CGAN._loss``), optimisers and hyperparameters (``CGAN._settings``), on the same training cells, for
the same number of epochs:

* **ours**: the real :func:`cellsynth.train.adversarial.train_adversarial` (Fabric, class-balanced
  minibatches densified from the CSR matrix, EMA as default) with validation pushed past the end of
  the run. Only the loop is timed: per epoch, from the loop's own clock at the end of each epoch
  (``history[i]["seconds"]``), which excludes the setup before the loop and the final validation.
* **seed**: the prototype's data path: a ``torch.utils.data.Dataset`` whose ``__getitem__`` does a
  pandas ``.loc[cell_id]`` on a dense cells × genes DataFrame of the training representation (float64,
  as ``pd.read_csv`` gives) and a ``.loc`` for the label, returning Python lists and values; a
  ``collate_fn`` that builds tensors from lists; ``DataLoader(shuffle=True, num_workers=0)``. Its
  per-batch step does the same computations as ours (critic step on the detached generator output
  with label mixing, classifier cross-entropy on the real cells, generator step with the critic
  frozen: adversarial + class + sparsity loss), without Fabric or EMA.

Cells processed are the real cells consumed by critic steps. The sides run ``--repeats`` times,
interleaved (order alternating), each run waiting first for the CPUs to be idle; runs during which
other processes took more than 15% of the machine's CPU time (read from ``/proc/stat``) are set aside
when any quieter run exists. Each side's throughput is its best epoch (cells / loop seconds), as
``timeit`` takes the minimum; the median epoch is printed too. The last line printed is
``RESULT throughput_ratio=<ours / seed>``. ``--profile`` replaces the timing by one cProfiled run per
side (its timings carry the profiler's overhead; use the plain run for the throughput numbers).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from cellsynth.data.celldata import CellData
from cellsynth.models.cgan import CGAN
from cellsynth.nn.blocks import one_hot_conditions
from cellsynth.train.adversarial import (
    TrainSettings,
    soft_cross_entropy,
    sparsity_loss,
    split_validation,
    train_adversarial,
    zero_fraction_by_label,
)

ROOT = Path(__file__).resolve().parent.parent
BARON = ROOT.parent / "shared" / "data" / "baron_mouse_pancreas.h5ad"
SIM_TYPES = (8000, 5000, 3000, 2000, 1200, 500, 200, 100)  # 20,000 cells, rare types included
SIM_GENES = 2000
PCT = 10  # per-batch times: the 10th percentile estimates the uncontended time (noise only adds)
QUIET = 0.15  # runs during which other processes took more of the CPUs than this are set aside


# ---------------------------------------------------------------------------------------------- data
def load_data(which: str, seed: int) -> tuple[CellData, str]:
    if which == "baron":
        if not BARON.exists():
            raise SystemExit(f"{BARON} not found; use --data simulated")
        import anndata as ad

        adata = ad.read_h5ad(BARON)
        desc = "Baron mouse pancreas"
    else:
        from cellsynth.data.datasets import simulate

        adata = simulate(SIM_TYPES, n_genes=SIM_GENES, seed=seed)
        desc = "simulate(...)"
    return CellData.from_anndata(adata, label_key="cell_type"), desc


def build(data: CellData, params: dict, seed: int):
    """Networks, loss and settings exactly as ``CGAN.fit`` builds them (same seed → same weights)."""
    model = CGAN(**params)
    sizes = [c.n for c in data.conditions]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        modules = model._build(sizes, data.n_genes)
    return modules, model._loss(), model._settings()


# ---------------------------------------------------------------------------------------------- ours
def run_ours(data: CellData, params: dict, seed: int) -> dict:
    modules, loss, settings = build(data, params, seed)
    settings.val_every_steps = 10**9  # no validation inside the run (the loop still scores the last epoch)
    settings.patience = 0
    assert loss.d_steps == 1, "per-batch timing below assumes one critic step per batch"
    z_dim = modules["generator"].z_dim
    calls: list[tuple[float, int]] = []

    def noise_fn(n, g, d):
        # the loop's default noise, plus a timestamp: the first noise call of each batch marks its start
        calls.append((time.perf_counter(), n))
        return torch.randn(n, z_dim, generator=g, device=d)

    t0 = time.perf_counter()
    result = train_adversarial(
        modules["generator"],
        modules["discriminator"],
        modules["classifier"],
        data,
        loss,
        settings,
        device="cpu",
        seed=seed,
        progress=False,
        noise_fn=noise_fn,
    )
    wall = time.perf_counter() - t0
    starts = [t for t, n in calls if n == settings.batch_size][:: 1 + settings.g_steps]
    batch_s = list(np.diff(starts))  # start to start: one whole iteration of the loop
    # the loop's own clock at the end of each epoch (before any validation): per-epoch loop time
    ends = [0.0] + [r["seconds"] for r in result.history]
    steps = [0] + [r["g_step"] // settings.g_steps * loss.d_steps for r in result.history]
    epochs = [
        {"cells": (steps[i + 1] - steps[i]) * settings.batch_size, "seconds": ends[i + 1] - ends[i]}
        for i in range(len(result.history))
    ]
    return {"epochs": epochs, "batch_s": batch_s, "wall_incl_setup": wall}


# ---------------------------------------------------------------------------------------------- seed
class SeedCells(Dataset):
    """The prototype's dataset: a pandas lookup per cell, Python lists out."""

    def __init__(self, expr: pd.DataFrame, obs: pd.DataFrame, cell_ids: list[str], label_key: str):
        self.expr = expr
        self.obs = obs
        self.cell_ids = cell_ids
        self.label_key = label_key
        self.label_to_code = {c: i for i, c in enumerate(sorted(obs[label_key].unique()))}

    def __len__(self) -> int:
        return len(self.cell_ids)

    def __getitem__(self, i: int):
        cell_id = self.cell_ids[i]
        x = self.expr.loc[cell_id].tolist()
        label = self.obs.loc[cell_id, self.label_key]
        return x, self.label_to_code[label]


def seed_collate(batch):
    xs, ys = zip(*batch, strict=True)
    return torch.tensor(list(xs)), torch.tensor(list(ys))


def seed_frames(data: CellData) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dense cells × genes table (float64, as read from a CSV) and the labels, indexed by cell id."""
    genes = [data.preprocessing.output_genes[j] for j in data.preprocessing.train_genes]
    ids = [str(c) for c in data.obs_names]
    expr = pd.DataFrame(data.dense_rows(np.arange(data.n_cells)).astype(np.float64), index=ids, columns=genes)
    label = data.label
    obs = pd.DataFrame({"cell_type": np.asarray(label.categories)[label.codes]}, index=ids)
    return expr, obs


def run_seed(data: CellData, frames: tuple[pd.DataFrame, pd.DataFrame], params: dict, seed: int, epochs: int):
    modules, loss, settings = build(data, params, seed)
    generator, discriminator = modules["generator"], modules["discriminator"]
    classifier = modules["classifier"]
    for m in modules.values():
        m.train()
    rng = np.random.default_rng(seed)
    train_rows, _ = split_validation(data.label.codes, settings.val_fraction, rng)  # the same training cells
    target_zero = torch.from_numpy(zero_fraction_by_label(data, train_rows))
    expr, obs = frames
    # the seed's label codes (sorted names) must match CellData's, as one_hot/target_zero index by them
    assert list(np.sort(data.label.categories)) == list(data.label.categories)
    dataset = SeedCells(expr, obs, [str(data.obs_names[r]) for r in train_rows], "cell_type")
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        dataset,
        batch_size=settings.batch_size,
        shuffle=True,
        num_workers=0,
        collate_fn=seed_collate,
        generator=gen,
    )
    sizes = [c.n for c in data.conditions]
    z_dim = generator.z_dim
    opt_g = torch.optim.Adam(generator.parameters(), lr=settings.lr_g, betas=settings.betas, foreach=True)
    d_params = list(discriminator.parameters()) + list(classifier.parameters())
    opt_d = torch.optim.Adam(d_params, lr=settings.lr_d, betas=settings.betas, foreach=True)

    def fake_conditions(w_real):
        # the same label mixing as ours, so the per-batch work matches
        lab = w_real[0]
        b = len(lab)
        mixed = torch.rand(b, generator=gen) < settings.mix_prob
        if b < 2 or not bool(mixed.any()):
            return w_real
        partner = torch.randperm(b, generator=gen)
        alpha = torch.rand(b, 1, generator=gen)
        mix = alpha * lab + (1 - alpha) * lab[partner]
        return [torch.where(mixed[:, None], mix, lab), *w_real[1:]]

    records = []
    batch_s, batch_data_s = [], []
    for _ in range(epochs):
        cells = 0
        data_s = 0.0
        t0 = time.perf_counter()
        it = iter(loader)
        while True:
            td = time.perf_counter()
            try:
                x_real, y = next(it)
            except StopIteration:
                break
            data_s_batch = time.perf_counter() - td
            data_s += data_s_batch
            codes = y[:, None]
            w_real = one_hot_conditions(codes, sizes)
            bsz = len(y)
            # critic (+ classifier on real cells)
            w_fake = fake_conditions(w_real)
            with torch.no_grad():
                x_fake, _ = generator(torch.randn(bsz, z_dim, generator=gen), w_fake)
            d_loss = loss.d_loss(discriminator(x_real, w_real), discriminator(x_fake, w_fake))
            c_loss = F.cross_entropy(classifier(x_real)[0], y)
            opt_d.zero_grad(set_to_none=True)
            (d_loss + c_loss).backward()
            opt_d.step()
            d_loss.item(), c_loss.item()
            # generator (critic frozen, as ours)
            for p in d_params:
                p.requires_grad_(False)
            w_fake = fake_conditions(w_real)
            x_fake, pre = generator(torch.randn(bsz, z_dim, generator=gen), w_fake)
            g_loss = loss.g_loss(discriminator(x_fake, w_fake))
            cf = soft_cross_entropy(classifier(x_fake)[0], w_fake[0])
            sp_loss = sparsity_loss(pre, w_fake[0], target_zero, settings.sparsity_temperature)
            total = g_loss + settings.class_weight * cf + settings.sparsity_weight * sp_loss
            opt_g.zero_grad(set_to_none=True)
            total.backward()
            opt_g.step()
            g_loss.item(), cf.item(), sp_loss.item()
            for p in d_params:
                p.requires_grad_(True)
            cells += bsz
            if bsz == settings.batch_size:  # the last, partial batch of an epoch is not comparable
                batch_s.append(time.perf_counter() - td)
                batch_data_s.append(data_s_batch)
        records.append({"cells": cells, "seconds": time.perf_counter() - t0, "data_s": data_s})
    return {"epochs": records, "batch_s": batch_s, "batch_data_s": batch_data_s}


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
    ap.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--wait-quiet", type=float, default=300.0, help="max seconds to wait for idle CPUs before each run"
    )
    ap.add_argument("--profile", action="store_true", help="one cProfiled run per side instead of timing")
    args = ap.parse_args(argv)
    which = args.data or ("baron" if BARON.exists() else "simulated")
    epochs = args.epochs or (3 if which == "baron" else 1)
    repeats = 1 if args.profile else (args.repeats or (2 if which == "baron" else 3))
    torch.set_num_threads(args.threads)

    data, desc = load_data(which, args.seed)
    params = {"epochs": epochs, "batch_size": args.batch_size}
    print(
        f"data: {desc}: {data.n_cells} cells x {data.n_genes} genes, {data.label.n} types; "
        f"epochs={epochs} repeats={repeats} batch_size={args.batch_size} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} python={platform.python_version()} cpus={os.cpu_count()}"
    )
    if TrainSettings.balance:
        print("note: ours draws class-balanced minibatches (balance=0.5); the seed shuffles uniformly")
    t = time.perf_counter()
    frames = seed_frames(data)
    print(f"seed: dense float64 DataFrame built in {time.perf_counter() - t:.1f} s (setup, not timed)")

    if args.profile:
        ours, o_stats, o_total, o_txt = profiled(run_ours, data, params, args.seed)
        seed, s_stats, s_total, s_txt = profiled(run_seed, data, frames, params, args.seed, epochs)
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
            ("setup: PCA basis SVD (ours, not timed)", "principal_axes", "adversarial"),
        ]
        print(f"{'where (cProfile cumulative s)':<42} {'ours':>7} {'% loop':>7} {'seed':>7} {'% loop':>7}")
        for label, name, file_part in parts:
            o, sd = cumulative(o_stats, name, file_part), cumulative(s_stats, name, file_part)
            print(f"{label:<42} {o:>7.2f} {100 * o / o_loop:>7.1f} {sd:>7.2f} {100 * sd / s_loop:>7.1f}")
        print(f"{'timed loop':<42} {o_loop:>7.2f} {100.0:>7.1f} {s_loop:>7.2f} {100.0:>7.1f}")
        print(
            f"ours: train_adversarial {o_total:.2f} s in all (setup + loop + final validation); "
            f"seed: run_seed {s_total:.2f} s in all"
        )
        ours_runs, seed_runs = [ours], [seed]
    else:
        ours_runs, seed_runs = [], []
        for rep in range(repeats):  # alternate the order, so that neither side always goes first
            for side in ("ours", "seed") if rep % 2 == 0 else ("seed", "ours"):
                wait_quiet(args.wait_quiet)
                watch = CpuWatch()
                if side == "ours":
                    r = run_ours(data, params, args.seed)
                    ours_runs.append(r)
                    extra = f" (wall incl. setup and final validation {r['wall_incl_setup']:.1f} s)"
                else:
                    r = run_seed(data, frames, params, args.seed, epochs)
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
