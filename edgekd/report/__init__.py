"""Reports: the JSON record of a run, its Markdown rendering and plots. Computes no metric of its own."""

from edgekd.report.build import build_report
from edgekd.report.markdown import render_markdown

__all__ = ["build_report", "render_markdown"]
