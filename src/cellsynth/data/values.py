"""What a matrix's values allow: :class:`ValueSummary` holds what is known of them (from one pass over
the whole matrix, or block by block for data read from disk), :func:`checked_representation` decides the
representation they are trained in, or refuses them in one line."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from .preprocess import MAX_LOG, NORMALISED_NOT_COUNTS, REPRESENTATIONS


@dataclass
class ValueSummary:
    """What a matrix's values are as far as training needs: all finite, their representation as detected
    (:func:`~cellsynth.data.preprocess.detect_representation`) and the largest value where it passes
    log1p's range (:func:`~cellsynth.data.preprocess.beyond_log1p`)."""

    finite: bool
    detected: str
    top: float | None


def checked_representation(summary: ValueSummary, representation: str) -> tuple[str, bool]:
    """The representation to train in (``auto`` resolved) and whether the values are rounded to whole
    counts first; refused, in one line, where the values cannot be trained on as asked."""
    if not summary.finite:
        raise InputError(
            "the expression matrix contains NaN or Inf values; remove or impute them before fitting"
        )
    detected, top = summary.detected, summary.top
    representation = detected if representation == "auto" else representation
    if representation not in REPRESENTATIONS:
        raise InputError(f"unknown representation {representation!r}; use auto, counts, log1p or as_is")
    if representation == "counts" and detected == "as_is":
        raise InputError(
            "negative values in a count matrix; pass --representation as_is (or log1p) if the data "
            "is not counts"
        )
    if representation == "counts" and detected == "log1p" and top is None:
        raise InputError(NORMALISED_NOT_COUNTS)  # within log1p's range: normalised, not counts
    if representation == "log1p" and detected == "as_is":
        raise InputError("negative values in log1p data; use --representation as_is for scaled data")
    if representation == "log1p" and top is not None:
        raise InputError(
            f"the matrix holds non-integer values up to {top:.4g}, beyond log1p-normalised data (at most "
            f"{MAX_LOG:g}): log-transform it first (scanpy.pp.log1p), pass raw counts (--layer), round "
            "fractional counts (--representation counts), or use --representation as_is"
        )
    return representation, representation == "counts" and detected == "log1p"
