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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .._io import recover_replaced_dir, replaced_aside
from ..errors import InputError, ModelFileError
from .registry import REGISTRY

if TYPE_CHECKING:  # pragma: no cover
    from .model import SyntheticCellModel

FORMAT = "cellsynth-model"
FORMAT_VERSION = 1
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"


def save(
    model: SyntheticCellModel, path: str | os.PathLike, *, extra: Callable[[Path], None] | None = None
) -> Path:
    """Write ``model`` as ``weights.safetensors`` + ``config.json`` into directory ``path`` atomically.

    The files are written to a temporary sibling directory first and moved into place, so an
    interrupted save never leaves a half-written model behind. ``extra(tmp)`` may write further files
    (a training checkpoint) into that directory before it is moved.
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
        if extra is not None:
            extra(tmp)
        _replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load(path: str | os.PathLike) -> SyntheticCellModel:
    """Load a model directory: ``config.json`` + ``weights.safetensors``; never unpickles anything.

    A missing, truncated or mismatched file raises :class:`~cellsynth.errors.ModelFileError`.
    """
    from safetensors import SafetensorError, safe_open
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
    version = cfg.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(f"{cfg_path}: format_version is {version!r}, not an integer; re-save the model")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer cellsynth (format {cfg['format_version']}); upgrade cellsynth"
        )
    name = cfg.get("model")
    if name not in REGISTRY:
        raise ModelFileError(f"{cfg_path} names unknown model {name!r}; known: {sorted(REGISTRY)}")
    # every field the networks are built from or sampling reads is checked before anything is allocated
    try:
        sizes, n_genes = check_config(cfg)
    except _BadField as e:
        raise ModelFileError(f"{cfg_path}: {e}; re-save the model") from None
    try:
        model = REGISTRY[name](**cfg["params"])
    except InputError as e:
        raise ModelFileError(f"{cfg_path}: field params: {e}; re-save the model") from None
    model.info = cfg["data"]
    model.history = cfg.get("history", [])
    model.fit_record = cfg.get("fit", {})
    expected = cfg.get("weights_sha256")
    if expected and _sha256(w_path) != expected:
        raise ModelFileError(
            f"{w_path} does not match its config (checksum differs): truncated or replaced; re-save the model"
        )
    try:
        with safe_open(str(w_path), framework="pt") as f:
            stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # the header only
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{w_path} is truncated or corrupted ({e}); re-save the model") from None
    # the networks the config describes, built without memory (meta tensors), must be the stored ones:
    # a config cannot make loading allocate more than its weights file holds
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        described = {
            f"{mname}.{k}": tuple(v.shape)
            for mname, module in model._build(sizes, n_genes).items()
            for k, v in module.state_dict().items()
        }
    for key in sorted(described.keys() | stored.keys()):
        if described.get(key) != stored.get(key):
            raise ModelFileError(
                f"{w_path} does not match {cfg_path}: tensor {key} has shape {stored.get(key)} in the "
                f"weights but {described.get(key)} by the config; re-save the model"
            )
    try:
        tensors = load_file(str(w_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{w_path} is truncated or corrupted ({e}); re-save the model") from None
    with torch.random.fork_rng(devices=[]):
        model.modules = model._build(sizes, n_genes)
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
    recover_replaced_dir(dst)
    if dst.exists() and not dst.is_dir():
        raise InputError(f"--out {dst} exists and is not a directory; choose another path")
    if dst.exists():
        old = replaced_aside(dst)
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


# ---------------------------------------------------------------------- config schema
# Limits far above any real model's and far below what would exhaust a machine's memory.
MAX_TEXT = 1000  # characters of a key, gene or category name
MAX_GENES = 1_000_000  # output genes
MAX_CATEGORIES = 100_000  # categories of one condition key (cells are one-hot encoded over them)
MAX_CONDITION_KEYS = 64
MAX_COMBINATIONS = 10_000_000  # distinct condition combinations of the training cells
MAX_LIBRARY_SIZES = 100_000  # library sizes kept per label
MAX_CELLS = 2**53  # training cells (a count, not a size)
REPRESENTATIONS = ("counts", "log1p", "as_is")


class _BadField(ValueError):
    """A config field that fails the schema; the message names the field and what is wrong."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"field {field} {problem}")


def check_config(cfg: dict) -> tuple[list[int], int]:
    """Check the fields of a parsed ``config.json`` that loading and sampling use.

    Types and limits of every field the networks are built from or sampling reads: the vocabularies
    and their sizes, the joint table of conditions, the gene lists (``train_genes`` indices within
    ``output_genes``), the library sizes (finite, non-negative) and the model-specific sizes
    (``critic_components``, ``seeding``). The hyperparameters (``params``) are checked by the model's
    parameter spec. Returns the condition sizes and the number of training genes.

    Raises
    ------
    _BadField
        Naming the first field that fails.
    """
    _mapping(cfg.get("params"), "params")
    if "history" in cfg and not isinstance(cfg["history"], list):
        raise _BadField("history", f"is {_kind(cfg['history'])}, not a list")
    if "fit" in cfg:
        _mapping(cfg["fit"], "fit")
    info = _mapping(cfg.get("data"), "data")
    label_key = _text(info.get("label_key"), "data.label_key")
    keys = _texts(info.get("condition_keys"), "data.condition_keys", most=MAX_CONDITION_KEYS, unique=True)
    if label_key in keys:
        raise _BadField("data.condition_keys", f"repeats the label key {label_key!r}")
    categories = _mapping(info.get("categories"), "data.categories")
    sizes = []
    for key in [label_key, *keys]:
        field = f"data.categories[{key!r}]"
        if key not in categories:
            raise _BadField(field, "is missing")
        sizes.append(len(_texts(categories[key], field, fewest=1, most=MAX_CATEGORIES, unique=True)))
    labels = categories[label_key]
    if "subtypes" in info:  # the label's categories are sub-types of these types (data.subtypes)
        split = _mapping(info["subtypes"], "data.subtypes")
        n_types = len(_texts(split.get("types"), "data.subtypes.types", fewest=1, most=sizes[0], unique=True))
        parent = _integers(split.get("parent"), "data.subtypes.parent", low=0, fewest=sizes[0], most=sizes[0])
        if parent.max() >= n_types or len(np.unique(parent)) < n_types:
            raise _BadField("data.subtypes.parent", f"does not map onto the {n_types} types")
    for field in ("integer_keys", "bool_keys"):
        for key in _texts(info.get(field, []), f"data.{field}", most=1 + len(keys), unique=True):
            if key not in (label_key, *keys):
                raise _BadField(f"data.{field}", f"names {key!r}, not a condition key")

    joint = _mapping(info.get("joint"), "data.joint")
    counts = _numbers(joint.get("counts"), "data.joint.counts", fewest=1, most=MAX_COMBINATIONS)
    if np.any(counts <= 0):
        raise _BadField("data.joint.counts", "holds a count ≤ 0")
    width = len(sizes)
    n_codes = len(counts) * width  # one code per key and combination
    codes = _integers(joint.get("codes"), "data.joint.codes", low=0, fewest=n_codes, most=n_codes)
    codes = codes.reshape(len(counts), width)
    for k, (key, n) in enumerate(zip([label_key, *keys], sizes, strict=True)):
        if codes[:, k].max() >= n:
            raise _BadField("data.joint.codes", f"has a code ≥ {n}, the number of categories of {key!r}")

    pre = _mapping(info.get("preprocessing"), "data.preprocessing")
    representation = pre.get("representation")
    if representation not in REPRESENTATIONS:
        raise _BadField(
            "data.preprocessing.representation", f"is {representation!r}, not one of {REPRESENTATIONS}"
        )
    n_out = len(_texts(pre.get("output_genes"), "data.preprocessing.output_genes", fewest=1, most=MAX_GENES))
    train = _integers(pre.get("train_genes"), "data.preprocessing.train_genes", low=0, fewest=1, most=n_out)
    if train.max() >= n_out:
        raise _BadField(
            "data.preprocessing.train_genes", f"has index {int(train.max())}, beyond the {n_out} output genes"
        )
    if np.any(np.diff(train) <= 0):
        raise _BadField("data.preprocessing.train_genes", "is not strictly increasing")
    if not isinstance(pre.get("nonnegative"), bool):
        raise _BadField(
            "data.preprocessing.nonnegative", f"is {_kind(pre.get('nonnegative'))}, not true/false"
        )
    _text(pre.get("gene_selection", "expressed"), "data.preprocessing.gene_selection")
    if representation == "counts":
        target = _numbers([pre.get("target_sum")], "data.preprocessing.target_sum")
        if target[0] <= 0:
            raise _BadField("data.preprocessing.target_sum", "is ≤ 0")
        library = _mapping(pre.get("library_sizes"), "data.preprocessing.library_sizes")
        for label in labels:
            field = f"data.preprocessing.library_sizes[{label!r}]"
            if label not in library:
                raise _BadField(field, "is missing")
            if np.any(_numbers(library[label], field, fewest=1, most=MAX_LIBRARY_SIZES) < 0):
                raise _BadField(field, "holds a negative library size")

    n_cells = _integer(info.get("n_train_cells"), "data.n_train_cells", 1, MAX_CELLS)
    if "critic_components" in info:
        _integer(info["critic_components"], "data.critic_components", 1, len(train))
    if "seeding" in info:
        seeding = _mapping(info["seeding"], "data.seeding")
        _integer(seeding.get("n_seeds"), "data.seeding.n_seeds", 0, n_cells)
        _integer(seeding.get("guard_components"), "data.seeding.guard_components", 1, len(train))
        _numbers([seeding.get("guard_reference", 1.0)], "data.seeding.guard_reference")
    return sizes, len(train)


def _kind(value) -> str:
    from ..params import describe

    return describe(value)


def _mapping(value, field: str) -> dict:
    if not isinstance(value, dict):
        raise _BadField(field, f"is {_kind(value)}, not a mapping")
    return value


def _text(value, field: str) -> str:
    if not isinstance(value, str):
        raise _BadField(field, f"is {_kind(value)}, not text")
    if len(value) > MAX_TEXT:
        raise _BadField(field, f"is {len(value):,} characters long (at most {MAX_TEXT:,})")
    return value


def _texts(value, field: str, *, fewest: int = 0, most: int, unique: bool = False) -> list[str]:
    _length(value, field, fewest, most)
    for i, item in enumerate(value):
        _text(item, f"{field}[{i}]")
    if unique and len(set(value)) != len(value):
        raise _BadField(field, "repeats a name")
    return value


def _length(value, field: str, fewest: int, most: int) -> None:
    if not isinstance(value, list):
        raise _BadField(field, f"is {_kind(value)}, not a list")
    if not fewest <= len(value) <= most:
        raise _BadField(field, f"has {len(value):,} entries (accepted: {fewest:,} to {most:,})")


def _integer(value, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        accepted = f"≥ {low:,}" if high >= MAX_CELLS else f"in [{low:,}, {high:,}]"
        raise _BadField(field, f"is {_kind(value)}, not an integer {accepted}")
    return value


def _integers(value, field: str, *, low: int, fewest: int, most: int) -> np.ndarray:
    _length(value, field, fewest, most)
    bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise _BadField(field, f"holds {_kind(bad)}, not an integer")
    if value and (min(value) < low or max(value) >= 2**62):
        raise _BadField(field, f"holds an integer outside [{low}, 2**62)")
    return np.asarray(value, dtype=np.int64)


def _numbers(value, field: str, *, fewest: int = 1, most: int = 1) -> np.ndarray:
    _length(value, field, fewest, most)
    bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, int | float)), None)
    if bad is not None:
        raise _BadField(field, f"holds {_kind(bad)}, not a number")
    out = np.asarray(value, dtype=np.float64)
    if not np.all(np.isfinite(out)):
        raise _BadField(field, "holds a value that is not finite (NaN or ±Inf)")
    return out
