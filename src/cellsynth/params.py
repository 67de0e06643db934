"""Declared hyperparameters: each model lists its parameters with a default, the values it accepts and a
line of help, the way synthcity's plugins declare their hyperparameter spaces.

User values (``models.get("cgan", epochs=50)``, ``cellsynth fit --param epochs=50``, the ``params`` of a
saved model's config) are checked and coerced against that list before anything is built: unknown names,
wrong types, out-of-range values and values outside the choices raise
:class:`~cellsynth.errors.InputError` with one line naming the model, the parameter, what it got and
what it accepts. Integers are accepted where a number is expected (and become floats), lists where a
tuple is expected (and become tuples).
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .errors import InputError

Kind = Literal["int", "float", "bool", "str", "ints", "floats", "dict"]
KINDS = ("int", "float", "bool", "str", "ints", "floats", "dict")

_NOUN = {"int": "integer", "float": "number"}
_NUMBER = (int, float, np.integer, np.floating)


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its name, default, the values it accepts and a line of help.

    Parameters
    ----------
    name
        The keyword it is given as.
    default
        The value used when it is not given (must itself be accepted).
    kind
        ``"int"``, ``"float"``, ``"bool"``, ``"str"``, ``"ints"`` / ``"floats"`` (a tuple of integers /
        numbers; a list is accepted) or ``"dict"``.
    help
        What it does, in a few words.
    ge, gt, le, lt
        Bounds of a number (of every item for ``"ints"`` / ``"floats"``): ≥, >, ≤, <.
    choices
        The accepted texts (``"str"``).
    optional
        Whether ``None`` is accepted.
    length
        ``(fewest, most)`` items of an ``"ints"`` / ``"floats"`` value.
    keys
        The accepted keys of a ``"dict"`` value (None: any text key).
    """

    name: str
    default: Any
    kind: Kind
    help: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    length: tuple[int, int] | None = None
    keys: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r}; use one of {KINDS}")
        try:
            ok = self.coerce(self.default) == self.default
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"parameter {self.name!r}: default {self.default!r} is not {self.accepts()}")

    # ------------------------------------------------------------------ checking
    def coerce(self, value: Any) -> Any:
        """``value`` as this parameter holds it; raises ValueError when it is not accepted."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(self.name)
        if self.kind in ("ints", "floats"):
            if isinstance(value, str | bytes | Mapping) or not isinstance(value, Sequence | np.ndarray):
                raise ValueError(self.name)
            items = tuple(self._scalar(v, self.kind[:-1]) for v in value)
            fewest, most = self.length or (0, None)
            if len(items) < fewest or (most is not None and len(items) > most):
                raise ValueError(self.name)
            return items
        if self.kind == "dict":
            if not isinstance(value, Mapping):
                raise ValueError(self.name)
            for key in value:
                if not isinstance(key, str) or (self.keys is not None and key not in self.keys):
                    raise ValueError(self.name)
            return dict(value)
        return self._scalar(value, self.kind)

    def _scalar(self, value: Any, kind: str) -> Any:
        if kind == "bool":
            if isinstance(value, bool | np.bool_):
                return bool(value)
            raise ValueError(self.name)
        if kind == "str":
            if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
                raise ValueError(self.name)
            return value
        if isinstance(value, bool | np.bool_) or not isinstance(value, _NUMBER):
            raise ValueError(self.name)
        if not math.isfinite(value):
            raise ValueError(self.name)
        if kind == "int":
            if not float(value).is_integer():
                raise ValueError(self.name)
            value = int(value)
        else:
            value = float(value)
        if (
            (self.ge is not None and value < self.ge)
            or (self.gt is not None and value <= self.gt)
            or (self.le is not None and value > self.le)
            or (self.lt is not None and value >= self.lt)
        ):
            raise ValueError(self.name)
        return value

    # ------------------------------------------------------------------ describing
    def accepts(self, null: bool = True) -> str:
        """What it accepts, in words: ``"an integer ≥ 1"``, ``"one of bce, wgan-gp, hinge"``, ...

        ``null=False`` leaves out ``None`` (for a command-line option, which is either given or not).
        """
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "str":
            text = "one of " + ", ".join(self.choices) if self.choices is not None else "text"
        elif self.kind == "dict":
            text = "a mapping" + (" with keys among " + ", ".join(self.keys) if self.keys is not None else "")
        elif self.kind in ("ints", "floats"):
            noun = _NOUN[self.kind[:-1]] + "s"
            fewest, most = self.length or (0, None)
            if most is None:
                count = f"{fewest} or more " if fewest else ""
            elif fewest == most:
                count = f"{fewest} "
            else:
                count = f"{fewest} to {most} "
            text = f"a list of {count}{noun}{self._bounds(plural=True)}"
        else:
            noun = _NOUN[self.kind]
            text = ("an " if noun[0] in "aeiou" else "a ") + noun + self._bounds()
        return text + (", or null/None" if self.optional and null else "")

    def _bounds(self, plural: bool = False) -> str:
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            return f" in {low[0]}{_number(low[1])}, {_number(high[1])}{high[0]}"
        if low:
            return f" {'≥' if low[0] == '[' else '>'} {_number(low[1])}"
        if high:
            return f" {'≤' if high[0] == ']' else '<'} {_number(high[1])}"
        return ""

    def check(self, value: Any, what: str, *, null: bool = True) -> Any:
        """``value`` coerced, or an :class:`~cellsynth.errors.InputError` beginning with ``what``."""
        try:
            return self.coerce(value)
        except ValueError:
            raise InputError(f"{what} got {describe(value)}; it accepts {self.accepts(null)}") from None


class ParamSpec:
    """A model's parameters, in order: defaults, validation of user values, a table for ``--help``."""

    def __init__(self, params: Iterable[Param] = ()):
        self._params: dict[str, Param] = {}
        for p in params:
            if p.name in self._params:
                raise ValueError(f"parameter {p.name!r} is declared twice")
            self._params[p.name] = p

    def __iter__(self) -> Iterator[Param]:
        return iter(self._params.values())

    def __len__(self) -> int:
        return len(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    @property
    def names(self) -> list[str]:
        return list(self._params)

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default value."""
        return {p.name: p.default for p in self}

    def extend(self, *params: Param) -> ParamSpec:
        """A new spec with ``params`` added; one with an existing name replaces it in place."""
        merged = dict(self._params)
        for p in params:
            merged[p.name] = p
        return ParamSpec(merged.values())

    def with_defaults(self, **defaults: Any) -> ParamSpec:
        """A new spec with other defaults for existing parameters (each checked against its declaration)."""
        from dataclasses import replace

        unknown = [k for k in defaults if k not in self._params]
        if unknown:
            raise ValueError(f"no parameters {unknown} to give defaults to")
        return ParamSpec(replace(p, default=defaults[p.name]) if p.name in defaults else p for p in self)

    def without(self, *names: str) -> ParamSpec:
        """A new spec without the parameters ``names``."""
        return ParamSpec(p for p in self if p.name not in names)

    def validate(self, values: Mapping[str, Any], model: str) -> dict[str, Any]:
        """The given ``values`` checked and coerced (only those given; defaults are not added).

        Raises
        ------
        InputError
            One line naming the model, the parameter, what it got and what it accepts.
        """
        unknown = [k for k in values if k not in self._params]
        if unknown:
            close = difflib.get_close_matches(str(unknown[0]), self.names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                f"model {model!r}{hint}; known: {', '.join(self.names)}"
            )
        return {k: self._params[k].check(v, f"parameter {k!r} of model {model!r}") for k, v in values.items()}

    def table(self) -> list[dict[str, str]]:
        """One row per parameter: ``name``, ``default``, ``accepts``, ``help``."""
        return [
            {"name": p.name, "default": _short(p.default), "accepts": p.accepts(), "help": p.help}
            for p in self
        ]

    def render(self) -> str:
        """The :meth:`table` as aligned text, one parameter per line under a header."""
        rows = [{"name": "name", "default": "default", "accepts": "accepts", "help": "help"}, *self.table()]
        # a long entry (a mapping's keys) pushes its own line's help along, not every line's
        width = {c: min(max(len(r[c]) for r in rows), 42) for c in ("name", "default", "accepts")}
        return "\n".join(
            f"{r['name']:{width['name']}}  {r['default']:{width['default']}}  "
            f"{r['accepts']:{width['accepts']}}  {r['help']}".rstrip()
            for r in rows
        )


def check_option(option: str, value: Any, kind: Kind | Param, **limits: Any) -> Any:
    """A command-line option's value checked and coerced (``None``, an option not given, passes).

    ``kind`` is a :class:`Param` (the model parameter the option sets) or a kind with ``limits``
    (``ge=1``, ``choices=(...)``, ...). Raises :class:`~cellsynth.errors.InputError`:
    ``--epochs got 0 (integer); it accepts an integer ≥ 1``.
    """
    if value is None:
        return None
    param = kind if isinstance(kind, Param) else Param(option, None, kind, optional=True, **limits)
    return param.check(value, option, null=False)


def describe(value: Any) -> str:
    """A value and its type, for messages: ``'abc' (text)``, ``2.5 (number)``, ``[1, 2] (list)``."""
    if value is None:
        kind = "null"
    elif isinstance(value, bool | np.bool_):
        kind = "true/false"
    elif isinstance(value, str):
        kind = "text"
    elif isinstance(value, int | np.integer):
        kind = "integer"
    elif isinstance(value, float | np.floating):
        kind = "number"
    elif isinstance(value, Mapping):
        kind = "mapping"
    elif isinstance(value, list | tuple | np.ndarray):
        kind = "list"
    else:
        kind = type(value).__name__
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({kind})"


def format_value(value: Any) -> str:
    """A value as written on the command line (``--param KEY=VALUE``): JSON, texts unquoted."""
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value)


def _short(value: Any) -> str:
    """:func:`format_value` with floats to 6 significant digits (``3e-4 * 3`` shows as ``0.0003``)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    return format_value(value)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(float(x))
