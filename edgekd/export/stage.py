"""The ``export`` stage: every model with weights → ONNX, checked against PyTorch."""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.catalog import load_export_target
from edgekd.config import ExportStage
from edgekd.data import load_dataset
from edgekd.export.onnx_export import export_onnx
from edgekd.models import build_model, load_weights, spec_for_role

#: Test examples used for the parity check (several batches of real inputs).
PARITY_SAMPLES = 64


def run_export(config: ExportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Export the teacher and the student (whichever have weights) with the recipe's export target."""
    target = load_export_target(config.target)
    data = load_dataset(ctx.recipe.data, ctx.seed)
    sample = data.x_test[:PARITY_SAMPLES]
    metrics = {"target": target.model_dump(mode="json")}
    for role, model_artifact in artifact.models.items():
        if model_artifact.weights is None:
            continue
        model = build_model(spec_for_role(ctx.recipe, role), data.input_shape, data.num_classes)
        load_weights(model, ctx.resolve(model_artifact.weights))
        result = export_onnx(model, sample, ctx.path(f"{role}.onnx"), target)
        metrics[role] = {**result.to_json(), "path": ctx.ref(f"{role}.onnx")}
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ctx.ref(f"{role}.onnx"),
            size_mb=result.size_mb,
            parity_max_abs_diff=result.parity.max_abs_diff,
            opset=result.opset,
        ))
    return StageOutput(artifact=artifact, metrics=metrics)
