"""`CellData`: the training matrix in one representation, its genes, encoded conditions and a
record of every preprocessing step, so that a model can map its output back to the input's form."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError
from .names import check_unique_names
from .preprocess import (
    TARGET_SUM,
    beyond_log1p,
    cell_totals,
    detect_representation,
    highly_variable_genes,
    normalize_log1p,
    recovered_counts,
    rounded_counts,
    scale_factors,
)
from .values import ValueSummary, checked_representation

Representation = Literal["auto", "counts", "log1p", "as_is"]
# library sizes kept per label in the model config: enough to sample from, small enough for JSON
_MAX_LIBSIZES = 2000
#: stored values summed over at a time (:meth:`CellData.row_blocks`; blocks of a file read from disk)
BLOCK_ENTRIES = 1 << 24
#: cells a PCA's axes are fitted on at most (:meth:`CellData.pca`; the rest are projected onto them)
PCA_CELLS = 20_000
#: a sparse sample larger than this (cells × genes) is densified for scanpy's randomized solver, whose
#: dense products run on every thread, instead of ARPACK's single-threaded sparse products
ARPACK_MAX_ENTRIES = 50_000_000
#: ... in at most this many bytes of float32 (fewer cells when the genes are many)
DENSE_PCA_BYTES = 1 << 30


@dataclass
class Preprocessing:
    """What was done to the input, and what is needed to undo it when sampling.

    Attributes
    ----------
    representation
        The input's representation: ``counts``, ``log1p`` or ``as_is`` (never ``auto`` once resolved).
    output_genes
        The synthetic data's columns: every gene of the input, in order, or with ``n_genes`` the
        selected highly variable genes only.
    train_genes
        Indices into ``output_genes`` of the genes the model is trained on; the others come back as zeros.
    target_sum
        The ``normalize_total`` target for counts (``None`` for other representations).
    library_sizes
        Per label (the label key's category), a sorted sample of the cells' total counts over the
        training genes (counts only), from which synthetic library sizes are drawn.
    nonnegative
        Whether the training matrix is non-negative (the generator's output activation follows).
    """

    representation: str
    output_genes: list[str]
    train_genes: list[int]
    target_sum: float | None = None
    library_sizes: dict[str, list[float]] = field(default_factory=dict)
    nonnegative: bool = True
    gene_selection: str = "expressed"
    layer: str | None = None

    @classmethod
    def of_genes(cls, genes, train_genes, gene_selection: str, **fields) -> Preprocessing:
        """The record of a fit on columns ``train_genes`` of ``genes`` (``fields``: the other attributes):
        every gene is output, or only the selected ones where they are the highly variable genes."""
        output_genes = [str(g) for g in genes]
        if gene_selection != "expressed":  # --n-genes restricts the output to the selected genes too
            output_genes = [output_genes[i] for i in train_genes]
            train_genes = np.arange(len(train_genes))
        trained = [int(i) for i in train_genes]
        return cls(output_genes=output_genes, train_genes=trained, gene_selection=gene_selection, **fields)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        return cls(**d)


@dataclass
class Condition:
    """One categorical condition: its obs key, its vocabulary and the cells' integer codes."""

    key: str
    categories: list[str]
    codes: np.ndarray  # int64, one per cell
    integer: bool = False  # the obs column held integers (categories: their text, in numeric order)
    boolean: bool = False  # the obs column held booleans (categories "False", "True")

    @property
    def n(self) -> int:
        return len(self.categories)


class CellData:
    """Training data for a generator.

    Build it with :meth:`from_anndata`. ``X`` holds the cells × training genes matrix in the training
    representation (log1p of normalised counts for count input); a sparse input stays sparse and only
    minibatches are densified (:meth:`dense_rows`).

    For count input, ``library`` holds each cell's total counts over the training genes and ``scale``
    its normalisation factor (target sum / total over all genes), so that a generated count vector can
    be put through exactly the normalisation the real cells went through.
    """

    def __init__(
        self,
        X,
        conditions: list[Condition],
        preprocessing: Preprocessing,
        obs_names=None,
        library: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ):
        self.X, self.conditions, self.preprocessing = X, conditions, preprocessing
        self.obs_names, self.library, self.scale = obs_names, library, scale
        self.storage = None  # out of core: the folder (TemporaryDirectory) of the memory-mapped X

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_anndata(
        cls,
        adata,
        *,
        label_key: str,
        condition_keys: list[str] | tuple[str, ...] = (),
        layer: str | None = None,
        representation: Representation = "auto",
        n_genes: int | None = None,
    ) -> CellData:
        """Validate ``adata`` and turn it into training data.

        Parameters
        ----------
        adata
            Cells × genes AnnData.
        label_key
            ``obs`` column with the cell type (required).
        condition_keys
            Further categorical ``obs`` columns to condition on (e.g. donor, day).
        layer
            Use ``adata.layers[layer]`` instead of ``adata.X``.
        representation
            ``counts`` (normalize_total 1e4 + log1p for training), ``log1p`` (used as is, non-negative),
            ``as_is`` (used as is), or ``auto`` (integer non-negative values → counts; non-negative
            non-integers → log1p; otherwise as_is).
        n_genes
            Restrict training and output to the top-N highly variable genes (default: every gene
            expressed in at least one cell).
        """
        keys = condition_keys_checked(adata.obs, label_key, condition_keys)
        if adata.n_obs < 2 or adata.n_vars < 2:
            raise InputError(f"the data has {adata.n_obs} cells × {adata.n_vars} genes; need at least 2 × 2")
        check_unique_names(adata, "adata", fix="call adata.{axis}_names_make_unique() first")
        X, representation, nonnegative = _checked_matrix(adata, layer, representation)
        conditions = [encode_condition(adata.obs[key], key) for key in keys]

        expressed = np.asarray((X != 0).sum(axis=0)).ravel() > 0
        if not expressed.any():
            raise InputError("no gene is expressed in any cell; the matrix is all zeros")
        # training representation: counts normalised to TARGET_SUM per cell (totals over every gene) + log1p
        X_train = X
        target_sum = totals = None
        if representation == "counts":
            totals = cell_totals(X)
            if np.any(totals == 0):
                raise InputError(
                    f"{int((totals == 0).sum())} cells have no counts at all; filter them out "
                    "(e.g. scanpy.pp.filter_cells(adata, min_counts=1)) before fitting"
                )
            target_sum = TARGET_SUM
            X_train = normalize_log1p(X, totals, target_sum=target_sum)

        # gene selection
        if n_genes is not None and n_genes < expressed.sum():
            train_genes = highly_variable_genes(X_train, representation, n_genes, candidates=expressed)
            gene_selection = f"top{n_genes}_hvg"
        else:
            train_genes = np.flatnonzero(expressed)
            gene_selection = "expressed"

        library_sizes: dict[str, list[float]] = {}
        cell_library = cell_scale = None
        if representation == "counts":
            cell_library, library_sizes = _library_records(X, train_genes, conditions[0])
            cell_scale = scale_factors(totals, target_sum)
        X_train = X_train[:, train_genes]
        if sp.issparse(X_train):
            X_train = sp.csr_matrix(X_train, dtype=np.float32)
            X_train.sort_indices()
        else:
            X_train = np.ascontiguousarray(X_train, dtype=np.float32)

        fields = dict(
            target_sum=target_sum, library_sizes=library_sizes, nonnegative=nonnegative, layer=layer
        )
        pre = Preprocessing.of_genes(
            adata.var_names, train_genes, gene_selection, representation=representation, **fields
        )
        return cls(X_train, conditions, pre, np.asarray(adata.obs_names), cell_library, cell_scale)

    # ------------------------------------------------------------------ access
    @property
    def n_cells(self) -> int:
        return self.X.shape[0]

    @property
    def n_genes(self) -> int:
        return self.X.shape[1]

    @property
    def label(self) -> Condition:
        return self.conditions[0]

    @property
    def codes(self) -> np.ndarray:
        """cells × conditions matrix of integer codes (label first)."""
        return np.stack([c.codes for c in self.conditions], axis=1)

    def rows(self, idx: np.ndarray):
        """Rows ``idx`` as stored: a scipy CSR matrix for sparse data, else a float32 array."""
        return self.X[idx]

    def dense_rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` as a dense float32 array (only minibatches are ever densified)."""
        return densify(self.rows(idx))

    def row_blocks(self, idx: np.ndarray, max_entries: int | None = None):
        """Rows ``idx`` in consecutive blocks of at most ``max_entries`` stored values (at least one row
        each; default :data:`BLOCK_ENTRIES`): ``(positions in idx, rows as stored)`` pairs, a single block
        where all of them fit. Sums over many cells go block by block, so that a matrix on disk is never
        copied whole into memory."""
        idx, X, max_entries = np.asarray(idx), self.X, max_entries or BLOCK_ENTRIES
        per_row = np.diff(X.indptr)[idx] if sp.issparse(X) else np.full(len(idx), X.shape[1])
        ends = np.cumsum(per_row, dtype=np.int64)
        start = 0
        while start < len(idx):
            base = ends[start - 1] if start else 0
            stop = min(max(int(np.searchsorted(ends, base + max_entries, side="right")), start + 1), len(idx))
            part = slice(start, stop) if start or stop < len(idx) else slice(None)
            yield part, X[idx[part]]
            start = stop

    def pca(
        self, n_comps: int, seed: int = 0, max_cells: int = PCA_CELLS, coords: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Mean (genes), components (genes × k) and coordinates (cells × k; ``None`` where ``coords`` is
        false and the axes were fitted on a sample, which spares a pass over every cell) of a PCA of ``X``.

        scanpy's PCA: a sparse matrix stays sparse (implicit centring, ARPACK). ``k`` is capped by the
        data. Above ``max_cells`` cells the axes are fitted on a seeded random ``max_cells`` of them and
        every cell is projected onto them: a sample that large finds the leading axes of all the cells,
        and the solver's time grows with the cells it is given (docs/benchmarks.md, "Scaling"). A sparse
        sample of more than :data:`ARPACK_MAX_ENTRIES` values (a wide transcriptome) is fitted dense with
        the randomized solver instead, on at most :data:`DENSE_PCA_BYTES` of it.
        """
        import scanpy as sc

        X = self.X
        n = X.shape[0]
        wide = sp.issparse(X) and min(n, max_cells) * X.shape[1] > ARPACK_MAX_ENTRIES
        if wide:
            max_cells = min(max_cells, max(2, DENSE_PCA_BYTES // (4 * X.shape[1])))
        fit_rows = None
        if n > max_cells:
            fit_rows = np.sort(np.random.default_rng(seed).choice(n, max_cells, replace=False))
        F = X if fit_rows is None else X[fit_rows]
        k = max(1, min(n_comps, F.shape[0] - 1, F.shape[1] - 1))
        solver = {"svd_solver": "randomized"} if wide else {}
        F = densify(F) if wide else F
        points, components, _, _ = sc.pp.pca(F, n_comps=k, random_state=seed, return_info=True, **solver)
        if sp.issparse(X) and X.nnz > BLOCK_ENTRIES:  # summed block by block: scipy's mean copies X twice
            mean = sum(np.asarray(b.sum(0), np.float64).ravel() for _, b in self.row_blocks(np.arange(n))) / n
        else:
            mean = np.asarray(X.mean(0)).ravel() if sp.issparse(X) else np.asarray(X).mean(0)
        components = np.ascontiguousarray(components.T, dtype=np.float32)
        if fit_rows is not None:  # every cell on the fitted axes, centred on all cells' mean
            points = (np.asarray(X @ components) - mean.astype(np.float32) @ components) if coords else None
        return (
            mean.astype(np.float32),
            components,
            None if points is None else np.asarray(points, np.float32),
        )

    def subset(self, idx: np.ndarray) -> CellData:
        conds = [Condition(c.key, c.categories, c.codes[idx], c.integer, c.boolean) for c in self.conditions]
        names = None if self.obs_names is None else self.obs_names[idx]
        return CellData(
            self.X[idx],
            conds,
            self.preprocessing,
            obs_names=names,
            library=None if self.library is None else self.library[idx],
            scale=None if self.scale is None else self.scale[idx],
        )


def resolved_representation(adata, layer: str | None = None, representation: str = "auto") -> str:
    """What ``adata.X`` (or ``layers[layer]``) holds as far as ``representation`` says (``auto``: detected
    from the values, without copying them); whether it can be trained on is checked by fitting."""
    X = _matrix(adata, layer)
    return detect_representation(X) if representation == "auto" else representation


#: layers that hold the raw counts beside a log-normalised ``X`` by the scverse convention (scvi-tools'
#: ``layer="counts"``, scanpy's tutorials)
COUNT_LAYERS = ("counts", "raw_counts")
#: layers filled from elsewhere when neither ``X`` nor those layers hold counts, in this order: the counts in
#: ``adata.raw`` (CELLxGENE's layout: normalised ``X``, raw counts in ``raw.X``), and the counts read back
#: from a log1p-normalised ``X`` (:func:`~cellsynth.data.preprocess.recovered_counts`)
RAW_LAYER, RECOVERED_LAYER = "raw.X", "counts from X"
_NOTES = {
    RAW_LAYER: "X holds no counts and adata.raw does: using raw.X (the genes of X)",
    RECOVERED_LAYER: "X holds log-normalised values whose counts can be read back (each cell's values "
    "over its smallest are whole numbers): using those counts",
}


def _holds_counts(M) -> bool:
    empty = (M.nnz if sp.issparse(M) else np.count_nonzero(M)) == 0  # detected as counts, yet none
    return not empty and detect_representation(M) == "counts"


def counts_layer(adata) -> str | None:
    """The first of :data:`COUNT_LAYERS` that holds counts (some non-zero) when ``adata.X`` does not hold
    counts, else :func:`derived_counts_layer`; ``None`` when ``X`` holds counts or no counts are found."""
    if adata.X is not None and detect_representation(adata.X) == "counts":
        return None
    for name in (n for n in COUNT_LAYERS if n in adata.layers):
        if _holds_counts(adata.layers[name]):
            return name
    return derived_counts_layer(adata)


def derived_counts_layer(adata, name: str | None = None) -> str | None:
    """The first (or the one ``name`` gives) of :data:`RAW_LAYER` and :data:`RECOVERED_LAYER` whose counts
    exist, copied into ``adata.layers`` under that name; ``None`` when none does. ``raw.X`` counts:
    ``adata.raw`` holds counts for every gene of ``adata`` (taken in ``adata``'s order)."""
    for layer in (RAW_LAYER, RECOVERED_LAYER) if name is None else (name,):
        if layer in adata.layers:
            return layer
        M, raw = None, adata.raw
        if layer == RAW_LAYER and raw is not None and raw.X is not None:
            if adata.var_names.isin(raw.var_names).all():
                M = raw.X if raw.var_names.equals(adata.var_names) else raw[:, adata.var_names].X
                M = M if _holds_counts(M) else None
        elif layer == RECOVERED_LAYER and adata.X is not None and detect_representation(adata.X) == "log1p":
            M = recovered_counts(adata.X)
        if M is not None:
            adata.layers[layer] = M
            return layer
    return None


def counts_layer_note(name: str) -> str:
    """The line that says a count layer is used instead of ``X``."""
    return _NOTES.get(name, f"X holds no counts and layers[{name!r}] does: using layers[{name!r}]")


def _matrix(adata, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]`` (an unknown layer refused)."""
    if layer in _NOTES and derived_counts_layer(adata, layer) is None:
        raise InputError(f"--layer {layer!r}: this data holds no such counts")
    if layer is not None and layer not in adata.layers:
        raise InputError(f"layer {layer!r} not found (available: {list(adata.layers)}); fix --layer")
    if layer is None and adata.X is None:
        raise InputError(f"X is empty; name the matrix to use with --layer (layers: {list(adata.layers)})")
    return adata.layers[layer] if layer is not None else adata.X


def _checked_matrix(adata, layer: str | None, representation: str):
    """The expression matrix (float32), its resolved representation and whether it is non-negative;
    refused when it cannot be trained on as asked."""
    X = _as_float32(_matrix(adata, layer))
    values = X.data if sp.issparse(X) else X
    summary = ValueSummary(bool(np.all(np.isfinite(values))), detect_representation(X), beyond_log1p(X))
    representation, rounding = checked_representation(summary, representation)
    return (rounded_counts(X) if rounding else X), representation, summary.detected != "as_is"


def condition_keys_checked(obs: pd.DataFrame, label_key: str, condition_keys) -> list[str]:
    """The label key, then the other condition keys; refused where ``obs`` has no such column."""
    keys = [label_key, *[k for k in condition_keys if k != label_key]]
    for key in keys:
        if key not in obs.columns:
            available = ", ".join(map(str, obs.columns[:12])) or "none"
            raise InputError(
                f"obs column {key!r} not found in the data (available: {available}); "
                f"pass the column that holds it with --label-key/--condition-key"
            )
    return keys


def encode_condition(col: pd.Series, key: str) -> Condition:
    """One categorical ``obs`` column as a vocabulary and integer codes (missing values refused)."""
    if n := int(col.isna().sum()):
        raise InputError(
            f"obs[{key!r}] has {n} missing values; fill them, or drop those cells (--drop-missing)"
        )
    dtype = col.cat.categories.dtype if isinstance(col.dtype, pd.CategoricalDtype) else col.dtype
    integer = pd.api.types.is_integer_dtype(dtype)  # bool is not
    # integers in numeric order (as text, 10 after 9); only the values present become categories
    cat = pd.Categorical(np.asarray(col, dtype=np.int64) if integer else col.astype(str))
    codes, boolean = np.asarray(cat.codes, dtype=np.int64), pd.api.types.is_bool_dtype(dtype)
    return Condition(key, list(map(str, cat.categories)), codes, integer, boolean)


def _library_records(X, train_genes: np.ndarray, label: Condition):
    """Each cell's total count over the training genes, and per label a sorted sample of those totals."""
    sel_totals = np.asarray(X[:, train_genes].sum(axis=1)).ravel()
    return sel_totals.astype(np.float32), library_records(sel_totals, label)


def library_records(sel_totals: np.ndarray, label: Condition) -> dict[str, list[float]]:
    """Per label a sorted sample (at most ``_MAX_LIBSIZES``) of the cells' totals over the training
    genes, from which synthetic library sizes are drawn."""
    library_sizes: dict[str, list[float]] = {}
    for code, name in enumerate(label.categories):
        v = np.sort(sel_totals[label.codes == code])
        if len(v) > _MAX_LIBSIZES:
            v = np.quantile(v, np.linspace(0, 1, _MAX_LIBSIZES))
        library_sizes[name] = [float(x) for x in v]
    return library_sizes


def densify(rows) -> np.ndarray:
    """Rows from :meth:`CellData.rows` as a dense array."""
    return rows.toarray() if sp.issparse(rows) else np.asarray(rows)


def _as_float32(X):
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        return X.astype(np.float32) if X.dtype != np.float32 else X
    if hasattr(X, "toarray"):  # backed / other array-likes
        X = X.toarray()
    return np.asarray(X, dtype=np.float32)
