"""The typed record the ``dataset_distill`` stage writes into its ``stage.json`` metrics: the learnt set (its file,
method, size and the time it took), how every training set scored, the method's own details and the CPU.

:func:`read_dataset_distill_record` reads it back with one clear line when malformed; ``report.json`` keeps
part of it per stage (:class:`~edgekd.report.record.DatasetDistillRun`).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from edgekd.profile.cpu import CpuInfo
from edgekd.stage_record import FrozenRecord, read_stage_record


class StepsTried(FrozenRecord):
    """One length the full training set was trained for, and the validation accuracy the model reached."""

    steps: int
    validation_accuracy: float


class SetScore(FrozenRecord):
    """Test accuracies of fresh models trained on one set alone, with their mean and standard deviation."""

    mean: float
    std: float
    accuracies: list[float]
    steps: int | None = Field(default=None, description="Training steps of each model (records before edgekd kept "
                              "them lack it).")
    draws: int | None = Field(default=None, description="Random real subsets drawn (random_real).")
    kind: str | None = Field(default=None, description="The coreset's selection (coreset: herding or k_center).")
    examples: int | None = Field(default=None, description="Size of the full training set (full).")
    steps_tried: list[StepsTried] | None = Field(
        default=None, description="full: each length tried, doubling while validation accuracy rose; 'steps' is "
        "the best's.")


class LearntSet(FrozenRecord):
    """What report.json keeps of a ``dataset_distill`` stage: the learnt set and how each training set scored (by
    set: ``synthetic`` and, with baselines, ``random_real``, ``coreset``, ``full``)."""

    method: str
    images_per_class: int
    examples: int
    distill_seconds: float
    synthetic_set: str = Field(description="The .npz set, relative to the run directory.")
    accuracy: dict[str, SetScore]


class DatasetDistillRecord(LearntSet):
    """The ``dataset_distill`` stage's record: the learnt set, the method's own details (e.g. its loss curve) and
    the CPU it was learnt on."""

    details: dict[str, Any]
    cpu: CpuInfo


def read_dataset_distill_record(record: dict[str, Any]) -> DatasetDistillRecord:
    """The ``dataset_distill`` stage ``record``'s metrics as a :class:`DatasetDistillRecord`; a malformed one raises
    a one-line :class:`~edgekd.errors.StorageError` naming its ``stage.json`` and the first bad field."""
    return read_stage_record(DatasetDistillRecord, record)
