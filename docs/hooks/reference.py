"""mkdocs hook: the reference tables the documentation generates from the code, so they cannot drift.

A page asks for a table with an HTML comment on a line of its own; the hook replaces it when the page is
built:

- ``<!-- cellsynth:cli -->``: every command of the ``cellsynth`` CLI (typer's click command tree), its
  help, usage, arguments and options;
- ``<!-- cellsynth:models -->``: the registered models and their one-line descriptions;
- ``<!-- cellsynth:params MODEL -->``: model ``MODEL``'s declared parameters (``cellsynth models --params``);
- ``<!-- cellsynth:metrics FAMILY -->``: the registered metrics of one family (name, direction, needs);
- ``<!-- cellsynth:checks -->``: the fixed thresholds of the verdict policy;
- ``<!-- cellsynth:settings -->``: the evaluation settings and their defaults (``--setting KEY=VALUE``).

A page that holds a ``params`` marker must hold one for every registered model, and a page that holds a
``metrics`` marker one for every family: a model or family added to the code without documentation
makes ``mkdocs build --strict`` fail with a warning naming it.
"""

from __future__ import annotations

import html
import re

from mkdocs.plugins import get_plugin_logger

log = get_plugin_logger("cellsynth")

MARKER = re.compile(r"^<!--\s*cellsynth:(?P<kind>[a-z]+)(?:\s+(?P<arg>[\w.-]+))?\s*-->\s*$", re.MULTILINE)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace every ``cellsynth:`` marker of ``page`` with the table it names."""
    kinds = {m.group("kind") for m in MARKER.finditer(markdown)}
    if not kinds:
        return markdown
    where = page.file.src_uri
    if "params" in kinds:
        _check_covered(markdown, "params", _model_names(), "model", where)
    if "metrics" in kinds:
        _check_covered(markdown, "metrics", _families(), "metric family", where)

    def replace(m: re.Match) -> str:
        kind, arg = m.group("kind"), m.group("arg")
        render = RENDERERS.get(kind)
        if render is None:
            log.warning(f"{where}: unknown marker 'cellsynth:{kind}'")
            return m.group(0)
        try:
            return render(arg) if arg is not None else render()
        except (KeyError, TypeError) as e:
            log.warning(f"{where}: cannot render 'cellsynth:{kind} {arg or ''}': {e!r}")
            return m.group(0)

    return MARKER.sub(replace, markdown)


def _check_covered(markdown: str, kind: str, names: list[str], what: str, where: str) -> None:
    given = {m.group("arg") for m in MARKER.finditer(markdown) if m.group("kind") == kind}
    for name in names:
        if name not in given:
            log.warning(f"{where}: the {what} {name!r} is registered but not documented here")


# --------------------------------------------------------------------------------------- text helpers
def _cell(text: object) -> str:
    """Text for a Markdown table cell: HTML-escaped, pipes escaped, on one line."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _code(text: object) -> str:
    """A code span for a table cell (pipes escaped: the table parser splits on them first)."""
    return "`" + " ".join(str(text).split()).replace("|", "\\|") + "`"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------- the CLI
def _cli() -> str:
    import typer.main

    from cellsynth.cli import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="cellsynth")
    out = [_cell(group.help or ""), ""]
    names = group.list_commands(root)
    summary = [
        [
            f"[`cellsynth {n}`](#cellsynth-{n})",
            _cell(group.get_command(root, n).get_short_help_str(limit=300)),
        ]
        for n in names
    ]
    out.append(_table(["command", "what it does"], summary))
    for name in names:
        command = group.get_command(root, name)
        ctx = command.context_class(command, info_name=name, parent=root)
        out += ["", f"## cellsynth {name}", ""]
        out += [_cell(paragraph) for paragraph in (command.help or "").strip().split("\n\n")]
        out[-1:] = [out[-1], ""] if out[-1] else [""]
        out += ["```text", command.get_usage(ctx).strip(), "```", ""]
        arguments = [p for p in command.params if p.param_type_name == "argument"]
        options = [p for p in command.params if p.param_type_name == "option"]
        for title, params in (("Arguments", arguments), ("Options", options)):
            if not params:
                continue
            rows = []
            for p in params:
                record = p.get_help_record(ctx)
                if record is None:  # hidden
                    continue
                rows.append([_code(record[0]), _cell(record[1])])
            out += [f"**{title}**", "", _table(["name", "description"], rows), ""]
        out.append(f"In the terminal: `cellsynth {name} --help`.")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ the models
def _model_names() -> list[str]:
    from cellsynth.models import available

    return list(available())


def _models() -> str:
    from cellsynth.models import available
    from cellsynth.models.registry import REGISTRY

    rows = []
    for name, doc in available().items():
        extra = REGISTRY[name].extra
        needs = f"`pip install 'cellsynth[{extra}]'`" if extra else ""
        rows.append([f"[`{name}`](#{name})", _cell(doc.replace("``", "`")), needs])
    return _table(["model", "what it is", "extra install"], rows) + "\n"


def _params(model: str) -> str:
    from cellsynth.models.registry import REGISTRY

    if model not in REGISTRY:
        raise KeyError(f"no registered model {model!r}")
    rows = [
        [_code(r["name"]), _code(r["default"]), _cell(r["accepts"]), _cell(r["help"])]
        for r in REGISTRY[model].param_spec.table()
    ]
    table = _table(["name", "default", "accepts", "what it does"], rows)
    # a collapsed admonition: the section stays readable, the table is one click away
    title = f'??? note "All parameters of `{model}` (`cellsynth models --params {model}`)"'
    return title + "\n\n" + "\n".join("    " + line for line in table.split("\n")) + "\n"


# ----------------------------------------------------------------------------------------- the metrics
_BETTER = {"minimize": "lower", "maximize": "higher"}


def _families() -> list[str]:
    from cellsynth.metrics.evaluation import load_families

    return list(load_families())


def _metrics(family: str) -> str:
    from cellsynth.metrics.evaluation import available_metrics

    infos = [info for info in available_metrics().values() if info.family == family]
    if not infos:
        raise KeyError(f"no registered metric of family {family!r}")
    rows = []
    for info in infos:
        better = _BETTER.get(info.direction) or f"closest to {info.target:g}"
        notes = []
        if info.needs_train:
            notes.append("needs `--train`")
        if info.per_type:
            notes.append("also per type")
        if info.reference:
            notes.append("reference: no verdict")
        rows.append([_code(info.name), better, ", ".join(notes), _cell(info.description)])
    return _table(["metric", "better", "notes", "what it measures"], rows) + "\n"


def _checks() -> str:
    from cellsynth.metrics.verdicts import CHECKS

    rows = []
    for name, c in CHECKS.items():
        cmp_bad, cmp_good = (">", "≤") if c.worse == "above" else ("<", "≥")
        good = f"{cmp_good} {c.good:g}: {_cell(c.good_text)}"
        rows.append([_code(name), good, f"{cmp_bad} {c.bad:g}: {_cell(c.bad_text)}"])
    return _table(["metric", "good", "bad"], rows) + "\n"


def _settings() -> str:
    import json

    from cellsynth.metrics.evaluation import load_families
    from cellsynth.metrics.space import resolve_settings

    load_families()  # families declare their own settings when imported
    rows = [[_code(k), _code(json.dumps(v))] for k, v in resolve_settings().items()]
    return _table(["setting", "default"], rows) + "\n"


RENDERERS = {
    "cli": _cli,
    "models": _models,
    "params": _params,
    "metrics": _metrics,
    "checks": _checks,
    "settings": _settings,
}
