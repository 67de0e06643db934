"""Out of core: fitting an ``.h5ad`` whose matrix the fit's memory could not hold.

Run from the repository root::

    .venv/bin/python benchmarks/out_of_core.py --cells 600000 --file /tmp/ooc.h5ad --limit-gb 6
    .venv/bin/python benchmarks/out_of_core.py --smoke          # a small file, both modes, seconds

The file is built once (kept for reruns): a pool of ``--pool`` simulated cells
(``cellsynth.data.datasets.simulate``: ``--genes`` genes, eight types, mean library ``--library``) written
over and over, under distinct cell names, up to ``--cells`` cells, stored CSR and uncompressed as
anndata writes by default. What is measured is what the file's size does to a fit, not how varied it is.

Then each command runs in its own process with its anonymous memory capped at ``--limit-gb`` (the
``RLIMIT_DATA`` limit: numpy's and torch's allocations count, memory-mapped files do not, as a machine
with that much memory and a disk would behave):

1. ``cellsynth fit FILE --in-memory`` (the whole matrix read into memory);
2. ``cellsynth fit FILE --out-of-core --max-minutes M``, then ``cellsynth sample MODEL --n 10000``.

Printed per command: its exit status, wall seconds, peak anonymous memory (``RssAnon``, sampled every
0.2 s), peak resident memory (``VmHWM``, which also counts the pages of mapped files) and its last line
on stderr; and the matrix's size in memory (float32 values and int32 column indices).
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).with_name("cellsynth"))]
#: cell-type shares of the pool
SHARES = (0.3, 0.2, 0.15, 0.12, 0.1, 0.08, 0.04, 0.01)


def build(path: Path, cells: int, pool: int, genes: int, library: float) -> None:
    """The benchmark's ``.h5ad`` (see the module's docstring)."""
    import anndata as ad
    import h5py
    import pandas as pd

    from cellsynth.data.datasets import simulate

    sizes = {f"type{i}": max(1, round(s * pool)) for i, s in enumerate(SHARES)}
    base = simulate(sizes, n_genes=genes, mean_library=library, seed=0)
    X = base.X.tocsr()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    ad.AnnData(X=X, var=base.var).write_h5ad(tmp)
    with h5py.File(tmp, "a") as f:
        matrix = ad.io.sparse_dataset(f["X"])
        written = X.shape[0]
        while written < cells:
            part = X[: min(X.shape[0], cells - written)]
            matrix.append(part)
            written += part.shape[0]
        copies = math.ceil(cells / X.shape[0])
        obs = pd.concat([base.obs[["cell_type"]]] * copies).iloc[:cells]
        obs.index = pd.Index([f"cell{i}" for i in range(cells)])
        del f["obs"]
        ad.io.write_elem(f, "obs", obs)
    tmp.rename(path)


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "VmHWM"):
                    out[key] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out


def run(args: list[str], limit_bytes: int | None) -> dict:
    """One command under the memory cap: exit status, seconds, peak memories and its last stderr line."""

    def cap() -> None:
        if limit_bytes:
            resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))

    started = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, preexec_fn=cap, cwd=ROOT)
    peak = {"RssAnon": 0, "VmHWM": 0}
    lines: list[str] = []
    import threading

    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    while proc.poll() is None:
        for key, value in _status(proc.pid).items():
            peak[key] = max(peak[key], value)
        time.sleep(0.2)
    reader.join()
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "")
    return {"rc": proc.returncode, "seconds": time.monotonic() - started, **peak, "last": last}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=600_000)
    p.add_argument("--pool", type=int, default=50_000)
    p.add_argument("--genes", type=int, default=15_000)
    p.add_argument("--library", type=float, default=3000.0)
    p.add_argument("--file", type=Path, default=Path("/tmp/cellsynth_out_of_core.h5ad"))
    p.add_argument("--limit-gb", type=float, default=6.0)
    p.add_argument("--max-minutes", type=float, default=10.0)
    p.add_argument("--work", type=Path, default=Path("/tmp/cellsynth_out_of_core"))
    p.add_argument("--skip-in-memory", action="store_true")
    p.add_argument("--smoke", action="store_true", help="2,000 cells × 300 genes, no cap, 0.2 minutes")
    a = p.parse_args()
    if a.smoke:
        a.cells, a.pool, a.genes, a.library, a.limit_gb, a.max_minutes = 2000, 500, 300, 800.0, 0, 0.2
        a.file = a.work / "smoke.h5ad"
    if not a.file.exists():
        t0 = time.monotonic()
        build(a.file, a.cells, a.pool, a.genes, a.library)
        print(f"built {a.file} in {time.monotonic() - t0:.0f} s", flush=True)
    from cellsynth.data import BackedCells

    with BackedCells(a.file) as cells:
        shape, entries, in_memory = (cells.n_obs, cells.n_vars), cells.stored_entries, cells.memory_bytes
    gb = 2**30
    print(
        f"{a.file}: {shape[0]:,} cells × {shape[1]:,} genes, {entries:,} stored values, "
        f"{in_memory / gb:.1f} GiB in memory as CSR; file {a.file.stat().st_size / gb:.1f} GiB",
        flush=True,
    )
    limit = int(a.limit_gb * gb) if a.limit_gb else None
    fit = [*CLI, "fit", str(a.file), "--label-key", "cell_type", "--quiet", "--overwrite"]
    fit += ["--max-minutes", str(a.max_minutes)]
    modes = ["out_of_core"] if a.skip_in_memory else ["in_memory", "out_of_core"]
    runs = {
        f"fit --{m.replace('_', '-')}": [*fit, f"--{m.replace('_', '-')}", "--out", str(a.work / m)]
        for m in modes
    }
    model, synthetic = str(a.work / "out_of_core"), str(a.work / "synthetic.h5ad")
    runs["sample 10,000"] = [*CLI, "sample", model, "--n", "10000", "--out", synthetic]
    for name, args in runs.items():
        r = run(args, limit)
        print(
            f"{name}: rc {r['rc']}, {r['seconds']:.0f} s, peak anonymous {r['RssAnon'] / gb:.2f} GiB, peak "
            f"resident {r['VmHWM'] / gb:.2f} GiB (cap {a.limit_gb:g} GiB) | {r['last']}",
            flush=True,
        )


if __name__ == "__main__":
    main()
