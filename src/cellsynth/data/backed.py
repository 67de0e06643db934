"""Data larger than memory: an ``.h5ad`` file's matrix read from disk in blocks of cells, and the training
matrix written to disk and memory-mapped.

:class:`BackedCells` opens an ``.h5ad`` without reading its matrix: ``obs`` and ``var`` are read (a few
bytes a cell), the expression matrix (``X``, a layer or ``raw.X``) stays on disk, stored by cells (CSR) or
dense, and is read in blocks of at most :data:`BLOCK_ENTRIES` stored values. :func:`backed_celldata`
builds from it the :class:`~cellsynth.data.CellData` that ``CellData.from_anndata`` builds from the file in
memory (the same checks, training values, genes and library sizes) in passes over the blocks: one learns
what the values are (finite, their representation, each cell's total, the genes expressed), the last
writes the training matrix (normalised, log1p, the training genes; CSR float32) to files in a cache
folder, which are then memory-mapped. Training reads its minibatches from those files, the statistics
are summed block by block (:meth:`CellData.row_blocks`), and the operating system keeps as much of the
files in memory as it can spare: the fit's own memory grows by a few kilobytes a cell, not by the matrix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from ..progress import Progress
from .celldata import (
    RAW_LAYER,
    CellData,
    Preprocessing,
    condition_keys_checked,
    encode_condition,
    library_records,
)
from .names import check_unique_names
from .preprocess import (
    MAX_LOG,
    TARGET_SUM,
    detect_representation,
    highly_variable_genes,
    normalize_log1p,
    scale_factors,
    warn_rounding,
)
from .storage import training_storage
from .values import ValueSummary, checked_representation

#: cells the highly variable genes are chosen on at most (a seeded sample of them beyond)
HVG_CELLS = 50_000


class BackedCells:
    """An ``.h5ad`` file whose expression matrix stays on disk; ``obs`` and ``var`` in memory.

    Parameters
    ----------
    path
        The ``.h5ad`` file.
    layer
        The matrix to read: ``None`` for ``X``, a layer's name, or ``"raw.X"`` (``adata.raw``'s matrix,
        which must hold the genes of ``X`` in the same order).
    cache_dir
        Where a fit makes the folder of its training matrix (default: the system's temporary folder).

    Notes
    -----
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, path, layer: str | None = None, *, cache_dir=None):
        import anndata as ad
        import h5py

        from .readers.common import one_line

        self.path, self.layer, self.cache_dir = Path(path), layer, cache_dir
        self._kept: np.ndarray | None = None  # the file's rows read (all when None): see keep()
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, ValueError) as e:
            raise InputError(f"{path} is not a readable .h5ad file ({one_line(e)}); check the file") from e
        try:
            f = self._file
            missing = [k for k in ("obs", "var") if k not in f]
            if missing:
                raise InputError(f"{path} is not an AnnData .h5ad file (no {missing[0]!r}); check the file")
            self.obs, self.var = ad.io.read_elem(f["obs"]), ad.io.read_elem(f["var"])
            self.obs.index = pd.Index(self.obs.index.astype(str), name=None)
            self._file_cells = len(self.obs)
            self.var.index = pd.Index(self.var.index.astype(str), name=None)
            self.use(layer)
        except BaseException:
            self._file.close()
            raise
        self.uns = {"cellsynth_read": {"format": "h5ad", "backed": True}}

    def use(self, layer: str | None) -> None:
        """Read ``layer`` (``None``: ``X``; ``"raw.X"``: ``adata.raw``'s matrix) from now on."""
        import h5py

        self._name, self.matrix = self._element(layer)
        self.layer, self.sparse = layer, not isinstance(self.matrix, h5py.Dataset)
        if tuple(self.matrix.shape) != (self._file_cells, self.n_vars):
            raise InputError(
                f"{self.path}: {self._name} is {self.matrix.shape[0]} × {self.matrix.shape[1]} but the file "
                f"has {self._file_cells} cells × {self.n_vars} genes; check the file"
            )
        self._indptr = self._file[self._name]["indptr"][:] if self.sparse else None
        if self.sparse and self._kept is not None:  # the kept rows' stored values, end to end
            self._indptr = np.concatenate([[0], np.cumsum(np.diff(self._indptr)[self._kept])])

    def keep(self, rows: np.ndarray) -> None:
        """Read only the cells ``rows`` (a boolean mask over the file's cells) from now on."""
        if self._kept is not None:
            raise ValueError("keep() selects cells once")
        rows = np.asarray(rows, dtype=bool)
        if len(rows) != self._file_cells:
            raise ValueError(f"keep() takes a mask over the file's {self._file_cells} cells, not {len(rows)}")
        self._kept, self.obs = np.flatnonzero(rows), self.obs[rows]
        self.use(self.layer)

    def _element(self, layer: str | None):
        """The matrix element's path in the file and a reader of it (CSR dataset or h5py dataset)."""
        import anndata as ad
        import h5py

        f = self._file
        name = "X" if layer is None else "raw/X" if layer == RAW_LAYER else f"layers/{layer}"
        if name not in f:
            where = "X is empty" if layer is None else f"layer {layer!r} not found (available: {self.layers})"
            raise InputError(f"{self.path}: {where}; name the matrix to use with --layer")
        if name == "raw/X":
            raw_genes = pd.Index(ad.io.read_elem(f["raw/var"]).index.astype(str))
            if not raw_genes.equals(self.var.index):
                raise InputError(
                    f"{self.path}: raw.X holds other genes than X; out of core it is read only when they are "
                    "the same, in the same order (fit in memory, --in-memory, to take X's genes from it)"
                )
        element = f[name]
        if isinstance(element, h5py.Dataset):
            if element.ndim != 2:
                raise InputError(f"{self.path}: {name} is not a cells × genes matrix")
            return name, element
        encoding = element.attrs.get("encoding-type", "")
        if encoding == "csr_matrix":
            return name, ad.io.sparse_dataset(element)
        if encoding == "csc_matrix":
            raise InputError(
                f"{self.path}: {name} is stored by genes (CSC), which cannot be read cell by cell from disk; "
                "write it by cells (adata.X = adata.X.tocsr(); adata.write_h5ad(...)) or fit in memory "
                "(--in-memory)"
            )
        raise InputError(f"{self.path}: {name} is a {encoding or 'group'}, not an expression matrix")

    # ------------------------------------------------------------------ what AnnData would show
    @property
    def n_obs(self) -> int:
        return len(self.obs)

    @property
    def n_vars(self) -> int:
        return len(self.var)

    @property
    def obs_names(self) -> pd.Index:
        return self.obs.index

    @property
    def var_names(self) -> pd.Index:
        return self.var.index

    @property
    def layers(self) -> list[str]:
        return list(self._file["layers"]) if "layers" in self._file else []

    @property
    def stored_entries(self) -> int:
        """Values stored on disk: non-zeros of a sparse matrix, every entry of a dense one."""
        return int(self._indptr[-1]) if self.sparse else self.n_obs * self.n_vars

    @property
    def memory_bytes(self) -> int:
        """The matrix's size in memory as float32 CSR (values and column indices)."""
        return 8 * self.stored_entries

    # ------------------------------------------------------------------ reading
    def bounds(self, max_entries: int | None = None) -> list[tuple[int, int]]:
        """Consecutive row ranges of at most ``max_entries`` stored values each (at least one row;
        default :data:`~cellsynth.data.celldata.BLOCK_ENTRIES`)."""
        from . import celldata

        max_entries = max_entries or celldata.BLOCK_ENTRIES
        if not self.sparse:
            step = max(1, max_entries // max(1, self.n_vars))
            return [(s, min(s + step, self.n_obs)) for s in range(0, self.n_obs, step)]
        out, start = [], 0
        while start < self.n_obs:
            stop = int(np.searchsorted(self._indptr, self._indptr[start] + max_entries, side="right")) - 1
            stop = min(max(stop, start + 1), self.n_obs)
            out.append((start, stop))
            start = stop
        return out

    def block(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` (of the cells kept) as a float32 CSR matrix."""
        rows = slice(start, stop) if self._kept is None else self._kept[start:stop]
        return sp.csr_matrix(self.matrix[rows], dtype=np.float32)

    def rows(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows ``idx`` (sorted, unique; of the cells kept) as a float32 CSR matrix."""
        idx = np.asarray(idx, dtype=np.int64)
        return sp.csr_matrix(self.matrix[idx if self._kept is None else self._kept[idx]], dtype=np.float32)

    def detected(self) -> str:
        """The representation of the matrix's first block (what :func:`detect_representation` says of
        it): enough to choose a default model without reading the whole file."""
        start, stop = self.bounds()[0]
        return detect_representation(self.block(start, stop))

    def make_names_unique(self) -> None:
        """Append ``-1``, ``-2``, ... to repeated cell and gene names (in memory; the file is not changed)."""
        from anndata.utils import make_index_unique

        self.obs.index = make_index_unique(self.obs.index)
        self.var.index = make_index_unique(self.var.index)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BackedCells:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``; the physical memory where the
    system does not say; ``None`` where neither is known)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


@dataclass
class _Scan:
    """What one pass over the blocks learnt: the values' summary, each cell's total, each gene's cells."""

    summary: ValueSummary
    totals: np.ndarray
    gene_cells: np.ndarray


def _rounded(X: sp.csr_matrix) -> sp.csr_matrix:
    """Whole counts: what :func:`~cellsynth.data.preprocess.rounded_counts` gives, without its warning."""
    np.rint(X.data, out=X.data)
    X.eliminate_zeros()
    return X


def _scan(cells: BackedCells, rounding: bool, progress: bool) -> _Scan:
    finite, negative, integer, top = True, False, True, 0.0
    totals = np.zeros(cells.n_obs, dtype=np.float64)
    gene_cells = np.zeros(cells.n_vars, dtype=np.int64)
    bounds = cells.bounds()
    with Progress(total=len(bounds), desc="reading", unit="block", enabled=progress) as bar:
        for start, stop in bounds:
            X = cells.block(start, stop)
            X = _rounded(X) if rounding else X
            v = X.data
            finite = finite and bool(np.all(np.isfinite(v)))
            if v.size and finite:
                negative = negative or bool(v.min() < 0)
                integer = integer and bool(np.array_equal(v, np.round(v)))
                top = max(top, float(v.max()))
            totals[start:stop] = np.asarray(X.sum(axis=1)).ravel()
            gene_cells += np.bincount(X.indices[v != 0], minlength=cells.n_vars)
            bar.update(1)
    detected = "as_is" if negative else "counts" if integer else "log1p"
    return _Scan(ValueSummary(finite, detected, top if top > MAX_LOG else None), totals, gene_cells)


def backed_celldata(
    cells: BackedCells,
    *,
    label_key: str,
    condition_keys: list[str] | tuple[str, ...] = (),
    representation: str = "auto",
    n_genes: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> CellData:
    """The training data of ``cells`` (:class:`BackedCells`), its matrix in memory-mapped files.

    The arguments are those of :meth:`CellData.from_anndata`. The training matrix's files are written
    to a folder made in ``cells.cache_dir`` (default: the system's temporary folder), removed when the
    returned data is no longer used. With ``n_genes``, the highly variable genes are chosen on
    at most :data:`HVG_CELLS` cells (a ``seed``-ed sample of them beyond).
    """
    keys = condition_keys_checked(cells.obs, label_key, condition_keys)
    if cells.n_obs < 2 or cells.n_vars < 2:
        raise InputError(f"the data has {cells.n_obs} cells × {cells.n_vars} genes; need at least 2 × 2")
    check_unique_names(cells, str(cells.path), fix="make the {axis} names unique in the file")
    conditions = [encode_condition(cells.obs[key], key) for key in keys]
    scan = _scan(cells, rounding=False, progress=progress)
    representation, rounding = checked_representation(scan.summary, representation)
    if rounding:
        warn_rounding(stacklevel=3)
        scan = _scan(cells, rounding=True, progress=progress)
    expressed = scan.gene_cells > 0
    if not expressed.any():
        raise InputError("no gene is expressed in any cell; the matrix is all zeros")
    counts = representation == "counts"
    if counts and np.any(scan.totals == 0):
        raise InputError(
            f"{int((scan.totals == 0).sum())} cells have no counts at all; filter them out "
            "(e.g. scanpy.pp.filter_cells(adata, min_counts=1)) before fitting"
        )
    target_sum = TARGET_SUM if counts else None

    totals = scan.totals if counts else None
    if n_genes is not None and n_genes < expressed.sum():
        take = np.arange(cells.n_obs)
        if len(take) > HVG_CELLS:
            take = np.sort(np.random.default_rng(seed).choice(take, HVG_CELLS, replace=False))
        sample = _prepared(cells.rows(take), rounding, None if totals is None else totals[take])
        train_genes = highly_variable_genes(sample, representation, n_genes, candidates=expressed)
        gene_selection = f"top{n_genes}_hvg"
    else:
        train_genes, gene_selection = np.flatnonzero(expressed), "expressed"

    storage = training_storage(cells.cache_dir)
    try:
        X, library = _write_training_matrix(
            cells, train_genes, Path(storage.name), rounding, totals, progress
        )
    except BaseException as e:  # nothing half-written is left behind
        storage.cleanup()
        if isinstance(e, OSError) and not isinstance(e, PermissionError):
            raise InputError(
                f"could not write the training matrix in {storage.name} ({e.strerror or e}); free space "
                "there, or choose another folder (--out's, or BackedCells' cache_dir)"
            ) from e
        raise
    sizes = library_records(library, conditions[0]) if counts else {}
    fields = dict(
        target_sum=target_sum, library_sizes=sizes, layer=cells.layer, representation=representation
    )
    nonnegative = scan.summary.detected != "as_is"
    pre = Preprocessing.of_genes(
        cells.var_names, train_genes, gene_selection, nonnegative=nonnegative, **fields
    )
    data = CellData(
        X,
        conditions,
        pre,
        obs_names=np.asarray(cells.obs_names),
        library=library if counts else None,
        scale=scale_factors(scan.totals, target_sum) if counts else None,
    )
    data.storage = storage  # removed with the data, or at the end of a fit
    return data


def _prepared(X: sp.csr_matrix, rounding: bool, totals: np.ndarray | None) -> sp.csr_matrix:
    """Training values of rows ``X`` as ``CellData.from_anndata`` makes them: rounded where fractional
    counts are, normalised to :data:`TARGET_SUM` by the cells' ``totals`` and log1p-ed for count input."""
    X = _rounded(X) if rounding else X
    return X if totals is None else normalize_log1p(X, totals, target_sum=TARGET_SUM)


def _write_training_matrix(
    cells: BackedCells, genes: np.ndarray, folder: Path, rounding: bool, totals: np.ndarray | None, progress
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The training matrix (rows :func:`_prepared`, columns ``genes``) written block by block to
    ``folder`` and memory-mapped as a CSR matrix; and each cell's total over ``genes`` (float32, counts
    only)."""
    # one index type for both index arrays, as scipy keeps them (a mismatch would copy them into memory)
    big = max(cells.stored_entries, cells.n_obs, cells.n_vars) >= np.iinfo(np.int32).max
    index = np.int64 if big else np.int32
    indptr = np.zeros(cells.n_obs + 1, dtype=index)
    library = np.zeros(cells.n_obs, dtype=np.float32)
    bounds = cells.bounds()
    with (
        open(folder / "data.f32", "wb") as values,
        open(folder / "indices", "wb") as columns,
        Progress(total=len(bounds), desc="writing", unit="block", enabled=progress) as bar,
    ):
        for start, stop in bounds:
            raw = _rounded(cells.block(start, stop)) if rounding else cells.block(start, stop)
            if totals is not None:
                library[start:stop] = np.asarray(raw[:, genes].sum(axis=1)).ravel()
                raw = normalize_log1p(raw, totals[start:stop], target_sum=TARGET_SUM)
            X = sp.csr_matrix(raw[:, genes], dtype=np.float32)
            X.sort_indices()
            values.write(np.ascontiguousarray(X.data, dtype=np.float32).tobytes())
            columns.write(np.ascontiguousarray(X.indices, dtype=index).tobytes())
            indptr[start + 1 : stop + 1] = indptr[start] + X.indptr[1:]
            bar.update(1)
    nnz = int(indptr[-1])
    np.save(folder / "indptr.npy", indptr)
    shape = (cells.n_obs, len(genes))
    data = np.memmap(folder / "data.f32", dtype=np.float32, mode="r", shape=(nnz,))
    indices = np.memmap(folder / "indices", dtype=index, mode="r", shape=(nnz,))
    X = sp.csr_matrix((data, indices, np.load(folder / "indptr.npy", mmap_mode="r")), shape=shape, copy=False)
    return X, library


__all__ = ["BackedCells", "backed_celldata", "HVG_CELLS"]
