"""The ``quantize`` stage: quantize each chosen model's ONNX file and carry the kept variant downstream."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.config import is_corpus
from edgekd.data.task_data import TaskData, prepare_task_data
from edgekd.dataset_distill.record import read_dataset_distill_record
from edgekd.distill.task_metrics import model_figures
from edgekd.models.task_model import TaskModel
from edgekd.profile.cpu import detect_cpu, device_isa
from edgekd.quantize.calibration import npz_calibration_feeds
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.exported import exported_model
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.model import quantize_model
from edgekd.quantize.record import quantize_record
from edgekd.quantize.variants import Variant
from edgekd.task_heads import PRIMARY_METRIC


def run_quantize(config: QuantizeStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Quantize ``config.roles``; each model's artifact then points at its kept variant.

    The kept variant's figures go into the model's metrics (``precision``, ``quantization_reason``,
    its task's test and validation metrics (:func:`~edgekd.distill.task_metrics.model_figures`), FP32's
    primary metric as ``fp32_<metric>``, ``size_mb``), so later stages and the report describe the file
    that ships. A causal language model is quantized by :mod:`edgekd.quantize.causal_lm`.
    """
    if is_corpus(ctx.recipe.data):
        from edgekd.quantize.causal_lm import run_causal_lm_quantize

        return run_causal_lm_quantize(config, artifact, ctx)
    metrics: dict[str, Any] = {"cpu": detect_cpu().to_json(), "device_isa": device_isa(ctx.device)}
    for role in config.roles:
        model_artifact = exported_model(artifact, role)
        source = ctx.resolve(model_artifact.onnx)
        data = QuantData.from_dataset(_task_data(ctx, model_artifact.weights), config.calibration_samples,
                                      eval_batch=ctx.device.inputs.batch, input_names=_graph_inputs(source))
        calibration_set = "train split"
        if config.calibration == "synthetic":
            synthetic = _synthetic_set(ctx)
            data = replace(data, calibration=npz_calibration_feeds(ctx.resolve(synthetic), config.calibration_samples))
            calibration_set = synthetic
        result = quantize_model(source, ctx.work_dir, role, data, config, ctx.device,
                                label=f"quantize {role} ({model_artifact.onnx})")
        ref = partial(_ref, source=source, source_ref=model_artifact.onnx, ctx=ctx)
        metrics[role] = result.to_json(ref) | {"calibration_set": calibration_set}
        kept, fp32 = result.kept, result.fp32
        ctx.log.info("%s: %s", role, result.decision.reason)
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ref(kept.path),
            precision=kept.name,
            quantization_reason=result.decision.reason,
            **kept_figures(kept, fp32),
            size_mb=kept.size_mb,
            quantization_speedup=kept.speedup.ratio if kept.speedup else None,
        ))
    return StageOutput(artifact=artifact, metrics=quantize_record(metrics).to_json())


def kept_figures(kept: Variant, fp32: Variant) -> dict[str, Any]:
    """The model metrics the kept variant's scores replace: its task's figures and FP32's primary metric
    (none without labelled data)."""
    if kept.metrics is None or kept.val_metrics is None:
        return {"accuracy": None, "val_accuracy": None, "fp32_accuracy": None}
    task = next(task for task, metric in PRIMARY_METRIC.items() if metric == kept.metric)
    return {**model_figures(task, kept.metrics, kept.val_metrics), f"fp32_{kept.metric}": fp32.score}


def _task_data(ctx: StageContext, weights: str | None) -> TaskData:
    """The recipe's data, tokenized with the model's own tokenizer for text models."""
    tokenizer = TaskModel.load(ctx.resolve(weights)).tokenizer if weights is not None else None
    return prepare_task_data(ctx.recipe.data, ctx.seed, tokenizer=tokenizer)


def _synthetic_set(ctx: StageContext) -> str:
    """The run-relative reference of the last ``dataset_distill`` stage's synthetic set (the plan checks one ran)."""
    return read_dataset_distill_record(
        next(r for r in reversed(ctx.previous) if r["stage"] == "dataset_distill")).synthetic_set


def _graph_inputs(path: Path) -> set[str]:
    import onnx

    return {value.name for value in onnx.load(str(path), load_external_data=False).graph.input}


def _ref(path: Path, *, source: Path, source_ref: str, ctx: StageContext) -> str:
    """The run-relative reference of a variant file: the export's own for FP32, else this stage's."""
    return source_ref if path == source else ctx.ref(path.name)
