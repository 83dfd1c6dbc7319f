"""Settings of the ``report`` stage."""

from __future__ import annotations

from typing import Literal

from edgekd.config.base import StrictModel
from edgekd.stage_kind import ALL_FIELDS, PlanState, StageKind


class ReportStage(StrictModel):
    """Write report.json, report.md, report.html and their plots to the run directory."""

    stage: Literal["report"] = "report"


def _check(_config: ReportStage, state: PlanState, where: str) -> None:
    if not state.seen:
        raise state.fail(f"{where}.stage", "'report' is the first stage, so it has nothing to report; put it "
                         "after the stages it reports on")


REPORT = StageKind(ReportStage, "edgekd.report.stage:run_report", reads=ALL_FIELDS, uses_device=True,
                   cacheable=False, repeatable=True, check=_check,
                   outputs=("report.json", "report.md", "report.html", "*.png"))
KINDS = (REPORT,)
