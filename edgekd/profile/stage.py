"""The ``profile`` stage: time every exported model under the device profile and judge the student.

Each model also gets its MACs and parameters counted at the device's input shapes; the judged
model gets onnxruntime's per-operator profile (where its time goes). Several models are timed
together in interleaved rounds (:func:`edgekd.profile.bench.benchmark`), so that their latencies
compare models timed side by side, and the judged model's speed-up over each other model is
recorded with its interval (``speedup``).
"""

from __future__ import annotations

from typing import Any

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.config import is_corpus
from edgekd.profile.bench import benchmark, paired_speedup
from edgekd.profile.budget import judge, judged_role
from edgekd.profile.causal_lm_stage import run_causal_lm_profile
from edgekd.profile.config import ProfileStage
from edgekd.profile.macs import count_macs
from edgekd.profile.operators import profile_operators
from edgekd.profile.record import profile_record

#: Interleaved timing sessions per model when several are profiled (one model: one session).
ROUNDS = 4
#: The figures of each profiled model that go into its metrics (and so into the report).
MODEL_FIGURES = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_memory_mb", "size_mb", "threads", "estimate", "macs")


def run_profile(config: ProfileStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Profile each model that has an ONNX file; the student (or the only model) is judged."""
    if is_corpus(ctx.recipe.data):
        return run_causal_lm_profile(config, artifact, ctx)
    profiled = [role for role, m in artifact.models.items() if m.onnx is not None]
    judged = judged_role(profiled)
    paths = [ctx.resolve(artifact.get(role).onnx) for role in profiled]
    results = dict(zip(profiled, benchmark(paths, ctx.device, warmup=config.warmup, runs=config.runs,
                                           rounds=ROUNDS if len(paths) > 1 else 1), strict=True))
    metrics: dict[str, Any] = {}
    for role, path in zip(profiled, paths, strict=True):
        result = results[role]
        metrics[role] = {**result.to_json(), **count_macs(path, ctx.device.inputs).to_json()}
        if role == judged:
            metrics["budget"] = judge(result, ctx.device.budget).model_copy(update={"judged": role}).to_json()
            metrics[role] |= {"operators": [op.to_json() for op in profile_operators(path, ctx.device)],
                              "speedup": {other: paired_speedup(results[other], result).to_json()
                                          for other in profiled if other != role}}
    record = profile_record(metrics)
    verdict = record.budget.verdict if record.budget is not None else None
    for role, figures in record.models.items():
        measured = figures.model_dump(include=set(MODEL_FIGURES))
        artifact = artifact.with_model(artifact.get(role).updated(
            **measured, **({"budget_verdict": verdict} if role == judged else {})))
    return StageOutput(artifact=artifact, metrics=record.to_json())
