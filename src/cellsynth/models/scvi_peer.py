"""The ``scvi`` peer: scvi-tools' CondSCVI, the cell-type conditional VAE a user would pick instead.

An adapter, not a re-implementation: ``fit`` hands the raw counts to ``scvi.model.CondSCVI`` and its own
training loop (Lightning, scvi's training plan, scvi's defaults), and keeps the trained network, scvi's
``scvi.module.VAEC``, as the model's ``"generator"``; save and load go through cellsynth's safetensors
+ JSON model directory like every other model (the network is rebuilt from the parameters, never
unpickled). Sampling draws z ~ N(0, I) (CondSCVI's ``prior="normal"``), runs the network's generative
pass for the cell's type, and draws negative binomial counts with the profile it returns at a library
size drawn from the type's training cells, with the sample's own numpy generator.

Covariates: CondSCVI's network takes one categorical batch (an embedding added to the decoder's input),
so the condition keys beyond the label are combined into one batch category per observed combination
of their values (the product of their vocabularies is the embedding's size).

scvi-tools is an optional dependency (``pip install 'cellsynth[peers]'``): this module imports it only
inside methods, so the registry lists the model as unavailable where it is not installed.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..data.preprocess import expand_genes, normalize_log1p
from ..errors import InputError, TrainingError
from ..params import Param, ParamSpec
from .model import SyntheticCellModel
from .registry import register

#: most batch categories (combinations of covariate values) the network's embedding may have
MAX_BATCHES = 100_000
_BLOCK_ROWS = 4096  # cells whose counts are drawn at once (only a block is ever dense)
_LABEL, _BATCH = "cellsynth_label", "cellsynth_batch"  # obs columns of the AnnData handed to scvi
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "XLA_FLAGS")  # what seeding scvi / Lightning exports
_HISTORY_KEYS = (
    "train_loss",
    "elbo_train",
    "reconstruction_loss_train",
    "kl_local_train",
    "validation_loss",
    "elbo_validation",
    "reconstruction_loss_validation",
    "kl_local_validation",
)

#: CondSCVI's hyperparameters, with the defaults of ``CondSCVI(...)``, ``CondSCVI.train(...)`` and scvi's
#: training plan (scvi-tools 1.4): what a user of CondSCVI gets.
PARAMS = ParamSpec(
    [
        # network (scvi.module.VAEC)
        Param("n_latent", 5, "int", "latent dimensions", ge=1, le=4096),
        Param("n_hidden", 128, "int", "width of the encoder's and decoder's hidden layers", ge=1, le=65536),
        Param("n_layers", 2, "int", "hidden layers of the encoder and of the decoder", ge=1, le=16),
        Param("dropout_rate", 0.05, "float", "dropout in the encoder and decoder", ge=0, lt=1),
        Param("weight_obs", False, "bool", "weight cells by inverse type frequency (rare types count more)"),
        # optimisation (CondSCVI.train)
        Param("epochs", 300, "int", "most passes over the training cells", ge=1),
        Param("max_minutes", None, "float", "time budget (null: none)", gt=0, optional=True),
        Param("batch_size", 128, "int", "cells per minibatch", ge=1, le=1_000_000),
        Param("lr", 1e-3, "float", "Adam's learning rate", gt=0),
        Param("weight_decay", 1e-6, "float", "Adam's weight decay", ge=0),
        Param("n_epochs_kl_warmup", 400, "int", "epochs over which the KL weight rises to 1 (0: none)", ge=0),
        # validation and early stopping
        Param("train_size", 1.0, "float", "share of cells trained on; the rest validate", gt=0, le=1),
        Param("early_stopping", False, "bool", "stop when the validation ELBO stalls (needs train_size < 1)"),
        Param("early_stopping_patience", 45, "int", "validations without improvement before stopping", ge=1),
        Param(
            "check_val_every_n_epoch",
            None,
            "int",
            "epochs between validations (null: every epoch with early stopping, else none)",
            ge=1,
            optional=True,
        ),
    ]
)


@register
class ScviPeer(SyntheticCellModel):
    """scvi-tools' CondSCVI (cell-type conditional VAE), the peer to compare with; needs scvi-tools.

    ``fit`` trains CondSCVI with its own loop on the raw counts (count input only); ``sample`` draws
    latent cells from the prior N(0, I) and negative binomial counts from the decoder. Mixtures
    (``sample(mix=...)``) feed the label weights to the decoder's type input and bias. Covariates become
    CondSCVI's batch (one category per combination of their values). The cellsynth training plan's
    checkpoints do not apply: ``checkpoint_dir`` is ignored and ``resume=True`` is refused.
    """

    name = "scvi"
    param_spec = PARAMS
    requires = ("scvi",)
    extra = "peers"

    def __init__(self, **params):
        super().__init__(**params)
        p = self.params
        if p["early_stopping"] and p["train_size"] >= 1:
            raise InputError(
                "scvi: early_stopping=true needs validation cells; set train_size below 1 (e.g. 0.9)"
            )

    # ------------------------------------------------------------------ networks
    def _build(self, sizes: list[int], n_genes: int) -> dict[str, nn.Module]:
        p = self.params
        generator = _scvi().module.VAEC(
            n_input=n_genes,
            n_batch=_n_batches(sizes),
            n_labels=sizes[0],
            n_hidden=p["n_hidden"],
            n_latent=p["n_latent"],
            n_layers=p["n_layers"],
            dropout_rate=p["dropout_rate"],
        )
        return {"generator": generator}

    # ------------------------------------------------------------------ training
    def fit(self, adata, **kwargs: Any) -> ScviPeer:
        """Fit CondSCVI on ``adata``'s raw counts; the arguments of :meth:`SyntheticCellModel.fit`.

        CondSCVI trains with its own loop, so ``checkpoint_dir`` is ignored and ``resume=True`` raises
        :class:`~cellsynth.errors.TrainingError`.
        """
        if kwargs.get("resume"):
            raise TrainingError(
                "the scvi peer cannot resume an interrupted fit (CondSCVI has its own loop); fit afresh"
            )
        return super().fit(adata, **kwargs)

    def _fit(self, data, *, device, seed, progress, checkpoint=None, resume=None) -> None:
        from ..train.device import resolve_device

        if data.preprocessing.representation != "counts":
            raise InputError(
                f"the scvi peer needs raw counts, but the data is {data.preprocessing.representation}; "
                "fit it on the count matrix (e.g. layer='counts' / --layer counts)"
            )
        p = self.params
        sizes = [c.n for c in data.conditions]
        train_idx, val_idx = _split(data.n_cells, p["train_size"], seed)
        resolved = resolve_device(device)
        accelerator, devices = (
            ("cpu", 1) if resolved == "cpu" else ("gpu", [torch.device(resolved).index or 0])
        )
        started = time.monotonic()
        # everything scvi does runs inside: its imports, set-up and loop draw from (and seed) global RNGs
        with (
            _kept_global_state(devices if accelerator == "gpu" else []),
            _quiet(),
            tempfile.TemporaryDirectory(prefix="cellsynth-scvi-") as logdir,
        ):
            _seed_globals(seed, devices if accelerator == "gpu" else [])
            import scvi

            adata = _training_anndata(data, sizes)
            scvi.model.CondSCVI.setup_anndata(
                adata, labels_key=_LABEL, batch_key=_BATCH if len(sizes) > 1 else None
            )
            stopper = _stop_callback(p["max_minutes"])
            model = scvi.model.CondSCVI(
                adata,
                n_hidden=p["n_hidden"],
                n_latent=p["n_latent"],
                n_layers=p["n_layers"],
                weight_obs=p["weight_obs"],
                dropout_rate=p["dropout_rate"],
            )
            model.train(
                max_epochs=p["epochs"],
                lr=p["lr"],
                accelerator=accelerator,
                devices=devices,
                batch_size=p["batch_size"],
                datasplitter_kwargs={"external_indexing": [train_idx, val_idx, np.array([], dtype=np.int64)]},
                plan_kwargs={
                    "weight_decay": p["weight_decay"],
                    "n_epochs_kl_warmup": p["n_epochs_kl_warmup"],
                },
                early_stopping=p["early_stopping"],
                early_stopping_patience=p["early_stopping_patience"],
                check_val_every_n_epoch=p["check_val_every_n_epoch"],
                enable_progress_bar=progress,
                callbacks=[stopper],
                default_root_dir=logdir,
            )
        seconds = time.monotonic() - started
        trained = {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
        self.modules["generator"].load_state_dict(trained, strict=True)
        self.history = _history(model.history, stopper.epoch_seconds)
        self.fit_record = {
            "stopped_because": _stop_reason(model.trainer, stopper, p["epochs"]),
            "epochs_run": len(stopper.epoch_seconds),
            "seconds": round(seconds, 3),
            "train_cells": len(train_idx),
            "validation_cells": len(val_idx),
            # the covariates are CondSCVI's batch: one category per combination of their values
            "batch_keys": [c.key for c in data.conditions[1:]],
            "n_batch": _n_batches(sizes),
            "scvi_tools_version": scvi.__version__,
        }

    # ------------------------------------------------------------------ sampling
    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.modules["generator"].n_latent, generator=gen)

    @torch.no_grad()
    def _generate(self, weights: list[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Each cell's expression profile (the NB mean at library size 1) from latent ``z``."""
        return decode(self.modules["generator"], weights, z)

    def _to_output(self, values: np.ndarray, label_codes: np.ndarray, label_w, rng: np.random.Generator):
        """Negative binomial counts of profiles ``values`` at library sizes of the cells' types."""
        pre = self.info["preprocessing"]
        labels = self.info["categories"][self.info["label_key"]]
        if label_w is not None:  # mixtures: library size of the dominant label
            label_codes = label_w.argmax(1)
        library = np.empty(len(values))
        for c in np.unique(label_codes):
            idx = label_codes == c
            library[idx] = rng.choice(np.asarray(pre["library_sizes"][labels[c]]), size=int(idx.sum()))
        theta = np.exp(self.modules["generator"].px_r.detach().double().cpu().numpy())
        cols = np.asarray(pre["train_genes"], dtype=np.int64)
        n_out = len(pre["output_genes"])
        blocks = []
        for start in range(0, len(values), _BLOCK_ROWS):
            sl = slice(start, start + _BLOCK_ROWS)
            mean = values[sl].astype(np.float64) * library[sl, None]
            counts = rng.poisson(rng.gamma(theta, mean / theta))  # NB(mean, theta) as a gamma-Poisson
            blocks.append(expand_genes(counts.astype(np.float32), cols, n_out))
        X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_out), dtype=np.float32)
        return X, normalize_log1p(X, target_sum=pre["target_sum"])


@torch.no_grad()
def decode(vaec: nn.Module, weights: Sequence[torch.Tensor], z: torch.Tensor) -> torch.Tensor:
    """Expression profiles (cells × genes, rows summing to 1) of a ``scvi.module.VAEC`` from latent ``z``.

    ``weights`` are the conditions' one-hot matrices, the label's first (cellsynth's sampling input).
    Cells of one type go through the module's own generative pass; cells with mixed label weights
    through the same layers with the weights as the decoder's type input and as weights of the per-type
    output bias (one-hot weights give exactly the generative pass).
    """
    label_w = weights[0].to(z.dtype)
    batch = _batch_index(weights[1:], len(z), z.device)
    if bool(((label_w == 0) | (label_w == 1)).all()) and bool((label_w.sum(1) == 1).all()):
        y = label_w.argmax(1, keepdim=True)
        library = torch.ones(len(z), 1, dtype=z.dtype, device=z.device)
        return vaec.generative(z, library, y, batch)["px"].scale
    rep = vaec.compute_embedding(_scvi().REGISTRY_KEYS.BATCH_KEY, batch)
    h = vaec.decoder(torch.cat([z, rep], dim=-1), label_w, batch)
    return torch.softmax(vaec.px_decoder(h) + label_w @ vaec.per_ct_bias, dim=-1)


# ---------------------------------------------------------------------- data handed to scvi
def raw_counts(data) -> sp.csr_matrix:
    """The training cells' raw counts over the training genes, recovered exactly from count ``CellData``.

    ``CellData.X`` holds ``log1p(count · scale)`` per cell; the counts are ``rint(expm1(X) / scale)``
    (computed in float64, exact for counts far beyond any real cell's).
    """
    X = sp.csr_matrix(data.X, dtype=np.float64, copy=True)
    scale = np.repeat(np.asarray(data.scale, dtype=np.float64), np.diff(X.indptr))
    X.data = np.rint(np.expm1(X.data) / scale)
    X.eliminate_zeros()
    return X.astype(np.float32)


def _training_anndata(data, sizes: list[int]):
    """An AnnData of raw counts with the label (and the covariates' combination) as categorical obs."""
    import anndata as ad
    import pandas as pd

    obs = pd.DataFrame(index=pd.Index([str(i) for i in range(data.n_cells)]))
    # categories in cellsynth's order, so scvi's label and batch codes are cellsynth's codes
    obs[_LABEL] = pd.Categorical.from_codes(data.label.codes, categories=data.label.categories)
    if len(sizes) > 1:
        flat = np.ravel_multi_index(tuple(c.codes for c in data.conditions[1:]), sizes[1:])
        obs[_BATCH] = pd.Categorical.from_codes(flat, categories=np.arange(_n_batches(sizes)))
    return ad.AnnData(X=raw_counts(data), obs=obs)


def _n_batches(sizes: Sequence[int]) -> int:
    """Batch categories of the network: the combinations of the covariates' values (1 without any)."""
    n = math.prod(int(s) for s in sizes[1:])
    if n > MAX_BATCHES:
        raise InputError(
            f"the scvi peer combines the covariates into one batch of {n:,} categories "
            f"(at most {MAX_BATCHES:,}); condition on fewer or coarser covariate keys"
        )
    return n


def _batch_index(weights: Sequence[torch.Tensor], n: int, device) -> torch.Tensor:
    """cells × 1 batch codes from the covariates' one-hot matrices (row-major over their combinations;
    all 0 without covariates)."""
    index = torch.zeros(n, dtype=torch.long, device=device)
    for w in weights:
        index = index * w.shape[1] + w.argmax(1).to(device)
    return index[:, None]


def _split(n: int, train_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation rows (sorted), drawn from ``seed``; scvi's sizes (ceil for training)."""
    if train_size >= 1:
        return np.arange(n), np.array([], dtype=np.int64)
    n_train = min(max(math.ceil(train_size * n), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


# ---------------------------------------------------------------------- scvi's loop, contained
def _scvi():
    """The ``scvi`` package, imported so that what its import does to global RNGs is undone."""
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with _kept_global_state(cuda):
        import scvi
        import scvi.module  # noqa: F401
    return scvi


@contextlib.contextmanager
def _kept_global_state(cuda_devices: list[int]) -> Iterator[None]:
    """Give the caller back the global state scvi and Lightning change: torch's RNGs (CPU, and the CUDA
    devices listed), numpy's and Python's global RNGs, cuDNN's flags and the seed variables that
    ``scvi.settings.seed`` / Lightning's ``seed_everything`` set in the environment."""
    np_state, py_state = np.random.get_state(), random.getstate()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    env = {k: os.environ.get(k) for k in _SEED_ENV}
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _seed_globals(seed: int, cuda_devices: list[int]) -> None:
    """Seed the global RNGs scvi's loop draws from (call inside :func:`_kept_global_state`)."""
    torch.default_generator.manual_seed(seed)
    for d in cuda_devices:
        with torch.cuda.device(d):
            torch.cuda.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's start-up lines and scvi's warnings about the internal AnnData, silenced meanwhile."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        for message in (
            ".*log_every_n_steps.*",
            ".*fewer than 3 cells.*",
            ".*LeafSpec.*",
            ".*small size of.*",
        ):
            warnings.filterwarnings("ignore", message=message)
        try:
            for lg in loggers:
                lg.setLevel(logging.WARNING)
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _stop_callback(max_minutes: float | None):
    """A Lightning callback: the time budget, SIGTERM/SIGINT (stop after the current step, keeping the
    model so far) and the time at each epoch's end. Defined here so the module imports without Lightning's
    trainer."""
    from lightning.pytorch.callbacks import Callback

    from ..train.signals import StopSignals

    class StopCallback(Callback):
        def __init__(self):
            self.budget = math.inf if max_minutes is None else 60.0 * max_minutes
            self.epoch_seconds: list[float] = []
            self.reason: str | None = None
            self._signals = StopSignals()
            self._started = 0.0

        def on_train_start(self, trainer, pl_module):  # noqa: ARG002
            self._started = time.monotonic()
            self._signals.__enter__()

        def on_train_end(self, trainer, pl_module):  # noqa: ARG002
            self._signals.__exit__(None, None, None)

        def on_exception(self, trainer, pl_module, exception):  # noqa: ARG002
            self._signals.__exit__(None, None, None)

        def on_train_batch_end(self, trainer, *args):  # noqa: ARG002
            if self._signals.received is not None:
                self.reason = "interrupted"
            elif time.monotonic() - self._started > self.budget:
                self.reason = "time budget"
            if self.reason:
                trainer.should_stop = True

        def on_train_epoch_end(self, trainer, pl_module):  # noqa: ARG002
            self.epoch_seconds.append(round(time.monotonic() - self._started, 3))

    return StopCallback()


def _stop_reason(trainer, stopper, epochs: int) -> str:
    """Why training ended, in the training plan's words."""
    if stopper.reason:
        return stopper.reason
    if any(getattr(c, "early_stopping_reason", None) for c in trainer.callbacks):
        return "early stopping"
    return "epochs" if len(stopper.epoch_seconds) >= epochs else "stopped"


def _history(history: dict | None, epoch_seconds: list[float]) -> list[dict]:
    """scvi's per-epoch losses (``model.history``: a DataFrame per key) as cellsynth's list of records."""
    records = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(epoch_seconds)]
    for key in _HISTORY_KEYS:
        frame = (history or {}).get(key)
        if frame is None:
            continue
        for epoch, value in zip(frame.index, frame[key].to_numpy(), strict=True):
            i = int(epoch)
            if 0 <= i < len(records) and np.isfinite(value):
                records[i][key] = float(value)
    return records
