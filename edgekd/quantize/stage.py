"""The ``quantize`` stage: quantize each chosen model's ONNX file and carry the kept variant downstream."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.task_data import TaskData, prepare_task_data
from edgekd.errors import ConfigError
from edgekd.models.task_model import TaskModel
from edgekd.profile.cpu import detect_cpu, device_isa
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.model import quantize_model


def run_quantize(config: QuantizeStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Quantize ``config.roles``; each model's artifact then points at its kept variant.

    The kept variant's figures go into the model's metrics (``precision``, ``quantization_reason``,
    ``accuracy``, ``size_mb``), so later stages and the report describe the file that ships.
    """
    metrics: dict = {"cpu": detect_cpu().to_json(), "device_isa": device_isa(ctx.device)}
    for role in config.roles:
        model_artifact = artifact.models.get(role)
        if model_artifact is None or model_artifact.onnx is None:
            raise ConfigError(f"roles: the {role} has no exported ONNX model; list roles an earlier 'export' "
                              "stage exported")
        source = ctx.resolve(model_artifact.onnx)
        data = QuantData.from_dataset(_task_data(ctx, model_artifact.weights), config.calibration_samples,
                                      input_names=_graph_inputs(source))
        result = quantize_model(source, ctx.work_dir, role, data, config, ctx.device,
                                label=f"quantize {role} ({model_artifact.onnx})")
        ref = partial(_ref, source=source, source_ref=model_artifact.onnx, ctx=ctx)
        metrics[role] = result.to_json(ref)
        kept, fp32 = result.kept, result.fp32
        ctx.log.info("%s: %s", role, result.decision.reason)
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ref(kept.path),
            precision=kept.name,
            quantization_reason=result.decision.reason,
            accuracy=kept.accuracy,
            val_accuracy=kept.val_accuracy,
            fp32_accuracy=fp32.accuracy,
            size_mb=kept.size_mb,
            quantization_speedup=kept.speedup.ratio if kept.speedup else None,
        ))
    return StageOutput(artifact=artifact, metrics=metrics)


def _task_data(ctx: StageContext, weights: str | None) -> TaskData:
    """The recipe's data, tokenized with the model's own tokenizer for text models."""
    tokenizer = TaskModel.load(ctx.resolve(weights)).tokenizer if weights is not None else None
    return prepare_task_data(ctx.recipe.data, ctx.seed, tokenizer=tokenizer)


def _graph_inputs(path: Path) -> set[str]:
    import onnx

    return {value.name for value in onnx.load(str(path), load_external_data=False).graph.input}


def _ref(path: Path, *, source: Path, source_ref: str, ctx: StageContext) -> str:
    """The run-relative reference of a variant file: the export's own for FP32, else this stage's."""
    return source_ref if path == source else ctx.ref(path.name)
