"""The user's request to a benchmark, checked before anything runs: model names, their parameters, the
data's columns; and the command line that repeats (and so resumes) a run."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from .._io import jsonable
from ..cli_options import with_counts
from ..errors import InputError

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def parse_models(models: str | Sequence[str]) -> list[str]:
    """``"all"``, ``"cgan,garage"`` or a list of names → registered model names, in the order given.

    Raises
    ------
    InputError
        An empty list, a malformed or repeated name, or an unknown model.
    """
    from ..models.registry import available, param_spec

    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else [str(m) for m in models]
    if names == ["all"]:
        return list(available())
    if not names or any(not n or not _NAME.match(n) or n == "all" for n in names):
        raise InputError(
            f"--models expects 'all' or model names separated by commas (e.g. cgan,garage), got {models!r}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InputError(f"--models names {', '.join(repeated)} more than once; name each model once")
    for name in names:
        param_spec(name)  # an unknown model is an InputError naming the available ones
    return names


def parse_model_params(items: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"cgan.epochs": 2}`` (from ``--param MODEL.KEY=VALUE``) → ``{"cgan": {"epochs": 2}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in items.items():
        model, dot, key = name.partition(".")
        if not dot or not model or not key:
            raise InputError(
                f"--param expects MODEL.KEY=VALUE (e.g. cgan.epochs=50), got {name}=...: name the model "
                f"whose parameter it is (e.g. cgan.{key or model or name})"
            )
        out.setdefault(model, {})[key] = value
    return out


def check_model_params(models: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> dict[str, dict]:
    """Each model's parameters checked against its spec (``max_minutes`` is the benchmark's, not theirs)."""
    from ..models.registry import param_spec

    checked = {}
    for model, values in params.items():
        spec = param_spec(model)  # an unknown model is an InputError
        if model not in models:
            raise InputError(
                f"--param {model}.…: {model} is not among --models ({', '.join(models)}); add it"
            )
        if "max_minutes" in values:
            raise InputError(
                f"--param {model}.max_minutes: every model gets the same budget; set --max-minutes-per-model"
            )
        checked[model] = spec.validate(dict(values), model)
    return checked


def check_families(families: Sequence[str] | None) -> list[str] | None:
    """The metric families asked for (None: all), each a registered one."""
    if not families:
        return None
    from ..metrics.evaluation import load_families

    known = list(load_families())
    unknown = [f for f in families if f not in known]
    if unknown:
        raise InputError(f"--family {unknown[0]!r} is not a metric family; choose from {', '.join(known)}")
    return list(dict.fromkeys(families))


def command_line(data, out, *, models, options: Mapping[str, Any], params, settings, families) -> str:
    """The ``cellsynth benchmark`` command line equivalent to a call (shown, and what resumes it).

    ``options`` maps option names (``--seeds``) to values; None and False leave an option out, True is a
    flag.
    """
    source = str(data) if isinstance(data, str | os.PathLike) else "DATA.h5ad"
    parts = ["cellsynth", "benchmark", source]
    parts += ["--models", models if isinstance(models, str) else ",".join(models)]
    for option, value in options.items():
        values = value if isinstance(value, list | tuple) else [value]
        for v in values:
            if v is True:
                parts.append(option)
            elif v is not None and v is not False:
                parts += [option, f"{v:g}" if isinstance(v, float) else str(v)]
    for family in families or []:
        parts += ["--family", family]
    for model, values in params.items():
        parts += [x for key, value in values.items() for x in ("--param", f"{model}.{key}={_text(value)}")]
    parts += [x for key, value in settings.items() for x in ("--setting", f"{key}={_text(value)}")]
    parts += ["--out", str(out)]
    return " ".join(shlex.quote(p) for p in parts)


def _text(value: Any) -> str:
    """A value as ``--param`` reads it back: JSON, or plain text when that is what JSON would not read."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(jsonable(value))


def read_labelled(data, label_key: str, condition_keys: list[str]):
    """The cells of ``data`` (a path or an AnnData), with the label and condition columns checked."""
    if isinstance(data, str | os.PathLike):
        from ..data import read

        adata = read(data, label_key=label_key)
    else:
        adata = data
    adata = with_counts(adata)
    for key in [label_key, *condition_keys]:
        if key not in adata.obs.columns:
            option = "--label-key" if key == label_key else "--condition-key"
            available = ", ".join(map(str, adata.obs.columns[:12])) or "none"
            raise InputError(f"{option} {key!r}: no such obs column (available: {available}); fix {option}")
    return adata
