"""The ``export`` stage: every model with weights → ONNX, checked against PyTorch on real test inputs and at the
device profile's input shapes, which the later stages feed (:mod:`edgekd.export.later_shapes`).

A causal language model is exported with its KV cache instead (:mod:`edgekd.export.causal_lm_stage`).
"""

from __future__ import annotations

from typing import Any

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.config import is_corpus
from edgekd.data.task_data import prepare_task_data
from edgekd.export.causal_lm_stage import run_causal_lm_export
from edgekd.export.config import ExportStage, load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.ort_format import convert_to_ort, numpy_feeds
from edgekd.export.record import export_record
from edgekd.models.architectures import spec_class
from edgekd.models.task_model import TaskModel

#: Test examples used for the parity check (one batch of real inputs, plus batches of 1 and 7).
PARITY_SAMPLES = 64


def run_export(config: ExportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Export every model that has weights (teacher, assistant, student) with the recipe's export target."""
    if is_corpus(ctx.recipe.data):
        return run_causal_lm_export(config, artifact, ctx)
    target = load_export_target(config.target)
    exported: dict[str, dict[str, Any]] = {}
    for role, model_artifact in artifact.models.items():
        if model_artifact.weights is None:
            continue
        model = TaskModel.load(ctx.resolve(model_artifact.weights))
        if not spec_class(model.spec["arch"]).trainable:
            continue  # a fixed model given as its ONNX file: the teacher stage kept a copy as its ONNX model
        data = prepare_task_data(ctx.recipe.data, ctx.seed, tokenizer=model.tokenizer)
        _, sample, _ = next(data.test.batches(PARITY_SAMPLES, shuffle=False))
        result = export_onnx(model.module, sample, ctx.path(f"{role}.onnx"), target,
                             extra_dynamic_axes=model.signature.dynamic_axes(), shape=ctx.device.inputs)
        exported[role] = {**result.to_json(), "path": ctx.ref(f"{role}.onnx")}
        ort_figures = {}
        if target.format == "ort":
            converted = convert_to_ort(ctx.path(f"{role}.onnx"), target, numpy_feeds(sample))
            exported[role]["ort"] = converted.to_json()
            ort_figures["deploy_files"] = converted.deploy_files(
                ctx.ref, f"{role}.onnx" if target.keep_onnx else None)
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ctx.ref(f"{role}.onnx"),
            size_mb=result.size_mb,
            parity_max_abs_diff=result.parity.max_abs_diff,
            opset=result.opset,
            **ort_figures,
        ))
    return StageOutput(artifact=artifact, metrics=export_record(target, exported).to_json())
