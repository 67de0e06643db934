"""What every reader shares: chunk size, error translation, text sniffing, HDF5 attributes, X's form."""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import scipy.sparse as sp

from ...errors import InputError

PathLike = str | os.PathLike

# values (rows × columns) per chunk when streaming a CSV or pandas-HDF5 matrix (tests shrink it)
CHUNK_VALUES = 4_000_000
# X is stored sparse when at least this fraction of its entries is zero
SPARSE_ZEROS = 0.5
# errors a malformed input file raises from the libraries we call (InputError is re-raised untouched)
FILE_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, zlib.error, csv.Error)


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def reading(path: Path, what: str, fix: str) -> Iterator[None]:
    """Turn the errors a malformed file makes libraries raise into one-line InputErrors."""
    try:
        yield
    except InputError:
        raise
    except FILE_ERRORS as e:
        raise InputError(f"cannot read {path} as {what} ({one_line(e)}) — {fix}") from e


def warn(message: str) -> None:
    """A warning shown at the line that called :func:`read` (warn ← reader ← dispatch ← read ← caller)."""
    warnings.warn(message, UserWarning, stacklevel=5)


def finish_matrix(X: sp.csr_matrix) -> sp.csr_matrix | np.ndarray:
    """float32 CSR when at least half the entries are zero, else dense float32."""
    X = sp.csr_matrix(X, dtype=np.float32)
    size = X.shape[0] * X.shape[1]
    if size and X.nnz / size > 1.0 - SPARSE_ZEROS:
        return X.toarray()
    return X


def open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def head_lines(path: Path, n: int) -> list[str]:
    with open_text(path) as fh:
        lines = [line.rstrip("\r\n") for line in itertools.islice(fh, n)]
    return [line for line in lines if line.strip()]


def sniff_delimiter(path: Path, lines: Sequence[str], *, whitespace: bool) -> str:
    """Tab or comma, whichever the first lines hold more of; else whitespace (matrices) or the extension."""
    tabs = sum(line.count("\t") for line in lines)
    commas = sum(line.count(",") for line in lines)
    if tabs or commas:
        return "\t" if tabs >= commas else ","
    if whitespace and lines and len(lines[0].split()) > 1:
        return r"\s+"
    return "\t" if ".tsv" in path.name.lower() or ".tab" in path.name.lower() else ","


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def h5_attr(obj: h5py.HLObject, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)
