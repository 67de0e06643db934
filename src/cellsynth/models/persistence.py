"""Model directories: ``weights.safetensors`` (tensors only, no code) and ``config.json`` (model name,
cellsynth version, constructor arguments, gene names, condition vocabularies, preprocessing record,
training history, and the weights' SHA-256). Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import InputError, ModelFileError
from .registry import REGISTRY

if TYPE_CHECKING:  # pragma: no cover
    from .model import SyntheticCellModel

FORMAT = "cellsynth-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def save(model: SyntheticCellModel, path: str | os.PathLike) -> Path:
    """Write ``model`` as ``weights.safetensors`` + ``config.json`` into directory ``path`` atomically.

    The files are written to a temporary sibling directory first and moved into place, so an
    interrupted save never leaves a half-written model behind.
    """
    from safetensors.torch import save_file

    model._check_fitted()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{name}.{k}": v.detach().cpu().contiguous()
        for name, module in model.modules.items()
        for k, v in module.state_dict().items()
    }
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT, "model": model.name})
        cfg = model.config()
        cfg["weights_sha256"] = _sha256(tmp / WEIGHTS)
        (tmp / CONFIG).write_text(json.dumps(cfg, indent=1, allow_nan=True))
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load(path: str | os.PathLike) -> SyntheticCellModel:
    """Load a model directory: ``config.json`` + ``weights.safetensors``; never unpickles anything.

    A missing, truncated or mismatched file raises :class:`~cellsynth.errors.ModelFileError`.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise ModelFileError(
            f"model directory not found: {path}; give the --out directory of `cellsynth fit`"
        )
    cfg_path, w_path = path / CONFIG, path / WEIGHTS
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise ModelFileError(f"{p} is missing; {path} is not a complete cellsynth model directory")
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(
            f"{cfg_path} is not valid JSON ({e.msg if hasattr(e, 'msg') else e}); re-save the model"
        ) from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFileError(f"{cfg_path} is not a cellsynth model config")
    if cfg.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer cellsynth (format {cfg['format_version']}); upgrade cellsynth"
        )
    name = cfg.get("model")
    if name not in REGISTRY:
        raise ModelFileError(f"{cfg_path} names unknown model {name!r}; known: {sorted(REGISTRY)}")
    expected = cfg.get("weights_sha256")
    if expected and _sha256(w_path) != expected:
        raise ModelFileError(
            f"{w_path} does not match its config (checksum differs): truncated or replaced; re-save the model"
        )
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{w_path} is truncated or corrupted ({e}); re-save the model") from None
    model = REGISTRY[name](**cfg["params"])
    model.info = cfg["data"]
    model.history = cfg.get("history", [])
    model.fit_record = cfg.get("fit", {})
    info = model.info
    sizes = [len(info["categories"][k]) for k in [info["label_key"], *info["condition_keys"]]]
    with torch.random.fork_rng(devices=[]):
        model.modules = model._build(sizes, len(info["preprocessing"]["train_genes"]))
    for mname, module in model.modules.items():
        prefix = f"{mname}."
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise ModelFileError(f"{w_path} does not match {cfg_path} ({first}); re-save the model") from None
        module.eval()
    return model


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _replace_dir(src: Path, dst: Path) -> None:
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a directory; choose another path")
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
