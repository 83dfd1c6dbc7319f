"""Reports: the JSON record of a run, its Markdown and HTML renderings, plots, and CPU benchmark reports.

Computes no metric of its own: everything comes from the stages' records (or the profiler, for ``bench``).
"""

from edgekd.report.build import build_report
from edgekd.report.write import rebuild_report, write_run_report

__all__ = ["build_report", "rebuild_report", "write_run_report"]
