"""Distillation losses, each a small ``nn.Module``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class HintonDistillationLoss(nn.Module):
    """Hinton et al. (2015): ``alpha · T² · KL(p_T^teacher ‖ p_T^student) + (1 − alpha) · CE(student, y)``.

    ``p_T`` are softmaxes at temperature ``T``; the T² factor keeps the soft-target gradients on
    the same scale as the hard-label ones when T changes. ``alpha = 0`` is plain supervised
    training, ``alpha = 1`` pure distillation.
    """

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        hard = F.cross_entropy(student_logits, labels)
        return self.alpha * soft + (1.0 - self.alpha) * hard
