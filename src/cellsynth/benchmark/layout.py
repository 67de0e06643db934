"""Where a benchmark keeps its files, and what identifies a grid cell.

A benchmark directory holds::

    split.json                 the split (test cell names) and the fingerprint of the data it was made from
    split/train.h5ad           TRAIN, every model's training cells
    split/test.h5ad            TEST, what every model is evaluated against
    cells/MODEL-seedS-KEY/     one grid cell: job.json, log.txt, model/, synthetic.h5ad, metrics.json,
                               metrics_per_type.csv, report.html, and last result.json (or failed.json)
    leaderboard.csv|md|html

A cell's ``KEY`` is a hash of everything that decides its result: the model, its parameters (the time
budget included), the seed, the label and condition keys, ``n_genes``, the evaluation settings and
families, and the split. A rerun with the same options finds the finished cells by that key and keeps
them; a changed budget or parameter gives new keys, so exactly the changed cells are run again (the old
directories stay on disk and no longer enter the leaderboard). The device and whether a report is written
are not part of the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._io import jsonable

SPLIT_RECORD = "split.json"
RESULT = "result.json"
FAILED = "failed.json"
JOB = "job.json"
LOG = "log.txt"


@dataclass
class CellJob:
    """One grid cell: fit ``model`` with ``params`` and ``seed`` on TRAIN, sample, evaluate against TEST.

    Attributes
    ----------
    model, seed, params
        What is fitted (``params`` complete: the model's defaults updated with the user's values).
    label_key, condition_keys, n_genes
        How it is fitted.
    settings, families
        Evaluation settings (overrides of ``cellsynth.metrics.space.DEFAULT_SETTINGS``) and the metric
        families evaluated (None: all).
    split
        Fingerprint of the split the cell uses.
    draws
        Synthetic sets the detector scores (the first is the cell's ``synthetic.h5ad``, scored with every
        family); above 1, ``detection_auc_draws`` is the mean detection AUC over all of them (part of the key
        only above 1: a cell of one draw keeps the key it had before the option existed).
    device
        Where it trains (not part of the key).
    report
        Whether the cell writes its HTML report (not part of the key).
    directory
        The cell's directory (set by :func:`cell_directory`).
    """

    model: str
    seed: int
    params: dict[str, Any]
    label_key: str
    condition_keys: list[str] = field(default_factory=list)
    n_genes: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    families: list[str] | None = None
    split: str = ""
    draws: int = 1
    device: str = "auto"
    report: bool = True
    directory: str = ""

    def key(self) -> str:
        """Hash of what decides the cell's result (not the device, the report, the directory, or a single
        draw)."""
        left_out = {"device", "report", "directory"} | ({"draws"} if self.draws == 1 else set())
        what = {k: v for k, v in asdict(self).items() if k not in left_out}
        text = json.dumps(jsonable(what), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def to_json(self) -> str:
        return json.dumps(jsonable(asdict(self)), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_file(cls, path: str | Path) -> CellJob:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))


def cell_directory(out: Path, job: CellJob) -> Path:
    """``out/cells/MODEL-seedS-KEY``."""
    return Path(out) / "cells" / f"{job.model}-seed{job.seed}-{job.key()}"


def split_paths(out: Path) -> tuple[Path, Path]:
    """``(train.h5ad, test.h5ad)`` of a benchmark directory."""
    return Path(out) / "split" / "train.h5ad", Path(out) / "split" / "test.h5ad"


def read_record(directory: Path) -> dict[str, Any] | None:
    """A cell's finished record: ``result.json`` (status ``done``), else ``failed.json`` (``failed``),
    else None (the cell has not run, or did not finish)."""
    for name in (RESULT, FAILED):
        path = Path(directory) / name
        if path.exists():
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except ValueError:  # unreadable: as if the cell had not run
                return None
    return None


def data_fingerprint(adata, label_key: str) -> str:
    """SHA-256 of the cells, genes, labels and values of ``adata``: whether a rerun has the same data."""
    h = hashlib.sha256()
    h.update("\n".join(map(str, adata.obs_names)).encode())
    h.update(b"\0")
    h.update("\n".join(map(str, adata.var_names)).encode())
    h.update(b"\0")
    h.update("\n".join(map(str, adata.obs[label_key].astype(str))).encode())
    X = adata.X
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        for part in (X.indptr, X.indices, X.data):
            h.update(np.ascontiguousarray(part).tobytes())
    else:
        h.update(np.ascontiguousarray(np.asarray(X)).tobytes())
    return h.hexdigest()
