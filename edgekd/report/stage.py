"""The ``report`` stage: write report.json, report.md and the plot to the run directory."""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.atomic import write_json, write_text
from edgekd.config import ReportStage
from edgekd.profile.cpu import detect_cpu
from edgekd.report.build import build_report
from edgekd.report.markdown import render_markdown
from edgekd.report.plots import plot_accuracy_latency

PLOT_FILE = "accuracy_vs_latency.png"


def run_report(_config: ReportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Build the report from the earlier stages' records; files go to the top of the run directory."""
    report = build_report(ctx.recipe, ctx.device, artifact, list(ctx.previous), detect_cpu().to_json())
    plot = plot_accuracy_latency(report, ctx.run_dir / PLOT_FILE)
    write_json(ctx.run_dir / "report.json", report)
    write_text(ctx.run_dir / "report.md", render_markdown(report, plot.name if plot else None))
    files = ["report.json", "report.md"] + ([PLOT_FILE] if plot else [])
    return StageOutput(artifact=artifact, metrics={"budget_verdict": report["budget"]["verdict"], "files": files})
