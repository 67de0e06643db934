"""Training checkpoints without pickles: the whole training state as safetensors + JSON.

A plan's state (:meth:`~cellsynth.train.plan.TrainingPlan.state`) is a tree of dicts, lists and tuples
whose leaves are tensors, numpy arrays and plain values. :func:`write_training_state` stores the
tensors and arrays in ``training.safetensors`` and the tree, with every leaf that is not a tensor,
in ``training.json`` (dict keys keep their type: optimiser states are keyed by integers); loading
reads tensors and JSON only, so a checkpoint cannot run code. Each file is written to a temporary
name and renamed, so a crash leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from .._io import recover_replaced_dir, write_atomic, write_text_atomic
from ..errors import TrainingError

STATE_TENSORS = "training.safetensors"
STATE_JSON = "training.json"
STATE_FORMAT = "cellsynth-training-state"
STATE_VERSION = 1


def flatten(obj: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``obj`` as a JSON-able tree and the tensors it refers to by name."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x):
        if isinstance(x, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = x.detach().to("cpu").clone().contiguous()
            return {"__tensor__": name}
        if isinstance(x, np.ndarray):
            name = f"t{len(tensors)}"
            tensors[name] = torch.from_numpy(np.ascontiguousarray(x).copy())
            return {"__ndarray__": name}
        if isinstance(x, dict):
            return {"__dict__": [[walk(k), walk(v)] for k, v in x.items()]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v) for v in x]}
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, np.generic):
            return walk(x.item())
        if isinstance(x, float) and not math.isfinite(x):
            return {"__float__": repr(x)}
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a training checkpoint")

    return walk(obj), tensors


def unflatten(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten`."""
    if isinstance(tree, list):
        return [unflatten(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return tensors[tree["__ndarray__"]].numpy()
        if "__dict__" in tree:
            return {unflatten(k, tensors): unflatten(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten(v, tensors) for v in tree["__tuple__"])
        if "__float__" in tree:
            return float(tree["__float__"])
    return tree


def write_training_state(directory: str | os.PathLike, state: dict, meta: dict) -> None:
    """Write ``state`` (a plan's) and ``meta`` (what the run was: model, parameters, seed, data) into
    ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tree, tensors = flatten(state)
    write_atomic(directory / STATE_TENSORS, lambda p: save_file(tensors, str(p)))
    doc = {"format": STATE_FORMAT, "version": STATE_VERSION, "meta": meta, "state": tree}
    write_text_atomic(directory / STATE_JSON, json.dumps(doc))


def has_training_state(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a training checkpoint (after finishing a replacement a crash cut off)."""
    recover_replaced_dir(directory)
    directory = Path(directory)
    return (directory / STATE_JSON).is_file() and (directory / STATE_TENSORS).is_file()


def read_training_meta(directory: str | os.PathLike) -> dict:
    """What run the checkpoint in ``directory`` belongs to (model, parameters, seed, data, fit options)."""
    return dict(_read_document(Path(directory)).get("meta", {}))


def read_training_state(directory: str | os.PathLike) -> tuple[dict, dict]:
    """``(state, meta)`` written by :func:`write_training_state`; a missing or damaged checkpoint is a
    :class:`~cellsynth.errors.TrainingError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    doc = _read_document(directory)
    try:
        state = unflatten(doc["state"], load_file(str(directory / STATE_TENSORS)))
    except (KeyError, TypeError, ValueError, SafetensorError, OSError) as e:
        raise TrainingError(f"the training checkpoint in {directory} is damaged ({e}); fit afresh") from None
    return state, doc.get("meta", {})


def _read_document(directory: Path) -> dict:
    """The checkpoint's JSON document, checked to be one this version can read."""
    if not has_training_state(directory):
        raise TrainingError(
            f"no training checkpoint in {directory} to resume from; fit without --resume to start afresh"
        )
    try:
        doc = json.loads((directory / STATE_JSON).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise TrainingError(f"the training checkpoint in {directory} is damaged ({e}); fit afresh") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise TrainingError(f"{directory / STATE_JSON} is not a cellsynth training checkpoint")
    if doc.get("version", 0) > STATE_VERSION:
        raise TrainingError(f"{directory} was written by a newer cellsynth; upgrade cellsynth to resume")
    return doc


def data_fingerprint(data) -> dict[str, Any]:
    """What identifies the training data of a run: its size, genes, labels and values (SHA-256)."""
    h = hashlib.sha256()
    X = data.X
    # the arrays' buffers are hashed where they lie (a memory-mapped matrix is read, not copied)
    for part in (X.indptr, X.indices, X.data) if sp.issparse(X) else (X,):
        h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
    h.update(np.ascontiguousarray(data.codes).tobytes())
    h.update("\n".join(data.preprocessing.output_genes).encode())
    return {"n_cells": int(data.n_cells), "n_genes": int(data.n_genes), "sha256": h.hexdigest()}
