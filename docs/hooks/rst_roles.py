"""Griffe extension: Sphinx roles in docstrings (``:func:`~cellsynth.x.f```) become Markdown code spans.

The package's numpydoc docstrings use Sphinx cross-reference roles, which mkdocstrings would show
literally. A role's target becomes a code span: ``~a.b.f`` (tilde: the short name) becomes `` `f` ``,
``a.b.f`` becomes `` `a.b.f` ``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|obj|exc|const|term):`(?P<target>[^`]+)`")


def _code(match: re.Match) -> str:
    target = match.group("target").strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target}`"


class RstRoles(griffe.Extension):
    """Rewrite Sphinx roles in every loaded object's docstring."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = ROLE.sub(_code, obj.docstring.value)
