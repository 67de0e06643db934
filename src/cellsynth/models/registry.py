"""The registry of generators: models are found by name (``get``, ``available``), as in synthcity."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from ..params import ParamSpec
    from .model import SyntheticCellModel

REGISTRY: dict[str, type[SyntheticCellModel]] = {}


def register(cls: type[SyntheticCellModel]) -> type[SyntheticCellModel]:
    """Class decorator: make a model available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, str]:
    """Registered model names and their one-line descriptions."""
    return {name: (cls.__doc__ or "").strip().splitlines()[0] for name, cls in sorted(REGISTRY.items())}


def missing(name: str) -> str | None:
    """Why model ``name`` cannot run here (an optional dependency is not installed), or None."""
    from importlib.util import find_spec

    cls = _model_class(name)
    absent = [module for module in cls.requires if find_spec(module) is None]
    if not absent:
        return None
    return f"needs {', '.join(absent)}: pip install 'cellsynth[{cls.extra}]'"


def get(name: str, **params) -> SyntheticCellModel:
    """A new, unfitted model by name, e.g. ``get("cgan", epochs=100)``.

    ``params`` are checked against the model's :func:`param_spec` (names, types, ranges, choices);
    a value it does not accept raises :class:`~cellsynth.errors.InputError`, and so does a model whose
    optional dependency is not installed (:func:`missing`).
    """
    why = missing(name)
    if why:
        raise InputError(f"model {name!r} is unavailable here: it {why}")
    return _model_class(name)(**params)


def param_spec(name: str) -> ParamSpec:
    """The declared hyperparameters of model ``name`` (defaults, accepted values, help)."""
    return _model_class(name).param_spec


def _model_class(name: str) -> type[SyntheticCellModel]:
    if name not in REGISTRY:
        raise InputError(f"unknown model {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]
