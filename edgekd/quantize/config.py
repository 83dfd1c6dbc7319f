"""Settings of the ``quantize`` stage (and of a search's INT8 candidates)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from edgekd.config.base import PositiveInt, StrictModel, TimedRuns, TimingRounds, WarmupRuns
from edgekd.stage_kind import PlanState, StageKind, measuring_host


class QuantizeSettings(StrictModel):
    """How models are quantized (onnxruntime INT8 / FP16 weights) and when a variant is kept.

    Every variant is evaluated on the validation split (the task's primary metric and agreement with
    FP32, :mod:`edgekd.quantize.quality`), timed against FP32 in the same run under the device profile,
    and kept only when it is faster (or fits a size budget FP32 misses) within ``tolerance``; otherwise
    FP32 is kept and the reason said.
    A variant named in ``modes`` that still misses the ``agreement`` gate after its retries stops the
    run with what to change; with ``auto`` it is only left out (the decision says why).
    """

    modes: list[Literal["auto", "dynamic", "static", "fp16"]] = Field(
        default=["auto"], min_length=1,
        description="Variants to try; auto picks by model kind, device ISA and precision preference.")
    calibration_samples: PositiveInt = Field(default=256, description="Training examples that calibrate static INT8.")
    calibration_methods: list[Literal["minmax", "entropy", "percentile"]] = Field(default=["minmax"], min_length=1)
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    tolerance: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.01, description="Largest drop of the task's primary validation metric vs FP32 a variant may "
        "have: absolute for accuracy and F1 (0.01 = 1 pt), relative for MSE (0.01 = 1% higher).")
    agreement: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.99, description="How closely a variant must follow FP32 on the validation split: the share of "
        "inputs (tokens) with FP32's class, label set or tag; for regression 1 − the relative prediction change.")
    max_retries: Annotated[StrictInt, Field(ge=0, le=10)] = Field(
        default=3, description="Retries excluding the most sensitive nodes (1, 2, 4, ... of them) from INT8.")
    min_speedup: Annotated[float, Field(ge=1)] = Field(
        default=1.05, description="How much faster than FP32 a variant must be to be kept for speed.")
    warmup: WarmupRuns = 20
    runs: TimedRuns = 200
    rounds: TimingRounds = Field(
        default=4, description="Timing sessions per variant, interleaved with the others'.")


class QuantizeStage(QuantizeSettings):
    """Quantize the exported models and keep a variant only where it pays (see :class:`QuantizeSettings`)."""

    stage: Literal["quantize"] = "quantize"
    roles: list[Literal["teacher", "student"]] = Field(default=["student"], min_length=1)
    calibration: Literal["train", "synthetic"] = Field(
        default="train", description="'synthetic': calibrate on an earlier dataset_distill stage's synthetic set.")
    loss_tolerance: Annotated[float, Field(ge=0)] = Field(
        default=0.02, description="Causal LMs: the largest validation loss increase (nats per token) INT8 may add "
        "over FP32; 0.02 is 2% more perplexity. A causal LM has no accuracy, so tolerance and agreement do not "
        "apply to it (its next-token agreement is recorded).")
    loss_windows: PositiveInt = Field(
        default=64, description="Causal LMs: data.context-long windows of validation text the FP32 and INT8 "
        "losses are measured on (spread over the text; fewer when the text is shorter).")


def _check_quantize(config: QuantizeStage, state: PlanState, where: str) -> None:
    """Every role to quantize is a model an earlier stage trains (so the export stage exported it); a synthetic
    calibration set is made by an earlier ``dataset_distill`` stage."""
    for index, role in enumerate(config.roles):
        if role not in state.trained:
            raise state.fail(f"{where}.roles[{index}]", f"no earlier stage makes the {role}, so there is no {role} "
                             "ONNX model to quantize")
    if config.calibration == "synthetic" and "dataset_distill" not in state.seen:
        raise state.fail(f"{where}.calibration", "'synthetic' needs a 'dataset_distill' stage before it (its "
                         "synthetic set calibrates static INT8)")


QUANTIZE = StageKind(
    QuantizeStage, "edgekd.quantize.stage:run_quantize", reads=("seed", "data"), uses_device=True,
    device_ignores=("description", "budget.p90_ms", "budget.peak_memory_mb", "budget.ms_per_token"),  # size alone
    extra_inputs=measuring_host, after=("export",), after_reason="it quantizes the ONNX files", check=_check_quantize,
    record="edgekd.quantize.record:read_quantize_record")
KINDS = (QUANTIZE,)
