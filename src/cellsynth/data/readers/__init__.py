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

import os
import warnings
from pathlib import Path

import anndata as ad
import h5py
import pandas as pd

from ...errors import InputError
from ..names import check_unique_names, make_names_unique
from .common import PathLike, h5_attr, one_line
from .h5ad import read_h5ad
from .kaggle import pandas_tables, read_kaggle
from .tenx import read_10x_h5, read_10x_mtx
from .text import Axis, match_labels, put_labels, read_label_file, read_text_matrix

__all__ = ["read", "FORMATS"]

#: Values of ``format=``; ``auto`` sniffs the path.
FORMATS = ("auto", "h5ad", "10x_mtx", "10x_h5", "csv", "kaggle")
_FORMAT_ALIASES = {"tsv": "csv", "txt": "csv", "kaggle_cite": "kaggle", "10x_mex": "10x_mtx"}
_TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".tab")
_UNKNOWN_FIX = (
    "use .h5ad, a 10x folder/.h5, .csv/.tsv(.gz) with --labels, or a Kaggle CITEseq .h5 with metadata.csv"
)


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
    make_unique: bool = False,
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
    make_unique
        Repeated gene or cell names are an error unless this is ``True``: then ``-1``, ``-2``, ... are
        appended to the repeats (the first occurrence keeps its name), and ``uns["cellsynth_read"]``
        records how many were renamed per axis (``made_unique``, e.g. ``{"genes": 2}``).

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
        (the message gives both counts), a Kaggle file without its metadata, or repeated gene or cell
        names without ``make_unique=True`` (the message names the first few and how many).

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
    with warnings.catch_warnings():  # repeated names are reported below, as an error or as asked
        warnings.filterwarnings("ignore", message=".*names are not unique")
        adata = _read_format(
            src,
            fmt,
            labels_path,
            metadata_path,
            label_key=label_key,
            transpose=transpose,
            delimiter=delimiter,
            key=key,
            make_unique=make_unique,
        )
    _unique_names(adata, src, make_unique)
    return adata


def _read_format(
    src: Path,
    fmt: str,
    labels_path: Path | None,
    metadata_path: Path | None,
    *,
    label_key: str,
    transpose: bool | None,
    delimiter: str | None,
    key: str | None,
    make_unique: bool,
) -> ad.AnnData:
    if fmt != "csv" and transpose:
        raise InputError(f"transpose=True only applies to CSV/TSV input, and {src} is read as {fmt}")
    if fmt == "kaggle":
        if (
            labels_path is not None
            and metadata_path is not None
            and labels_path.resolve() != metadata_path.resolve()
        ):
            raise InputError(f"{src}: pass the Kaggle metadata.csv once, as metadata= (or labels=), not both")
        adata = read_kaggle(src, metadata_path or labels_path, label_key=label_key, key=key)
    else:
        if metadata_path is not None:
            raise InputError(f"metadata= is for the Kaggle layout only; pass the labels of {src} as labels=")
        if fmt == "csv":
            adata = read_text_matrix(
                src, labels_path, label_key=label_key, transpose=transpose, sep=delimiter
            )
        else:
            if fmt == "h5ad":
                adata = read_h5ad(src)
            elif fmt == "10x_mtx":
                adata = read_10x_mtx(src)
            else:
                adata = read_10x_h5(src, genome=key)
            _unique_names(adata, src, make_unique)  # labels are matched by cell name
            if labels_path is not None:
                axis = Axis("rows", adata.n_obs, pd.Index(adata.obs_names))
                lab = read_label_file(labels_path, label_key, [axis])
                _, values, extra = match_labels(lab, [axis], src, labels_path)
                put_labels(adata, values, extra, label_key)
    return adata


def _unique_names(adata: ad.AnnData, src: Path, make_unique: bool) -> None:
    adata.obs_names = pd.Index(adata.obs_names.astype(str), name=None)
    adata.var_names = pd.Index(adata.var_names.astype(str), name=None)
    if not make_unique:
        fix = "make them unique in the file, or pass make_unique=True (--make-unique) to append -1, -2, ..."
        check_unique_names(adata, str(src), fix=fix)
        return
    renamed = make_names_unique(adata)
    if renamed:
        adata.uns.setdefault("cellsynth_read", {})["made_unique"] = renamed


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
        raise InputError(f"{path} is not a readable HDF5 file ({one_line(e)}) — check the file") from e
    with f:
        if isinstance(f.get("matrix"), h5py.Group):
            return "10x_h5"
        groups = [f[k] for k in f if isinstance(f[k], h5py.Group)]
        if any("barcodes" in g and "data" in g for g in groups):
            return "10x_h5"  # CellRanger v2: one group per genome
        if h5_attr(f, "encoding-type") == "anndata" or {"X", "obs", "var"} <= set(f):
            return "h5ad"
        if pandas_tables(f):
            return "kaggle"
    raise InputError(
        f"cannot tell what {path.name!r} holds: expected a 10x CellRanger .h5 (group 'matrix') or a pandas "
        f"HDF5 table such as Kaggle's train_cite_inputs.h5 — {_UNKNOWN_FIX}"
    )
