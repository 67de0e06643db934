"""cellsynth: realistic synthetic single-cell RNA-seq data.

>>> import cellsynth
>>> adata = cellsynth.read("cells.h5ad")
>>> model = cellsynth.models.get("cgan", epochs=50)
>>> model.fit(adata, label_key="cell_type")
>>> synthetic = model.sample(n=1000, seed=0)
>>> model.save("model_dir"); cellsynth.load("model_dir")
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .errors import CellsynthError, InputError, ModelFileError, RequestError

__version__ = "0.1.0"

__all__ = [
    "CellData",
    "CellsynthError",
    "InputError",
    "ModelFileError",
    "RequestError",
    "datasets",
    "evaluate",
    "load",
    "models",
    "read",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover
    from . import models
    from .data import CellData, datasets, read
    from .metrics import evaluate
    from .models import load

# torch and scanpy take seconds to import; `import cellsynth` (and `cellsynth --help`) should not.
_LAZY = {
    "read": ("cellsynth.data", "read"),
    "CellData": ("cellsynth.data", "CellData"),
    "datasets": ("cellsynth.data.datasets", None),
    "models": ("cellsynth.models", None),
    "load": ("cellsynth.models", "load"),
    "evaluate": ("cellsynth.metrics.evaluation", "evaluate"),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'cellsynth' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value
