"""Sequence-level and on-policy distillation of causal LMs: losses computed on other batches than the corpus's.

- ``sequence_kd`` (Kim & Rush 2016): next-token cross-entropy on the teacher's own greedy (or beam)
  continuations of prompts cut from the training text, generated once before training and cached
  (:mod:`edgekd.distill.sequence_kd`); only the generated positions count.
- ``on_policy`` (GKD, Agarwal et al. 2024; MiniLLM's reverse KL at ``beta: 1``): the generalized JSD
  between the student's and the teacher's next-token distributions on continuations the student samples
  itself (:mod:`edgekd.distill.on_policy`); ``student_fraction`` of the batches are student samples,
  the rest corpus windows.

Each config names the batches it trains on (``batches``); the causal-LM distill stage
(:class:`edgekd.distill.causal_lm_stage.GenerationObjective`) draws them and calls the loss on both
models' logits there, weighted like every other loss.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field
from torch import Tensor

from edgekd.config.base import PositiveFloat, PositiveInt
from edgekd.distill.losses.base import DistillationLoss, WeightedLoss, real_tokens
from edgekd.distill.on_policy import generalized_jsd
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.distill.sequence_kd import masked_cross_entropy


class SequenceKD(WeightedLoss):
    """Kim & Rush: train on the teacher's own continuations of ``prompts`` corpus prompts."""

    batches: ClassVar[str] = "teacher_outputs"

    kind: Literal["sequence_kd"]
    prompts: PositiveInt = Field(default=256, description="Prompts cut from the training text (seeded).")
    prompt_tokens: PositiveInt = 16
    new_tokens: PositiveInt = Field(default=48, description="Tokens the teacher generates after each prompt.")
    beams: PositiveInt = Field(default=1, description="1: greedy; more: beam search (Kim & Rush used beam 5).")


class SequenceKDLoss(DistillationLoss):
    """Next-token cross-entropy of the student on the teacher's generated tokens (the teacher's logits unused)."""

    config_model = SequenceKD

    @classmethod
    def from_config(cls, config: SequenceKD, student: ModelInfo, teacher: ModelInfo) -> SequenceKDLoss:
        return cls()

    @property
    def reads_teacher_logits(self) -> bool:
        """The teacher's tokens are the targets; its logits are not read."""
        return False

    def forward(self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor,
                mask: Tensor | None = None) -> Tensor:
        return masked_cross_entropy(student.logits, labels, real_tokens(mask, student.logits))


class OnPolicy(WeightedLoss):
    """GKD: the generalized JSD (``beta``) on the student's own samples for ``student_fraction`` of the batches."""

    batches: ClassVar[str] = "student_samples"

    kind: Literal["on_policy"]
    beta: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5, description="0: forward KL(teacher‖student); 1: reverse KL (MiniLLM); between: JSD_beta.")
    temperature: PositiveFloat = 1.0
    sample_temperature: PositiveFloat = Field(default=1.0, description="The student's sampling temperature.")
    student_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.5, description="GKD's lambda: the share of batches the student samples (the rest: corpus).")
    prompt_tokens: PositiveInt = 8
    new_tokens: PositiveInt = 24


class OnPolicyLoss(DistillationLoss):
    """The generalized JSD between student and teacher next-token distributions at the masked positions."""

    config_model = OnPolicy

    def __init__(self, beta: float, temperature: float) -> None:
        super().__init__()
        self.beta, self.temperature = beta, temperature

    @classmethod
    def from_config(cls, config: OnPolicy, student: ModelInfo, teacher: ModelInfo) -> OnPolicyLoss:
        return cls(config.beta, config.temperature)

    def forward(self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor,
                mask: Tensor | None = None) -> Tensor:
        return generalized_jsd(student.logits, teacher.logits, beta=self.beta, temperature=self.temperature,
                               mask=mask)
