"""The typed records the ``quantize`` stages write into their ``stage.json`` metrics, and each stage's decision as
``report.json`` lists it under ``quantization``.

A classifier's quantize record (:class:`QuantizeRecord`) has, per quantized model, every variant tried
(:class:`VariantRecord`: its file, latency, size, scores and speed-up over FP32), the decision and why, the INT8
settings and the graph fusions (:class:`QuantizedModel`). A causal LM's (:class:`LMQuantizeRecord`, with the
``generation`` timed) has the FP32 and INT8 KV-cache graphs' validation quality and generation figures
(:class:`LMVariantRecord`). :func:`read_quantize_record` reads either back with one clear line when malformed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Discriminator, Field, RootModel, Tag, model_validator

from edgekd.config.device import GenerationShape
from edgekd.profile.bench import Speedup
from edgekd.profile.cpu import CpuInfo
from edgekd.profile.generate import GenerationFigures, PerTokenSpeedup
from edgekd.profile.record import generation_task
from edgekd.quantize.isa import Int8Settings
from edgekd.stage_record import FrozenRecord, FullRecord, RoleRecord, read_stage_record


class VariantRecord(FrozenRecord):
    """One candidate of a classifier: its file (``None``: not kept, for ``edgekd quantize``), latency, size and
    speed-up over FP32, and its scores: the primary metric under its own name (``accuracy``, ``mse``, ...) and as
    ``val_<metric>``, the agreement with FP32 on both splits (all null without labelled data)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float | None] = Field(init=False)

    precision: str
    path: str | None
    p50_ms: float
    size_mb: float
    metric: str = Field(description="The primary metric, the one gated.")
    agreement: float | None
    val_agreement: float | None
    metrics: dict[str, float] | None = Field(default=None, description="Every test metric, when there are several.")
    excluded_nodes: list[str]
    retries: int
    speedup: Speedup | None

    @model_validator(mode="after")
    def _scores_of_its_metric(self) -> VariantRecord:
        expected, found = {self.metric, f"val_{self.metric}"}, set(self.model_extra or {})
        if found != expected:
            unexpected = sorted(found - expected)
            raise ValueError(f"unexpected field {unexpected[0]}" if unexpected
                             else f"missing {sorted(expected - found)[0]} (the primary metric's score)")
        return self

    @property
    def score(self) -> float | None:
        """The primary metric on the test split (``None`` without labelled data)."""
        return (self.model_extra or {})[self.metric]

    @property
    def val_score(self) -> float | None:
        """The primary metric on the validation split (``None`` without labelled data)."""
        return (self.model_extra or {})[f"val_{self.metric}"]


class QuantizedModel(FrozenRecord):
    """Every candidate of one classifier model, the one kept and why, the INT8 settings and the fusions made."""

    variants: dict[str, VariantRecord]
    decision: str
    reason: str
    int8_settings: Int8Settings
    transformer: bool
    fusions: dict[str, int]
    calibration_set: str | None = Field(
        default=None, description="What static INT8 was calibrated on: the train split or a synthetic set's file.")
    calibration_examples: int | None = Field(
        default=None, description="How many examples calibrated static INT8 (whole batches, at most "
        "calibration_samples); None without calibration data.")


class WindowQuality(FullRecord):
    """A causal LM graph's quality on the validation windows (one call each, empty cache): its loss (nats per token)
    and perplexity, next-token accuracy, and its top-1 agreement with FP32 and largest logit difference."""

    val_loss: float
    perplexity: float
    next_token_accuracy: float
    next_token_agreement: float
    max_abs_logit_diff: float


class LMVariantRecord(FrozenRecord, WindowQuality, GenerationFigures):
    """One KV-cache graph of a causal LM (``fp32`` or INT8): its file, size, quality, generation figures, how
    often its greedy tokens are FP32's and its per-token speed-up over FP32 (paired, and its range)."""

    precision: str
    path: str
    size_mb: float
    greedy_tokens_as_fp32: float
    speedup: Speedup | None
    speedup_range: PerTokenSpeedup | None = None


class LMQuantizedModel(FrozenRecord):
    """Both graphs of one causal LM, the one kept and why, INT8's change in validation loss, the INT8 settings,
    and how many validation windows and prompt tokens measured them."""

    variants: dict[str, LMVariantRecord]
    decision: str
    reason: str
    loss_change: float
    int8_settings: Int8Settings
    windows: int
    prompt_tokens: int


class QuantizeRecord(RoleRecord):
    """The classifier quantize stage's metrics: the CPU and the device's ISA, and each quantized model by role."""

    __pydantic_extra__: dict[str, QuantizedModel] = Field(init=False)

    cpu: CpuInfo
    device_isa: list[str]


class LMQuantizeRecord(RoleRecord):
    """The causal-LM quantize stage's metrics: the CPU, the device's ISA, the generation timed and its rounds, and
    each quantized model by role."""

    __pydantic_extra__: dict[str, LMQuantizedModel] = Field(init=False)

    cpu: CpuInfo
    device_isa: list[str]
    generation: GenerationShape
    rounds: int


AnyQuantizeRecord = Annotated[Annotated[QuantizeRecord, Tag("classifier")]
                              | Annotated[LMQuantizeRecord, Tag("causal_lm")], Discriminator(generation_task)]


class QuantizeRecordOf(RootModel[AnyQuantizeRecord]):
    """Either quantize record, told apart by ``generation``."""


def quantize_record(metrics: dict[str, Any]) -> QuantizeRecord | LMQuantizeRecord:
    """The quantize stage's record of ``metrics``; a figure the stage did not mean to write fails here."""
    return QuantizeRecordOf.model_validate(metrics).root


def read_quantize_record(record: dict[str, Any]) -> QuantizeRecord | LMQuantizeRecord:
    """The quantize stage ``record``'s metrics as a typed record; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(QuantizeRecordOf, record).root


class QuantizationDecision(FullRecord):
    """What one quantize stage kept for one model (or for the whole stage when ``role`` is null), and why."""

    stage: str
    role: str | None = Field(description="The model the decision is about; null for a stage-wide decision.")
    decision: str | None
    reason: str | None

    def line(self) -> str:
        """The one sentence the report's notes show for this decision."""
        about = f" of the {self.role}" if self.role else ""
        return (f"Quantization{about}: {self.decision or 'no decision'}"
                + (f" — {self.reason}" if self.reason else ""))


def quantization_decisions(records: list[dict[str, Any]]) -> list[QuantizationDecision]:
    """The decision every quantize stage of ``records`` took for each model it quantized, read from its record."""
    return [QuantizationDecision(stage=record["stage"], role=role, decision=model.decision, reason=model.reason)
            for record in records if record["stage"] == "quantize"
            for role, model in read_quantize_record(record).models.items()]
