"""Delimited text matrices (CSV, TSV, whitespace; optionally gzipped) in either orientation, and the
labels files that go with them (and with any other format).

The layout (header row, index column, delimiter) is sniffed from the first lines; the matrix is read in
row chunks that become CSR as they come. Which matrix axis holds the cells is decided by the labels: the
axis whose names or length match them.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...errors import InputError
from . import common
from .common import finish_matrix, head_lines, is_number, one_line, reading, sniff_delimiter

# a header cell with one of these names labels the column of cell (or gene) names, not data
_ID_NAMES = {
    "",
    "cell",
    "cells",
    "cell_id",
    "cellid",
    "cell_name",
    "cell_names",
    "barcode",
    "barcodes",
    "cell_barcode",
    "id",
    "index",
    "name",
    "obs_names",
    "unnamed: 0",
    "gene",
    "genes",
    "gene_id",
    "gene_name",
    "gene_symbol",
    "symbol",
}

# column names that hold the labels in a labels file with a header, after ``label_key`` itself
_LABEL_NAMES = ("cell_type", "celltype", "cell type", "cell_types", "label", "labels", "type", "x")


def _split(lines: Sequence[str], sep: str) -> list[list[str]]:
    if sep == r"\s+":
        return [line.split() for line in lines]
    return [[field.strip() for field in row] for row in csv.reader(lines, delimiter=sep)]


def _sniff_layout(rows: list[list[str]]) -> tuple[bool, bool]:
    """(header row?, index column?) of a delimited matrix from its first rows: names are non-numeric."""
    first = rows[0]
    if len(first) > 1:
        # names in the first row, or an empty / id-like corner cell above numeric names (pandas' to_csv)
        header = any(not is_number(x) for x in first[1:]) or first[0].strip().lower() in _ID_NAMES
    else:
        header = not is_number(first[0]) and len(rows) > 1 and is_number(rows[1][0])
    data = rows[1:] if header else rows
    if not data:
        return header, False
    if header and len(first) == len(data[0]) - 1:  # R's write.csv/write.table: no corner cell
        return header, True
    if any(row and not is_number(row[0]) for row in data):
        return header, True
    # a numeric index (pandas' default RangeIndex) under an empty or id-like corner cell
    return header, header and first[0].strip().lower() in _ID_NAMES


@dataclass
class Axis:
    name: str  # "rows" or "columns"
    n: int
    names: pd.Index | None  # None when the file has no names along this axis


def read_text_matrix(
    path: Path, labels: Path | None, *, label_key: str, transpose: bool | None, sep: str | None
) -> ad.AnnData:
    fix = "a CSV/TSV matrix holds numbers, with at most a header row and an index column of names"
    with reading(path, "a CSV/TSV matrix", fix):
        head = head_lines(path, 20)
        if not head:
            raise InputError(f"{path} is empty — check the file")
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "whitespace": r"\s+"}.get(sep or "", sep)
        sep = sep or sniff_delimiter(path, head, whitespace=True)
        rows = _split(head, sep)
        header, index = _sniff_layout(rows)
        n_fields = max(len(r) for r in rows)
        X, row_names, col_names = _read_text_chunks(
            path, sep, header, index, rows[0] if header else None, n_fields
        )

    axes = [Axis("rows", X.shape[0], row_names), Axis("columns", X.shape[1], col_names)]
    if transpose is not None:
        axes = [axes[1] if transpose else axes[0]]
    values = extra = None
    if labels is not None:
        lab = read_label_file(labels, label_key, axes)
        cell_axis, values, extra = match_labels(lab, axes, path, labels)
    else:
        cell_axis = axes[0]
    transposed = cell_axis.name == "columns"
    gene_axis_names = col_names if not transposed else row_names
    if transposed:
        X = X.T.tocsr()
    n_cells, n_genes = X.shape
    cells = (
        cell_axis.names if cell_axis.names is not None else pd.Index([f"cell_{i}" for i in range(n_cells)])
    )
    genes = (
        gene_axis_names if gene_axis_names is not None else pd.Index([f"gene_{j}" for j in range(n_genes)])
    )
    adata = ad.AnnData(
        finish_matrix(X),
        obs=pd.DataFrame(index=pd.Index(cells, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    if values is not None:
        put_labels(adata, values, extra, label_key)
    delim = {"\t": "tab", ",": "comma", r"\s+": "whitespace"}.get(sep, sep)
    adata.uns["cellsynth_read"] = {"format": "csv", "transposed": transposed, "delimiter": delim}
    return adata


def _read_text_chunks(
    path: Path, sep: str, header: bool, index: bool, header_row: list[str] | None, n_fields: int
) -> tuple[sp.csr_matrix, pd.Index | None, pd.Index | None]:
    """Stream the matrix in row chunks, each turned into CSR at once; returns (X, row names, column names)."""
    rows_per_chunk = max(1, common.CHUNK_VALUES // max(n_fields, 1))
    reader = pd.read_csv(
        path,
        sep=sep,
        header=0 if header else None,
        index_col=0 if index else None,
        chunksize=rows_per_chunk,
        skip_blank_lines=True,
        encoding="utf-8-sig",
    )
    chunks: list[sp.csr_matrix] = []
    names: list[np.ndarray] = []
    columns = None
    with reader:
        for chunk in reader:
            if columns is None:
                columns = chunk.columns
            try:
                values = chunk.to_numpy(dtype=np.float32)
            except (ValueError, TypeError) as e:
                raise InputError(
                    f"{path}: text inside the matrix ({one_line(e)}) — only a header row and an index "
                    f"column may hold names; pass delimiter= if the separator was guessed wrong"
                ) from e
            chunks.append(sp.csr_matrix(values))
            if index:
                names.append(chunk.index.astype(str).to_numpy())
    if not chunks or columns is None or len(columns) == 0:
        shown = {"\t": "tab", ",": "comma", r"\s+": "whitespace"}.get(sep, repr(sep))
        raise InputError(
            f"{path} holds no matrix values when split on {shown} — check the file (a header alone is not "
            f"a matrix), or pass the right delimiter="
        )
    X = sp.vstack(chunks, format="csr") if len(chunks) > 1 else chunks[0]
    row_names = pd.Index(np.concatenate(names)) if index else None
    col_names = None
    if header:
        raw = header_row[1:] if index and len(header_row) == len(columns) + 1 else header_row
        # pandas renames duplicate columns (g, g.1): keep the file's own names when they line up
        col_names = pd.Index(raw if len(raw) == len(columns) else [str(c) for c in columns])
    return X, row_names, col_names


@dataclass
class _Labels:
    values: np.ndarray  # str, one per row of the labels file
    ids: np.ndarray | None  # cell ids when the file has an id column
    extra: pd.DataFrame | None  # further named columns, one row per label


def read_label_file(path: Path, label_key: str, axes: Sequence[Axis]) -> _Labels:
    fix = "a labels file holds one label per cell, or cell id + label columns"
    with reading(path, "a labels file", fix):
        head = head_lines(path, 5)
        if not head:
            raise InputError(f"labels file {path} is empty — {fix}")
        sep = sniff_delimiter(path, head, whitespace=False)
        table = pd.read_csv(
            path, sep=sep, header=None, dtype=str, keep_default_na=False, encoding="utf-8-sig"
        )
    table = table.apply(lambda col: col.str.strip())
    if table.empty:
        raise InputError(f"labels file {path} is empty — {fix}")

    first = [str(v).lower() for v in table.iloc[0]]
    label_names = {label_key.lower(), *_LABEL_NAMES}
    lengths = {a.n for a in axes}
    names = set().union(*[set(a.names) for a in axes if a.names is not None])
    if any(v in label_names for v in first) or (table.shape[1] > 1 and first[0] in _ID_NAMES):
        header = True
    elif len(table) - 1 in lengths and len(table) not in lengths:
        header = True
    elif table.shape[1] > 1 and names and table.iloc[0, 0] not in names:
        header = bool(table.iloc[1:, 0].isin(names).any())
    else:
        header = False
    if header:
        table.columns = [str(v) for v in table.iloc[0]]
        table = table.iloc[1:].reset_index(drop=True)
    else:
        table.columns = [f"column_{i}" for i in range(table.shape[1])]
    if table.empty:
        raise InputError(f"labels file {path} has a header but no labels — {fix}")

    if table.shape[1] == 1:
        return _Labels(table.iloc[:, 0].to_numpy(dtype=str), None, None)
    cols = list(table.columns)
    label_col = None
    if header:
        lower = [c.lower() for c in cols]
        for want in (label_key, *_LABEL_NAMES):
            if want in cols:
                label_col = cols.index(want)
                break
            if want.lower() in lower:
                label_col = lower.index(want.lower())
                break
    if label_col is None:
        if table.shape[1] == 2:
            label_col = 1
        else:
            raise InputError(
                f"cannot tell which column of {path} holds the labels (columns: {', '.join(cols[:8])}) — "
                f"name it {label_key!r} in a header row, or keep just cell id and label"
            )
    id_col = 0 if label_col != 0 else None
    ids = table.iloc[:, id_col].to_numpy(dtype=str) if id_col is not None else None
    extra = None
    if header:
        rest = [c for i, c in enumerate(cols) if i not in (label_col, id_col) and c != label_key]
        extra = table[rest] if rest else None
    return _Labels(table.iloc[:, label_col].to_numpy(dtype=str), ids, extra)


def match_labels(
    lab: _Labels, axes: Sequence[Axis], matrix: Path, labels: Path
) -> tuple[Axis, np.ndarray, pd.DataFrame | None]:
    """Find the cell axis and align the labels to its cells: by cell id when the ids match, else by order."""
    if lab.ids is not None:
        ids = pd.Index(lab.ids)
        first = ~ids.duplicated()
        ids = ids[first]
        best: tuple[int, Axis, np.ndarray] | None = None
        for axis in axes:
            if axis.names is None:
                continue
            indexer = ids.get_indexer(pd.Index(axis.names).astype(str))
            hits = int((indexer >= 0).sum())
            if hits and (best is None or hits > best[0]):
                best = (hits, axis, indexer)
        if best is not None:
            hits, axis, indexer = best
            if hits < axis.n:
                missing = axis.names[indexer < 0]
                raise InputError(
                    f"{axis.n - hits} of the {axis.n} cells of {matrix} have no label in {labels} "
                    f"(e.g. {str(missing[0])!r}) — give every cell a row (cell id, label) in the labels file"
                )
            rows = np.flatnonzero(first)[indexer]
            return axis, _checked(lab.values[rows], axis, labels), _take(lab.extra, rows)
    n = len(lab.values)
    for axis in axes:
        if axis.n == n:
            return axis, _checked(lab.values, axis, labels), lab.extra
    shape = " × ".join(f"{a.n} {a.name}" for a in axes) if len(axes) > 1 else f"{axes[0].n} cells"
    raise InputError(
        f"{labels} has {n} labels but {matrix} has {shape} — give one label per cell, in the matrix's cell "
        f"order (or cell id + label)"
    )


def _take(extra: pd.DataFrame | None, rows: np.ndarray) -> pd.DataFrame | None:
    return None if extra is None else extra.iloc[rows].reset_index(drop=True)


def _checked(values: np.ndarray, axis: Axis, labels: Path) -> np.ndarray:
    empty = np.flatnonzero(values == "")
    if empty.size:
        which = str(axis.names[empty[0]]) if axis.names is not None else f"cell {empty[0]}"
        raise InputError(
            f"{labels}: {empty.size} cell(s) have an empty label (e.g. {which!r}) — give every cell a label"
        )
    return values


def put_labels(adata: ad.AnnData, values: np.ndarray, extra: pd.DataFrame | None, label_key: str) -> None:
    adata.obs[label_key] = pd.Categorical(values)
    if extra is not None:
        for col in extra.columns:
            numeric = pd.to_numeric(extra[col], errors="coerce")
            if numeric.notna().all():
                adata.obs[col] = numeric.to_numpy()
            else:
                adata.obs[col] = pd.Categorical(extra[col].to_numpy())
