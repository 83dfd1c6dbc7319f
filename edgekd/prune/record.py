"""The typed record the ``prune``, ``factorize`` and ``hybrid`` stages write into their ``stage.json`` metrics
(under the role they compressed): the last step's figures, the first step's (``before``), every step
(``trajectory``), the ratios between them and what the stage kind adds (the prune ratio per step, the
factorized layers, or whether the hybrid's targets were reached).

A classifier's steps (:class:`StepRecord`) carry the task metric, accuracy and ONNX p50; a causal LM's
(:class:`LMStepRecord`) validation loss and per-token generation figures. :func:`read_compression_record`
reads either back from a stage record with one clear line when it is malformed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from edgekd.config.device import GenerationShape
from edgekd.errors import StorageError
from edgekd.profile.bench import Speedup
from edgekd.profile.generate import PerTokenSpeedup
from edgekd.stage_record import FullRecord, read_stage_record, stage_record_file

#: The stages whose record is a compression record (:func:`read_compression_stage`).
COMPRESS_STAGES = ("prune", "factorize", "hybrid")


class LayerRankRecord(FullRecord):
    """What factorization decided for one linear layer (``rank`` null: left as it was)."""

    name: str
    shape: tuple[int, int]
    rank: int | None
    energy_kept: float


class _Step(FullRecord):
    """What every step of a schedule records (step 0: before any change)."""

    step: int
    params: int
    macs: int
    parity_max_abs_diff: float | None = None
    speedup: Speedup | None = Field(
        default=None, description="Speed-up over step 0 with its interval, from the interleaved timing.")


class StepRecord(_Step):
    """A classifier's figures at one step of the schedule."""

    metric: str = Field(description="The task's primary metric (accuracy, micro_f1, mse, token_accuracy).")
    score: float
    val_score: float
    accuracy: float | None
    val_accuracy: float | None
    figures: dict[str, Any]
    onnx_p50_ms: float | None = None


class LMStepRecord(_Step):
    """A causal LM's figures at one step of the schedule (its speed-up is per generated token)."""

    val_loss: float
    perplexity: float
    time_to_first_token_ms: float | None = None
    per_token_p50_ms: float | None = None
    per_token_p90_ms: float | None = None
    tokens_per_second: float | None = None
    speedup_range: PerTokenSpeedup | None = None


class Outcome(FullRecord):
    """How far the stage took the model, and what its kind adds."""

    params_ratio: float
    macs_ratio: float
    speedup_interval: Speedup | None
    ratio_per_step: float | None = Field(default=None, description="prune: the share removed at each step.")
    layers: list[LayerRankRecord] | None = Field(default=None, description="factorize: each linear layer's rank.")
    unchanged: str | None = Field(default=None, description="factorize: why no layer was factorized (the model is "
                                  "as it was; the run warned).")
    target_reached: bool | None = Field(default=None, description="hybrid: whether every target was met.")
    steps_run: int | None = Field(default=None, description="hybrid: prune-factorize-recover steps run.")
    shortfall: str | None = Field(default=None, description="hybrid: the targets missed, by how much and why the "
                                  "schedule stopped (the run warned).")
    prune_ratios: list[float] | None = Field(
        default=None, description="hybrid: the share pruned at each step (the last one's lands on a size target).")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the fields given (what the stage kind does not add is left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class CompressionRecord(Outcome, StepRecord):
    """A classifier's compression: the last step's figures, the first step's and every step's."""

    speedup: float | None = Field(description="The last step's speed-up over step 0 (speedup_interval: its interval).")
    before: StepRecord
    trajectory: list[StepRecord]
    accuracy_ratio: float | None
    metric_ratio: float | None


class LMCompressionRecord(Outcome, LMStepRecord):
    """A causal LM's compression: the last step's figures, the first step's and every step's."""

    speedup: float | None = Field(description="The last step's per-token speed-up over step 0.")
    before: LMStepRecord
    trajectory: list[LMStepRecord]
    val_loss_change: float
    generation: GenerationShape


def schedule_fields(snapshots: Sequence[_Step]) -> dict[str, Any]:
    """What every compression record says of its schedule's ``snapshots`` (step 0 first): the last step's figures,
    the first step's (``before``), every step, the parameter and MAC ratios and the last step's speed-up over
    step 0 (timed interleaved with it)."""
    before, after = snapshots[0], snapshots[-1]
    return after.to_json() | {
        "before": before.to_json(),
        "params_ratio": after.params / before.params,
        "macs_ratio": after.macs / before.macs,
        "speedup": after.speedup.ratio if after.speedup else None,
        "speedup_interval": after.speedup,
        "trajectory": [shot.to_json() for shot in snapshots],
    }


def read_compression_record(record: dict[str, Any], role: str) -> CompressionRecord | LMCompressionRecord:
    """The compression stage ``record``'s figures for ``role`` as a typed record (a causal LM's when its steps
    have a validation loss); a malformed one raises a one-line :class:`StorageError` naming the stage's
    ``stage.json`` and the first bad field."""
    figures = record["metrics"].get(role)
    if not isinstance(figures, dict):
        raise StorageError(f"{stage_record_file(record)}: metrics.{role}: missing")
    kind = LMCompressionRecord if "val_loss_change" in figures else CompressionRecord
    return read_stage_record(kind, record, role)


def read_compression_stage(record: dict[str, Any]) -> CompressionRecord | LMCompressionRecord:
    """The compression stage ``record``'s figures of the one model it compressed (its metrics' one role), as
    :func:`read_compression_record` reads them; metrics of no model, or of several, raise a one-line
    :class:`StorageError`."""
    roles = list(record["metrics"])
    if len(roles) != 1:
        raise StorageError(f"{stage_record_file(record)}: metrics: expected the figures of one model, found "
                           f"{len(roles)}")
    return read_compression_record(record, roles[0])
