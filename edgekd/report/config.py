"""Settings of the ``report`` stage."""

from __future__ import annotations

from typing import Literal

from edgekd.config.base import StrictModel
from edgekd.stage_kind import ALL_FIELDS, StageKind


class ReportStage(StrictModel):
    """Write report.json, report.md, report.html and their plots to the run directory."""

    stage: Literal["report"] = "report"


REPORT = StageKind(ReportStage, "edgekd.report.stage:run_report", reads=ALL_FIELDS, uses_device=True,
                   cacheable=False, repeatable=True)
KINDS = (REPORT,)
