"""Seconds per training step of a model on a dataset, and the share of the CPU's matmul rate it reaches.

Run from the repository root::

    .venv/bin/python benchmarks/step_time.py --dataset baron_mouse_pancreas            # the default model
    .venv/bin/python benchmarks/step_time.py --dataset baron_mouse_pancreas --model cgan
    .venv/bin/python benchmarks/step_time.py --dataset baron_mouse_pancreas --precision fp32  # bf16 off
    .venv/bin/python benchmarks/step_time.py --smoke                                   # tiny data, seconds

The model is fitted on the training half of the dataset (``cgan_quality.halves``: pbmc68k or a file of
../shared/data) with validation off, for ``--epochs`` epochs (and ``--ae-epochs`` of an autoencoder
stage, for ``nbgan``), at ``--threads`` torch threads. A step's time is taken from the training history
between the end of the first epoch and the end of the last (set-up, the first epoch's warm-up and the
wrap-up excluded), for the generator's steps (a critic step and a generator step each) and for the
autoencoder's.

The arithmetic: a second, short fit (one epoch of each stage) runs under ``torch.utils.flop_counter``,
which counts the floating-point operations of the matrix products (forward and backward); their number
per step over the step's time is the rate reached, printed beside the rate of a 2048 × 2048 float32
matrix product on the same threads (the CPU's practical float32 peak, which a step in bf16 can pass).
Element-wise work (the count draw, log-gammas, softmax) is not counted: it is what keeps a step below the
peak. The last line is
``RESULT gan_step_s=<x> ae_step_s=<y> gan_gflops=<a> ae_gflops=<b> peak_gflops=<c>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

N_PEAK = 2048


def peak_gflops(repeats: int = 10) -> float:
    """The float32 rate of a square matrix product on the current threads (best of ``repeats``)."""
    a, b = torch.randn(N_PEAK, N_PEAK), torch.randn(N_PEAK, N_PEAK)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * N_PEAK**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


class MatmulFlops(TorchDispatchMode):
    """Counts the FLOPs of the matrix products run under it, with torch's own per-op formulas
    (``torch.utils.flop_counter``); unlike ``FlopCounterMode`` it tracks no modules, which
    ``autograd.grad`` (the R1 penalty) does not allow."""

    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        count = flop_registry.get(func._overloadpacket)
        if count is not None:
            self.flops += int(count(*args, **kwargs, out_val=out))
        return out


def _steps(row: dict) -> int:
    return int(row.get("g_step", row.get("step", 0)))


def per_step(history: list[dict], stage: str) -> float | None:
    """Seconds per step of ``stage`` from the end of its first epoch to the end of its last."""
    rows = [r for r in history if r.get("stage", "gan") == stage and "seconds" in r]
    if len(rows) < 2 or _steps(rows[-1]) <= _steps(rows[0]):
        return None
    return (rows[-1]["seconds"] - rows[0]["seconds"]) / (_steps(rows[-1]) - _steps(rows[0]))


def two_stages(name: str) -> bool:
    return name in ("nbgan", "nbgarage")


#: ``--precision``: the models' ``mixed_precision`` (auto: their default, bf16 where it pays)
PRECISIONS = {"auto": None, "bf16": True, "fp32": False}


def fit(name: str, train, key: str, epochs: int, ae_epochs: int, seed: int = 0, precision: str = "auto"):
    """``name`` fitted with validation off for ``epochs`` (and ``ae_epochs`` of its autoencoder)."""
    from cellsynth import models

    off = {"val_every_steps": 10**9, "patience": 0, "mixed_precision": PRECISIONS[precision]}
    params = {"epochs": epochs, **off}
    if two_stages(name):
        params["ae"] = {"epochs": ae_epochs, **off}
    model = models.get(name, **params)
    model.fit(train, label_key=key, progress=False, seed=seed)
    return model


def flops_per_step(name: str, train, key: str, precision: str = "auto") -> dict[str, float]:
    """Matrix-product FLOPs per step of each stage: fits one epoch longer in that stage than a base fit,
    under the counter; the difference over the difference in steps (set-up and wrap-up cancel)."""

    def counted(epochs: int, ae_epochs: int) -> tuple[int, list[dict]]:
        with MatmulFlops() as counter:
            model = fit(name, train, key, epochs, ae_epochs, precision=precision)
        return counter.flops, model.history

    def steps(history, stage):
        rows = [r for r in history if r.get("stage", "gan") == stage]
        return _steps(rows[-1]) if rows else 0

    base, base_history = counted(1, 1)
    out = {}
    for stage, (epochs, ae_epochs) in (("gan", (2, 1)), ("autoencoder", (1, 2))):
        if stage == "autoencoder" and not two_stages(name):
            continue
        total, history = counted(epochs, ae_epochs)
        out[stage] = (total - base) / max(steps(history, stage) - steps(base_history, stage), 1)
    return out


def main() -> None:
    from cgan_quality import halves

    from cellsynth import models

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baron_mouse_pancreas", help="pbmc68k, or a file in ../shared/data")
    ap.add_argument("--model", default=models.DEFAULT_MODEL)
    ap.add_argument("--epochs", type=int, default=12, help="generator epochs timed")
    ap.add_argument("--ae-epochs", type=int, default=6, help="autoencoder epochs timed (nbgan)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", choices=tuple(PRECISIONS), default="auto", help="mixed_precision")
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        import smoke  # benchmarks/ is the script's directory

        from cellsynth.data.datasets import simulate

        train, key = simulate({"a": 150, "b": 100, "r": 20}, n_genes=smoke.GENES, seed=0), "cell_type"
        args.epochs, args.ae_epochs, args.dataset = 3, 3, "simulated (smoke)"
    else:
        train, _, key = halves(args.dataset)
    model = fit(args.model, train, key, args.epochs, args.ae_epochs, args.seed, args.precision)
    gan_s, ae_s = per_step(model.history, "gan"), per_step(model.history, "autoencoder")
    flops = flops_per_step(args.model, train, key, args.precision)
    peak = peak_gflops()
    batch = int(model.params["batch_size"])
    print(f"{args.model} on {args.dataset}: {train.n_obs} cells x {train.n_vars} genes, batch {batch}, "
          f"{args.threads} threads, precision {model.fit_record.get('precision')}; float32 matmul peak "
          f"{peak:.1f} GFLOP/s")  # fmt: skip
    values = {"gan_step_s": gan_s, "ae_step_s": ae_s}
    for stage, seconds in (("gan", gan_s), ("autoencoder", ae_s)):
        if seconds is None or stage not in flops:
            continue
        rate = flops[stage] / seconds / 1e9
        values[f"{'ae' if stage == 'autoencoder' else 'gan'}_gflops"] = rate
        print(f"  {stage}: {seconds * 1e3:.0f} ms per step, {flops[stage] / 1e9:.2f} GFLOP of matrix "
              f"products per step -> {rate:.1f} GFLOP/s ({rate / peak:.0%} of the peak), "
              f"{batch / seconds:.0f} cells/s")  # fmt: skip
    values["peak_gflops"] = peak
    print("RESULT " + " ".join(f"{k}={'nan' if v is None else f'{v:.4g}'}" for k, v in values.items()))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
