"""Token-level (word-level) knowledge distillation for causal language models (Kim & Rush 2016, §3.1).

A generation loss (:data:`edgekd.distill.losses.registry.GENERATION_LOSSES`): it reads next-token
logits ``[B, T, V]`` and next-token targets ``[B, T]``, which the causal-LM distill stage provides.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from edgekd.config.base import PositiveFloat
from edgekd.distill.losses.base import SoftenedMixLoss, WeightedLoss, masked_mean, real_tokens
from edgekd.distill.outputs import ModelOutputs


class TokenKL(WeightedLoss):
    """``alpha`` · T² · KL(teacher ‖ student) per next token + (1 − alpha) · next-token CE on the corpus."""

    kind: Literal["token_kl"]
    temperature: PositiveFloat = 1.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.5


class TokenKLLoss(SoftenedMixLoss):
    """Word-level KD: at every position, the student's next-token distribution is pulled towards the
    teacher's (both softened by temperature ``T``, the KL scaled by T²), mixed with the corpus's own
    next token by ``alpha``. Positions whose ``mask`` is 0 (padding) count in neither term.
    """

    config_model = TokenKL

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """``student.logits`` and ``teacher.logits`` are ``[B, T, V]``; ``labels`` the next tokens ``[B, T]``."""
        s_logits, t_logits = student.logits, teacher.logits
        keep = real_tokens(mask, s_logits)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(s_logits / t, dim=-1), F.log_softmax(t_logits / t, dim=-1),
                      reduction="none", log_target=True).sum(-1)
        hard = F.cross_entropy(s_logits.flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        return self.alpha * t * t * masked_mean(kl, keep) + (1.0 - self.alpha) * masked_mean(hard, keep)
