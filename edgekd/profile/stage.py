"""The ``profile`` stage: time every exported model under the device profile and judge the student."""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.config import ProfileStage
from edgekd.profile.budget import judge
from edgekd.profile.runner import profile_onnx

#: The model whose figures are judged against the device budget.
JUDGED_ROLE = "student"


def run_profile(config: ProfileStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Profile each model that has an ONNX file; the student (or the only model) is judged."""
    metrics: dict = {}
    profiled = [role for role, m in artifact.models.items() if m.onnx is not None]
    judged = JUDGED_ROLE if JUDGED_ROLE in profiled else profiled[-1]
    for role in profiled:
        model_artifact = artifact.get(role)
        result = profile_onnx(ctx.resolve(model_artifact.onnx), ctx.device, warmup=config.warmup,
                              runs=config.runs, show_progress=ctx.show_progress)
        metrics[role] = result.to_json()
        figures = {key: metrics[role][key] for key in
                   ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_memory_mb", "size_mb", "threads", "estimate")}
        if role == judged:
            verdict = judge(result, ctx.device.budget)
            metrics["budget"] = {"judged": role, **verdict.to_json()}
            figures["budget_verdict"] = verdict.verdict
        artifact = artifact.with_model(model_artifact.updated(**figures))
    return StageOutput(artifact=artifact, metrics=metrics)
