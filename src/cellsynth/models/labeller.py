"""Labels for cells generated unconditionally: a classifier trained on the real training cells names them.

An unconditional GAN (``conditional=False``, the GARAGE paper's mode) never sees the cell type, so its
cells carry no label of their own. The auxiliary classifier, which the adversarial loop trained on the
real cells' types, is trained on further (:func:`train_labeller`) and then labels every sampled cell
(:func:`predict_labels`), its confidence recorded beside the label.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .sampling import restore_types


def train_labeller(
    classifier: nn.Module, data, seed: int, max_epochs: int = 200, patience: int = 10
) -> float:
    """Train ``classifier`` to name the real training cells' types; returns its held-out accuracy.

    It starts from the auxiliary classifier the adversarial loop trained on real cells and continues
    (Adam, class-balanced cross-entropy, minibatches of 256) until its held-out accuracy (a stratified
    fifth of the cells) stops improving.
    """
    from ..data.stats import split_validation
    from ..seeding.attention import class_weights

    classifier.to("cpu")  # small; the data are on the CPU anyway
    rng = np.random.default_rng(seed)
    codes = data.label.codes
    train, val = split_validation(codes, 0.2, rng)
    if len(val) == 0:
        val = train
    x_val = torch.from_numpy(data.dense_rows(val))
    y_val = torch.from_numpy(codes[val]).long()
    weights = class_weights(codes[train], data.label.n)
    opt = torch.optim.Adam(classifier.parameters(), lr=1e-3)

    @torch.no_grad()
    def accuracy() -> float:
        classifier.eval()
        pred = torch.cat([classifier(c)[0] for c in x_val.split(4096)]).argmax(-1)
        return float((pred == y_val).float().mean())

    best, state, stale = accuracy(), copy.deepcopy(classifier.state_dict()), 0
    with torch.random.fork_rng(devices=[]):  # dropout: keep the global generator untouched
        torch.manual_seed(seed)
        for _ in range(max_epochs):
            classifier.train()
            perm = rng.permutation(train)
            for b in range(0, len(perm), 256):
                rows = np.sort(perm[b : b + 256])
                logits = classifier(torch.from_numpy(data.dense_rows(rows)))[0]
                loss = F.cross_entropy(logits, torch.from_numpy(codes[rows]).long(), weight=weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            acc = accuracy()
            if acc > best:
                best, state, stale = acc, copy.deepcopy(classifier.state_dict()), 0
            else:
                stale += 1
                if stale >= patience:
                    break
    classifier.load_state_dict(state)
    classifier.eval()
    return best


def training_space(out, preprocessing: dict) -> np.ndarray:
    """Sampled cells in the training representation over the training genes (dense)."""
    values = out.layers["log1p"] if "log1p" in out.layers else out.X
    cols = np.asarray(preprocessing["train_genes"], dtype=np.int64)
    if preprocessing["gene_selection"] != "expressed":
        cols = np.arange(len(cols))
    x = values[:, cols]
    return (x.toarray() if hasattr(x, "toarray") else np.asarray(x)).astype(np.float32)


@torch.no_grad()
def predict_labels(out, classifier: nn.Module, info: dict) -> None:
    """Label the cells of ``out`` in place with ``classifier``: ``obs[label_key]`` and its confidence
    ``obs["label_probability"]``; ``uns["cellsynth"]["labels"]`` says how the labels were made."""
    label_key = info["label_key"]
    labels = info["categories"][label_key]
    classifier = classifier.eval()
    x = torch.from_numpy(training_space(out, info["preprocessing"]))
    logits = torch.cat([classifier(chunk)[0] for chunk in x.split(4096)]) if len(x) else torch.zeros(0, 1)
    prob = torch.softmax(logits.float(), -1)
    codes = prob.argmax(-1).numpy()
    out.obs[label_key] = pd.Categorical([labels[c] for c in codes], categories=labels)
    restore_types(out.obs, info)
    out.obs["label_probability"] = prob.max(-1).values.numpy().astype(np.float32)
    out.uns.setdefault("cellsynth", {})["labels"] = (
        "predicted: an unconditional model; each cell labelled by the auxiliary classifier trained on the "
        "real training cells' labels (obs['label_probability'] is its confidence)"
    )
