"""TinyBERT: the embedding-layer outputs."""

from __future__ import annotations

from typing import ClassVar, Literal

from edgekd.distill.losses.base import WeightedLoss
from edgekd.distill.losses.hidden import HiddenStateDistillationLoss
from edgekd.distill.outputs import ModelInfo


class EmbeddingLoss(WeightedLoss):
    """TinyBERT: the embedding-layer outputs (projected when widths differ)."""

    needs: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    kind: Literal["embedding"]
    metric: Literal["mse", "cosine"] = "mse"


class EmbeddingDistillationLoss(HiddenStateDistillationLoss):
    """TinyBERT (Jiao et al., 2020) embedding-layer loss: the hidden-state loss on ``hidden_states[0]``.

    Widths that differ get a learned projection: add this module's ``parameters()`` to the optimizer.
    """

    config_model = EmbeddingLoss

    def __init__(self, student_hidden: int, teacher_hidden: int, metric: str = "mse") -> None:
        super().__init__([(0, 0)], student_hidden, teacher_hidden, metric)

    @classmethod
    def from_config(
        cls, config: EmbeddingLoss, student: ModelInfo, teacher: ModelInfo
    ) -> EmbeddingDistillationLoss:
        return cls(student.hidden, teacher.hidden, config.metric)
