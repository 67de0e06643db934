"""Generators: a small registry (`get`, `available`) and safe `load`."""

from __future__ import annotations

from ..defaults import DEFAULT_MODEL
from . import baselines, cgan, garage, latent, nbgan, nbgarage, scvi_peer, vae  # noqa: F401  (registers the models)
from .model import SyntheticCellModel
from .persistence import load
from .registry import available, get, register

__all__ = ["DEFAULT_MODEL", "SyntheticCellModel", "available", "get", "load", "register"]
