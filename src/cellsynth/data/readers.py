"""`read`: one entry point for every input format cellsynth understands.

Formats: AnnData ``.h5ad``; 10x Genomics (a folder with ``matrix.mtx[.gz]``, ``features.tsv[.gz]`` or
``genes.tsv[.gz]`` and ``barcodes.tsv[.gz]``, or a CellRanger ``.h5``); CSV/TSV matrices in either
orientation with a separate labels file; and the Kaggle "Open Problems – Multimodal Single-Cell
Integration" CITEseq layout (a pandas HDF5 file such as ``train_cite_inputs.h5`` with ``metadata.csv``).

Large text and pandas-HDF5 matrices are read in row chunks that are turned into CSR as they come, so a
big file is never held dense twice. Every problem a user can cause raises
:class:`~cellsynth.errors.InputError` with a one-line message naming the input and the fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import os
import re
import warnings
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError

__all__ = ["read", "FORMATS"]

PathLike = str | os.PathLike

#: Values of ``format=``; ``auto`` sniffs the path.
FORMATS = ("auto", "h5ad", "10x_mtx", "10x_h5", "csv", "kaggle")
_FORMAT_ALIASES = {"tsv": "csv", "txt": "csv", "kaggle_cite": "kaggle", "10x_mex": "10x_mtx"}

# values (rows × columns) per chunk when streaming a CSV or pandas-HDF5 matrix (tests shrink it)
_CHUNK_VALUES = 4_000_000
# X is stored sparse when at least this fraction of its entries is zero
_SPARSE_ZEROS = 0.5

_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab")
_LABEL_NAMES = ("cell_type", "celltype", "cell type", "cell_types", "label", "labels", "type", "x")
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
_UNKNOWN_FIX = (
    "use .h5ad, a 10x folder/.h5, .csv/.tsv(.gz) with --labels, or a Kaggle CITEseq .h5 with metadata.csv"
)
# errors a malformed input file raises from the libraries we call (InputError is re-raised untouched)
_FILE_ERRORS = (OSError, ValueError, KeyError, IndexError, EOFError, zlib.error, csv.Error)


# ---------------------------------------------------------------------------------------------- public
def read(
    path: PathLike,
    *,
    labels: PathLike | None = None,
    label_key: str = "cell_type",
    format: str = "auto",
    transpose: bool | None = None,
    delimiter: str | None = None,
    key: str | None = None,
    metadata: PathLike | None = None,
) -> ad.AnnData:
    """Read single-cell data into a cells × genes :class:`~anndata.AnnData`.

    Parameters
    ----------
    path
        The input: ``.h5ad``; a 10x folder (``matrix.mtx[.gz]``, ``features.tsv[.gz]``/``genes.tsv[.gz]``,
        ``barcodes.tsv[.gz]``, file names may share a prefix such as ``sampleA_``) or its ``matrix.mtx``
        file; a CellRanger ``.h5``; a ``.csv``/``.tsv``/``.txt`` matrix (optionally ``.gz``); or a
        Kaggle CITEseq pandas HDF5 file (``train_cite_inputs.h5``).
    labels
        Labels file (CSV/TSV, optionally ``.gz``) put into ``obs[label_key]`` as a categorical. One
        column: one label per cell, in the matrix's cell order (header optional). Two or more columns:
        cell id + label, matched to the cell names when they match, else by order; with a header, the
        label column is ``label_key`` or one named ``cell_type``/``celltype``/``label``/``type``, and
        the remaining columns go to ``obs`` too. Mostly for CSV/TSV input, but applies to any format;
        for the Kaggle layout it is the metadata file (same as ``metadata``).
    label_key
        ``obs`` column that receives the labels.
    format
        ``"auto"`` (sniff the path; ``.h5`` files are opened to tell 10x from pandas HDF5), ``"h5ad"``,
        ``"10x_mtx"``, ``"10x_h5"``, ``"csv"`` (any delimited text) or ``"kaggle"``.
    transpose
        CSV/TSV only. ``None`` (auto): with ``labels``, the matrix axis whose length (or names) matches
        the labels is the cell axis, rows preferred when both match; without ``labels``, rows are cells.
        ``True``: columns are cells (genes × cells). ``False``: rows are cells.
    delimiter
        CSV/TSV only: the field separator; detected from the first line (tab, comma, else whitespace)
        when ``None``.
    key
        HDF5 only: the pandas key of a Kaggle file holding several tables, or the genome group of a
        legacy (CellRanger v2) 10x ``.h5`` holding several genomes.
    metadata
        Kaggle only: the ``metadata.csv`` (columns ``cell_id``, ``day``, ``donor``, ``technology``,
        ``cell_type``); default: ``metadata.csv`` next to ``path``.

    Returns
    -------
    anndata.AnnData
        Cells × genes with unique ``obs_names``/``var_names`` and ``uns["cellsynth_read"]`` recording at
        least ``{"format": ...}``. CSV and Kaggle input give ``X`` as ``float32``, CSR when at least half
        of the entries are zero, else dense. The Kaggle layout drops cells whose ``cell_type`` is
        ``hidden`` (and, with a warning, cells missing from the metadata), puts ``day``, ``donor`` and
        ``technology`` in ``obs`` as categoricals and records ``covariates: ["day", "donor"]``.

    Raises
    ------
    InputError
        A missing file, an unknown or unreadable format, a labels file that does not fit the matrix
        (the message gives both counts), or a Kaggle file without its metadata.

    Examples
    --------
    >>> adata = read("cells.h5ad")  # doctest: +SKIP
    >>> adata = read("counts.csv", labels="labels.csv")  # doctest: +SKIP
    >>> adata = read("train_cite_inputs.h5")  # metadata.csv beside it  # doctest: +SKIP
    """
    src = _existing(path, "file not found: {} — check the path")
    labels_path = (
        None if labels is None else _existing(labels, "labels file not found: {} — check the --labels path")
    )
    metadata_path = (
        None if metadata is None else _existing(metadata, "metadata file not found: {} — check the path")
    )
    fmt = _resolve_format(src, format)

    if fmt != "csv" and transpose:
        raise InputError(f"transpose=True only applies to CSV/TSV input, and {src} is read as {fmt}")
    if fmt == "kaggle":
        if (
            labels_path is not None
            and metadata_path is not None
            and labels_path.resolve() != metadata_path.resolve()
        ):
            raise InputError(f"{src}: pass the Kaggle metadata.csv once, as metadata= (or labels=), not both")
        adata = _read_kaggle(src, metadata_path or labels_path, label_key=label_key, key=key)
    else:
        if metadata_path is not None:
            raise InputError(f"metadata= is for the Kaggle layout only; pass the labels of {src} as labels=")
        if fmt == "csv":
            adata = _read_text_matrix(
                src, labels_path, label_key=label_key, transpose=transpose, sep=delimiter
            )
        else:
            if fmt == "h5ad":
                adata = _read_h5ad(src)
            elif fmt == "10x_mtx":
                adata = _read_10x_mtx(src)
            else:
                adata = _read_10x_h5(src, genome=key)
            _unique_names(adata, src)
            if labels_path is not None:
                axis = _Axis("rows", adata.n_obs, pd.Index(adata.obs_names))
                lab = _read_label_file(labels_path, label_key, [axis])
                _, values, extra = _match_labels(lab, [axis], src, labels_path)
                _put_labels(adata, values, extra, label_key)
    _unique_names(adata, src)
    return adata


# ----------------------------------------------------------------------------------------- dispatch
def _existing(path: PathLike, message: str) -> Path:
    p = Path(os.fspath(path)).expanduser()
    if not p.exists():
        raise InputError(message.format(os.fspath(path)))
    return p


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def _resolve_format(path: Path, fmt: str) -> str:
    fmt = _FORMAT_ALIASES.get(str(fmt).lower(), str(fmt).lower())
    if fmt == "10x":
        fmt = "10x_mtx" if path.is_dir() or _strip_gz(path.name.lower()).endswith(".mtx") else "10x_h5"
    if fmt not in FORMATS:
        raise InputError(f"format={fmt!r} is not one of {', '.join(FORMATS)} — fix the format argument")
    if path.is_dir():
        if fmt not in ("auto", "10x_mtx"):
            raise InputError(f"{path} is a folder; format={fmt!r} needs a file — pass the file itself")
        return "10x_mtx"
    if fmt == "10x_mtx" and not _strip_gz(path.name.lower()).endswith(".mtx"):
        raise InputError(f"{path}: format='10x_mtx' needs a 10x folder or its matrix.mtx[.gz] file")
    if fmt != "auto":
        return fmt
    name = _strip_gz(path.name.lower())
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".mtx"):
        return "10x_mtx"
    if name.endswith(_TEXT_SUFFIXES):
        return "csv"
    if name.endswith((".h5", ".hdf5", ".hdf")):
        return _sniff_hdf5(path)
    raise InputError(f"cannot tell the format of {path.name!r}: {_UNKNOWN_FIX}")


def _sniff_hdf5(path: Path) -> str:
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise InputError(f"{path} is not a readable HDF5 file ({_one_line(e)}) — check the file") from e
    with f:
        if isinstance(f.get("matrix"), h5py.Group):
            return "10x_h5"
        groups = [f[k] for k in f if isinstance(f[k], h5py.Group)]
        if any("barcodes" in g and "data" in g for g in groups):
            return "10x_h5"  # CellRanger v2: one group per genome
        if _attr(f, "encoding-type") == "anndata" or {"X", "obs", "var"} <= set(f):
            return "h5ad"
        if _pandas_tables(f):
            return "kaggle"
    raise InputError(
        f"cannot tell what {path.name!r} holds: expected a 10x CellRanger .h5 (group 'matrix') or a pandas "
        f"HDF5 table such as Kaggle's train_cite_inputs.h5 — {_UNKNOWN_FIX}"
    )


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def _reading(path: Path, what: str, fix: str) -> Iterator[None]:
    """Turn the errors a malformed file makes libraries raise into one-line InputErrors."""
    try:
        yield
    except InputError:
        raise
    except _FILE_ERRORS as e:
        raise InputError(f"cannot read {path} as {what} ({_one_line(e)}) — {fix}") from e


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=4)


def _unique_names(adata: ad.AnnData, src: Path) -> None:
    adata.obs_names = pd.Index(adata.obs_names.astype(str), name=None)
    adata.var_names = pd.Index(adata.var_names.astype(str), name=None)
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()]
        _warn(
            f"{src.name}: {len(dup)} duplicate gene names (e.g. {dup[0]!r}) were made unique with -1, -2, ..."
        )
        adata.var_names_make_unique()
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()]
        _warn(
            f"{src.name}: {len(dup)} duplicate cell names (e.g. {dup[0]!r}) were made unique with -1, -2, ..."
        )
        adata.obs_names_make_unique()


def _finish_matrix(X: sp.csr_matrix) -> sp.csr_matrix | np.ndarray:
    """float32 CSR when at least half the entries are zero, else dense float32."""
    X = sp.csr_matrix(X, dtype=np.float32)
    size = X.shape[0] * X.shape[1]
    if size and X.nnz / size > 1.0 - _SPARSE_ZEROS:
        return X.toarray()
    return X


# ---------------------------------------------------------------------------------------- h5ad / 10x
def _read_h5ad(path: Path) -> ad.AnnData:
    with _reading(path, "an AnnData .h5ad file", "check the file is a complete .h5ad written by anndata"):
        adata = ad.read_h5ad(path)
    adata.uns["cellsynth_read"] = {"format": "h5ad"}
    return adata


def _tenx_files(path: Path) -> tuple[Path, str, Path, Path, Path]:
    """(folder, prefix, matrix, features-or-genes, barcodes) of a 10x folder or matrix file."""
    if path.is_dir():
        folder = path
        matrices = sorted(p for p in folder.iterdir() if re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", p.name))
        if not matrices:
            raise InputError(
                f"{path} has no matrix.mtx(.gz) — a 10x folder holds matrix.mtx, features.tsv (or genes.tsv) "
                f"and barcodes.tsv, each optionally .gz"
            )
        prefixes = sorted({re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", p.name).group(1) for p in matrices})
        if len(prefixes) > 1 or len(matrices) > 1:
            names = ", ".join(p.name for p in matrices)
            raise InputError(
                f"{path} holds several 10x matrices ({names}) — pass the path of the one to read"
            )
        matrix = matrices[0]
    else:
        folder, matrix = path.parent, path
    m = re.fullmatch(r"(.*)matrix\.mtx(\.gz)?", matrix.name)
    prefix = m.group(1) if m else ""

    def find(*stems: str) -> Path | None:
        for stem in stems:
            for suffix in ("", ".gz"):
                p = folder / f"{prefix}{stem}{suffix}"
                if p.is_file():
                    return p
        return None

    features = find("features.tsv", "genes.tsv")
    barcodes = find("barcodes.tsv")
    missing = [n for n, p in (("features.tsv/genes.tsv", features), ("barcodes.tsv", barcodes)) if p is None]
    if missing:
        raise InputError(
            f"10x folder {folder} has {matrix.name} but no {prefix}{' or '.join(missing)}(.gz) — "
            f"put the 10x files together in one folder"
        )
    return folder, prefix, matrix, features, barcodes


def _read_10x_mtx(path: Path) -> ad.AnnData:
    import scanpy as sc

    folder, prefix, matrix, features, barcodes = _tenx_files(path)
    fix = "check the 10x files are complete and belong together"
    with _reading(matrix, "a 10x matrix", fix):
        with _open_text(features) as fh:
            n_fields = len(fh.readline().rstrip("\r\n").split("\t"))
        legacy = (matrix.name, features.name, barcodes.name) == (
            f"{prefix}matrix.mtx",
            f"{prefix}genes.tsv",
            f"{prefix}barcodes.tsv",
        )
        v3 = (matrix.name, features.name, barcodes.name) == (
            f"{prefix}matrix.mtx.gz",
            f"{prefix}features.tsv.gz",
            f"{prefix}barcodes.tsv.gz",
        )
        if (legacy and n_fields >= 2) or (v3 and n_fields >= 3):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*not unique.*")
                adata = sc.read_10x_mtx(
                    folder, var_names="gene_symbols", make_unique=False, prefix=prefix or None
                )
        else:  # mixed compression or a one-column genes file: scanpy expects one of its two layouts
            adata = _read_mtx_by_hand(matrix, features, barcodes)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns["cellsynth_read"] = {"format": "10x_mtx"}
    return adata


def _read_mtx_by_hand(matrix: Path, features: Path, barcodes: Path) -> ad.AnnData:
    from scipy.io import mmread

    X = sp.csr_matrix(mmread(str(matrix)).T, dtype=np.float32)  # 10x stores genes × cells
    feats = pd.read_csv(features, sep="\t", header=None, dtype=str, keep_default_na=False)
    cells = pd.read_csv(barcodes, sep="\t", header=None, dtype=str, keep_default_na=False)[0]
    if X.shape != (len(cells), len(feats)):
        raise InputError(
            f"{matrix} is {X.shape[1]} genes × {X.shape[0]} cells but {features.name} lists "
            f"{len(feats)} genes "
            f"and {barcodes.name} {len(cells)} barcodes — the 10x files do not belong together"
        )
    var = pd.DataFrame({"gene_ids": feats[0].to_numpy()})
    var.index = pd.Index((feats[1] if feats.shape[1] >= 2 else feats[0]).to_numpy(), dtype=str)
    keep = slice(None)
    if feats.shape[1] >= 3:
        var["feature_types"] = feats[2].to_numpy()
        if (var["feature_types"] == "Gene Expression").any():
            keep = (var["feature_types"] == "Gene Expression").to_numpy()
    adata = ad.AnnData(X, obs=pd.DataFrame(index=pd.Index(cells.to_numpy(), dtype=str)), var=var)
    return adata[:, keep].copy()


def _read_10x_h5(path: Path, genome: str | None) -> ad.AnnData:
    import scanpy as sc

    with _reading(path, "a 10x CellRanger .h5", "check the file is a complete CellRanger filtered/raw .h5"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not unique.*")
            adata = sc.read_10x_h5(path, genome=genome)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
    adata.uns["cellsynth_read"] = {"format": "10x_h5"}
    return adata


# ----------------------------------------------------------------------------------------- text input
def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", errors="replace", newline="")
    return open(path, encoding="utf-8-sig", errors="replace", newline="")


def _head_lines(path: Path, n: int) -> list[str]:
    with _open_text(path) as fh:
        lines = [line.rstrip("\r\n") for line in itertools.islice(fh, n)]
    return [line for line in lines if line.strip()]


def _sniff_delimiter(path: Path, lines: Sequence[str], *, whitespace: bool) -> str:
    """Tab or comma, whichever the first lines hold more of; else whitespace (matrices) or the extension."""
    tabs = sum(line.count("\t") for line in lines)
    commas = sum(line.count(",") for line in lines)
    if tabs or commas:
        return "\t" if tabs >= commas else ","
    if whitespace and lines and len(lines[0].split()) > 1:
        return r"\s+"
    return "\t" if ".tsv" in path.name.lower() or ".tab" in path.name.lower() else ","


def _split(lines: Sequence[str], sep: str) -> list[list[str]]:
    if sep == r"\s+":
        return [line.split() for line in lines]
    return [[field.strip() for field in row] for row in csv.reader(lines, delimiter=sep)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _sniff_layout(rows: list[list[str]]) -> tuple[bool, bool]:
    """(header row?, index column?) of a delimited matrix from its first rows: names are non-numeric."""
    first = rows[0]
    if len(first) > 1:
        # names in the first row, or an empty / id-like corner cell above numeric names (pandas' to_csv)
        header = any(not _is_number(x) for x in first[1:]) or first[0].strip().lower() in _ID_NAMES
    else:
        header = not _is_number(first[0]) and len(rows) > 1 and _is_number(rows[1][0])
    data = rows[1:] if header else rows
    if not data:
        return header, False
    if header and len(first) == len(data[0]) - 1:  # R's write.csv/write.table: no corner cell
        return header, True
    if any(row and not _is_number(row[0]) for row in data):
        return header, True
    # a numeric index (pandas' default RangeIndex) under an empty or id-like corner cell
    return header, header and first[0].strip().lower() in _ID_NAMES


@dataclass
class _Axis:
    name: str  # "rows" or "columns"
    n: int
    names: pd.Index | None  # None when the file has no names along this axis


def _read_text_matrix(
    path: Path, labels: Path | None, *, label_key: str, transpose: bool | None, sep: str | None
) -> ad.AnnData:
    fix = "a CSV/TSV matrix holds numbers, with at most a header row and an index column of names"
    with _reading(path, "a CSV/TSV matrix", fix):
        head = _head_lines(path, 20)
        if not head:
            raise InputError(f"{path} is empty — check the file")
        sep = {"tab": "\t", "\\t": "\t", "comma": ",", "whitespace": r"\s+"}.get(sep or "", sep)
        sep = sep or _sniff_delimiter(path, head, whitespace=True)
        rows = _split(head, sep)
        header, index = _sniff_layout(rows)
        n_fields = max(len(r) for r in rows)
        X, row_names, col_names = _read_text_chunks(
            path, sep, header, index, rows[0] if header else None, n_fields
        )

    axes = [_Axis("rows", X.shape[0], row_names), _Axis("columns", X.shape[1], col_names)]
    if transpose is not None:
        axes = [axes[1] if transpose else axes[0]]
    values = extra = None
    if labels is not None:
        lab = _read_label_file(labels, label_key, axes)
        cell_axis, values, extra = _match_labels(lab, axes, path, labels)
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
        _finish_matrix(X),
        obs=pd.DataFrame(index=pd.Index(cells, dtype=str)),
        var=pd.DataFrame(index=pd.Index(genes, dtype=str)),
    )
    if values is not None:
        _put_labels(adata, values, extra, label_key)
    delim = {"\t": "tab", ",": "comma", r"\s+": "whitespace"}.get(sep, sep)
    adata.uns["cellsynth_read"] = {"format": "csv", "transposed": transposed, "delimiter": delim}
    return adata


def _read_text_chunks(
    path: Path, sep: str, header: bool, index: bool, header_row: list[str] | None, n_fields: int
) -> tuple[sp.csr_matrix, pd.Index | None, pd.Index | None]:
    """Stream the matrix in row chunks, each turned into CSR at once; returns (X, row names, column names)."""
    rows_per_chunk = max(1, _CHUNK_VALUES // max(n_fields, 1))
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
                    f"{path}: text inside the matrix ({_one_line(e)}) — only a header row and an index "
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


# ------------------------------------------------------------------------------------------- labels
@dataclass
class _Labels:
    values: np.ndarray  # str, one per row of the labels file
    ids: np.ndarray | None  # cell ids when the file has an id column
    extra: pd.DataFrame | None  # further named columns, one row per label


def _read_label_file(path: Path, label_key: str, axes: Sequence[_Axis]) -> _Labels:
    fix = "a labels file holds one label per cell, or cell id + label columns"
    with _reading(path, "a labels file", fix):
        head = _head_lines(path, 5)
        if not head:
            raise InputError(f"labels file {path} is empty — {fix}")
        sep = _sniff_delimiter(path, head, whitespace=False)
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


def _match_labels(
    lab: _Labels, axes: Sequence[_Axis], matrix: Path, labels: Path
) -> tuple[_Axis, np.ndarray, pd.DataFrame | None]:
    """Find the cell axis and align the labels to its cells: by cell id when the ids match, else by order."""
    if lab.ids is not None:
        ids = pd.Index(lab.ids)
        first = ~ids.duplicated()
        ids = ids[first]
        best: tuple[int, _Axis, np.ndarray] | None = None
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


def _checked(values: np.ndarray, axis: _Axis, labels: Path) -> np.ndarray:
    empty = np.flatnonzero(values == "")
    if empty.size:
        which = str(axis.names[empty[0]]) if axis.names is not None else f"cell {empty[0]}"
        raise InputError(
            f"{labels}: {empty.size} cell(s) have an empty label (e.g. {which!r}) — give every cell a label"
        )
    return values


def _put_labels(adata: ad.AnnData, values: np.ndarray, extra: pd.DataFrame | None, label_key: str) -> None:
    adata.obs[label_key] = pd.Categorical(values)
    if extra is not None:
        for col in extra.columns:
            numeric = pd.to_numeric(extra[col], errors="coerce")
            if numeric.notna().all():
                adata.obs[col] = numeric.to_numpy()
            else:
                adata.obs[col] = pd.Categorical(extra[col].to_numpy())


# ------------------------------------------------------------------------------------ Kaggle CITEseq
def _attr(obj: h5py.HLObject, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    return value.decode("utf-8", "replace") if isinstance(value, bytes | np.bytes_) else str(value)


def _pandas_tables(f: h5py.File) -> dict[str, str]:
    """``{key: pandas_type}`` of the DataFrames a pandas HDF5 file holds."""
    found: dict[str, str] = {}

    def visit(name: str, obj: h5py.HLObject) -> None:
        kind = _attr(obj, "pandas_type") if isinstance(obj, h5py.Group) else None
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
    with _reading(meta, "Kaggle metadata", "use the metadata.csv that comes with the Kaggle data"):
        head = _head_lines(meta, 5)
        sep = _sniff_delimiter(meta, head, whitespace=False) if head else ","
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


def _read_kaggle(path: Path, meta_path: Path | None, *, label_key: str, key: str | None) -> ad.AnnData:
    fix = "use the .h5 files from the Kaggle competition (pandas HDF5, written by DataFrame.to_hdf)"
    with _reading(path, "a pandas HDF5 file", fix):
        with h5py.File(path, "r") as f:
            tables = _pandas_tables(f)
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

    with _reading(path, "a pandas HDF5 table", fix):
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
            _warn(
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
    adata = ad.AnnData(
        _finish_matrix(X), obs=obs, var=pd.DataFrame(index=pd.Index(source.columns, dtype=str))
    )
    adata.uns["cellsynth_read"] = {"format": "kaggle_cite", "covariates": covariates}
    return adata


def _categorical(values: np.ndarray) -> pd.Categorical:
    """Strings as a categorical; levels in numeric order when they are all numbers (day 2 before 10)."""
    levels = list(dict.fromkeys(values))
    if all(_is_number(v) for v in levels):
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
                variety = _attr(g, f"{axis}_variety")
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
        step = max(1, _CHUNK_VALUES // max(n_cols, 1))
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
        step = max(1, _CHUNK_VALUES // max(len(self.columns), 1))
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
