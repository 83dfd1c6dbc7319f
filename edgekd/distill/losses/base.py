"""What every distillation loss shares: the config base, the ``nn.Module`` base and tensor helpers.

A loss is called as ``loss(student, teacher, labels, mask)``: the two models'
:class:`~edgekd.distill.outputs.ModelOutputs`, the hard labels ``[B]`` (``UNLABELLED`` for a
transfer set's augmented examples, which only the teacher labels) and the attention mask
``[B, T]`` (1 for real tokens; ``None`` when every position is real). Padded positions never count
in a token-level loss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.config.base import PositiveFloat, StrictModel
from edgekd.data.examples import UNLABELLED
from edgekd.distill.layer_map import LayerPairs
from edgekd.distill.outputs import ModelInfo, ModelOutputs

#: Probabilities are clamped to this before taking logarithms.
EPS = 1e-12


class WeightedLoss(StrictModel):
    """What every distillation loss has: how much it counts in the stage's weighted sum."""

    needs: ClassVar[frozenset[str]] = frozenset()
    """What the loss compares beyond logits (``hidden_states``, ``attentions``, ``qkv``)."""

    weight: PositiveFloat = 1.0


class DistillationLoss(nn.Module, ABC):
    """Base of every loss: ``forward(student, teacher, labels, mask) -> scalar``.

    A concrete loss sets ``config_model`` (its recipe config, a :class:`WeightedLoss` with a
    ``kind`` tag); its ``kind`` and ``needs`` (the outputs beyond logits it reads, to pass to
    :func:`~edgekd.distill.outputs.forward_outputs`) are the config's.
    """

    config_model: ClassVar[type[WeightedLoss]]
    kind: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_model" in cls.__dict__:
            cls.kind = cls.config_model.model_fields["kind"].annotation.__args__[0]
            cls.needs = cls.config_model.needs

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, student: ModelInfo, teacher: ModelInfo) -> DistillationLoss:
        """Build the loss for ``config`` (this class's config model) and the two models' sizes."""

    @abstractmethod
    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """The scalar loss of one batch."""

    @property
    def reads_teacher_logits(self) -> bool:
        """Whether :meth:`forward` reads the teacher's logits; a caller may skip the teacher's forward pass for a
        loss that does not (and pass any tensor of the student's shape)."""
        return True

    def teacher_layers(self) -> dict[str, set[int]]:
        """The teacher outputs this loss reads: output kind → indices into that tuple of :class:`ModelOutputs`."""
        return {}


def masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where the boolean ``keep`` (broadcast to ``values``) is true."""
    keep = keep.expand_as(values)
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


def labelled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the rows that have a label; rows labelled ``UNLABELLED`` (Tang et
    al.'s augmented sentences, which only the teacher labels) do not count. 0 when no row has one."""
    total = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="sum")
    return total / (labels != UNLABELLED).sum().clamp_min(1)


def real_tokens(mask: Tensor | None, like: Tensor) -> Tensor:
    """``mask`` as booleans ``[B, T]``; all true when ``None``. ``like`` is ``[B, ..., T, X]``."""
    if mask is None:
        return torch.ones(like.shape[0], like.shape[-2], dtype=torch.bool, device=like.device)
    return mask.bool()


def row_kl(log_teacher: Tensor, log_student: Tensor, keys: Tensor) -> Tensor:
    """KL(teacher ‖ student) of each row of distributions over the last axis, summed over kept ``keys``."""
    terms = log_teacher.exp() * (log_teacher - log_student)
    return torch.where(keys, terms, 0.0).sum(-1)


def projection(student_hidden: int, teacher_hidden: int) -> nn.Module:
    """A learned map to the teacher's width (FitNets' regressor), or identity when widths agree."""
    return nn.Identity() if student_hidden == teacher_hidden else nn.Linear(student_hidden, teacher_hidden)


class SoftenedMixLoss(DistillationLoss):
    """Base of the losses that mix a temperature-softened teacher term with a hard-target term by ``alpha``
    (Hinton's and its per-token form): the two settings, checked, and read from the config."""

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: Any, student: ModelInfo, teacher: ModelInfo) -> SoftenedMixLoss:
        return cls(config.temperature, config.alpha)

    @property
    def reads_teacher_logits(self) -> bool:
        """At ``alpha`` 0 only the hard-target term is left."""
        return self.alpha > 0


class HiddenPairsLoss(DistillationLoss):
    """Compares hidden states of mapped ``(student_layer, teacher_layer)`` pairs, averaged over pairs.

    When the widths differ each pair gets its own trainable ``nn.Linear(student_hidden,
    teacher_hidden)`` applied to the student's states (``self.projections``).
    """

    needs = frozenset({"hidden_states"})

    def __init__(self, pairs: LayerPairs, student_hidden: int, teacher_hidden: int) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.projections = nn.ModuleList(projection(student_hidden, teacher_hidden) for _ in self.pairs)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        s_states, t_states = student.require("hidden_states"), teacher.require("hidden_states")
        distances = [
            self.distance(project(s_states[s]), t_states[t], mask)
            for (s, t), project in zip(self.pairs, self.projections, strict=True)
        ]
        return torch.stack(distances).mean()

    def teacher_layers(self) -> dict[str, set[int]]:
        return {"hidden_states": {t for _, t in self.pairs}}

    @abstractmethod
    def distance(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        """The loss between one pair of ``[B, T, D]`` states (the student's already projected)."""
