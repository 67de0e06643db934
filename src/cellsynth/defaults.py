"""Choices made once for the whole package (light to import: the command line reads them at start-up)."""

import os

#: the model ``cellsynth fit``, ``make demo`` and ``cellsynth.models.get`` users start from when none is
#: named: the least detectable GAN-based model across the benchmark's datasets (docs/benchmarks.md); it
#: needs counts
DEFAULT_MODEL = "nbgan"
#: the default for data that are not counts (log-normalised or scaled), which ``DEFAULT_MODEL`` cannot fit
DEFAULT_MODEL_NOT_COUNTS = "cgan"


def default_model(representation: str) -> str:
    """The model fitted when none is named, for data of this (resolved) representation."""
    return DEFAULT_MODEL if representation == "counts" else DEFAULT_MODEL_NOT_COUNTS


def switched_on(variable: str) -> bool:
    """An on/off environment switch of the package (``CELLSYNTH_COMPILE``, ``CELLSYNTH_MALLOPT``): on unless
    set to 0, false, no or off."""
    return os.environ.get(variable, "1").strip().lower() not in ("0", "false", "no", "off")
