"""`cellsynth demo`: fit the default model on scanpy's bundled pbmc68k, sample, write, show quick figures."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def quick_fidelity(real, synthetic, label_key: str, seed: int = 0) -> dict[str, float]:
    """A few fast figures on log-normalised data: per-gene mean/zero-fraction agreement and whether a
    classifier trained on real cells recognises the synthetic cells' types."""
    import scipy.sparse as sp
    from sklearn.ensemble import RandomForestClassifier

    from .data.preprocess import normalize_log1p

    def lognorm(a):
        X = normalize_log1p(a.X)
        return X.toarray() if sp.issparse(X) else X

    r = lognorm(real)
    s = lognorm(synthetic[:, real.var_names])
    labels = synthetic.obs[label_key].astype(str).to_numpy()
    clf = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
    clf.fit(r, real.obs[label_key].astype(str).to_numpy())
    return {
        "gene_mean_pearson": float(np.corrcoef(r.mean(0), s.mean(0))[0, 1]),
        "zero_fraction_pearson": float(np.corrcoef((r == 0).mean(0), (s == 0).mean(0))[0, 1]),
        "zero_fraction_real": float((r == 0).mean()),
        "zero_fraction_synthetic": float((s == 0).mean()),
        "trts_accuracy": float((clf.predict(s) == labels).mean()),
    }


def run_demo(out: Path, *, max_minutes: float = 3.0, device: str = "auto", seed: int = 0) -> None:
    from rich.console import Console
    from rich.table import Table

    from . import models
    from .data.datasets import pbmc68k
    from .data.writers import write_synthetic

    console = Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    real = pbmc68k()
    label_key = "bulk_labels"
    counts = real.obs[label_key].value_counts()
    rarest = str(counts.idxmin())
    console.print(
        f"pbmc68k: {real.n_obs} cells × {real.n_vars} genes, {len(counts)} types; "
        f"rarest: {rarest} ({counts.min()})"
    )
    model = models.get(models.DEFAULT_MODEL, max_minutes=max_minutes, epochs=100_000)
    t0 = time.monotonic()
    model.fit(real, label_key=label_key, device=device, seed=seed)
    fit_s = time.monotonic() - t0
    model.save(out / "model")
    synthetic = model.sample(n=real.n_obs, per_type={rarest: 200}, seed=seed)
    write_synthetic(synthetic, out / "synthetic.h5ad")

    table = Table(title="synthetic cells per type")
    table.add_column("type")
    table.add_column("real", justify="right")
    table.add_column("synthetic", justify="right")
    syn_counts = synthetic.obs[label_key].value_counts()
    for name in counts.index:
        table.add_row(str(name), str(counts[name]), str(syn_counts.get(name, 0)))
    console.print(table)
    figures = quick_fidelity(real, synthetic, label_key, seed=seed)
    rec = model.fit_record
    console.print(
        f"trained {model.name}: {len(model.history)} epochs in {fit_s:.0f}s "
        f"(stopped: {rec['stopped_because']}); best validation {rec['val_metric']} {rec['best_val']:.4f}"
    )
    fig = Table(title="quick fidelity (full suite: cellsynth evaluate)")
    fig.add_column("figure")
    fig.add_column("value", justify="right")
    for k, v in figures.items():
        fig.add_row(k, f"{v:.3f}")
    console.print(fig)
    console.print(f"wrote {out / 'synthetic.h5ad'} ({synthetic.n_obs} cells) and {out / 'model'}/")
