"""The evaluation report: one self-contained HTML file of tables and figures (:func:`write_report`).

Its verdicts follow the evaluation's own policy (:mod:`cellsynth.metrics.verdicts`), re-exported here
as :func:`overall_verdict`.
"""

from __future__ import annotations

from ..metrics.verdicts import overall_verdict
from .html import write_report

__all__ = ["overall_verdict", "write_report"]
