"""How realistic can cells decoded from an ``nbvae``'s latent space be? The ceiling of a latent generator.

Run from the repository root::

    .venv/bin/python benchmarks/latent_ceiling.py --dataset baron_mouse_pancreas --minutes 3
    .venv/bin/python benchmarks/latent_ceiling.py --smoke      # tiny simulated data, seconds

The dataset is split 50/50 by type (``split_by_type``, seed 0) and an ``nbvae`` (its defaults plus any
``--param``) is fitted on TRAIN under ``--minutes``. Its decoder then draws counts (negative binomial, the
model's θ) from latent codes chosen four ways, and each set is scored against TEST with the benchmark's
metrics (``detection_auc``: a random forest in the union PCA; ``dcr_ratio`` with TRAIN):

- ``recon_test``: the posterior means of the TEST cells themselves, each drawn at its own library size —
  the decoder's reconstructions of held-out cells: no latent sampler can be more realistic than this;
- ``recon_train``: the same for the TRAIN cells (re-drawing the training cells; copying shows in dcr_ratio);
- ``type_gaussian``: codes drawn from a Gaussian fitted per type to the TRAIN cells' posterior means
  (full covariance), at library sizes of the type's TRAIN cells — a simple model of the codes;
- ``prior``: codes from N(0, I), as ``nbvae`` samples.

A latent GAN is worth training only if ``recon_test`` sits well below the target, and it has to beat
``type_gaussian`` to be worth its cost. Prints one JSON line per variant.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import scipy.sparse as sp
import smoke  # benchmarks/ is the script's directory
import torch
from cgan_quality import halves

from cellsynth import models
from cellsynth.cli import parse_key_values
from cellsynth.data.preprocess import expand_genes, normalize_log1p
from cellsynth.metrics import evaluate
from cellsynth.models.nbvae import LOG_THETA_RANGE, draw_nb
from cellsynth.nn.blocks import one_hot_conditions

KEYS = ["detection_auc", "detection_auc_groundgan", "dcr_ratio", "mmd", "properties_mean"]


def conditions(model, adata) -> list[torch.Tensor]:
    """One-hot label weights of ``adata``'s cells in the model's categories."""
    labels = model.info["categories"][model.info["label_key"]]
    codes = adata.obs[model.info["label_key"]].astype(str).map({c: i for i, c in enumerate(labels)})
    return one_hot_conditions(torch.from_numpy(codes.to_numpy(np.int64))[:, None], [len(labels)])


def training_values(model, adata) -> tuple[torch.Tensor, np.ndarray]:
    """``(x, library)``: the cells in the model's training representation, and their library sizes over
    the training genes."""
    pre = model.info["preprocessing"]
    cols = np.asarray(pre["train_genes"], dtype=np.int64)
    X = sp.csr_matrix(adata.X, dtype=np.float32)
    x = normalize_log1p(X, target_sum=pre["target_sum"])[:, cols].toarray()
    return torch.from_numpy(x), np.asarray(X[:, cols].sum(1)).ravel()


@torch.no_grad()
def encode(model, adata) -> np.ndarray:
    net = model.modules["generator"].eval()
    x, _ = training_values(model, adata)
    stats = net.encoder(torch.cat([x, *conditions(model, adata)], dim=1)).float()
    return stats[:, : net.z_dim].numpy()


@torch.no_grad()
def decode(model, z: np.ndarray, weights: list[torch.Tensor], library: np.ndarray, rng) -> sp.csr_matrix:
    """Counts over the output genes drawn from the decoder at codes ``z`` and library sizes ``library``."""
    net = model.modules["generator"].eval()
    pre = model.info["preprocessing"]
    cols = np.asarray(pre["train_genes"], dtype=np.int64)
    values = net.generate(torch.from_numpy(z.astype(np.float32)), weights).double().numpy()
    n_genes = len(cols)
    rho = np.expm1(values[:, :n_genes])
    rho /= rho.sum(1, keepdims=True)
    theta = np.exp(np.clip(weights[0].double().numpy() @ net.log_theta.double().numpy(), *LOG_THETA_RANGE))
    dropout = None
    if net.dropout_logits is not None:
        dropout = 1.0 / (1.0 + np.exp(-values[:, n_genes:]))
    counts = draw_nb(rho * library[:, None], theta, rng, dropout)
    return expand_genes(counts, cols, len(pre["output_genes"]))


def as_cells(X, labels: np.ndarray, label_key: str, var_names, prefix: str):
    """Drawn counts as an AnnData labelled like the real cells."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(
        {label_key: pd.Categorical(labels)}, index=[f"{prefix}_{i}" for i in range(len(labels))]
    )
    return ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=var_names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="baron_mouse_pancreas", help="pbmc68k, or a file in ../shared/data")
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--param", action="append", default=[], help="KEY=JSON parameter of the nbvae")
    ap.add_argument("--smoke", action="store_true", help="tiny simulated data, 2 epochs: checks the script")
    args = ap.parse_args()
    if args.smoke:
        args.dataset = "smoke"
    train, test, label_key = halves(args.dataset)
    params = parse_key_values(args.param, "--param")
    epochs = smoke.EPOCHS if args.smoke else 1_000_000
    model = models.get("nbvae", max_minutes=args.minutes, epochs=epochs, **params)
    model.fit(train, label_key=label_key, seed=0, progress=False)
    settings = smoke.EVALUATE if args.smoke else None
    rng = np.random.default_rng(0)

    z_train = encode(model, train)
    train_labels = train.obs[label_key].astype(str).to_numpy()
    test_labels = test.obs[label_key].astype(str).to_numpy()
    _, lib_test = training_values(model, test)
    _, lib_train = training_values(model, train)
    w_test = conditions(model, test)

    def type_draws(kind: str) -> np.ndarray:
        """Codes for TEST's cell types: a per-type Gaussian of the TRAIN codes, or N(0, I)."""
        z = np.empty((test.n_obs, z_train.shape[1]))
        for t in np.unique(test_labels):
            idx = np.flatnonzero(test_labels == t)
            if kind == "prior":
                z[idx] = rng.standard_normal((len(idx), z.shape[1]))
                continue
            own = z_train[train_labels == t]
            cov = np.cov(own.T) if len(own) > 2 else np.eye(z.shape[1]) * 1e-2
            cov = 0.9 * cov + 0.1 * np.eye(len(cov)) * np.trace(cov) / len(cov)  # shrunk: few cells per type
            z[idx] = rng.multivariate_normal(own.mean(0), cov, size=len(idx))
        return z

    def type_libraries() -> np.ndarray:
        lib = np.empty(test.n_obs)
        for t in np.unique(test_labels):
            idx = np.flatnonzero(test_labels == t)
            lib[idx] = rng.choice(lib_train[train_labels == t], size=len(idx))
        return lib

    variants = {
        "recon_test": (encode(model, test), w_test, lib_test, test_labels),
        "recon_train": (z_train, conditions(model, train), lib_train, train_labels),
        "type_gaussian": (type_draws("gaussian"), w_test, type_libraries(), test_labels),
        "prior": (type_draws("prior"), w_test, type_libraries(), test_labels),
    }
    for name, (z, w, lib, labels) in variants.items():
        cells = as_cells(decode(model, z, w, lib, rng), labels, label_key, test.var_names, name)
        met = evaluate(test, cells, label_key=label_key, train=train, seed=0, settings=settings)
        row = {k: round(float(met.overall[k]), 4) for k in KEYS if k in met.overall}
        print(json.dumps({"dataset": args.dataset, "variant": name, "params": params, **row}), flush=True)


if __name__ == "__main__":
    main()
