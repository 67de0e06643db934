"""Errors a user can cause. The CLI prints them on one line and exits with status 2."""

from __future__ import annotations


class CellsynthError(Exception):
    """Base class: the message names the input at fault and how to fix it."""


class InputError(CellsynthError, ValueError):
    """Bad input data: missing file, unknown format, missing key, NaN/Inf, negative counts."""


class ModelFileError(CellsynthError, OSError):
    """A model directory that is missing, truncated, corrupted or does not match its config."""


class RequestError(CellsynthError, ValueError):
    """A sampling request the model cannot honour (unknown label, bad count, bad mixing weights)."""


class TrainingError(CellsynthError, RuntimeError):
    """Training that cannot go on: it diverged repeatedly, or a checkpoint does not match the run."""
