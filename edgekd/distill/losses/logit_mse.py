"""Tang et al. (2019): mean squared error between the logits."""

from __future__ import annotations

from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.losses.base import DistillationLoss, WeightedLoss
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.task_heads import tagged


class LogitMSELoss(WeightedLoss):
    """Tang et al.: mean squared error between student and teacher logits."""

    kind: Literal["logit_mse"]


class LogitMSEDistillationLoss(DistillationLoss):
    """Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks":
    mean squared error between student and teacher logits.

    The paper can mix it with cross-entropy on hard labels; add ``hinton`` with ``alpha: 0`` for that
    (on an augmented transfer set the cross-entropy counts only the labelled sentences). For token
    classification only the tagged tokens count.
    """

    config_model = LogitMSELoss

    @classmethod
    def from_config(cls, config: Any, student: ModelInfo, teacher: ModelInfo) -> LogitMSEDistillationLoss:
        return cls()

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        student_logits, _, teacher_logits = tagged(student.logits, labels, teacher.logits)
        return F.mse_loss(student_logits, teacher_logits) if len(student_logits) else student_logits.sum()
