"""The typed records the ``teacher`` and ``distill`` stages write into their ``stage.json`` metrics: the trained
model's figures under its role (``teacher``; ``student`` or ``assistant``) and, when it trained, each epoch
(``history``).

A classifier's figures are its task's test and validation metrics, its size and how training went, plus what
the stage adds (an ensemble teacher's ``members`` and ``ensemble_accuracy``; a distilled student's transfer
set and losses). A causal LM's (``task: causal_lm``) are its validation loss and perplexity, its vocabulary,
context and token counts. The same figures become the model's :class:`~edgekd.model_metrics.ModelMetrics`.
:func:`read_teacher_record` and :func:`read_distill_record` read them back with one clear line when malformed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator

from edgekd.model_metrics import ModelFigures, TrainingFigures
from edgekd.stage_record import FrozenRecord, read_stage_record


class EpochRecord(FrozenRecord):
    """One training epoch: its mean training loss, the validation figure epochs are judged by (named after it:
    ``val_accuracy``, ``val_loss``, ...) and the time since training started."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, float] = Field(init=False)

    epoch: int
    train_loss: float
    seconds: float


class TrainedFigures(FrozenRecord, ModelFigures, TrainingFigures):
    """A model the stage trained (or loaded): its test and validation figures, its size and how training went."""


class OnnxTeacherFile(FrozenRecord):
    """The ONNX file a teacher given as one (``arch: onnx``) was run from."""

    path: str
    sha256: str = Field(description="Of the file and its external data files.")
    inputs: list[str] = Field(description="The graph inputs fed, in the graph's order.")
    output: str = Field(description="The graph output read as the logits.")


class TeacherFigures(TrainedFigures):
    """A classifier teacher; an ensemble's figures are its first member's, with every member's and the
    ensemble's test accuracy; an ONNX teacher's, evaluated (not trained), with its file."""

    ensemble_accuracy: float | None = Field(default=None, description="An ensemble's weighted-vote test accuracy.")
    members: list[TrainedFigures] | None = Field(default=None, description="Each ensemble member's figures.")
    onnx: OnnxTeacherFile | None = Field(default=None, description="An ONNX teacher's file (arch: onnx).")


class DistillFigures(TrainedFigures):
    """A distilled classifier: its figures, the labelled examples, the transfer set (with augmented text) and
    the losses it was trained with."""

    labelled_examples: int
    transfer_set_size: int
    losses: list[str] = Field(description="The kinds of the stage's losses, in recipe order.")


class LMTrainedFigures(TrainedFigures):
    """A causal language model the stage trained (or loaded): validation loss, perplexity and its data."""

    task: Literal["causal_lm"]
    vocab_size: int
    context: int
    train_tokens: int
    validation_tokens: int


class LMDistillFigures(LMTrainedFigures):
    """A distilled causal LM: its figures, its losses and its loss on the teacher's continuations."""

    losses: list[str] = Field(description="The kinds of the stage's losses, in recipe order.")
    teacher_continuation_loss: dict[str, float] | None = Field(
        default=None, description="Nats per token on each sequence_kd loss's teacher continuations, by loss index.")


def _task(value: Any) -> str:
    """``causal_lm`` for a language model's figures, else ``classifier``."""
    task = value.get("task") if isinstance(value, dict) else getattr(value, "task", None)
    return "causal_lm" if task == "causal_lm" else "classifier"


AnyTeacherFigures = Annotated[Annotated[TeacherFigures, Tag("classifier")]
                              | Annotated[LMTrainedFigures, Tag("causal_lm")], Discriminator(_task)]
AnyDistillFigures = Annotated[Annotated[DistillFigures, Tag("classifier")]
                              | Annotated[LMDistillFigures, Tag("causal_lm")], Discriminator(_task)]


class TeacherRecord(FrozenRecord):
    """The teacher stage's metrics: the teacher's figures and, for a causal LM, its epochs (empty when loaded)."""

    teacher: AnyTeacherFigures
    history: list[EpochRecord] | None = None


class DistillRecord(FrozenRecord):
    """The distill stage's metrics: the trained model's figures under its role (``student`` or ``assistant``)
    and its epochs."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, AnyDistillFigures] = Field(init=False)

    history: list[EpochRecord]

    @model_validator(mode="after")
    def _one_model(self) -> DistillRecord:
        if len(self.model_extra or {}) != 1:
            raise ValueError(f"expected the figures of one model, found {len(self.model_extra or {})}")
        return self

    @property
    def role(self) -> str:
        """The role of the distilled model."""
        return next(iter(self.model_extra or {}))

    @property
    def figures(self) -> DistillFigures | LMDistillFigures:
        """The distilled model's figures."""
        return next(iter((self.model_extra or {}).values()))


def teacher_record(figures: dict[str, Any], history: list[dict[str, Any]] | None) -> TeacherRecord:
    """The teacher stage's record of ``figures`` (and its epochs, ``None`` when the stage records none)."""
    return TeacherRecord.model_validate({"teacher": figures} | ({} if history is None else {"history": history}))


def distill_record(role: str, figures: dict[str, Any], history: list[dict[str, Any]]) -> DistillRecord:
    """The distill stage's record of the model trained as ``role``."""
    return DistillRecord.model_validate({role: figures, "history": history})


def read_teacher_record(record: dict[str, Any]) -> TeacherRecord:
    """The teacher stage ``record``'s metrics as a :class:`TeacherRecord`; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(TeacherRecord, record)


def read_distill_record(record: dict[str, Any]) -> DistillRecord:
    """The distill stage ``record``'s metrics as a :class:`DistillRecord`; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(DistillRecord, record)
