"""The documentation site: `mkdocs build --strict` passes, and the pages cover what the code registers.

One strict build (into a temporary folder) serves every test. Coverage is checked twice over: in the
built HTML (every model's section and parameters, every metric, every CLI command and option is on its
page) and in the hand-written Markdown (every model has its own section, and every metric is explained in
its family's section, not only listed by the generated table).
"""

from __future__ import annotations

import html
import importlib.util
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings")
pytest.importorskip("material")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = ("index", "install", "quickstart", "concepts", "models", "metrics", "cli", "api", "benchmarks",
         "architecture", "design-notes")  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"), "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def page_html(site: Path, page: str) -> str:
    return (site / page / "index.html").read_text(encoding="utf-8")


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def section_html(page: str, anchor: str) -> str:
    """The HTML from the heading with id ``anchor`` to the next heading of the same or a higher level."""
    m = re.search(rf'<h(?P<level>[1-6])[^>]*\bid="{re.escape(anchor)}"', page)
    assert m is not None, f"no heading with id {anchor!r}"
    level = int(m.group("level"))
    end = re.compile(rf"<h[1-{level}][\s>]").search(page, m.end())
    return page[m.start() : end.start() if end else len(page)]


def markdown_sections(path: Path) -> dict[str, str]:
    """``{anchor: text}`` of the hand-written sections of a page: from each heading ``## Title {#anchor}``
    (any level) to the next heading of the same or a higher level, generated-table markers left out."""
    text = re.sub(r"<!--.*?-->", "", path.read_text(encoding="utf-8"), flags=re.S)
    lines = text.splitlines()
    headings = [(i, len(m.group(1)), m.group(2)) for i, line in enumerate(lines)
                if (m := re.match(r"^(#{1,6}) .*?(?:\{#([\w-]+)\})?\s*$", line))]  # fmt: skip
    sections = {}
    for k, (i, level, anchor) in enumerate(headings):
        if anchor:
            end = next((j for j, lv, _ in headings[k + 1 :] if lv <= level), len(lines))
            sections[anchor] = "\n".join(lines[i + 1 : end])
    return sections


# ------------------------------------------------------------------------------------------ the build
def test_the_site_builds_with_every_page_and_no_marker_left(site):
    for page in PAGES:
        path = site / ("" if page == "index" else page) / "index.html"
        assert path.is_file(), f"{page} was not built"
        assert "<!-- cellsynth:" not in path.read_text(encoding="utf-8"), f"{page}: a marker was not replaced"
    api = text_of(page_html(site, "api"))
    documented = (
        "read",
        "split_by_type",
        "SyntheticCellModel",
        "evaluate",
        "select_seed_cells",
        "run_benchmark",
    )
    for name in documented:
        assert re.search(rf"\b{name}\b", api), f"the API page does not document {name}"
    assert ":class:" not in api and ":func:" not in api  # Sphinx roles are turned into code spans


# ----------------------------------------------------------------------------------------- the models
def test_every_registered_model_has_its_section_and_parameters(site):
    from cellsynth.models import available
    from cellsynth.models.registry import param_spec

    page = page_html(site, "models")
    written = markdown_sections(DOCS / "models.md")
    for name in available():
        assert len(written.get(name, "").split()) >= 40, f"models.md: no hand-written section {{#{name}}}"
        section = text_of(section_html(page, name))
        for p in param_spec(name):
            assert p.name in section, f"models page, {name}: parameter {p.name} is missing"


# ---------------------------------------------------------------------------------------- the metrics
def test_every_registered_metric_is_explained_in_its_family_section(site):
    from cellsynth.metrics.evaluation import available_metrics

    page = page_html(site, "metrics")
    written = markdown_sections(DOCS / "metrics.md")
    for name, info in available_metrics().items():
        assert f"`{name}`" in written.get(info.family, ""), (
            f"metrics.md: {name} is not explained in the section {{#{info.family}}}"
        )
        assert name in text_of(section_html(page, info.family)), f"metrics page: {name} is not in its table"


# -------------------------------------------------------------------------------------------- the CLI
def test_every_cli_command_and_option_is_in_the_reference(site):
    import typer.main

    from cellsynth.cli import app

    page = page_html(site, "cli")
    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="cellsynth")
    names = group.list_commands(root)
    assert {"fit", "sample", "evaluate", "models", "metrics"} <= set(names)
    for name in names:
        section = text_of(section_html(page, f"cellsynth-{name}"))
        for param in group.get_command(root, name).params:
            for opt in [*param.opts, *param.secondary_opts]:
                assert opt in section, f"CLI reference, cellsynth {name}: {opt} is missing"


# ------------------------------------------------------------------------------------------- the hook
def _hook():
    spec = importlib.util.spec_from_file_location("docs_reference_hook", DOCS / "hooks" / "reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_hook_warns_about_an_undocumented_model_or_family(caplog):
    from cellsynth.metrics.evaluation import load_families
    from cellsynth.models import available

    hook = _hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="page.md"))
    models = list(available())
    families = list(load_families())
    text = "\n".join(
        [f"<!-- cellsynth:params {m} -->" for m in models[1:]]
        + [f"<!-- cellsynth:metrics {f} -->" for f in families[:-1]]
    )
    with caplog.at_level(logging.WARNING):
        out = hook.on_page_markdown(text, page, None, None)
    warned = " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert f"model {models[0]!r} is registered but not documented" in warned
    assert f"metric family {families[-1]!r} is registered but not documented" in warned
    assert "cellsynth:" not in out  # every marker given was rendered
    assert "| `" in out


def test_the_hook_warns_about_an_unknown_model(caplog):
    hook = _hook()
    page = SimpleNamespace(file=SimpleNamespace(src_uri="page.md"))
    with caplog.at_level(logging.WARNING):
        out = hook.on_page_markdown("<!-- cellsynth:params no_such_model -->", page, None, None)
    assert "no_such_model" in " ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "cellsynth:params no_such_model" in out
