"""The interface every cellsynth generator implements: fit on an AnnData, sample labelled cells, save.

Subclasses supply their networks (``_build``) and their training (``_fit``); this class owns what every
generator shares: turning the AnnData into :class:`~cellsynth.data.CellData`, deciding which conditions
each synthetic cell gets (``_plan``), mapping generated values back to the input's representation and
genes (``_to_output``), and the model file (:mod:`.persistence`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from torch import nn

from .._io import jsonable
from ..errors import InputError, RequestError
from .persistence import FORMAT, FORMAT_VERSION

_OUTPUT_ROWS = 2048  # cells per block when drawing output counts (bounds the dense work arrays)


class SyntheticCellModel:
    """Base class: fit on an AnnData, sample labelled synthetic cells, save and load safely.

    Subclasses set ``name``, ``default_params`` and implement ``_build(sizes, n_genes)`` (the networks
    as a dict of modules, ``"generator"`` first) and ``_fit(data, device, seed, progress)``.
    """

    name: ClassVar[str] = "base"
    default_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params):
        unknown = set(params) - set(self.default_params)
        if unknown:
            raise InputError(
                f"unknown parameter(s) for model {self.name!r}: {sorted(unknown)}; "
                f"known: {sorted(self.default_params)}"
            )
        self.params: dict[str, Any] = {**self.default_params, **params}
        self.modules: dict[str, nn.Module] = {}
        self.info: dict[str, Any] | None = None
        self.history: list[dict] = []
        self.fit_record: dict[str, Any] = {}

    # ------------------------------------------------------------------ to implement
    def _build(self, sizes: list[int], n_genes: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _fit(self, data, *, device: str, seed: int, progress: bool) -> None:
        raise NotImplementedError

    def _checkpoint_callback(self):
        """A callback for the training loop writing the best generator so far to ``checkpoint_dir``."""
        path = getattr(self, "_checkpoint_dir", None)
        if path is None:
            return None

        def write(generator_state: dict, history: list[dict]) -> None:
            import copy

            snapshot = copy.copy(self)
            snapshot.modules = dict(self.modules)
            generator = copy.deepcopy(self.modules["generator"]).to("cpu")
            generator.load_state_dict({k: v.detach().cpu() for k, v in generator_state.items()})
            snapshot.modules["generator"] = generator
            snapshot.history = list(history)
            snapshot.fit_record = {"stopped_because": "checkpoint"}
            snapshot.save(path)

        return write

    @torch.no_grad()
    def _generate(self, weights: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Training-representation values for conditions ``weights`` from noise ``z``."""
        x, _ = self.modules["generator"](z, weights)
        return x

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.modules["generator"].z_dim, generator=gen)

    def _latent(self, weights: list[torch.Tensor], gen: torch.Generator):
        """The generator's input for cells with conditions ``weights``: ``(z, weights, origin)``.

        ``origin`` (or None) is passed to :meth:`_annotate` with the output; seeded models record there
        which cells came from which seed.
        """
        return self._noise(len(weights[0]), gen), weights, None

    def _annotate(self, out, origin: list) -> None:
        """Add model-specific records to a freshly sampled AnnData (nothing by default)."""

    # ------------------------------------------------------------------ public API
    @property
    def is_fitted(self) -> bool:
        return self.info is not None

    def fit(
        self,
        adata,
        *,
        label_key: str,
        condition_keys: list[str] | tuple[str, ...] = (),
        layer: str | None = None,
        representation: str = "auto",
        n_genes: int | None = None,
        device: str = "auto",
        seed: int = 0,
        progress: bool = True,
        checkpoint_dir: str | os.PathLike | None = None,
    ) -> SyntheticCellModel:
        """Fit on ``adata`` (cells × genes) conditioned on ``obs[label_key]`` and ``condition_keys``.

        Returns ``self``. Epochs, time budget and the other hyperparameters are constructor arguments
        (``models.get("cgan", epochs=200, max_minutes=5)``). With ``checkpoint_dir``, the best model so
        far is saved there (a complete model directory) every few minutes during training.
        """
        from ..data.celldata import CellData

        data = CellData.from_anndata(
            adata,
            label_key=label_key,
            condition_keys=condition_keys,
            layer=layer,
            representation=representation,
            n_genes=n_genes,
        )
        self.info = {
            "label_key": label_key,
            "condition_keys": [c.key for c in data.conditions[1:]],
            "categories": {c.key: c.categories for c in data.conditions},
            "joint": _joint_table(data.codes),
            "preprocessing": data.preprocessing.to_dict(),
            "n_train_cells": data.n_cells,
        }
        sizes = [c.n for c in data.conditions]
        self._checkpoint_dir = checkpoint_dir
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.modules = self._build(sizes, data.n_genes)
            self._fit(data, device=device, seed=seed, progress=progress)
        for m in self.modules.values():
            m.to("cpu").eval()
        self.fit_record = {**self.fit_record, "seed": seed, "device": device}
        return self

    def sample(
        self,
        n: int | None = None,
        *,
        per_type: Mapping[str, int] | None = None,
        proportions: str = "real",
        mix: Mapping[str, float] | None = None,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 4096,
    ):
        """Generate labelled synthetic cells as an AnnData.

        Parameters
        ----------
        n
            Total number of cells, split over types by ``proportions`` (``"real"``: the training
            proportions; ``"uniform"``: equal).
        per_type
            Cells per type, e.g. ``{"B_cell": 500}``; added to ``n`` cells when both are given.
        mix
            Weights of two or more types to interpolate between, e.g. ``{"alpha": 0.5, "beta": 0.5}``;
            all ``n`` cells are then mixtures.
        seed
            Same seed, same cells (also after save/load).

        Returns
        -------
        AnnData with ``obs[label_key]`` and every covariate, ``var_names`` = the model's genes, ``X`` in
        the input's representation (integer counts for count input), ``layers["log1p"]`` and
        ``uns["cellsynth"]``.
        """
        import anndata as ad

        self._check_fitted()
        info = self.info
        label_key = info["label_key"]
        labels = info["categories"][label_key]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        codes, label_w, names = self._plan(n, per_type, proportions, mix, rng)
        total = len(codes)
        if total == 0:
            raise RequestError("nothing to sample: give --n > 0 or --per-type with positive counts")
        sizes = [len(info["categories"][k]) for k in [label_key, *info["condition_keys"]]]

        from ..nn.blocks import one_hot_conditions
        from ..train.device import resolve_device

        dev = torch.device(resolve_device(device))
        chunks, origins = [], []
        codes_t = torch.from_numpy(codes)
        for m in self.modules.values():
            m.to(dev)
        try:
            for s in range(0, total, batch_size):
                sl = slice(s, min(s + batch_size, total))
                # noise is drawn on the CPU generator: the same cells on every device
                w = one_hot_conditions(codes_t[sl], sizes)
                if label_w is not None:
                    w[0] = torch.from_numpy(label_w[sl])
                z, w, origin = self._latent(w, gen)
                origins.append(origin)
                chunks.append(self._generate([t.to(dev) for t in w], z.to(dev)).float().cpu().numpy())
        finally:
            for m in self.modules.values():
                m.to("cpu")
        values = np.concatenate(chunks)

        obs = pd.DataFrame(index=[f"synth_{i}" for i in range(total)])
        obs[label_key] = pd.Categorical(names, categories=list(dict.fromkeys([*labels, *names])))
        for k, key in enumerate(info["condition_keys"], start=1):
            obs[key] = pd.Categorical.from_codes(codes[:, k], categories=info["categories"][key])
        X, log1p = self._to_output(values, codes[:, 0], label_w, rng)
        pre = info["preprocessing"]
        out = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=pd.Index(pre["output_genes"])))
        if log1p is not None:
            out.layers["log1p"] = log1p
        out.uns["cellsynth"] = {
            "model": self.name,
            "version": _version(),
            "seed": int(seed),
            "representation": pre["representation"],
            "label_key": label_key,
            "condition_keys": list(info["condition_keys"]),
        }
        if mix:
            out.uns["cellsynth"]["mix"] = {str(k): float(v) for k, v in mix.items()}
        self._annotate(out, origins)
        return out

    # ------------------------------------------------------------------ sampling helpers
    def _joint(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The training cells' condition combinations: ``(codes, counts, label_counts)``."""
        info = self.info
        joint = np.asarray(info["joint"]["codes"], dtype=np.int64).reshape(
            -1, 1 + len(info["condition_keys"])
        )
        joint_counts = np.asarray(info["joint"]["counts"], dtype=np.float64)
        n_labels = len(info["categories"][info["label_key"]])
        return joint, joint_counts, np.bincount(joint[:, 0], weights=joint_counts, minlength=n_labels)

    def _plan(self, n, per_type, proportions, mix, rng):
        """Decide each synthetic cell's condition codes (and soft label weights when mixing)."""
        info = self.info
        labels = info["categories"][info["label_key"]]
        joint, joint_counts, label_counts = self._joint()

        def draw(label_code: int, k: int) -> np.ndarray:
            rows = np.flatnonzero(joint[:, 0] == label_code)
            p = joint_counts[rows] / joint_counts[rows].sum()
            return joint[rng.choice(rows, size=k, p=p)]

        if n is not None and (not isinstance(n, int | np.integer) or n < 0):
            raise RequestError(f"--n must be a non-negative integer, got {n!r}")
        if mix:
            unknown = [k for k in mix if k not in labels]
            if unknown:
                raise RequestError(f"unknown label(s) in --mix: {unknown}; known labels: {labels}")
            w = np.array([float(v) for v in mix.values()])
            if len(mix) < 2 or np.any(w < 0) or w.sum() <= 0:
                raise RequestError(
                    "--mix needs two or more labels with non-negative weights, e.g. a=0.5,b=0.5"
                )
            w = w / w.sum()
            if not n:
                raise RequestError("--mix needs --n, the number of mixed cells to generate")
            label_w = np.zeros((n, len(labels)), dtype=np.float32)
            for name, wi in zip(mix, w, strict=True):
                label_w[:, labels.index(name)] = wi
            first = labels.index(max(mix, key=lambda k: mix[k]))
            codes = draw(first, n)
            tag = "mix(" + ",".join(f"{k}={wi:.2f}" for k, wi in zip(mix, w, strict=True)) + ")"
            return codes, label_w, [tag] * n

        want = np.zeros(len(labels), dtype=np.int64)
        if n:
            if proportions == "real":
                p = label_counts / label_counts.sum()
            elif proportions == "uniform":
                p = np.full(len(labels), 1.0 / len(labels))
            else:
                raise RequestError(f"unknown --proportions {proportions!r}; use real or uniform")
            want += _largest_remainder(p, n)
        for name, k in (per_type or {}).items():
            if name not in labels:
                raise RequestError(f"unknown label {name!r} in --per-type; known labels: {labels}")
            if int(k) < 0:
                raise RequestError(f"--per-type {name}={k}: counts must be non-negative")
            want[labels.index(name)] += int(k)
        codes = np.concatenate(
            [draw(c, int(k)) for c, k in enumerate(want) if k > 0]
            or [np.zeros((0, joint.shape[1]), np.int64)]
        )
        names = [labels[c] for c in codes[:, 0]]
        return codes, None, names

    def _to_output(self, values: np.ndarray, label_codes: np.ndarray, label_w, rng: np.random.Generator):
        """Map generated training-representation values to the input's representation and genes."""
        pre = self.info["preprocessing"]
        n_out = len(pre["output_genes"])
        cols = np.asarray(pre["train_genes"], dtype=np.int64)
        values = np.maximum(values, 0) if pre["nonnegative"] else values

        def widen(m: np.ndarray):
            m = sp.csr_matrix(m.astype(np.float32))
            m.indices = cols[m.indices]  # column j of the training matrix is output gene cols[j]
            m._shape = (m.shape[0], n_out)
            m.sort_indices()
            return m

        if pre["representation"] == "counts":
            labels = self.info["categories"][self.info["label_key"]]
            if label_w is not None:  # mixtures: library size of the dominant label
                label_codes = label_w.argmax(1)
            lib = np.empty(len(values))
            for c in np.unique(label_codes):
                pool = np.asarray(pre["library_sizes"][labels[c]])
                idx = label_codes == c
                lib[idx] = rng.choice(pool, size=int(idx.sum()))
            blocks = []
            for start in range(0, len(values), _OUTPUT_ROWS):  # dense float64 work arrays, a block at a time
                sl = slice(start, start + _OUTPUT_ROWS)
                profile = np.expm1(values[sl].astype(np.float64))
                sums = profile.sum(1, keepdims=True)
                profile = np.divide(profile, sums, out=np.zeros_like(profile), where=sums > 0)
                rate = profile * lib[sl, None]
                del profile
                phi = self._dispersion(
                    label_codes[sl] if label_w is None else None, None if label_w is None else label_w[sl]
                )
                if phi is not None:  # Poisson–log-normal, as the model was trained (train.observe)
                    var = np.maximum(np.log1p(phi), 1e-8)
                    rate *= np.exp(np.sqrt(var) * rng.standard_normal(rate.shape) - 0.5 * var)
                if self.params.get("count_noise") == "rounding":  # as the model was trained (train.observe)
                    low = np.floor(rate)
                    counts = (low + (rng.random(rate.shape) < rate - low)).astype(np.float32)
                else:
                    counts = rng.poisson(rate).astype(np.float32)
                blocks.append(widen(counts))
            X = sp.vstack(blocks, format="csr")
            totals = np.asarray(X.sum(1)).ravel()
            logn = X.copy()
            scale = np.divide(pre["target_sum"], totals, out=np.zeros_like(totals), where=totals > 0)
            logn.data *= np.repeat(scale, np.diff(logn.indptr)).astype(np.float32)
            np.log1p(logn.data, out=logn.data)
            return X, logn
        if pre["representation"] == "log1p":
            X = widen(values)
            return X, X.copy()
        X = np.zeros((len(values), n_out), dtype=np.float32)
        X[:, cols] = values
        return X, None

    @torch.no_grad()
    def _dispersion(self, label_codes, label_w) -> np.ndarray | None:
        """cells × genes count over-dispersion of a generator that learned one (else None)."""
        generator = self.modules.get("generator")
        if getattr(generator, "log_dispersion", None) is None:
            return None
        n_labels = generator.log_dispersion.shape[0]
        if label_w is None:
            w = torch.nn.functional.one_hot(torch.from_numpy(np.asarray(label_codes)), n_labels).float()
        else:
            w = torch.from_numpy(np.asarray(label_w, dtype=np.float32))
        return generator.dispersion([w]).double().numpy()

    # ------------------------------------------------------------------ persistence
    def _check_fitted(self):
        if not self.is_fitted:
            raise RequestError(f"this {self.name} model is not fitted yet: call fit() or cellsynth.load(dir)")

    def config(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": self.name,
            "cellsynth_version": _version(),
            "params": jsonable(self.params),
            "data": self.info,
            "fit": jsonable(self.fit_record),
            "history": jsonable(self.history),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``weights.safetensors`` + ``config.json`` into directory ``path`` atomically.

        The files are written to a temporary sibling directory first and moved into place, so an
        interrupted save never leaves a half-written model behind.
        """
        from .persistence import save

        return save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> SyntheticCellModel:
        """Load a model directory written by :meth:`save` (any registered model)."""
        from .persistence import load

        return load(path)


def _joint_table(codes: np.ndarray) -> dict[str, list]:
    uniq, counts = np.unique(codes, axis=0, return_counts=True)
    return {"codes": uniq.ravel().tolist(), "counts": counts.tolist()}


def _largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    raw = p * n
    out = np.floor(raw).astype(np.int64)
    short = n - out.sum()
    if short > 0:
        out[np.argsort(-(raw - out), kind="stable")[:short]] += 1
    return out


def _version() -> str:
    from .. import __version__

    return __version__
