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

Unconditional mode (``conditional=False``, the paper's; the cgan's, :mod:`.labeller`): the networks
never see the cell type, seed rows still carry seeds in the types' training proportions, and sampled
cells are labelled by the auxiliary classifier trained on the real training cells.

Copying guard: every cell sampled from a seed row records its distance to that seed (``obs``), relative
to the typical distance between a training cell and its nearest other training cell. The model file
holds the seeds' coordinates (``pca``) or profiles (``genes``): share samples, not GARAGE model files,
when the training cells are private.
"""

from __future__ import annotations

import inspect
import math

import numpy as np
import torch
from torch import nn

from .._io import jsonable
from ..params import Param
from ..seeding.attention import train_gat_scores
from ..seeding.select import METHODS as SEED_METHODS
from .cgan import CGAN
from .labeller import training_space
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
_CGAN_LR = {name: CGAN.param_spec.defaults()[name] for name in ("lr_g", "lr_d")}

#: The GAT options a ``gat={...}`` parameter may set: the keywords of ``train_gat_scores`` except those
#: the seed selection passes itself.
GAT_OPTIONS = tuple(
    name
    for name, p in inspect.signature(train_gat_scores).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in ("rare", "node_keys", "device", "seed", "progress")
)


#: the parameters of the seed selection (GARAGE's, and any model that mixes seeds into its input)
SEEDING_PARAMS = (
    Param("leakage", 0.2, "float", "share λ of training cells used as seeds (0: no seeds)", ge=0, le=1),
    Param("seed_method", "gat", "str", "how seed cells are scored", choices=SEED_METHODS),
    Param("gat_k", 5, "int", "neighbours per cell in the kNN graph", ge=1, le=1000),
    Param("rare_threshold", None, "int", "types of ≤ this many cells (null: data)", ge=0, optional=True),
    Param("min_seeds_per_type", 2, "int", "seeds every type gets (rare types first)", ge=0),
    Param("gat", {}, "dict", "options of the GAT (seeding.attention.train_gat_scores)", keys=GAT_OPTIONS),
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
    # three times the cgan's learning rates: the default sweep across the datasets (docs/benchmarks.md,
    # "Each model's defaults") found GARAGE better with them on Baron mouse and no worse elsewhere
    param_spec = CGAN.param_spec.with_defaults(**{k: 3 * v for k, v in _CGAN_LR.items()}).extend(
        *SEEDING_PARAMS
    )

    # ------------------------------------------------------------------ networks
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

    # ------------------------------------------------------------------ training
    def _training_latent(self, data, *, device, seed, progress):
        from ..seeding.select import select_seeds

        p = self.params
        leakage = float(p["leakage"])
        n_genes = data.n_genes
        z_dim = self._z_dim(n_genes)
        if leakage > 0:
            comps = max(_GUARD_COMPONENTS, z_dim if p.get("input_space") == "pca" else 0)
            mean, basis, coords = data.pca(comps, seed)
            labels = np.asarray(data.label.categories)[data.label.codes]
            names = data.obs_names if data.obs_names is not None else np.arange(data.n_cells).astype(str)
            selection = select_seeds(
                coords[:, :_GUARD_COMPONENTS],
                labels,
                names,
                method=p["seed_method"],
                leakage=leakage,
                k=int(p.get("gat_k", 5)),  # models without a GAT (LSH-GAN) do not declare its options
                rare_threshold=p["rare_threshold"],
                min_per_type=int(p["min_seeds_per_type"]),
                gat=p.get("gat", {}),
                device="cpu" if device == "auto" else device,
                seed=seed,
                progress=progress,
            )
            rows = np.flatnonzero(selection.is_seed)
            g = min(_GUARD_COMPONENTS, coords.shape[1])
            bank = SeedBank(len(rows), z_dim, n_genes, g)
            bank.label.copy_(torch.from_numpy(data.label.codes[rows]))
            bank.guard_mean.copy_(torch.from_numpy(mean))
            bank.guard_basis.copy_(torch.from_numpy(basis[:, :g]))
            bank.guard_coords.copy_(torch.from_numpy(coords[rows, :g]))
            bank.guard_reference.fill_(_nearest_neighbour_median(coords[:, :g]))
            self.modules["seeds"] = bank
            self._seed_inputs(bank, data, coords, rows)
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

    def _seed_inputs(self, bank: SeedBank, data, coords: np.ndarray, rows: np.ndarray) -> None:
        """Fill ``bank.latent``: the seeds as the generator's input (``rows``: their training rows,
        ``coords``: every training cell's principal-component coordinates)."""
        z_dim = bank.latent.shape[1]
        if self.params["input_space"] == "pca":
            k = min(z_dim, coords.shape[1])  # small data: fewer components than noise dimensions
            std = coords[:, :k].std(0).clip(1e-6)
            bank.latent[:, :k] = torch.from_numpy(coords[rows, :k] / std)
        else:
            top = max(float(data.X.max()), 1e-6)
            bank.latent.copy_(torch.from_numpy(data.dense_rows(rows) / top * 2 - 1))

    def _latent(self, weights, gen):
        bank = self.modules["seeds"]
        n_labels = weights[0].shape[1]
        source = GenerateFromSeeds(bank, n_labels, float(self.params["leakage"]), self._noise_fn())
        # unconditional: seed rows still draw seeds in the training proportions of the types
        z, origin = source(weights, gen, torch.device("cpu"))
        return z, self._as_given(weights), origin

    def _annotate(self, out, origins) -> None:
        super()._annotate(out, origins)  # an unconditional model's labels
        origin = torch.cat([o.cpu() for o in origins]).numpy() if origins else np.zeros(0, dtype=np.int64)
        from_seed = origin >= 0
        out.obs["from_seed"] = from_seed
        distance = np.full(len(origin), np.nan)
        bank = self.modules["seeds"]
        if from_seed.any():
            rows = np.flatnonzero(from_seed)
            x = training_space(out[rows], self.info["preprocessing"])
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
