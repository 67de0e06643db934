"""Choices made once for the whole package (light to import: the command line reads them at start-up)."""

#: the model ``cellsynth fit``, ``make demo`` and ``cellsynth.models.get`` users start from when none is named
DEFAULT_MODEL = "cgan"
