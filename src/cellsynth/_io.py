"""Writing files so that a reader never sees a half-written one."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    The file gets the permissions the umask gives a new file (``mkstemp`` alone would make it 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.resolve().parent)
    os.close(fd)
    try:
        write(Path(tmp))
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def jsonable(obj):
    """``obj`` with numpy scalars as Python values, tuples and numpy arrays as lists and non-finite
    floats as None; anything else is returned as is."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating | float):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, np.bool_ | np.str_):
        return obj.item()
    return obj


def replaced_aside(path: str | os.PathLike) -> Path:
    """Where a directory being replaced waits (``.NAME.old`` beside it) while its successor moves in."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def recover_replaced_dir(path: str | os.PathLike) -> None:
    """Finish a directory replacement that a crash interrupted between its two renames: when ``path`` is
    missing but its predecessor waits aside, put the predecessor back."""
    path, old = Path(path), replaced_aside(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
