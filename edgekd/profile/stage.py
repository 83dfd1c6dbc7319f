"""The ``profile`` stage: time every exported model under the device profile and judge the student.

Each model also gets its MACs and parameters counted at the device's input shapes; the judged
model gets onnxruntime's per-operator profile (where its time goes).
"""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.profile.budget import judge
from edgekd.profile.config import ProfileStage
from edgekd.profile.macs import count_macs
from edgekd.profile.operators import profile_operators
from edgekd.profile.runner import profile_onnx

#: The model whose figures are judged against the device budget.
JUDGED_ROLE = "student"


def judged_role(roles: list[str]) -> str:
    """The model judged against the budget (the final model of a run): the student, else the last one."""
    return JUDGED_ROLE if JUDGED_ROLE in roles else roles[-1]


def run_profile(config: ProfileStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Profile each model that has an ONNX file; the student (or the only model) is judged."""
    metrics: dict = {}
    profiled = [role for role, m in artifact.models.items() if m.onnx is not None]
    judged = judged_role(profiled)
    for role in profiled:
        model_artifact = artifact.get(role)
        path = ctx.resolve(model_artifact.onnx)
        result = profile_onnx(path, ctx.device, warmup=config.warmup, runs=config.runs,
                              show_progress=ctx.show_progress)
        metrics[role] = {**result.to_json(), **count_macs(path, ctx.device.inputs).to_json()}
        figures = {key: metrics[role][key] for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_memory_mb",
                                                       "size_mb", "threads", "estimate", "macs")}
        if role == judged:
            verdict = judge(result, ctx.device.budget)
            metrics["budget"] = {"judged": role, **verdict.to_json()}
            metrics[role]["operators"] = [op.to_json() for op in profile_operators(path, ctx.device)]
            figures["budget_verdict"] = verdict.verdict
        artifact = artifact.with_model(model_artifact.updated(**figures))
    return StageOutput(artifact=artifact, metrics=metrics)
