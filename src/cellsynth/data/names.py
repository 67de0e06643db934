"""Cell and gene names must be unique: the check every entry point shares, and the opt-in repair.

Genes are matched by name (between a model and new data, between real and synthetic cells) and cells
by name (to labels files), so a duplicate is never renamed behind the user's back: it is an
:class:`~cellsynth.errors.InputError` naming the duplicates, unless the user asks for unique names.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import pandas as pd

from ..errors import InputError

__all__ = ["describe_duplicates", "check_unique_names", "make_names_unique"]

_AXES = {"var": "gene", "obs": "cell"}
# duplicated names quoted in a message; the count says how many more there are
_SHOWN = 3


def describe_duplicates(names: Sequence[str] | pd.Index, what: str) -> str | None:
    """``"2 gene names occur more than once ('A' ×2, 'B' ×3)"``, or ``None`` when every name is unique.

    Parameters
    ----------
    names
        The names to check.
    what
        The noun for one name, e.g. ``"gene"`` or ``"cell"``.
    """
    index = pd.Index(names)
    if index.is_unique:
        return None
    counts = index[index.duplicated(keep=False)].value_counts()
    first = pd.unique(index[index.duplicated(keep="first")])  # in the order they first repeat
    shown = ", ".join(f"{str(name)!r} ×{counts[name]}" for name in first[:_SHOWN])
    more = f", and {len(first) - _SHOWN} more" if len(first) > _SHOWN else ""
    plural = "name occurs" if len(first) == 1 else "names occur"
    return f"{len(first)} {what} {plural} more than once ({shown}{more})"


def check_unique_names(adata, source: str, *, fix: str, axes: Sequence[str] = ("var", "obs")) -> None:
    """Raise :class:`~cellsynth.errors.InputError` when gene or cell names repeat.

    Parameters
    ----------
    adata
        The AnnData to check.
    source
        What the message names as the input at fault (a path, ``"adata"``, ``"REAL"``).
    fix
        How to fix it; ``{axis}`` is replaced by ``var`` or ``obs``.
    axes
        ``"var"`` (gene names) and/or ``"obs"`` (cell names).
    """
    for axis in axes:
        names = adata.var_names if axis == "var" else adata.obs_names
        problem = describe_duplicates(names, _AXES[axis])
        if problem is not None:
            raise InputError(f"{source}: {problem} — {fix.format(axis=axis)}")


def make_names_unique(adata) -> dict[str, int]:
    """Append ``-1``, ``-2``, ... to repeated gene and cell names (the first occurrence is kept).

    Returns
    -------
    dict
        ``{"genes": n, "cells": m}``: how many names were renamed on each axis (only non-zero ones).
    """
    renamed = {}
    for axis, what in (("var", "genes"), ("obs", "cells")):
        names = adata.var_names if axis == "var" else adata.obs_names
        n = int(names.duplicated().sum())
        if n:
            with warnings.catch_warnings():  # anndata warns when a new name collides; asked for, so fine
                warnings.simplefilter("ignore", UserWarning)
                getattr(adata, f"{axis}_names_make_unique")()
            renamed[what] = n
    return renamed
