"""The interface every cellsynth generator implements: fit on an AnnData, sample labelled cells, save.

Subclasses supply their networks (``_build``) and their training (``_fit``); this class owns what every
generator shares: turning the AnnData into :class:`~cellsynth.data.CellData`, deciding which conditions
each synthetic cell gets (:mod:`.sampling`), mapping generated values back to the input's representation
and genes (``_to_output``), and the model file (:mod:`.persistence`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from .._io import jsonable
from ..data.preprocess import draw_counts, expand_genes, normalize_log1p
from ..errors import InputError, RequestError
from ..params import ParamSpec
from .persistence import FORMAT, FORMAT_VERSION
from .sampling import check_memory, joint_conditions, joint_table, label_types, plan_conditions, restore_types


class SyntheticCellModel:
    """Base class: fit on an AnnData, sample labelled synthetic cells, save and load safely.

    Subclasses set ``name`` and ``param_spec`` (their hyperparameters, :class:`~cellsynth.params.Param`
    each; ``default_params`` is derived from it) and implement ``_build(sizes, n_genes)`` (the networks
    as a dict of modules, ``"generator"`` first) and ``_fit(data, device, seed, progress)``.
    """

    #: the time.monotonic() at which this fit's max_minutes run out (set by :meth:`fit`; None: no budget)
    _deadline: float | None = None

    name: ClassVar[str] = "base"
    param_spec: ClassVar[ParamSpec] = ParamSpec()
    #: importable modules the model needs beyond cellsynth's own dependencies, and the extra that
    #: installs them (``pip install cellsynth[extra]``); see :func:`~cellsynth.models.registry.missing`
    requires: ClassVar[tuple[str, ...]] = ()
    extra: ClassVar[str] = ""
    default_params: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.default_params = cls.param_spec.defaults()

    def __init__(self, **params):
        # unknown names, wrong types and out-of-range values are refused before anything is built
        self.params: dict[str, Any] = {**self.default_params, **self.param_spec.validate(params, self.name)}
        self.modules: dict[str, nn.Module] = {}
        self.info: dict[str, Any] | None = None
        self.history: list[dict] = []
        self.fit_record: dict[str, Any] = {}

    # ------------------------------------------------------------------ to implement
    def _build(self, sizes: list[int], n_genes: int) -> dict[str, nn.Module]:
        raise NotImplementedError

    def _fit(self, data, *, device: str, seed: int, progress: bool, checkpoint=None, resume=None) -> None:
        """Train the built modules on ``data``. ``checkpoint`` (or None) is the training plan's checkpoint
        callback; ``resume`` (or None) a plan state to continue from."""
        raise NotImplementedError

    def _checkpoint_callback(self, path: str | os.PathLike, meta: dict):
        """The training plan's checkpoint callback: ``path`` becomes a complete model directory holding
        the best model so far, with the whole training state beside it (written atomically together)."""

        def write(state: dict, model_state: dict) -> None:
            import copy

            from ..train.checkpoint import write_training_state
            from .persistence import save

            snapshot = copy.copy(self)
            snapshot.modules = dict(self.modules)
            generator = copy.deepcopy(self.modules["generator"]).to("cpu")
            generator.load_state_dict({k: v.detach().cpu() for k, v in model_state.items()})
            snapshot.modules["generator"] = generator
            snapshot.history = list(state["loop"]["history"])
            snapshot.fit_record = {"stopped_because": "checkpoint"}
            save(snapshot, path, extra=lambda tmp: write_training_state(tmp, state, meta))

        return write

    def _plan_monitor(self):
        """The training plan's ``monitor(step, seconds, model_state)`` for the ``monitor`` given to
        :meth:`fit` (None without one): it hands the user's function a sampling-ready copy of the model."""
        user = getattr(self, "_monitor", None)
        if user is None:
            return None

        def monitor(step: int, seconds: float, model_state: dict) -> dict:
            import copy

            snapshot = copy.copy(self)
            snapshot.modules = {name: copy.deepcopy(m).to("cpu") for name, m in self.modules.items()}
            weights = {k: v.detach().cpu() for k, v in model_state.items()}
            snapshot.modules["generator"].load_state_dict(weights)
            for m in snapshot.modules.values():
                m.eval()
            return dict(user(snapshot, step, seconds) or {})

        return monitor

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
        resume: bool = False,
        monitor=None,
    ) -> SyntheticCellModel:
        """Fit on ``adata`` (cells × genes) conditioned on ``obs[label_key]`` and ``condition_keys``.

        ``adata`` is an AnnData, or a :class:`~cellsynth.data.BackedCells` for an ``.h5ad`` file fitted out
        of core: its matrix is read from disk block by block and trained on from memory-mapped files.

        Returns ``self``. Epochs, time budget and the other hyperparameters are constructor arguments
        (``models.get("cgan", epochs=200, max_minutes=5)``). With ``checkpoint_dir``, a checkpoint is
        written there every ``checkpoint_minutes`` and when SIGTERM/SIGINT stops training: a complete
        model directory holding the best model so far, and the whole training state. ``resume=True``
        continues the run whose checkpoint is in ``checkpoint_dir`` (same model, parameters, seed and
        data; anything else is a :class:`~cellsynth.errors.TrainingError`) where it stopped.

        ``monitor(model, step, seconds) -> {column: value}`` is called at every validation with a copy of
        this model holding the weights trained so far (it can ``sample``), the optimisation step and the
        training seconds; what it returns joins the history (e.g. a detection score against held-out
        cells, for quality against training time). Its own time is not counted as training time. A model
        trained in stages is monitored in each (nbgan: in its autoencoder's stage the copy is the model
        started from the autoencoder's weights at that validation, as a checkpoint of that stage holds it).
        """
        from ..data.backed import BackedCells, backed_celldata
        from ..data.celldata import CellData
        from ..data.subtypes import split_types
        from ..train.checkpoint import data_fingerprint, read_training_state

        # max_minutes bounds the whole fit: the training loops also stop at this deadline, so the time
        # spent before them (reading the data, statistics, principal axes) counts
        budget = self.params.get("max_minutes")
        self._deadline = None if budget is None else time.monotonic() + 60.0 * float(budget)
        options = dict(label_key=label_key, condition_keys=condition_keys, representation=representation)
        if isinstance(adata, BackedCells):  # out of core: the training matrix memory-mapped from disk
            if layer is not None and layer != adata.layer:  # else the matrix it was opened on
                adata.use(layer)
            data = backed_celldata(adata, **options, n_genes=n_genes, seed=seed, progress=progress)
        else:
            data = CellData.from_anndata(adata, **options, layer=layer, n_genes=n_genes)
        subtypes = None
        if self.params.get("subtypes"):  # conditioned on each type's sub-populations (data.subtypes)
            data, subtypes = split_types(data, self.params["subtype_min_cells"], seed)
        self.info = {
            "label_key": label_key,
            "condition_keys": [c.key for c in data.conditions[1:]],
            "categories": {c.key: c.categories for c in data.conditions},
            "integer_keys": [c.key for c in data.conditions if c.integer],
            "bool_keys": [c.key for c in data.conditions if c.boolean],
            "joint": joint_table(data.codes),
            "preprocessing": data.preprocessing.to_dict(),
            "n_train_cells": data.n_cells,
        }
        if subtypes is not None:
            self.info["subtypes"] = subtypes
        sizes = [c.n for c in data.conditions]
        meta = {
            "model": self.name,
            "params": jsonable(self.params),
            "seed": int(seed),
            "data": data_fingerprint(data),
            "fit": {"label_key": label_key, "condition_keys": self.info["condition_keys"]},
        }
        meta["fit"].update(layer=layer, representation=representation, n_genes=n_genes)
        state = None
        if resume:
            if checkpoint_dir is None:
                raise InputError("resume=True needs the checkpoint_dir of the interrupted run")
            state, saved = read_training_state(checkpoint_dir)
            _check_resumable(saved, meta, checkpoint_dir)
        callback = None if checkpoint_dir is None else self._checkpoint_callback(checkpoint_dir, meta)
        self._monitor = monitor
        with torch.random.fork_rng(devices=[]), data.storage or contextlib.nullcontext():
            torch.manual_seed(seed)  # out of core, the training matrix's files are removed at the end
            self.modules = self._build(sizes, data.n_genes)
            self._fit(data, device=device, seed=seed, progress=progress, checkpoint=callback, resume=state)
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
        check_memory(self.info, n, per_type)
        info = self.info
        label_key = info["label_key"]
        labels = label_types(info)[0]
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(seed)
        codes, label_w, names = plan_conditions(self.info, n, per_type, proportions, mix, rng)
        total = len(codes)
        if total == 0:
            raise RequestError("nothing to sample: give --n > 0 or --per-type with positive counts")
        sizes = [len(info["categories"][k]) for k in [label_key, *info["condition_keys"]]]

        from ..nn.blocks import one_hot_conditions
        from ..train.device import resolve_device

        dev = torch.device(resolve_device(device))
        values, origins = None, []  # filled a chunk at a time: no second copy of every value
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
                chunk = self._generate([t.to(dev) for t in w], z.to(dev)).float().cpu().numpy()
                if values is None:
                    values = np.empty((total, chunk.shape[1]), dtype=chunk.dtype)
                values[sl] = chunk
        finally:
            for m in self.modules.values():
                m.to("cpu")

        obs = pd.DataFrame(index=[f"synth_{i}" for i in range(total)])
        obs[label_key] = pd.Categorical(names, categories=list(dict.fromkeys([*labels, *names])))
        for k, key in enumerate(info["condition_keys"], start=1):
            obs[key] = pd.Categorical.from_codes(codes[:, k], categories=info["categories"][key])
        restore_types(obs, info)
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
        return joint_conditions(self.info)

    def _to_output(self, values: np.ndarray, label_codes: np.ndarray, label_w, rng: np.random.Generator):
        """Map generated training-representation values to the input's representation and genes."""
        pre = self.info["preprocessing"]
        n_out = len(pre["output_genes"])
        cols = np.asarray(pre["train_genes"], dtype=np.int64)
        if pre["nonnegative"]:
            np.maximum(values, 0, out=values)  # in place: the values are the sampler's own
        if pre["representation"] == "counts":
            labels = self.info["categories"][self.info["label_key"]]
            if label_w is not None:  # mixtures: library size of the dominant label
                label_codes = label_w.argmax(1)
            lib = np.empty(len(values))
            for c in np.unique(label_codes):
                pool = np.asarray(pre["library_sizes"][labels[c]])
                idx = label_codes == c
                lib[idx] = rng.choice(pool, size=int(idx.sum()))

            def dispersion(sl: slice) -> np.ndarray:
                return self._dispersion(
                    label_codes[sl] if label_w is None else None, None if label_w is None else label_w[sl]
                )

            # counts drawn as the model was trained (CountObservation): Poisson–log-normal when the
            # generator learned a dispersion, else as its count_noise says
            learned = getattr(self.modules.get("generator"), "log_dispersion", None) is not None
            if learned:
                noise = "pln"
            elif self.params.get("count_noise") == "rounding":
                noise = "rounding"
            else:
                noise = "poisson"
            X = draw_counts(
                values,
                lib,
                rng,
                noise=noise,
                dispersion=dispersion if learned else None,
                columns=cols,
                n_columns=n_out,
            )
            return X, normalize_log1p(X, target_sum=pre["target_sum"])
        if pre["representation"] == "log1p":
            X = expand_genes(values, cols, n_out)
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


def _check_resumable(saved: dict, meta: dict, directory) -> None:
    """Refuse to resume a checkpoint of another run: another model, parameters, seed or data."""
    from ..errors import TrainingError

    budgets = ("epochs", "max_minutes")  # how long to train may change; what is trained may not
    for key, what in (("model", "model"), ("params", "parameters"), ("seed", "seed"), ("data", "data")):
        a, b = saved.get(key), meta[key]
        if key == "params" and isinstance(a, dict):
            a = {k: v for k, v in a.items() if k not in budgets}
            b = {k: v for k, v in b.items() if k not in budgets}
        if a != b:
            raise TrainingError(
                f"the checkpoint in {directory} is of a run with other {what} than this one; resume with the "
                "same model, parameters, seed and data, or fit afresh without resuming"
            )


def _version() -> str:
    from .. import __version__

    return __version__
