"""Preprocessing in both directions: expression data → training values, generated values → counts.

Forward (numpy, dense or scipy sparse): :func:`detect_representation` decides what a matrix holds,
:func:`normalize_log1p` normalises counts to :data:`TARGET_SUM` per cell and log1p-transforms them,
:func:`highly_variable_genes` selects genes. :class:`~cellsynth.data.CellData` (training) and the
evaluation's common space (:mod:`cellsynth.metrics.space`) both use these, so a model is trained and
judged on values prepared the same way.

Backward: a model trained on log-normalised counts does not output its generator's values; it draws
counts from the generated expression profile at a library size taken from real cells, as sequencing
samples molecules. :func:`draw_counts` does this in numpy when sampling, block by block;
:class:`CountObservation` does it in torch inside the training loop, so the critic judges what will be
output. If the critic judged the generator's raw values instead, the generator would learn to imitate
the sampling noise already present in real log-normalised data, and the output would then carry that
noise twice (too few detected genes, inflated variance).

torch is imported only by the torch functions: numpy-only users (readers, evaluation, the CLI's help)
do not pay for it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

TARGET_SUM = 1e4  # normalize_total target: counts per cell after normalisation
REPRESENTATIONS = ("counts", "log1p", "as_is")
COUNT_NOISE = ("poisson", "pln", "rounding", "none")  # how counts are drawn from a profile ("none": not)
MAX_LOG = 15.0  # expm1(15) ≈ 3.3e6, far above any log1p-normalised value (log1p(1e4) ≈ 9.2)
_BLOCK_ROWS = 2048  # cells per block when drawing counts (bounds the dense float64 work arrays)


# ---------------------------------------------------------------------- forward: data → training values
def detect_representation(X) -> str:
    """What an expression matrix holds: ``counts``, ``log1p`` or ``as_is``.

    Integer non-negative values (and an empty matrix) are ``counts``; non-negative values with a
    fractional part are ``log1p`` (log-normalised) data; any negative value makes the data ``as_is``
    (scaled or otherwise transformed; used without further preprocessing).
    """
    values = X.data if sp.issparse(X) else np.asarray(X)
    if values.size == 0:
        return "counts"
    if values.min() < 0:
        return "as_is"
    return "counts" if np.array_equal(values, np.round(values)) else "log1p"


def beyond_log1p(X) -> float | None:
    """``X``'s largest value where it passes :data:`MAX_LOG`, the bound of log1p-normalised data (values
    normalised without the log, or fractional counts, read as logarithms would overflow); else ``None``."""
    values = X.data if sp.issparse(X) else np.asarray(X)
    top = float(values.max(initial=0.0))
    return top if top > MAX_LOG else None


#: the refusal of non-integer values within log1p's range given as counts (normalised data, not counts)
NORMALISED_NOT_COUNTS = (
    "--representation counts but the matrix holds non-integer values; use --representation log1p for "
    "normalised data"
)


def warn_rounding(stacklevel: int = 2) -> None:
    """The one warning that fractional counts are rounded (:func:`rounded_counts`)."""
    warnings.warn(
        "representation counts: the non-integer values (fractional counts, as EM quantification gives) are "
        "rounded to whole counts",
        stacklevel=stacklevel + 1,
    )


def rounded_counts(X):
    """Non-integer values given as counts, rounded to the nearest whole counts (halves to even) with a
    warning, in ``X``'s format (entries rounded to 0 leave a sparse matrix): fractional counts, as EM
    quantification gives (alevin-fry; kallisto | bustools with multi-mapping reads shared). Values all
    within log1p's range are normalised data, not counts: refused."""
    if beyond_log1p(X) is None:
        raise InputError(NORMALISED_NOT_COUNTS)
    warn_rounding(stacklevel=5)
    if sp.issparse(X):
        out = sp.csr_matrix(X, copy=True)
        np.rint(out.data, out=out.data)
        out.eliminate_zeros()
        return out
    return np.rint(np.asarray(X))


def recovered_counts(X) -> sp.csr_matrix | None:
    """The counts behind log1p-normalised values, where they can be read back; else ``None``.

    ``normalize_total`` (any target, or any per-cell size factors) then ``log1p`` scales each cell's
    counts by one factor: ``expm1`` of a cell's values over its smallest non-zero one are its counts when
    its smallest non-zero count is 1 (a few hundred genes at count 1 in a real cell). Read back only when
    every value of every cell comes out a whole number, within float32's rounding of the logarithms (one
    part in 10⁵, or 10⁻³ absolute); any other transform (another log base, scaling) leaves fractions and
    gives ``None``, as do a cell without any non-zero value and values with under 10 % zeros (a
    pseudo-count lifts every zero, and ``c + 1/2`` would read back as the whole numbers ``2c + 1``).
    """
    M = sp.csr_matrix(X, dtype=np.float64, copy=True)
    M.eliminate_zeros()
    per_cell = np.diff(M.indptr)
    if M.nnz == 0 or M.nnz > 0.9 * M.shape[0] * M.shape[1] or np.any(per_cell == 0) or M.data.min() < 0:
        return None
    if beyond_log1p(M) is not None:  # not log1p values (their expm1 would overflow)
        return None
    np.expm1(M.data, out=M.data)
    smallest = np.minimum.reduceat(M.data, M.indptr[:-1])
    ratio = M.data / np.repeat(smallest, per_cell)
    whole = np.rint(ratio)
    if not np.all(np.abs(ratio - whole) <= 1e-3 + 1e-5 * whole):
        return None
    M.data = whole
    return M.astype(np.float32)


def cell_totals(X) -> np.ndarray:
    """Each cell's (row's) total, summed in the matrix's dtype, as float64."""
    return np.asarray(X.sum(axis=1)).ravel().astype(np.float64)


def scale_factors(totals: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """Per-cell normalisation factors ``target_sum / total`` (float32; 0 for cells without counts)."""
    totals = np.asarray(totals, dtype=np.float64)
    return np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0).astype(np.float32)


def normalize_log1p(X, totals: np.ndarray | None = None, *, target_sum: float = TARGET_SUM):
    """``log1p(X · target_sum / total)`` per cell, in float32; a sparse matrix stays sparse (CSR).

    Parameters
    ----------
    X
        Cells × genes counts (numpy array or scipy sparse matrix).
    totals
        Each cell's total count over all genes (default: the row sums of ``X``); give them when ``X``
        holds only some of the genes. Cells with a total of 0 stay all zero.
    target_sum
        Counts per cell after normalisation.
    """
    scale = scale_factors(cell_totals(X) if totals is None else totals, target_sum)
    if sp.issparse(X):
        out = sp.csr_matrix(X, dtype=np.float32, copy=True)
        out.data *= np.repeat(scale, np.diff(out.indptr))
        np.log1p(out.data, out=out.data)
        return out
    return np.log1p(np.asarray(X, dtype=np.float32) * scale[:, None])


def highly_variable_genes(
    X_log, representation: str, n_genes: int, *, candidates: np.ndarray | None = None
) -> np.ndarray:
    """Sorted column indices of the top-``n_genes`` highly variable genes.

    scanpy's ``highly_variable_genes``: the Seurat flavour on log-normalised data (``counts`` after
    :func:`normalize_log1p`, and ``log1p``), the Cell Ranger flavour on ``as_is`` data.

    Parameters
    ----------
    X_log
        Cells × genes, log-normalised (or as is).
    representation
        The input's representation (see :func:`detect_representation`).
    n_genes
        How many genes to select.
    candidates
        Boolean mask of the genes to choose from (default: all).
    """
    import anndata as ad
    import scanpy as sc

    pool = np.arange(X_log.shape[1]) if candidates is None else np.flatnonzero(candidates)
    tmp = ad.AnnData(X_log[:, pool])
    flavor = "seurat" if representation != "as_is" else "cell_ranger"
    sc.pp.highly_variable_genes(tmp, n_top_genes=int(n_genes), flavor=flavor, subset=False)
    return np.sort(pool[np.asarray(tmp.var["highly_variable"].values)])


# ---------------------------------------------------------------------- backward: generated values → counts
def expand_genes(m: np.ndarray, columns: np.ndarray, n_columns: int) -> sp.csr_matrix:
    """Cells × training genes → cells × ``n_columns`` CSR, column ``j`` of ``m`` becoming ``columns[j]``
    (the other columns are zero)."""
    out = sp.csr_matrix(m.astype(np.float32))
    out.indices = np.asarray(columns, dtype=np.int64)[out.indices]
    out._shape = (out.shape[0], int(n_columns))
    out.sort_indices()
    return out


def draw_counts(
    values: np.ndarray,
    library: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: str = "poisson",
    dispersion: np.ndarray | Callable[[slice], np.ndarray] | None = None,
    columns: np.ndarray | None = None,
    n_columns: int | None = None,
) -> sp.csr_matrix:
    """Counts drawn from generated log-normalised ``values`` at library sizes ``library`` (numpy).

    Each cell's profile (``expm1(values)``, normalised to sum to 1) times its library size is the
    rate of the draw; the cells are processed in blocks, so only a block is ever dense. The numpy
    counterpart of :class:`CountObservation`.

    Parameters
    ----------
    values
        Cells × genes generated values in the training representation (log1p of normalised counts).
    library
        Each cell's library size (total count over these genes).
    rng
        Source of every random draw.
    noise
        ``"poisson"``, ``"pln"`` (Poisson of a rate multiplied by a mean-1 log-normal variable of
        variance ``dispersion``) or ``"rounding"`` (stochastic rounding of the rate).
    dispersion
        For ``"pln"``: cells × genes over-dispersion, or a function from a block's row slice to that
        block's cells × genes over-dispersion (so that it is never built for all cells at once).
    columns, n_columns
        Widen the result to ``n_columns`` genes, gene ``j`` becoming column ``columns[j]``
        (:func:`expand_genes`).

    Returns
    -------
    scipy.sparse.csr_matrix
        float32 counts, cells × genes (× ``n_columns`` when widened).
    """
    if noise not in COUNT_NOISE or noise == "none":
        raise ValueError(f"count noise must be 'poisson', 'pln' or 'rounding', got {noise!r}")
    if (noise == "pln") != (dispersion is not None):
        raise ValueError(
            "count noise 'pln' needs a dispersion (cells × genes); 'poisson' and 'rounding' take none"
        )
    library = np.asarray(library, dtype=np.float64)
    width = values.shape[1] if columns is None else int(n_columns)
    blocks = []
    for start in range(0, len(values), _BLOCK_ROWS):
        sl = slice(start, start + _BLOCK_ROWS)
        profile_ = np.expm1(values[sl].astype(np.float64))
        sums = profile_.sum(1, keepdims=True)
        profile_ = np.divide(profile_, sums, out=np.zeros_like(profile_), where=sums > 0)
        rate = profile_ * library[sl, None]
        del profile_
        if noise == "pln":
            phi = dispersion(sl) if callable(dispersion) else dispersion[sl]
            var = np.maximum(np.log1p(np.asarray(phi, dtype=np.float64)), 1e-8)  # log-normal σ², mean 1
            rate *= np.exp(np.sqrt(var) * rng.standard_normal(rate.shape) - 0.5 * var)
        if noise == "rounding":
            low = np.floor(rate)
            counts = (low + (rng.random(rate.shape) < rate - low)).astype(np.float32)
        else:
            counts = rng.poisson(rate).astype(np.float32)
        blocks.append(sp.csr_matrix(counts) if columns is None else expand_genes(counts, columns, width))
    if not blocks:
        return sp.csr_matrix((0, width), dtype=np.float32)
    return sp.vstack(blocks, format="csr")


def profile(x: torch.Tensor) -> torch.Tensor:
    """Log-normalised values → relative expression (rows sum to 1; all-zero rows stay zero)."""
    q = x.float().clamp(max=MAX_LOG).expm1()
    return q / q.sum(-1, keepdim=True).clamp_min(1e-12)


class CountObservation:
    """``(x, library, scale) → (observed x, probability that each entry is zero)`` in torch.

    What sampling applies at the end (:func:`draw_counts`), applied inside the training loop:
    profile → counts at a real cell's library size → normalisation and log1p as in preprocessing. The
    count draw passes the gradient straight through (Bengio et al. 2013), and the expected zero
    fraction of the draw is known in closed form, so a sparsity objective can match the zeros that
    will be output.

    ``library`` is a real cell's total over the training genes, ``scale`` its normalisation factor
    (target sum / total over all genes). ``noise``: ``"poisson"`` (counts ~ Poisson(profile · library),
    the molecule sampling of droplet data), ``"pln"`` (Poisson–log-normal: the rate is first multiplied
    by a mean-1 log-normal variable of variance ``dispersion``, per cell and gene, so each gene gets the
    independent over-dispersion of a negative binomial of the same dispersion, which a latent of a few
    dozen dimensions cannot produce; the draw is reparameterised, so the dispersion is learned; a
    log-normal rather than a gamma because it costs a normal draw, a gamma draw costs 10× more) or
    ``"rounding"`` (stochastic rounding of profile · library: the generator supplies all variability
    itself).
    """

    def __init__(self, noise: str):
        if noise not in COUNT_NOISE or noise == "none":
            raise ValueError(f"count noise must be 'poisson', 'pln' or 'rounding', got {noise!r}")
        self.noise = noise

    def draw(
        self,
        x: torch.Tensor,
        library: torch.Tensor,
        gen: torch.Generator | None = None,
        dispersion: torch.Tensor | None = None,
        expected: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts, rate)``: counts drawn from the profile of ``x`` (or ``expected``, the profile when
        the generator has it) at ``library``, with the value of the draw and the gradient of the rate
        (straight-through), and the rate they were drawn at."""
        rate, counts = self._rate_and_counts(x, library, gen, dispersion, expected)
        return _straight_through(rate, counts), rate

    def _rate_and_counts(self, x, library, gen, dispersion, expected):
        import torch

        from cellsynth.data import draws

        rho = profile(x) if expected is None else expected.float()
        if self.noise == "pln":
            if dispersion is None:
                raise ValueError("count noise 'pln' needs a dispersion (cells × genes)")
            rate = _fused("pln_rate")(rho, library, dispersion.float(), draws.randn_like(rho, gen))
        else:
            rate = rho * library[:, None]
        with torch.no_grad():
            if self.noise in ("poisson", "pln"):  # a training step's draw (gradients recorded): by inversion
                counts = draws.poisson(rate, gen, by_inversion=rate.requires_grad)
            else:
                low = torch.floor(rate)
                counts = low + (draws.rand_like(rate, gen) < rate - low).to(rate.dtype)
        return rate, counts

    def __call__(
        self,
        x: torch.Tensor,
        library: torch.Tensor,
        scale: torch.Tensor,
        gen: torch.Generator | None = None,
        dispersion: torch.Tensor | None = None,
        expected: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rate, counts = self._rate_and_counts(x, library, gen, dispersion, expected)
        # given this draw's rate, exp(-rate) is the zero probability (for pln: an unbiased estimate)
        return _fused("observe")(rate, counts, scale, library, poisson=self.noise in ("poisson", "pln"))


def _pln_rate(rho, library, dispersion, eps):
    """The Poisson–log-normal rate: ``ρ · library`` times a mean-1 log-normal factor of variance
    ``dispersion`` (``eps``: its standard normal numbers; reparameterised)."""
    import torch

    var = torch.log1p(dispersion).clamp_min(1e-8)  # log-normal σ² for variance φ, mean 1
    return rho * library[:, None] * torch.exp(var.sqrt() * eps - 0.5 * var)


def _straight_through(rate, counts):
    """The draw's value with the rate's gradient."""
    return rate + (counts - rate).detach()


def _observe(rate, counts, scale, library, *, poisson: bool):
    """``(observed, p_zero)`` of counts drawn at ``rate``: normalised and log1p'd as real cells are."""
    import torch

    counts = _straight_through(rate, counts)
    total = counts.sum(-1).clamp_min(1.0)
    # real cells: log1p(c * target / all-gene total); all-gene total ≈ own total * (real all / real train)
    factor = scale * library / total
    observed = torch.log1p(counts * factor[:, None])
    p_zero = torch.exp(-rate) if poisson else (1.0 - rate).clamp(0.0, 1.0)
    return observed, p_zero


@cache
def _fused(name: str):
    """The fused chain ``name``, made at first use (importing this module does not import torch)."""
    from cellsynth.data.fused import Fused

    return Fused({"pln_rate": _pln_rate, "observe": _observe}[name])


class CountEntries(NamedTuple):
    """A batch's non-zero counts: their cells (rows of the batch), genes and values."""

    row: torch.Tensor
    col: torch.Tensor
    value: torch.Tensor


def nonzero_counts(rows, scale: np.ndarray, device) -> CountEntries:
    """The raw counts behind log-normalised ``rows`` (:meth:`CellData.rows <cellsynth.data.CellData.rows>`:
    CSR or dense), at their non-zero entries: ``rint(expm1(x) / scale)`` with each cell's normalisation
    factor ``scale`` (:attr:`CellData.scale <cellsynth.data.CellData>`), computed in float64 (the error
    before rounding is far below 0.5 for any realistic count) on the stored entries only."""
    import torch

    if sp.issparse(rows):
        csr = sp.csr_matrix(rows)
        row, col, values = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr)), csr.indices, csr.data
    else:
        row, col = np.nonzero(rows)
        values = rows[row, col]
    counts = np.rint(np.expm1(values.astype(np.float64)) / scale.astype(np.float64)[row])
    keep = counts != 0  # stored zeros, and values too small to be a count
    return CountEntries(
        *(torch.from_numpy(np.ascontiguousarray(a[keep], dtype=np.int64)).to(device) for a in (row, col)),
        torch.from_numpy(counts[keep].astype(np.float32)).to(device),
    )
