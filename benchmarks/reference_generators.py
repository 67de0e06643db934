"""Non-learned reference generators: how low can detection go without a model?

Run from the repository root::

    .venv/bin/python benchmarks/reference_generators.py \
        nb pln smooth1 smooth3 smooth15 postpred20 postpred10:0.5
    .venv/bin/python benchmarks/reference_generators.py --dataset immune_spectra nb
    .venv/bin/python benchmarks/reference_generators.py --smoke   # every kind, tiny simulated data

``--dataset``: Baron mouse pancreas by default, pbmc68k or another file in ../shared/data. Same split and
evaluation as ``benchmarks/cgan_quality.py`` and ``cellsynth benchmark`` (50/50 by type, seed 0, as many
cells of each type as TEST holds, TRAIN for privacy). Each generator draws cells of a type from that type's
TRAIN cells; library sizes are drawn from the type's TRAIN cells.

- ``nb`` / ``pln``: each gene independent: the type's mean profile × library, with a per-(type, gene)
  method-of-moments over-dispersion, drawn as gamma–Poisson (negative binomial) or Poisson–log-normal.
- ``smoothK``: anchored on a random TRAIN cell: the average profile of it and its K − 1 nearest same-type
  neighbours (20-PC space), then Poisson counts (K = 1: the cell's own profile re-drawn, double noise).
- ``postpredK[:F]``: anchored posterior predictive: the anchor's prior rate is the mean of its K nearest
  same-type neighbours (not itself; 10% of the type's mean mixed in), with a gamma prior of dispersion F × the
  residual method-of-moments dispersion about those neighbourhood means; rates are drawn from the gamma
  posterior given the anchor's own counts, then Poisson counts at the anchor's library size.

The anchored ones are smoothed bootstraps of TRAIN, not models: they bound what a non-copying generator needs
to reach. Prints one line per generator. ``--smoke`` runs the same steps on 300 simulated cells (:mod:`smoke`)
with light evaluation settings, by default for one generator of each kind (``SMOKE_GENERATORS``): a check
that the script works, not a measurement.
"""

from __future__ import annotations

import argparse

import anndata as ad
import numpy as np
import scipy.sparse as sp
import smoke  # benchmarks/ is the script's directory
from cgan_quality import halves
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from cellsynth.metrics import evaluate

KEYS = ["detection_auc", "detection_auc_logreg", "dcr_ratio", "ks_cell_zero_fraction", "gene_corr_pearson"]
SMOKE_GENERATORS = ["nb", "pln", "smooth3", "postpred5:0.5"]


def mom_dispersion(y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    num = ((y - mu) ** 2 - mu).sum(0)
    den = (mu**2).sum(0)
    return np.clip(np.divide(num, den, out=np.full_like(num, 0.1), where=den > 0), 1e-3, 100)


def neighbours(profile: np.ndarray, k: int) -> np.ndarray:
    n = len(profile)
    k = min(k, n)
    nc = min(20, n - 1)
    if nc < 2:
        return np.tile(np.arange(n), (n, 1))[:, :k]
    emb = PCA(nc, random_state=0).fit_transform(np.log1p(profile * 1e4))
    return NearestNeighbors(n_neighbors=k).fit(emb).kneighbors(emb, return_distance=False)


def draw(kind: str, y: np.ndarray, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` cells from one type's TRAIN counts ``y`` (cells × genes)."""
    lib = y.sum(1)
    prof = y / lib[:, None]
    anchor = rng.integers(0, len(y), m)
    if kind in ("nb", "pln"):
        p = y.sum(0) / lib.sum()
        phi = mom_dispersion(y, lib[:, None] * p)
        rate = lib[rng.integers(0, len(y), m), None] * p
        if kind == "nb":
            return rng.poisson(rng.gamma(1 / phi, rate * phi))
        s2 = np.log1p(phi)
        return rng.poisson(rate * np.exp(np.sqrt(s2) * rng.standard_normal(rate.shape) - s2 / 2))
    if kind.startswith("smooth"):
        nn = neighbours(prof, int(kind[6:]))
        rate = np.stack([prof[nn[i]].mean(0) for i in anchor]) * lib[rng.integers(0, len(y), m), None]
        return rng.poisson(rate)
    if kind.startswith("postpred"):
        k, _, fac = kind[8:].partition(":")
        nn = neighbours(prof, int(k) + 1)[:, 1:]  # not the cell itself
        mu = (0.9 * np.stack([prof[row].mean(0) for row in nn]) + 0.1 * prof.mean(0)) * lib[:, None]
        a = 1 / (mom_dispersion(y, mu) * float(fac or 1))
        shape = a + y[anchor]
        rate = a / np.maximum(mu[anchor], 1e-12) + 1
        lam = np.where(mu[anchor] > 0, rng.gamma(shape, 1 / rate), 0.0)
        return rng.poisson(lam)
    raise SystemExit(f"unknown generator {kind!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generators", nargs="*", help="nb, pln, smoothK, postpredK[:F]")
    ap.add_argument("--dataset", default="baron_mouse_pancreas", help="pbmc68k or a file in ../shared/data")
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data: checks the script")
    args = ap.parse_args()
    settings = None
    if args.smoke:
        args.dataset, settings = "smoke", smoke.EVALUATE
        args.generators = args.generators or SMOKE_GENERATORS
    elif not args.generators:
        ap.error("name at least one generator, e.g. nb pln smooth3 postpred20")
    train, test, label_key = halves(args.dataset)
    X = sp.csr_matrix(train.X)
    labels = train.obs[label_key].astype(str).to_numpy()
    # as many cells of each type as TEST holds (the benchmark's request)
    want = test.obs[label_key].astype(str).value_counts()
    for kind in args.generators:
        rng = np.random.default_rng(0)
        parts, out_labels = [], []
        for t, m in want.items():
            if m:
                parts.append(draw(kind, X[labels == t].toarray().astype(np.float64), int(m), rng))
                out_labels += [t] * int(m)
        syn = ad.AnnData(sp.csr_matrix(np.concatenate(parts).astype(np.float32)), var=train.var.copy())
        syn.obs[label_key] = out_labels
        syn.obs_names = [f"ref{i}" for i in range(syn.n_obs)]
        met = evaluate(
            test,
            syn,
            label_key=label_key,
            train=train,
            seed=0,
            families=["detection", "privacy", "genes"],
            settings=settings,
        )
        print(kind, {k: round(met.overall[k], 3) for k in KEYS}, flush=True)


if __name__ == "__main__":
    main()
