"""The Kaggle "Open Problems – Multimodal Single-Cell Integration" CITEseq layout: a pandas HDF5 file
(``train_cite_inputs.h5``, fixed or table format) with Kaggle's ``metadata.csv``.

The matrix is read in row chunks (h5py for the fixed format, PyTables for the table format) that become
CSR as they come; cells marked ``hidden`` in the metadata are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import InputError
from . import common
from .common import finish_matrix, h5_attr, head_lines, is_number, reading, sniff_delimiter, warn


def pandas_tables(f: h5py.File) -> dict[str, str]:
    """``{key: pandas_type}`` of the DataFrames a pandas HDF5 file holds."""
    found: dict[str, str] = {}

    def visit(name: str, obj: h5py.HLObject) -> None:
        kind = h5_attr(obj, "pandas_type") if isinstance(obj, h5py.Group) else None
        if kind in ("frame", "frame_table"):
            found[name] = kind

    f.visititems(visit)
    return found


def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return np.char.decode(values, "utf-8", "replace").astype(str)
    if values.dtype.kind == "O":
        return np.array([v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values])
    return values.astype(str)


def _kaggle_metadata(path: Path, meta: Path | None, label_key: str) -> tuple[Path, pd.DataFrame, str]:
    if meta is None:
        meta = path.parent / "metadata.csv"
        if not meta.is_file():
            raise InputError(
                f"no metadata.csv next to {path} — put Kaggle's metadata.csv beside it or pass "
                f"labels=/--labels "
                f"path/to/metadata.csv"
            )
    with reading(meta, "Kaggle metadata", "use the metadata.csv that comes with the Kaggle data"):
        head = head_lines(meta, 5)
        sep = sniff_delimiter(meta, head, whitespace=False) if head else ","
        table = pd.read_csv(meta, sep=sep, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    table.columns = [str(c).strip() for c in table.columns]
    label_col = label_key if label_key in table.columns else "cell_type"
    missing = [c for c in ("cell_id", label_col) if c not in table.columns]
    if missing:
        raise InputError(
            f"{meta} has no {' or '.join(missing)} column (columns: {', '.join(table.columns[:8])}) — "
            f"use the "
            f"metadata.csv that comes with the Kaggle data"
        )
    table = table.drop_duplicates("cell_id").set_index("cell_id")
    if table.empty:
        raise InputError(f"{meta} lists no cells — use the metadata.csv that comes with the Kaggle data")
    return meta, table, label_col


def read_kaggle(path: Path, meta_path: Path | None, *, label_key: str, key: str | None) -> ad.AnnData:
    fix = "use the .h5 files from the Kaggle competition (pandas HDF5, written by DataFrame.to_hdf)"
    with reading(path, "a pandas HDF5 file", fix):
        with h5py.File(path, "r") as f:
            tables = pandas_tables(f)
    if not tables:
        raise InputError(f"{path} holds no pandas DataFrame — {fix}")
    if key is None:
        if len(tables) > 1:
            raise InputError(
                f"{path} holds several tables ({', '.join(sorted(tables))}) — pass key= to pick one"
            )
        key = next(iter(tables))
    key = key.strip("/")
    if key not in tables:
        raise InputError(f"{path} has no table {key!r} (tables: {', '.join(sorted(tables))}) — fix key=")
    meta_path, meta, label_col = _kaggle_metadata(path, meta_path, label_key)

    with reading(path, "a pandas HDF5 table", fix):
        source = _FixedFrame(path, key) if tables[key] == "frame" else _TableFrame(path, key)
        cell_ids = pd.Index(source.index)
        where = meta.index.get_indexer(cell_ids)
        in_meta = where >= 0
        label = np.where(in_meta, meta[label_col].to_numpy()[np.maximum(where, 0)], "")
        hidden = in_meta & (label == "hidden")
        keep = in_meta & ~hidden
        n = len(cell_ids)
        if not keep.any():
            if hidden.any():
                raise InputError(
                    f"every cell of {path} is 'hidden' in {meta_path} (Kaggle's test inputs have no "
                    f"labels) — "
                    f"use train_cite_inputs.h5"
                )
            raise InputError(
                f"none of the {n} cell ids of {path} are in {meta_path} — use the metadata.csv that comes "
                f"with the Kaggle data"
            )
        if (~in_meta).any():
            warn(
                f"{int((~in_meta).sum())} of the {n} cells of {path.name} are not in {meta_path.name}; "
                f"dropped"
            )
        chunks = list(source.chunks(keep))
    X = sp.vstack(chunks, format="csr") if len(chunks) > 1 else chunks[0]

    rows = where[keep]
    obs = pd.DataFrame(index=pd.Index(cell_ids[keep].astype(str), name=None))
    covariates = []
    for col in ("day", "donor", "technology"):
        if col in meta.columns:
            obs[col] = _categorical(meta[col].to_numpy()[rows])
            if col != "technology":
                covariates.append(col)
    obs[label_key] = pd.Categorical(label[keep])
    adata = ad.AnnData(finish_matrix(X), obs=obs, var=pd.DataFrame(index=pd.Index(source.columns, dtype=str)))
    adata.uns["cellsynth_read"] = {"format": "kaggle_cite", "covariates": covariates}
    return adata


def _categorical(values: np.ndarray) -> pd.Categorical:
    """Strings as a categorical; levels in numeric order when they are all numbers (day 2 before 10)."""
    levels = list(dict.fromkeys(values))
    if all(is_number(v) for v in levels):
        levels.sort(key=float)
    else:
        levels.sort()
    return pd.Categorical(values, categories=levels)


class _FixedFrame:
    """A DataFrame written by ``to_hdf`` in the default fixed format, read with h5py in row chunks.

    The group holds ``axis0`` (columns), ``axis1`` (index) and, per dtype block ``i``,
    ``block{i}_items`` (its columns) and ``block{i}_values`` (rows × items, attribute ``transposed``).
    """

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        with h5py.File(path, "r") as f:
            g = f[key]
            for axis in ("axis0", "axis1"):
                variety = h5_attr(g, f"{axis}_variety")
                if variety not in (None, "regular"):
                    raise InputError(
                        f"{path}: table {key!r} has a {variety} {axis} (MultiIndex) — use a flat table"
                    )
            self.columns = _decode(g["axis0"][()])
            self.index = _decode(g["axis1"][()])
            nblocks = int(g.attrs.get("nblocks", sum(1 for k in g if re.fullmatch(r"block\d+_items", k))))
            col_index = pd.Index(self.columns)
            self.blocks: list[tuple[str, np.ndarray, bool]] = []
            for i in range(nblocks):
                items = _decode(g[f"block{i}_items"][()])
                ds = g[f"block{i}_values"]
                if ds.dtype.kind not in "biuf":
                    raise InputError(
                        f"{path}: columns such as {items[0]!r} of table {key!r} are not numeric — "
                        f"the matrix must "
                        f"hold numbers only"
                    )
                if col_index.is_unique:
                    positions = col_index.get_indexer(items)
                elif nblocks == 1:
                    positions = np.arange(len(items))
                else:
                    raise InputError(f"{path}: table {key!r} has duplicate column names — make them unique")
                transposed = bool(ds.attrs.get("transposed", False))
                expected = (len(self.index), len(items)) if transposed else (len(items), len(self.index))
                if (positions < 0).any() or ds.shape != expected:
                    raise InputError(
                        f"{path}: table {key!r} is not laid out as pandas writes it — {key!r} is damaged"
                    )
                self.blocks.append((f"block{i}_values", positions, transposed))

    def chunks(self, keep: np.ndarray) -> Iterator[sp.csr_matrix]:
        n_rows, n_cols = len(self.index), len(self.columns)
        step = max(1, common.CHUNK_VALUES // max(n_cols, 1))
        with h5py.File(self.path, "r") as f:
            g = f[self.key]
            for start in range(0, n_rows, step):
                stop = min(start + step, n_rows)
                sel = np.flatnonzero(keep[start:stop])
                if not sel.size:
                    continue
                dense = np.zeros((sel.size, n_cols), dtype=np.float32)
                for name, positions, transposed in self.blocks:
                    ds = g[name]
                    values = ds[start:stop, :] if transposed else ds[:, start:stop].T
                    dense[:, positions] = values[sel]
                yield sp.csr_matrix(dense)


class _TableFrame:
    """A DataFrame written by ``to_hdf(format="table")``, read with PyTables in row chunks."""

    def __init__(self, path: Path, key: str):
        try:
            import tables  # noqa: F401
        except ImportError as e:
            raise InputError(
                f"{path} is a pandas 'table'-format HDF5 file; reading it needs PyTables: pip install tables"
            ) from e
        self.path, self.key = path, key
        with pd.HDFStore(path, "r") as store:
            self.index = store.select_column(key, "index").astype(str).to_numpy()
            self.columns = np.asarray(store.select(key, start=0, stop=1).columns.astype(str))

    def chunks(self, keep: np.ndarray) -> Iterator[sp.csr_matrix]:
        n_rows = len(self.index)
        step = max(1, common.CHUNK_VALUES // max(len(self.columns), 1))
        with pd.HDFStore(self.path, "r") as store:
            for start in range(0, n_rows, step):
                stop = min(start + step, n_rows)
                sel = np.flatnonzero(keep[start:stop])
                if not sel.size:
                    continue
                frame = store.select(self.key, start=start, stop=stop)
                try:
                    values = frame.to_numpy(dtype=np.float32)
                except (ValueError, TypeError) as e:
                    raise InputError(
                        f"{self.path}: table {self.key!r} holds non-numeric columns — "
                        f"the matrix must hold numbers only"
                    ) from e
                yield sp.csr_matrix(values[sel])
