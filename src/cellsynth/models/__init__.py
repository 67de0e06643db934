"""Generators: a small registry (`get`, `available`) and safe `load`."""

from __future__ import annotations

from . import cgan, garage  # noqa: F401  (registers the models)
from .base import SyntheticCellModel, available, get, load, register

__all__ = ["SyntheticCellModel", "available", "get", "load", "register"]
