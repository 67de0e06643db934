"""Data layer: readers, the training container `CellData`, bundled and simulated datasets."""

from __future__ import annotations

from .backed import BackedCells
from .celldata import CellData

__all__ = ["BackedCells", "CellData", "read"]


def __getattr__(name: str):
    if name == "read":  # the readers pull in scanpy: import them on first use
        from .readers import read

        return read
    raise AttributeError(f"module 'cellsynth.data' has no attribute {name!r}")
