"""What the stages measure of one model, typed: :class:`ModelFigures` (the figures ``report.json`` carries per
model) and :class:`ModelMetrics` (what a :class:`~edgekd.artifacts.ModelArtifact` carries from stage to stage).

Each stage merges its figures into the model's :class:`ModelMetrics` (``ModelArtifact.updated``); report, CLI and
bundle read its fields. A stage's own bookkeeping beyond the typed fields (``members`` of an ensemble, the epoch a
distillation resumed from, ...) is kept as extra fields, so a ``run.json`` written by an earlier version loads and
writes back unchanged. Files a model is shipped as are not figures: they are the artifact's ``deploy_files``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekd.stage_record import Record


class ModelFigures(Record):
    """One model's figures (``None`` where the stage that measures one did not run)."""

    accuracy: float | None = None
    val_accuracy: float | None = None
    params: int | None = None
    macs: int | None = None
    size_mb: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    mean_ms: float | None = None
    peak_memory_mb: float | None = None
    threads: int | None = None
    estimate: bool | None = Field(default=None, description="True when latencies are estimated for another device.")
    parity_max_abs_diff: float | None = None
    precision: str | None = None
    quantization_reason: str | None = None
    task: str | None = Field(default=None, description="multi_label, regression, token_classification or "
                             "causal_lm (unset: single_label).")
    primary_metric: str | None = Field(default=None, description="The task's primary test metric (gates use it).")
    micro_f1: float | None = None
    macro_f1: float | None = None
    subset_accuracy: float | None = None
    val_micro_f1: float | None = None
    mse: float | None = None
    pearson: float | None = None
    spearman: float | None = None
    val_mse: float | None = None
    token_accuracy: float | None = Field(default=None, description="Token classification: tagged tokens right.")
    val_token_accuracy: float | None = None
    entity_micro_f1: float | None = Field(default=None, description="BIO tags: entity-level micro F1 (exact spans).")
    entity_precision: float | None = None
    entity_recall: float | None = None
    val_loss: float | None = Field(default=None, description="A causal LM's validation loss, nats per token.")
    perplexity: float | None = None
    time_to_first_token_ms: float | None = None
    per_token_p50_ms: float | None = None
    per_token_p90_ms: float | None = None
    tokens_per_second: float | None = None


class TrainingFigures(BaseModel):
    """How a ``teacher`` or ``distill`` stage's training went (a model it trained carries them)."""

    train_seconds: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = Field(default=None, description="The epoch whose weights were kept (by validation).")
    resumed_from_epoch: int | None = Field(default=None, description="0 unless training resumed from a checkpoint.")
    stopped_early: bool | None = None


class CompressionFigures(BaseModel):
    """What a ``prune``/``factorize`` or ``quantize`` stage changed, relative to the model it started from."""

    params_ratio: float | None = None
    macs_ratio: float | None = None
    quantization_speedup: float | None = Field(default=None, description="The kept variant's speed over FP32's.")


class ModelMetrics(ModelFigures, TrainingFigures, CompressionFigures):
    """Everything the stages so far measured of one model: the report's figures, the training and compression
    figures, the export's ``opset``, the profile's ``budget_verdict``, and any further figure of a stage as an
    extra field (see the module docstring).

    Dict-style reads (``metrics["accuracy"]``, ``metrics.get("params")``, ``"mse" in metrics``) see the fields a
    stage set, as the plain dict of earlier versions did, so scripts written against the Python API keep working.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    opset: int | None = Field(default=None, description="The ONNX opset the model was exported with.")
    budget_verdict: str | None = Field(default=None, description="The profile stage's verdict on the budget.")
    search_candidate: str | None = Field(default=None, description="The search candidate the model is (its label).")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelMetrics:
        """The metrics of a ``run.json``/``stage.json`` model record (its ``metrics`` object)."""
        return cls.model_validate(dict(data))

    @classmethod
    def problem(cls, data: Mapping[str, Any]) -> str | None:
        """Why a stored ``metrics`` object does not read as :class:`ModelMetrics` (``accuracy: Input should be a valid
        number``, its first bad field), or None when it does."""
        try:
            cls.from_json(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            return f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        return None

    def to_json(self) -> dict[str, Any]:
        """The fields stages set, as written to ``stage.json`` (the inverse of :meth:`from_json`)."""
        return self.model_dump(exclude_unset=True)

    def merged(self, figures: Mapping[str, Any]) -> ModelMetrics:
        """A copy with ``figures`` set (a later stage's figure replaces an earlier one)."""
        return ModelMetrics.from_json({**self.to_json(), **figures})

    def figures(self) -> ModelFigures:
        """The figures ``report.json`` carries of this model."""
        return ModelFigures.model_validate(self.model_dump(include=set(ModelFigures.model_fields), exclude_unset=True))

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The figure ``key`` if a stage set it, else ``default``."""
        return self.to_json().get(key, default)

    def keys(self) -> Iterator[str]:
        """The names of the figures stages set."""
        return iter(self.to_json())

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()
