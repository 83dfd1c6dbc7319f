"""MiniLMv2 (Wang et al., 2021): query, key and value self-attention relations."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from edgekd.config.base import PositiveInt
from edgekd.distill.losses.base import DistillationLoss, WeightedLoss, masked_mean, real_tokens, row_kl
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.errors import ConfigError


class MiniLMLoss(WeightedLoss):
    """MiniLMv2 (not MiniLM v1's attention-and-value transfer): last-layer Q-Q, K-K and V-V relations.

    ``relations: mean`` averages the three relation losses; ``sum`` adds them as the paper's
    formula does (three times the mean: the same optimum, a larger effective weight).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"qkv"})

    kind: Literal["minilm"]
    relation_heads: PositiveInt = Field(default=8, description="Heads Q/K/V are split into for the relations.")
    relations: Literal["mean", "sum"] = Field(
        default="mean", description="Average the Q-Q, K-K and V-V losses, or sum them as the MiniLMv2 paper does.")


class MiniLMDistillationLoss(DistillationLoss):
    """MiniLMv2 (Wang et al., 2021), "Multi-Head Self-Attention Relation Distillation for Compressing
    Pretrained Transformers": last-layer query–query, key–key and value–value relations.

    Each model's last-layer Q, K and V ``[B, T, D]`` are split into ``relation_heads`` heads of
    width ``d_r = D / relation_heads``; a relation is ``softmax(X Xᵀ / √d_r)`` over real keys. The
    loss is KL(teacher ‖ student) per real query row, averaged over rows and heads, then averaged
    (``relations="mean"``) or summed as in the paper (``"sum"``) over the three relations. Student and
    teacher widths may differ, as long as both divide by ``relation_heads``.
    """

    config_model = MiniLMLoss

    def __init__(self, relation_heads: int, student_hidden: int, teacher_hidden: int,
                 relations: str = "mean") -> None:
        super().__init__()
        self.reduce = {"mean": torch.mean, "sum": torch.sum}[relations]
        for role, width in (("student", student_hidden), ("teacher", teacher_hidden)):
            if width % relation_heads:
                raise ConfigError(
                    f"loss 'minilm': the {role}'s hidden size {width} is not divisible by "
                    f"relation_heads={relation_heads}; pick a common divisor of {student_hidden} and {teacher_hidden}"
                )
        self.relation_heads = relation_heads

    @classmethod
    def from_config(cls, config: MiniLMLoss, student: ModelInfo, teacher: ModelInfo) -> MiniLMDistillationLoss:
        return cls(config.relation_heads, student.hidden, teacher.hidden, config.relations)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        s_qkv, t_qkv = student.require("qkv"), teacher.require("qkv")
        tokens = real_tokens(mask, s_qkv[0])
        keys = tokens[:, None, None, :]
        kls = [
            masked_mean(row_kl(self._relations(t, keys), self._relations(s, keys), keys), tokens[:, None, :])
            for s, t in zip(s_qkv, t_qkv, strict=True)
        ]
        return self.reduce(torch.stack(kls))

    def teacher_layers(self) -> dict[str, set[int]]:
        return {"qkv": {0, 1, 2}}

    def _relations(self, x: Tensor, keys: Tensor) -> Tensor:
        """Log-probabilities ``[B, R, T, T]`` of the scaled dot-product relations of ``x`` ``[B, T, D]``."""
        batch, length, width = x.shape
        head_width = width // self.relation_heads
        heads = x.reshape(batch, length, self.relation_heads, head_width).transpose(1, 2)
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(head_width)
        return scores.masked_fill(~keys, torch.finfo(scores.dtype).min).log_softmax(-1)
