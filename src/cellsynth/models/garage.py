"""GARAGE: seed cells chosen by graph attention are mixed into the conditional generator's input.

Stage 1 (:mod:`cellsynth.seeding`): a GAT trained to classify cell types on a kNN graph of the training
cells scores each cell by how much its neighbours attend to it; the top λ·n are the seeds (every type,
rare ones first, gets a quota). Stage 2: the cgan, whose input batch has a fraction λ of rows that are
seed cells instead of noise. Seed rows keep the batch row's cell type (seeds of that type are drawn), so
every synthetic cell has a type, and the rest of the cgan (conditioning, critic, auxiliary classifier,
count draw, sparsity) is unchanged. λ = 0 is exactly the cgan.

Input spaces: ``"pca"`` (seeds as their standardised coordinates on the training data's first
``z_dim`` principal components, noise N(0, 1)) and ``"genes"`` (the paper's: noise U(−1, 1) of gene
dimension, seeds as their expression scaled to [−1, 1]).

Unconditional mode (``conditional=False``, the paper's): the networks never see the cell type (they get
the training label frequencies instead), seed rows still carry seeds in the types' training proportions,
and sampled cells are labelled by the auxiliary classifier, which learned the types on the real training
cells; ``uns["cellsynth"]["labels"]`` says so and ``obs["label_probability"]`` holds its confidence.

Copying guard: every cell sampled from a seed row records its distance to that seed (``obs``), relative
to the typical distance between a training cell and its nearest other training cell. The model file
holds the seeds' coordinates (``pca``) or profiles (``genes``): share samples, not GARAGE model files,
when the training cells are private.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._io import jsonable
from ..errors import RequestError
from ..params import Param
from ..seeding.attention import train_gat_scores
from ..seeding.select import METHODS as SEED_METHODS
from .cgan import CGAN
from .registry import register

#: The GARAGE paper's training choices (`cellsynth fit --model garage --param ...` to use them).
PAPER_PARAMS = {
    "input_space": "genes",
    "loss": "bce",
    "label_smoothing": 0.9,
    "d_steps": 5,
    "g_steps": 2,
    "grad_clip": 1.0,
    "optimizer": "rmsprop",
    "lr_g": 2e-4,
    "lr_d": 4e-4,
}

_GUARD_COMPONENTS = 50

#: The GAT options a ``gat={...}`` parameter may set: the keywords of ``train_gat_scores`` except those
#: the seed selection passes itself.
GAT_OPTIONS = tuple(
    name
    for name, p in inspect.signature(train_gat_scores).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in ("rare", "node_keys", "device", "seed", "progress")
)


class SeedBank(nn.Module):
    """The seeds as the generator sees them, and the copying guard's reference frame (buffers only)."""

    def __init__(self, n_seeds: int, z_dim: int, n_genes: int, n_comps: int):
        super().__init__()
        self.register_buffer("latent", torch.zeros(n_seeds, z_dim))
        self.register_buffer("label", torch.zeros(n_seeds, dtype=torch.int64))
        self.register_buffer("guard_coords", torch.zeros(n_seeds, n_comps))
        self.register_buffer("guard_mean", torch.zeros(n_genes))
        self.register_buffer("guard_basis", torch.zeros(n_genes, n_comps))
        self.register_buffer("guard_reference", torch.ones(()))

    @property
    def n(self) -> int:
        return self.latent.shape[0]

    def by_label(self, n_labels: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Seed indices sorted by label, and each label's start and count in that order."""
        order = torch.argsort(self.label, stable=True)
        count = torch.bincount(self.label, minlength=n_labels)
        start = torch.cumsum(count, 0) - count
        return order, start, count


class GenerateFromSeeds:
    """Replace a fraction ``leakage`` of the input rows by seeds of the row's own cell type."""

    def __init__(self, bank: SeedBank, n_labels: int, leakage: float, noise):
        self.bank = bank
        self.order, self.start, self.count = bank.by_label(n_labels)
        self.leakage = leakage
        self.noise = noise

    def __call__(self, weights: list[torch.Tensor], gen: torch.Generator, device=None):
        """``(z, origin)``: ``origin[i]`` is the seed index row ``i`` came from, or −1."""
        n = len(weights[0])
        device = device or weights[0].device
        z = self.noise(n, gen, device)
        origin = torch.full((n,), -1, dtype=torch.int64, device=device)
        if self.bank.n == 0 or self.leakage <= 0:
            return z, origin
        lab = weights[0].to(device)
        top, code = lab.max(1)
        count = self.count.to(device)[code]
        take = (torch.rand(n, generator=gen, device=device) < self.leakage) & (top >= 1.0) & (count > 0)
        if bool(take.any()):
            u = torch.rand(n, generator=gen, device=device)
            pos = self.start.to(device)[code] + torch.minimum((u * count).long(), count - 1).clamp_min(0)
            pos = pos.clamp_max(self.bank.n - 1)  # rows of a seedless type (not taken) index in range
            chosen = self.order.to(device)[pos]
            z = torch.where(take[:, None], self.bank.latent.to(device)[chosen].to(z.dtype), z)
            origin = torch.where(take, chosen, origin)
        return z, origin


@register
class GARAGE(CGAN):
    """GARAGE: graph-attention seed cells (rare types first) mixed into the cgan's input batch."""

    name = "garage"
    param_spec = CGAN.param_spec.extend(
        Param("leakage", 0.2, "float", "share λ of training cells used as seeds (0: cgan)", ge=0, le=1),
        Param("input_space", "pca", "str", "space of noise and seeds", choices=("pca", "genes")),
        Param("seed_method", "gat", "str", "how seed cells are scored", choices=SEED_METHODS),
        Param("gat_k", 5, "int", "neighbours per cell in the kNN graph", ge=1, le=1000),
        Param("rare_threshold", None, "int", "types of ≤ this many cells (null: data)", ge=0, optional=True),
        Param("min_seeds_per_type", 2, "int", "seeds every type gets (rare types first)", ge=0),
        Param("gat", {}, "dict", "options of the GAT (seeding.attention.train_gat_scores)", keys=GAT_OPTIONS),
        Param("d_steps", 1, "int", "critic steps per generator step", ge=1, le=100),
        Param("conditional", True, "bool", "networks see the type (false: the paper's mode)"),
    )

    # ------------------------------------------------------------------ networks
    def _z_dim(self, n_genes: int) -> int:
        space = self.params["input_space"]
        return n_genes if space == "genes" else int(self.params["z_dim"])

    def _build(self, sizes, n_genes):
        modules = super()._build(sizes, n_genes)
        z_dim = self._z_dim(n_genes)
        n_seeds = 0
        n_comps = 1
        if self.info is not None and "seeding" in self.info:
            n_seeds = int(self.info["seeding"]["n_seeds"])
            n_comps = int(self.info["seeding"]["guard_components"])
        modules["seeds"] = SeedBank(n_seeds, z_dim, n_genes, n_comps)
        return modules

    def _loss(self):
        loss = super()._loss()
        loss.d_steps = int(self.params["d_steps"])
        return loss

    def _settings(self):
        settings = super()._settings()
        settings.conditional = bool(self.params["conditional"])
        return settings

    @property
    def conditional(self) -> bool:
        return bool(self.params["conditional"])

    def _noise_fn(self):
        if self.params["input_space"] == "genes":

            def uniform(n, g, d):
                return torch.rand(n, self.modules["generator"].z_dim, generator=g, device=d) * 2 - 1

            return uniform

        def normal(n, g, d):
            return torch.randn(n, self.modules["generator"].z_dim, generator=g, device=d)

        return normal

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return self._noise_fn()(n, gen, torch.device("cpu"))

    # ------------------------------------------------------------------ training
    def _training_latent(self, data, *, device, seed, progress):
        from ..seeding.select import select_seeds

        p = self.params
        leakage = float(p["leakage"])
        n_genes = data.n_genes
        z_dim = self._z_dim(n_genes)
        X = data.X
        if leakage > 0:
            comps = max(_GUARD_COMPONENTS, z_dim if p["input_space"] == "pca" else 0)
            mean, basis, coords = data.pca(comps, seed)
            labels = np.asarray(data.label.categories)[data.label.codes]
            names = data.obs_names if data.obs_names is not None else np.arange(data.n_cells).astype(str)
            selection = select_seeds(
                coords[:, :_GUARD_COMPONENTS],
                labels,
                names,
                method=p["seed_method"],
                leakage=leakage,
                k=int(p["gat_k"]),
                rare_threshold=p["rare_threshold"],
                min_per_type=int(p["min_seeds_per_type"]),
                gat=p["gat"],
                device="cpu" if device == "auto" else device,
                seed=seed,
                progress=progress,
            )
            rows = np.flatnonzero(selection.is_seed)
            g = min(_GUARD_COMPONENTS, coords.shape[1])
            bank = SeedBank(len(rows), z_dim, n_genes, g)
            if p["input_space"] == "pca":
                k = min(z_dim, coords.shape[1])  # small data: fewer components than noise dimensions
                std = coords[:, :k].std(0).clip(1e-6)
                bank.latent[:, :k] = torch.from_numpy(coords[rows, :k] / std)
            else:
                seed_x = data.dense_rows(rows)
                top = max(float(X.max()), 1e-6)
                bank.latent.copy_(torch.from_numpy(seed_x / top * 2 - 1))
            bank.label.copy_(torch.from_numpy(data.label.codes[rows]))
            bank.guard_mean.copy_(torch.from_numpy(mean))
            bank.guard_basis.copy_(torch.from_numpy(basis[:, :g]))
            bank.guard_coords.copy_(torch.from_numpy(coords[rows, :g]))
            bank.guard_reference.fill_(_nearest_neighbour_median(coords[:, :g]))
            self.modules["seeds"] = bank
            self.info["seeding"] = {
                **jsonable(selection.record()),
                "guard_components": g,
                "guard_reference": float(bank.guard_reference),
                "seed_cells": [str(x) for x in np.asarray(names)[rows]],
            }
        bank = self.modules["seeds"]
        noise = self._noise_fn()
        source = GenerateFromSeeds(bank, data.label.n, leakage, noise)

        def latent_fn(weights, rows, g, d):
            z, _ = source(weights, g, d)
            return z, weights, rows

        return latent_fn

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None):
        super()._fit(data, device=device, seed=seed, progress=progress, checkpoint=checkpoint, resume=resume)
        if not self.conditional:
            self.fit_record["labeller_accuracy"] = _train_labeller(self.modules["classifier"], data, seed)

    # ------------------------------------------------------------------ sampling
    def sample(self, n=None, *, per_type=None, mix=None, **kw):
        if not self.conditional and (per_type or mix or kw.get("proportions", "real") != "real"):
            raise RequestError(
                "this GARAGE model is unconditional (conditional=False): it cannot generate chosen cell "
                "types; sample --n cells and select by the predicted obs labels, or fit with conditional=True"
            )
        return super().sample(n, per_type=per_type, mix=mix, **kw)

    def _latent(self, weights, gen):
        bank = self.modules["seeds"]
        n_labels = weights[0].shape[1]
        source = GenerateFromSeeds(bank, n_labels, float(self.params["leakage"]), self._noise_fn())
        # unconditional: seed rows still draw seeds in the training proportions of the types
        z, origin = source(weights, gen, torch.device("cpu"))
        if not self.conditional:  # the generator sees the label frequencies, as in training
            weights = [self._label_prior().expand(len(weights[0]), -1), *weights[1:]]
        return z, weights, origin

    def _dispersion(self, label_codes, label_w):
        if self.conditional:
            return super()._dispersion(label_codes, label_w)
        n = len(label_codes) if label_w is None else len(label_w)  # as in training: the label frequencies
        return super()._dispersion(None, self._label_prior().expand(n, -1).numpy())

    def _label_prior(self) -> torch.Tensor:
        """The training label frequencies: what an unconditional model's networks see as the label."""
        counts = self._joint()[2]
        return torch.from_numpy((counts / counts.sum()).astype(np.float32))

    def _training_space(self, out) -> np.ndarray:
        """Sampled cells in the training representation over the training genes (dense)."""
        pre = self.info["preprocessing"]
        values = out.layers["log1p"] if "log1p" in out.layers else out.X
        cols = np.asarray(pre["train_genes"], dtype=np.int64)
        if pre["gene_selection"] != "expressed":
            cols = np.arange(len(cols))
        x = values[:, cols]
        return (x.toarray() if hasattr(x, "toarray") else np.asarray(x)).astype(np.float32)

    @torch.no_grad()
    def _predict_labels(self, out) -> None:
        """Unconditional mode: label the cells with the auxiliary classifier trained on real cells."""
        info = self.info
        label_key = info["label_key"]
        labels = info["categories"][label_key]
        classifier = self.modules["classifier"].eval()
        x = torch.from_numpy(self._training_space(out))
        logits = torch.cat([classifier(chunk)[0] for chunk in x.split(4096)]) if len(x) else torch.zeros(0, 1)
        prob = torch.softmax(logits.float(), -1)
        codes = prob.argmax(-1).numpy()
        out.obs[label_key] = pd.Categorical([labels[c] for c in codes], categories=labels)
        out.obs["label_probability"] = prob.max(-1).values.numpy().astype(np.float32)
        out.uns.setdefault("cellsynth", {})["labels"] = (
            "predicted: unconditional GARAGE; each cell labelled by the auxiliary classifier trained on the "
            "real training cells' labels (obs['label_probability'] is its confidence)"
        )

    def _annotate(self, out, origins) -> None:
        if not self.conditional:
            self._predict_labels(out)
        origin = torch.cat([o.cpu() for o in origins]).numpy() if origins else np.zeros(0, dtype=np.int64)
        from_seed = origin >= 0
        out.obs["from_seed"] = from_seed
        distance = np.full(len(origin), np.nan)
        bank = self.modules["seeds"]
        if from_seed.any():
            rows = np.flatnonzero(from_seed)
            x = self._training_space(out[rows])
            coords = (torch.from_numpy(x) - bank.guard_mean) @ bank.guard_basis
            distance[rows] = (coords - bank.guard_coords[torch.from_numpy(origin[rows])]).norm(dim=1).numpy()
        ratio = distance / float(bank.guard_reference)
        out.obs["seed_distance"] = distance
        out.obs["seed_distance_ratio"] = ratio
        guard = {"n_from_seed": int(from_seed.sum()), "leakage": float(self.params["leakage"])}
        if from_seed.any():
            guard.update(
                median_ratio=float(np.nanmedian(ratio)),
                min_ratio=float(np.nanmin(ratio)),
                reference="median distance from a training cell to its nearest other training cell, "
                f"first {bank.guard_coords.shape[1]} PCs of the training representation",
            )
        out.uns["cellsynth"]["copying_guard"] = guard


def _nearest_neighbour_median(coords: np.ndarray) -> float:
    from sklearn.neighbors import NearestNeighbors

    dist, _ = NearestNeighbors(n_neighbors=2).fit(coords).kneighbors(coords)
    value = float(np.median(dist[:, 1]))
    return value if math.isfinite(value) and value > 0 else 1.0


def _train_labeller(
    classifier: nn.Module, data, seed: int, max_epochs: int = 200, patience: int = 10
) -> float:
    """Train the classifier that names unconditional GARAGE's cells on the real training cells' types.

    It starts from the auxiliary classifier the adversarial loop trained on real cells and continues
    (Adam, class-balanced cross-entropy, minibatches of 256) until its held-out accuracy (a stratified
    fifth of the cells) stops improving. Returns that held-out accuracy.
    """
    import copy

    from torch.nn import functional as F

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
