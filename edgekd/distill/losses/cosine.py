"""DistilBERT: cosine alignment of the last hidden states."""

from __future__ import annotations

from typing import ClassVar, Literal

from edgekd.distill.losses.base import WeightedLoss
from edgekd.distill.losses.hidden import HiddenStateDistillationLoss
from edgekd.distill.outputs import ModelInfo


class CosineLoss(WeightedLoss):
    """DistilBERT: cosine alignment of the last hidden states."""

    needs: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    kind: Literal["cosine"]


class CosineDistillationLoss(HiddenStateDistillationLoss):
    """DistilBERT (Sanh et al., 2019) cosine loss: ``CosineEmbeddingLoss`` with target +1 between the
    last hidden states, i.e. the mean of ``1 − cos(student, teacher)`` over real tokens.

    Widths that differ get a learned projection: add this module's ``parameters()`` to the optimizer.
    """

    config_model = CosineLoss

    def __init__(self, student_layers: int, teacher_layers: int, student_hidden: int, teacher_hidden: int) -> None:
        super().__init__([(student_layers, teacher_layers)], student_hidden, teacher_hidden, "cosine")

    @classmethod
    def from_config(cls, config: CosineLoss, student: ModelInfo, teacher: ModelInfo) -> CosineDistillationLoss:
        return cls(student.layers, teacher.layers, student.hidden, teacher.hidden)
