"""Hinton et al. (2015): softened logits plus hard labels."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor

from edgekd.config.base import PositiveFloat
from edgekd.distill.losses.base import SoftenedMixLoss, WeightedLoss
from edgekd.distill.outputs import ModelOutputs
from edgekd.task_heads import hard_loss, soft_loss, task_of


class HintonLoss(WeightedLoss):
    """Hinton et al.: ``alpha`` · T² · KL(soft teacher ‖ soft student) + (1 − alpha) · CE(hard labels)."""

    kind: Literal["hinton"]
    temperature: PositiveFloat = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.7


class HintonDistillationLoss(SoftenedMixLoss):
    """Hinton et al. (2015), "Distilling the Knowledge in a Neural Network":
    ``alpha · T² · KL(p_T^teacher ‖ p_T^student) + (1 − alpha) · CE(student, y)``.

    ``p_T`` are softmaxes at temperature ``T``; the T² factor keeps the soft-target gradients on
    the same scale as the hard-label ones when T changes. ``alpha = 0`` is plain supervised
    training, ``alpha = 1`` pure distillation. The cross-entropy averages over the labelled rows
    only (rows labelled ``UNLABELLED`` have no hard target). For multi-label and regression labels the
    soft and hard terms are the task's (:mod:`edgekd.task_heads`): teacher sigmoid targets and BCE, teacher
    values and MSE; for token classification, both terms per tagged token (logits ``[B, T, C]``).
    """

    config_model = HintonLoss

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return self.forward_logits(student.logits, teacher.logits, labels)

    def forward_logits(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """The loss on bare logit tensors ``[B, C]`` (for callers holding only logits)."""
        soft = soft_loss(student_logits, teacher_logits, self.temperature, task_of(labels), labels)
        return self.alpha * soft + (1.0 - self.alpha) * hard_loss(student_logits, labels)
