"""The shape of the package: no import cycle among cellsynth modules, and no module too long to read.

The import graph is built from the source (nothing is imported): every ``import``/``from ... import``
of a cellsynth module counts, at any depth (inside functions too), except under ``if TYPE_CHECKING:``.
``from pkg import name`` is an import of ``pkg.name`` when that is a module, else of ``pkg``. Importing
``pkg.sub`` from outside ``pkg`` also runs ``pkg/__init__``, so it counts as an import of ``pkg`` too;
a package's ``__init__`` importing its own submodules is not a cycle by itself, a submodule importing
its package (or any A → B → A) is.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 450
LONG_BECAUSE = "Long because:"


# ----------------------------------------------------------------------------------------- the graph
def module_files(src: Path, package: str) -> dict[str, Path]:
    """``{dotted module name: file}`` of every module of ``package`` under ``src``."""
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(module named, names imported from it, line) of every import statement outside TYPE_CHECKING."""
    found: list[tuple[str, list[str], int]] = []
    here = module.split(".") if is_package else module.split(".")[:-1]

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((alias.name, [], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(src: Path, package: str, where: dict | None = None) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``; ``where`` receives ``{(a, b): "file:line"}``."""
    files = module_files(src, package)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: dict[str, int] = {}
        for target, names, line in _imported_names(tree, module, path.name == "__init__.py"):
            if target != package and not target.startswith(package + "."):
                continue
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in files]
            if len(submodules) < len(names) or not names:
                targets.setdefault(target, line)  # plain `import target`, or names defined in target
            for sub in submodules:
                targets.setdefault(sub, line)
        for target, line in list(targets.items()):
            parts = target.split(".")
            for i in range(1, len(parts)):
                parent = ".".join(parts[:i])
                if parent != package and not (module == parent or module.startswith(parent + ".")):
                    targets.setdefault(parent, line)  # importing pkg.sub from outside pkg runs pkg/__init__
        graph[module] = {t for t in targets if t in files and t != module}
        if where is not None:
            where.update({(module, t): f"{path.relative_to(src)}:{targets[t]}" for t in graph[module]})
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) per strongly connected group of modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The shortest cycle through the group's first module, by breadth-first search inside the group."""
    start = min(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")  # pragma: no cover


def long_modules(src: Path, package: str, max_lines: int = MAX_LINES) -> list[str]:
    """Modules over ``max_lines`` lines whose docstring has no line starting with ``Long because:``."""
    found = []
    for module, path in module_files(src, package).items():
        text = path.read_text(encoding="utf-8")
        n = len(text.splitlines())
        if n <= max_lines:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        if not any(line.strip().startswith(LONG_BECAUSE) for line in doc.splitlines()):
            found.append(f"{module} ({n} lines)")
    return found


def _cycles_message(cycles: list[list[str]], where: dict | None = None) -> str:
    def edge(a: str, b: str) -> str:
        return f" → {b}" + (f" ({where[a, b]})" if where else "")

    shown = [c[0] + "".join(edge(a, b) for a, b in itertools.pairwise(c)) for c in cycles]
    return "import cycles: " + "; ".join(shown)


# ----------------------------------------------------------------------------------------- cellsynth
def test_no_import_cycle_among_cellsynth_modules():
    where: dict[tuple[str, str], str] = {}
    graph = import_graph(SRC, "cellsynth", where)
    assert len(graph) > 20 and "cellsynth.data.readers" in graph  # the walk found the package
    cycles = find_cycles(graph)
    assert not cycles, _cycles_message(cycles, where)


def test_no_module_over_450_lines_without_a_reason():
    found = long_modules(SRC, "cellsynth")
    assert not found, (
        f"modules over {MAX_LINES} lines: {', '.join(found)} — split them, or say why in the module "
        f"docstring on a line starting with {LONG_BECAUSE!r}"
    )


# ------------------------------------------------------------------- the checks on a package made here
def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "fake" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_relative_import_is_found(tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "from .a import f\n",
            "a.py": "from .sub import b\n\ndef f():\n    return b\n",
            "sub/__init__.py": "",
            "sub/b.py": "def g():\n    from ..c import h\n    return h\n",
            "c.py": "import fake.a\n",
        },
    )
    where: dict[tuple[str, str], str] = {}
    graph = import_graph(src, "fake", where)
    assert graph["fake.a"] == {"fake.sub.b", "fake.sub"}  # a module, and the package it runs
    assert graph["fake.sub.b"] == {"fake.c"}
    cycles = find_cycles(graph)
    assert cycles == [["fake.a", "fake.sub.b", "fake.c", "fake.a"]]
    assert _cycles_message(cycles, where) == (
        "import cycles: fake.a → fake.sub.b (fake/a.py:1) → fake.c (fake/sub/b.py:2) → fake.a (fake/c.py:1)"
    )


def test_a_submodule_importing_its_own_package_is_a_cycle(tmp_path):
    src = write_package(
        tmp_path,
        {"__init__.py": "", "pkg/__init__.py": "from .x import X\n", "pkg/x.py": "from fake.pkg import Y\n"},
    )
    assert find_cycles(import_graph(src, "fake")) == [["fake.pkg", "fake.pkg.x", "fake.pkg"]]


def test_init_importing_its_submodules_and_type_checking_imports_are_not_cycles(tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "from . import a, b\nfrom .a import A\n",
            "a.py": "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from .b import B\n",
            "b.py": "import typing\nimport os\n\nfrom . import a\n\nif typing.TYPE_CHECKING:\n"
            "    from fake import b\nelse:\n    from .sub import helper\n",
            "sub/__init__.py": "",
            "sub/helper.py": "from ..a import A\n",
        },
    )
    graph = import_graph(src, "fake")
    assert graph["fake"] == {"fake.a", "fake.b"}
    assert graph["fake.a"] == set()
    assert graph["fake.b"] == {"fake.a", "fake.sub", "fake.sub.helper"}  # the else branch counts
    assert find_cycles(graph) == []


def test_long_modules_need_a_reason_in_their_docstring(tmp_path):
    body = "x = 1\n" * MAX_LINES
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "fits.py": "x = 1\n" * MAX_LINES,
            "long.py": '"""A module."""\n' + body,
            "explained.py": '"""A table.\n\nLong because: one generated lookup table.\n"""\n' + body,
            "mentioned.py": '"""Not Long because: only at a line start counts."""\n' + body,
        },
    )
    found = long_modules(src, "fake")
    assert found == [f"fake.long ({MAX_LINES + 1} lines)", f"fake.mentioned ({MAX_LINES + 1} lines)"]


@pytest.mark.parametrize("statement", ["import fake.a", "from fake import a", "from . import a"])
def test_every_way_of_naming_a_module_is_an_edge(tmp_path, statement):
    src = write_package(tmp_path, {"__init__.py": "", "a.py": "from .b import *\n", "b.py": statement + "\n"})
    assert find_cycles(import_graph(src, "fake")) == [["fake.a", "fake.b", "fake.a"]]
