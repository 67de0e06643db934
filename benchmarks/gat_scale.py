"""Time and peak memory of GARAGE's stage 1 (kNN graph + GAT + attention scores) on many cells.

Run from the repository root::

    .venv/bin/python benchmarks/gat_scale.py                   # 100,000 simulated cells
    .venv/bin/python benchmarks/gat_scale.py --cells 20000
    .venv/bin/python benchmarks/gat_scale.py --smoke           # 1,000 cells × 100 genes, seconds

Simulated NB counts (``cellsynth.data.datasets.simulate``, 9 types incl. a rare one, 2,000 genes) are
reduced to a 50-component PCA of the log-normalised data (not timed: the fit does that once for
everything), then ``select_seeds(method="gat")`` is timed: the k = 5 kNN graph (scikit-learn), the
GAT with early stopping (trained on k-means-cluster subgraphs above 20,000 cells), the attention
scores and the seed choice. Peak memory: the resident high-water mark of the seed-selection stage (the
kernel's peak counter is reset after the PCA, so simulating and reducing the data do not count) and of
the whole process. Targets: ≤ 5 min and ≤ 4 GB at 100,000 cells. Last line:
``RESULT gat_seconds=<x> peak_rss_gb=<y> process_peak_rss_gb=<z>`` (``peak_rss_gb=nan`` where the kernel's
counter cannot be reset). ``--smoke`` runs the same steps on 1,000 cells × 100 genes: a check that the
script works, not a measurement.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

from cellsynth.data.celldata import CellData
from cellsynth.data.datasets import simulate
from cellsynth.seeding import select_seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=100_000)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="1,000 cells × 100 genes: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.cells, args.genes = 1000, 100
    share = np.array([0.25, 0.2, 0.15, 0.12, 0.1, 0.08, 0.05, 0.045, 0.005])
    sizes = {f"t{i}": int(round(s * args.cells)) for i, s in enumerate(share[:-1])}
    sizes["rare"] = args.cells - sum(sizes.values())
    adata = simulate(sizes, n_genes=args.genes, seed=args.seed)
    data = CellData.from_anndata(adata, label_key="cell_type")
    t = time.perf_counter()
    _, _, coords = data.pca(50, args.seed)
    print(f"PCA of {data.n_cells} × {data.n_genes}: {time.perf_counter() - t:.1f} s (not counted)")
    reset = _reset_peak_rss()
    t = time.perf_counter()
    sel = select_seeds(
        coords,
        np.asarray(adata.obs["cell_type"]),
        adata.obs_names,
        method="gat",
        leakage=0.2,
        seed=args.seed,
        progress=True,
    )
    seconds = time.perf_counter() - t
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # KiB → GiB
    peak = _peak_rss_gb() if reset else float("nan")
    d = sel.details
    print(
        f"{args.cells} cells, {d['n_edges']} edges: GAT {d['gat_epochs']} epochs, "
        f"held-out balanced accuracy {d['gat_val_balanced_accuracy']:.3f}; "
        f"seeds {int(sel.is_seed.sum())}, rare seeds {d['seeds_per_type']['rare']}"
    )
    print(f"RESULT gat_seconds={seconds:.1f} peak_rss_gb={peak:.2f} process_peak_rss_gb={process_peak:.2f}")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (VmHWM) of this process (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024**2  # kB → GiB
    return float("nan")


if __name__ == "__main__":
    main()
