"""The evaluation report: one self-contained HTML file of tables and figures (:func:`write_report`)."""

from __future__ import annotations

from .html import overall_verdict, write_report

__all__ = ["overall_verdict", "write_report"]
