"""The ``report`` stage: write report.json, report.md, report.html and the plots to the run directory."""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.report.config import ReportStage
from edgekd.report.write import write_run_report


def run_report(_config: ReportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Build the report from the earlier stages' records; files go to the top of the run directory.

    They are drawn and written in the stage's work directory first (see :func:`write_run_report`).
    """
    report = write_run_report(ctx.run_dir, ctx.recipe, ctx.device, artifact, list(ctx.previous),
                              staging=ctx.work_dir)
    return StageOutput(artifact=artifact, metrics={"budget_verdict": report.budget.verdict, "files": report.files})
