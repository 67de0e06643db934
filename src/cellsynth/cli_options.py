"""Parsing and checking command-line options, and turning user errors into one line.

Shared by the commands in :mod:`cellsynth.cli`: ``KEY=VALUE`` and ``label=value`` lists, output paths,
seeds, fit options and model parameters checked before any data is read, the default model for the data,
and the metrics summary table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated

import typer

from .errors import CellsynthError, InputError


def one_line_warnings() -> None:
    """Show the package's own warnings (a rollback, an interruption) as ``warning: message`` lines, without
    the source file and line that Python's default format adds; other packages' warnings keep it."""
    import warnings

    package = str(Path(__file__).resolve().parent)
    default = warnings.formatwarning

    def formatted(message, category, filename, lineno, line=None) -> str:
        if str(Path(filename).resolve()).startswith(package):
            return f"warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = formatted


def with_counts(adata, who: str = ""):
    """``adata`` with its counts as ``X`` where ``X`` holds none and a count layer, ``raw.X`` or counts read
    back from ``X`` exist (:func:`~cellsynth.data.celldata.counts_layer`), said in one line on stderr (``who``
    names the set); else ``adata`` itself."""
    from .data.celldata import counts_layer, counts_layer_note

    if (name := counts_layer(adata)) is None:
        return adata
    import anndata as ad

    typer.echo(f"{who}{counts_layer_note(name)}", err=True)
    return ad.AnnData(X=adata.layers[name], obs=adata.obs, var=adata.var)


def counts_beside_counts(sets: dict) -> dict:
    """``cellsynth evaluate``'s sets (``{"REAL": ..., "SYNTH": ..., "TRAIN": ...}``): where SYNTH holds
    counts, the real sets' counts too (:func:`with_counts`), so that both sides are normalised alike."""
    from .data.preprocess import detect_representation

    synth = sets["SYNTH"].X
    if synth is None or detect_representation(synth) != "counts":
        return sets
    return {k: a if k == "SYNTH" else with_counts(a, f"{k}: ") for k, a in sets.items()}


def fail(message: str, code: int = 2):
    """Print ``error: message`` on one line and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(fn: Callable) -> Callable:
    """Turn CellsynthError (and the few OS errors a user can cause) into one line + exit 2."""

    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CellsynthError as e:
            fail(str(e))
        except PermissionError as e:
            fail(f"permission denied: {e.filename}; choose a writable --out")
        except KeyboardInterrupt:
            fail("interrupted; nothing was written", code=130)
        except MemoryError as e:
            fail(f"out of memory ({e}); fit a large .h5ad out of core (--out-of-core), or ask for less")

    return wrapper


def parse_pairs(text: str | None, what: str, cast=float) -> dict:
    """``"B_cell=500,T_cell=200"`` → ``{"B_cell": 500, "T_cell": 200}`` (labels may hold spaces)."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise InputError(f"{what} expects label=value pairs separated by commas, got {part!r}")
        key, value = part.rsplit("=", 1)
        try:
            out[key.strip()] = cast(value.strip())
        except ValueError:
            raise InputError(f"{what}: {value.strip()!r} is not a valid number for {key.strip()!r}") from None
    return out


def parse_key_values(items: list[str] | None, option: str) -> dict:
    """Repeated ``KEY=VALUE`` options → a dict; values are read as JSON when they parse, else kept as text."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"{option} expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = _param_value(value)
    return out


def _param_value(text: str):

    try:
        return json.loads(text)
    except ValueError:
        return text


MakeUnique = Annotated[
    bool,
    typer.Option(
        "--make-unique",
        help="Append -1, -2, ... to repeated gene or cell names instead of stopping with an error",
    ),
]


def check_out_path(out: Path, *, directory: bool) -> None:
    """Refuse an --out that cannot be written: a file where a folder is needed or the reverse, a
    location beneath a file, or a folder without write permission."""
    for above in out.resolve().parents:
        if above.exists():
            if not above.is_dir():
                raise InputError(f"--out {out}: {above} is a file, not a folder; choose another path")
            break
    if out.exists() and directory and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory; choose another path")
    if out.exists() and not directory and out.is_dir():
        raise InputError(f"--out {out} is a directory; give a file name ending in .h5ad or .csv")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create the folder for --out {out}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write to {parent}; choose a writable --out")


def check_seed(seed: int) -> None:
    from .params import check_option

    check_option("--seed", seed, "int", ge=0, lt=2**32)


def check_fit_options(model: str, options: dict[str, object], *, n_genes: int | None, seed: int) -> None:
    """Refuse fit options that cannot work before any data is read.

    ``options`` maps option names (``--epochs``) to values that set the model parameter of the same name;
    each is checked against the model's parameter spec.
    """
    from .models.registry import param_spec
    from .params import check_option

    spec = param_spec(model)
    check_option("--n-genes", n_genes, "int", ge=2)
    check_seed(seed)
    for option, value in options.items():
        key = option.removeprefix("--").replace("-", "_")
        if key in spec:  # garage options given to another model are refused by name below
            check_option(option, value, spec[key])


def model_params(model: str | None, param, *, epochs, max_minutes, garage: dict) -> dict:
    """The model parameters from ``--param`` items and the options that set a parameter of that name
    (the garage options only with ``--model garage``)."""
    params = parse_key_values(param, "--param")
    if epochs is not None:
        params["epochs"] = epochs
    if max_minutes is not None:
        params["max_minutes"] = max_minutes
    for key, value in garage.items():
        if value is not None:
            if model != "garage":
                raise InputError(f"--{key.replace('_', '-')} is a garage option; add --model garage")
            params[key] = value
    return params


def check_model_params(model: str | None, params: dict) -> None:
    """Refuse parameters before any data is read: a named model's; without ``--model`` (the default
    depends on the data), those that neither default takes."""
    from .defaults import DEFAULT_MODEL, DEFAULT_MODEL_NOT_COUNTS
    from .models import get

    if model is not None:
        get(model, **params)
        return
    try:
        get(DEFAULT_MODEL, **params)
    except InputError:
        get(DEFAULT_MODEL_NOT_COUNTS, **params)


def default_model_for(adata, layer: str | None, representation: str) -> str:
    """The model fitted when ``--model`` is not given, said on stderr with the reason: the default for
    counts, or for other data."""
    from .data.celldata import resolved_representation
    from .defaults import DEFAULT_MODEL, default_model

    if hasattr(adata, "detected"):  # out of core (BackedCells): its first block, the layer chosen
        resolved = adata.detected() if representation == "auto" else representation
    else:
        resolved = resolved_representation(adata, layer, representation)
    model = default_model(resolved)
    why = "count data" if resolved == "counts" else f"{resolved} data ({DEFAULT_MODEL} needs raw counts)"
    typer.echo(f"model: {model}, the default for {why}; --model chooses another", err=True)
    return model


def whole_number(text: str) -> int:
    """``"500"`` or ``"5e2"`` → 500; a fraction is a ValueError."""
    value = float(text)
    if value != int(value):
        raise ValueError(text)
    return int(value)


def print_summary(metrics) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    def fmt(value) -> str:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "–"
        return f"{value:.4g}"

    table = Table(title="cellsynth evaluate", show_lines=False)
    for column in ("metric", "family", "better", "value", "control", "verdict"):
        table.add_column(column, justify="right" if column in ("value", "control") else "left")
    for row in metrics.table().itertuples(index=False):
        table.add_row(row.metric, row.family, row.direction, fmt(row.value), fmt(row.control), row.verdict)
    Console(width=120).print(table)
