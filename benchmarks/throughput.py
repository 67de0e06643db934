"""Training throughput of cellsynth's cgan loop against a re-creation of the seed prototype's data path.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py --data baron       # 3 epochs of Baron mouse pancreas
    .venv/bin/python benchmarks/throughput.py --data simulated   # 1 epoch of 20,000 simulated cells

Both sides train the same networks (``CGAN._build``, same initial weights), with the same losses
(``CGAN._loss``), optimisers and hyperparameters (``CGAN._settings``), on the same training cells, for
the same number of epochs:

* **ours**: the real :func:`cellsynth.train.adversarial.train_adversarial` (Fabric, class-balanced
  minibatches densified from the CSR matrix, EMA as default) with validation pushed past the end of
  the run. Only the loop is timed: the time is the loop's own clock at the end of the last epoch
  (``history[-1]["seconds"]``), which excludes the setup before the loop and the final validation.
* **seed**: the prototype's data path: a ``torch.utils.data.Dataset`` whose ``__getitem__`` does a
  pandas ``.loc[cell_id]`` on a dense cells × genes DataFrame of the training representation (float64,
  as ``pd.read_csv`` gives) and a ``.loc`` for the label, returning Python lists and values; a
  ``collate_fn`` that builds tensors from lists; ``DataLoader(shuffle=True, num_workers=0)``. Its
  per-batch step does the same computations as ours (critic step on the detached generator output
  with label mixing, classifier cross-entropy on the real cells, generator step with the critic
  frozen: adversarial + class + sparsity loss), without Fabric or EMA.

Cells processed are the real cells consumed by critic steps. The last line printed is
``RESULT throughput_ratio=<ours / seed>``. ``--profile`` adds a cProfile breakdown (its timings carry
the profiler's overhead; use the plain run for the throughput numbers).
"""

from __future__ import annotations

import argparse
import cProfile
import io
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
    balanced_row_weights,
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
    )
    wall = time.perf_counter() - t0
    loop_s = result.history[-1]["seconds"]
    g_steps = result.history[-1]["g_step"]
    critic_steps = g_steps // settings.g_steps * loss.d_steps
    return {
        "cells": critic_steps * settings.batch_size,
        "batches": critic_steps,
        "seconds": loop_s,
        "wall_incl_setup": wall,
    }


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


def run_seed(data: CellData, params: dict, seed: int, epochs: int) -> dict:
    modules, loss, settings = build(data, params, seed)
    generator, discriminator = modules["generator"], modules["discriminator"]
    classifier = modules["classifier"]
    for m in modules.values():
        m.train()
    rng = np.random.default_rng(seed)
    train_rows, _ = split_validation(data.label.codes, settings.val_fraction, rng)  # the same training cells
    target_zero = torch.from_numpy(zero_fraction_by_label(data, train_rows))
    expr, obs = seed_frames(data)
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

    cells = batches = 0
    data_s = 0.0
    t0 = time.perf_counter()
    for _ in range(epochs):
        it = iter(loader)
        while True:
            td = time.perf_counter()
            try:
                x_real, y = next(it)
            except StopIteration:
                break
            data_s += time.perf_counter() - td
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
            batches += 1
    seconds = time.perf_counter() - t0
    return {"cells": cells, "batches": batches, "seconds": seconds, "data_s": data_s}


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", choices=["simulated", "baron"], default=None, help="default: baron when present"
    )
    ap.add_argument("--epochs", type=int, default=None, help="default: 3 (baron), 1 (simulated)")
    ap.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="also print a cProfile breakdown of each side")
    args = ap.parse_args(argv)
    which = args.data or ("baron" if BARON.exists() else "simulated")
    epochs = args.epochs or (3 if which == "baron" else 1)
    torch.set_num_threads(args.threads)

    data, desc = load_data(which, args.seed)
    params = {"epochs": epochs, "batch_size": args.batch_size}
    print(
        f"data: {desc}: {data.n_cells} cells x {data.n_genes} genes, {data.label.n} types; "
        f"epochs={epochs} batch_size={args.batch_size} threads={torch.get_num_threads()} "
        f"torch={torch.__version__} python={platform.python_version()}"
    )
    if balanced_row_weights(data.label.codes, TrainSettings.balance) is not None:
        print("ours samples class-balanced minibatches (balance=0.5); the seed shuffles uniformly")

    if args.profile:
        ours, o_stats, o_total, o_txt = profiled(run_ours, data, params, args.seed)
        seed, s_stats, s_total, s_txt = profiled(run_seed, data, params, args.seed, epochs)
        o_data = cumulative(o_stats, "dense_rows")
        s_get = cumulative(s_stats, "__getitem__", "throughput")
        s_coll = cumulative(s_stats, "seed_collate")
        print("\n--- cProfile: ours (cumulative)\n" + o_txt)
        print("--- cProfile: seed (cumulative)\n" + s_txt)
        print(f"ours: dense_rows {o_data:.2f} s of {o_total:.2f} s ({100 * o_data / o_total:.1f}%)")
        print(
            f"seed: __getitem__ (pandas .loc + tolist) {s_get:.2f} s ({100 * s_get / s_total:.1f}%), "
            f"collate (torch.tensor from lists) {s_coll:.2f} s ({100 * s_coll / s_total:.1f}%) "
            f"of {s_total:.2f} s"
        )
    else:
        ours = run_ours(data, params, args.seed)
        seed = run_seed(data, params, args.seed, epochs)

    ours_rate = ours["cells"] / ours["seconds"]
    seed_rate = seed["cells"] / seed["seconds"]
    print()
    print(f"{'side':<6} {'batches':>8} {'cells':>8} {'seconds':>9} {'cells/s':>10}")
    print(f"{'ours':<6} {ours['batches']:>8} {ours['cells']:>8} {ours['seconds']:>9.2f} {ours_rate:>10.1f}")
    print(f"{'seed':<6} {seed['batches']:>8} {seed['cells']:>8} {seed['seconds']:>9.2f} {seed_rate:>10.1f}")
    print(
        f"ours wall incl. setup and final validation: {ours['wall_incl_setup']:.2f} s; "
        f"seed time in the DataLoader (pandas + collate): {seed['data_s']:.2f} s "
        f"({100 * seed['data_s'] / seed['seconds']:.1f}%), compute per batch "
        f"{(seed['seconds'] - seed['data_s']) / seed['batches'] * 1000:.0f} ms"
    )
    print(f"RESULT ours_cells_per_s={ours_rate:.1f}")
    print(f"RESULT seed_cells_per_s={seed_rate:.1f}")
    print(f"RESULT throughput_ratio={ours_rate / seed_rate:.2f}")


if __name__ == "__main__":
    main()
