"""Data layer: readers, the training container `CellData`, bundled and simulated datasets."""

from __future__ import annotations

from .celldata import CellData
from .readers import read

__all__ = ["CellData", "read"]
