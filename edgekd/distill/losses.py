"""Distillation losses, each a small ``nn.Module`` with one call signature.

Every loss is called as ``loss(student, teacher, labels, mask)``: the two models'
:class:`~edgekd.distill.outputs.ModelOutputs`, the hard labels ``[B]`` (``UNLABELLED`` for a
transfer set's augmented examples, which only the teacher labels) and the attention mask
``[B, T]`` (1 for real tokens; ``None`` when every position is real). Padded positions never count
in a token-level loss. The class attribute ``needs`` names what each loss reads beyond logits; pass
it to :func:`~edgekd.distill.outputs.forward_outputs`.

:func:`build_loss` makes a loss from its config through one registry (:data:`LOSSES`);
:class:`CombinedLoss` adds weighted losses. Losses comparing hidden states of different widths own a
learned projection: give the loss's ``parameters()`` to the optimizer together with the student's.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.config import (
    AttentionLoss,
    CosineLoss,
    EmbeddingLoss,
    HiddenLoss,
    HintonLoss,
    LossConfig,
    MiniLMLoss,
    PKDLoss,
)
from edgekd.data.examples import UNLABELLED
from edgekd.distill.layer_map import LayerPairs, map_layers
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.errors import ConfigError

#: Probabilities are clamped to this before taking logarithms.
_EPS = 1e-12


# --------------------------------------------------------------------------- shared helpers


def _masked_mean(values: Tensor, keep: Tensor) -> Tensor:
    """Mean of ``values`` over the entries where the boolean ``keep`` (broadcast to ``values``) is true."""
    keep = keep.expand_as(values)
    return torch.where(keep, values, 0.0).sum() / keep.sum().clamp_min(1)


def _labelled_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy averaged over the rows that have a label; rows labelled ``UNLABELLED`` (Tang et
    al.'s augmented sentences, which only the teacher labels) do not count. 0 when no row has one."""
    total = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="sum")
    return total / (labels != UNLABELLED).sum().clamp_min(1)


def _real_tokens(mask: Tensor | None, like: Tensor) -> Tensor:
    """``mask`` as booleans ``[B, T]``; all true when ``None``. ``like`` is ``[B, ..., T, X]``."""
    if mask is None:
        return torch.ones(like.shape[0], like.shape[-2], dtype=torch.bool, device=like.device)
    return mask.bool()


def _row_kl(log_teacher: Tensor, log_student: Tensor, keys: Tensor) -> Tensor:
    """KL(teacher ‖ student) of each row of distributions over the last axis, summed over kept ``keys``."""
    terms = log_teacher.exp() * (log_teacher - log_student)
    return torch.where(keys, terms, 0.0).sum(-1)


def _projection(student_hidden: int, teacher_hidden: int) -> nn.Module:
    """A learned map to the teacher's width (FitNets' regressor), or identity when widths agree."""
    return nn.Identity() if student_hidden == teacher_hidden else nn.Linear(student_hidden, teacher_hidden)


def _token_mse(student: Tensor, teacher: Tensor) -> Tensor:
    return (student - teacher).pow(2).mean(-1)


def _token_cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1)


#: Per-token distances ``[B, T]`` between ``[B, T, D]`` states, by metric name.
_TOKEN_DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _token_mse, "cosine": _token_cosine_distance}


def _attention_mse(student: Tensor, teacher: Tensor, tokens: Tensor) -> Tensor:
    both_real = tokens[:, None, :, None] & tokens[:, None, None, :]
    return _masked_mean((student - teacher).pow(2), both_real)


def _attention_kl(student: Tensor, teacher: Tensor, tokens: Tensor) -> Tensor:
    log_s, log_t = student.clamp_min(_EPS).log(), teacher.clamp_min(_EPS).log()
    return _masked_mean(_row_kl(log_t, log_s, tokens[:, None, None, :]), tokens[:, None, :])


#: Losses between attention maps ``[B, H, T, T]`` given real tokens ``[B, T]``, by metric name.
_ATTENTION_DISTANCES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "mse": _attention_mse,
    "kl": _attention_kl,
}


# --------------------------------------------------------------------------- the losses


class DistillationLoss(nn.Module, ABC):
    """Base of every loss: ``forward(student, teacher, labels, mask) -> scalar``, a ``kind`` (its
    config's tag) and ``needs`` (the outputs beyond logits it reads)."""

    kind: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    @abstractmethod
    def from_config(cls, config: Any, student: ModelInfo, teacher: ModelInfo) -> DistillationLoss:
        """Build the loss for ``config`` (this class's config model) and the two models' sizes."""

    @abstractmethod
    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        """The scalar loss of one batch."""

    def teacher_layers(self) -> dict[str, set[int]]:
        """The teacher outputs this loss reads: output kind → indices into that tuple of :class:`ModelOutputs`."""
        return {}


class HintonDistillationLoss(DistillationLoss):
    """Hinton et al. (2015), "Distilling the Knowledge in a Neural Network":
    ``alpha · T² · KL(p_T^teacher ‖ p_T^student) + (1 − alpha) · CE(student, y)``.

    ``p_T`` are softmaxes at temperature ``T``; the T² factor keeps the soft-target gradients on
    the same scale as the hard-label ones when T changes. ``alpha = 0`` is plain supervised
    training, ``alpha = 1`` pure distillation. The cross-entropy averages over the labelled rows
    only (rows labelled ``UNLABELLED`` have no hard target).
    """

    kind = "hinton"

    def __init__(self, temperature: float, alpha: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature = temperature
        self.alpha = alpha

    @classmethod
    def from_config(cls, config: HintonLoss, student: ModelInfo, teacher: ModelInfo) -> HintonDistillationLoss:
        return cls(config.temperature, config.alpha)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return self.forward_logits(student.logits, teacher.logits, labels)

    def forward_logits(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        """The loss on bare logit tensors ``[B, C]`` (for callers holding only logits)."""
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(student_logits / t, dim=-1),
            F.log_softmax(teacher_logits / t, dim=-1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
        hard = _labelled_cross_entropy(student_logits, labels)
        return self.alpha * soft + (1.0 - self.alpha) * hard


class LogitMSEDistillationLoss(DistillationLoss):
    """Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks":
    mean squared error between student and teacher logits.

    The paper can mix it with cross-entropy on hard labels; add ``hinton`` with ``alpha: 0`` for that
    (on an augmented transfer set the cross-entropy counts only the labelled sentences).
    """

    kind = "logit_mse"

    @classmethod
    def from_config(cls, config: Any, student: ModelInfo, teacher: ModelInfo) -> LogitMSEDistillationLoss:
        return cls()

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        return F.mse_loss(student.logits, teacher.logits)


class _HiddenPairsLoss(DistillationLoss):
    """Compares hidden states of mapped ``(student_layer, teacher_layer)`` pairs, averaged over pairs.

    When the widths differ each pair gets its own trainable ``nn.Linear(student_hidden,
    teacher_hidden)`` applied to the student's states (``self.projections``).
    """

    needs = frozenset({"hidden_states"})

    def __init__(self, pairs: LayerPairs, student_hidden: int, teacher_hidden: int) -> None:
        super().__init__()
        self.pairs = list(pairs)
        self.projections = nn.ModuleList(_projection(student_hidden, teacher_hidden) for _ in self.pairs)

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


class HiddenStateDistillationLoss(_HiddenPairsLoss):
    """FitNets (Romero et al., 2015) / TinyBERT (Jiao et al., 2020) hidden-state loss: MSE or
    ``1 − cosine`` per real token between mapped layers' states, averaged over tokens and pairs.

    Widths that differ get a learned projection per pair: add this module's ``parameters()`` to the
    optimizer.
    """

    kind = "hidden"

    def __init__(self, pairs: LayerPairs, student_hidden: int, teacher_hidden: int, metric: str = "mse") -> None:
        super().__init__(pairs, student_hidden, teacher_hidden)
        self.token_distance = _TOKEN_DISTANCES[metric]

    @classmethod
    def from_config(cls, config: HiddenLoss, student: ModelInfo, teacher: ModelInfo) -> HiddenStateDistillationLoss:
        pairs = map_layers(config.layer_map, student.layers, teacher.layers)
        return cls(pairs, student.hidden, teacher.hidden, config.metric)

    def distance(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        return _masked_mean(self.token_distance(student, teacher), _real_tokens(mask, student))


class EmbeddingDistillationLoss(HiddenStateDistillationLoss):
    """TinyBERT (Jiao et al., 2020) embedding-layer loss: the hidden-state loss on ``hidden_states[0]``.

    Widths that differ get a learned projection: add this module's ``parameters()`` to the optimizer.
    """

    kind = "embedding"

    def __init__(self, student_hidden: int, teacher_hidden: int, metric: str = "mse") -> None:
        super().__init__([(0, 0)], student_hidden, teacher_hidden, metric)

    @classmethod
    def from_config(
        cls, config: EmbeddingLoss, student: ModelInfo, teacher: ModelInfo
    ) -> EmbeddingDistillationLoss:
        return cls(student.hidden, teacher.hidden, config.metric)


class CosineDistillationLoss(HiddenStateDistillationLoss):
    """DistilBERT (Sanh et al., 2019) cosine loss: ``CosineEmbeddingLoss`` with target +1 between the
    last hidden states, i.e. the mean of ``1 − cos(student, teacher)`` over real tokens.

    Widths that differ get a learned projection: add this module's ``parameters()`` to the optimizer.
    """

    kind = "cosine"

    def __init__(self, student_layers: int, teacher_layers: int, student_hidden: int, teacher_hidden: int) -> None:
        super().__init__([(student_layers, teacher_layers)], student_hidden, teacher_hidden, "cosine")

    @classmethod
    def from_config(cls, config: CosineLoss, student: ModelInfo, teacher: ModelInfo) -> CosineDistillationLoss:
        return cls(student.layers, teacher.layers, student.hidden, teacher.hidden)


class PKDDistillationLoss(_HiddenPairsLoss):
    """Patient KD (Sun et al., 2019), "Patient Knowledge Distillation for BERT Model Compression":
    MSE between the L2-normalised [CLS] (position 0) vectors of mapped layers.

    As in the authors' code the squared differences are averaged over the vector too (the paper's
    formula sums them, a factor of the width). Widths that differ get a learned projection per pair
    (before normalising): add this module's ``parameters()`` to the optimizer.
    """

    kind = "pkd"

    @classmethod
    def from_config(cls, config: PKDLoss, student: ModelInfo, teacher: ModelInfo) -> PKDDistillationLoss:
        return cls(map_layers(config.layer_map, student.layers, teacher.layers), student.hidden, teacher.hidden)

    def distance(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        return F.mse_loss(F.normalize(student[:, 0], dim=-1), F.normalize(teacher[:, 0], dim=-1))


class AttentionDistillationLoss(DistillationLoss):
    """TinyBERT (Jiao et al., 2020) attention loss between mapped layers' attention probabilities.

    ``metric`` is ``mse`` (mean over real query/key pairs and heads) or ``kl`` (KL(teacher ‖
    student) of each real query's row over real keys, averaged over rows and heads). When the head
    counts differ, both models' heads are averaged to one map first. TinyBERT itself compares
    pre-softmax scores; probabilities are bounded and need no masking constant.
    """

    kind = "attention"
    needs = frozenset({"attentions"})

    def __init__(self, pairs: LayerPairs, metric: str = "mse") -> None:
        super().__init__()
        if any(0 in pair for pair in pairs):
            raise ConfigError(
                f"loss 'attention' pairs {pairs} include layer 0, the embeddings, which have no attention maps"
            )
        self.pairs = list(pairs)
        self.metric = _ATTENTION_DISTANCES[metric]

    @classmethod
    def from_config(cls, config: AttentionLoss, student: ModelInfo, teacher: ModelInfo) -> AttentionDistillationLoss:
        return cls(map_layers(config.layer_map, student.layers, teacher.layers), config.metric)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        s_maps, t_maps = student.require("attentions"), teacher.require("attentions")
        distances = []
        for s, t in self.pairs:
            s_map, t_map = s_maps[s - 1], t_maps[t - 1]
            if s_map.shape[1] != t_map.shape[1]:
                s_map, t_map = s_map.mean(1, keepdim=True), t_map.mean(1, keepdim=True)
            distances.append(self.metric(s_map, t_map, _real_tokens(mask, s_map)))
        return torch.stack(distances).mean()

    def teacher_layers(self) -> dict[str, set[int]]:
        return {"attentions": {t - 1 for _, t in self.pairs}}


class MiniLMDistillationLoss(DistillationLoss):
    """MiniLMv2 (Wang et al., 2021), "Multi-Head Self-Attention Relation Distillation for Compressing
    Pretrained Transformers": last-layer query–query, key–key and value–value relations.

    Each model's last-layer Q, K and V ``[B, T, D]`` are split into ``relation_heads`` heads of
    width ``d_r = D / relation_heads``; a relation is ``softmax(X Xᵀ / √d_r)`` over real keys. The
    loss is KL(teacher ‖ student) per real query row, averaged over rows, heads and the three
    relations. Student and teacher widths may differ, as long as both divide by ``relation_heads``.
    """

    kind = "minilm"
    needs = frozenset({"qkv"})

    def __init__(self, relation_heads: int, student_hidden: int, teacher_hidden: int) -> None:
        super().__init__()
        for role, width in (("student", student_hidden), ("teacher", teacher_hidden)):
            if width % relation_heads:
                raise ConfigError(
                    f"loss 'minilm': the {role}'s hidden size {width} is not divisible by "
                    f"relation_heads={relation_heads}; pick a common divisor of {student_hidden} and {teacher_hidden}"
                )
        self.relation_heads = relation_heads

    @classmethod
    def from_config(cls, config: MiniLMLoss, student: ModelInfo, teacher: ModelInfo) -> MiniLMDistillationLoss:
        return cls(config.relation_heads, student.hidden, teacher.hidden)

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        s_qkv, t_qkv = student.require("qkv"), teacher.require("qkv")
        tokens = _real_tokens(mask, s_qkv[0])
        keys = tokens[:, None, None, :]
        kls = [
            _masked_mean(_row_kl(self._relations(t, keys), self._relations(s, keys), keys), tokens[:, None, :])
            for s, t in zip(s_qkv, t_qkv, strict=True)
        ]
        return torch.stack(kls).mean()

    def teacher_layers(self) -> dict[str, set[int]]:
        return {"qkv": {0, 1, 2}}

    def _relations(self, x: Tensor, keys: Tensor) -> Tensor:
        """Log-probabilities ``[B, R, T, T]`` of the scaled dot-product relations of ``x`` ``[B, T, D]``."""
        batch, length, width = x.shape
        head_width = width // self.relation_heads
        heads = x.reshape(batch, length, self.relation_heads, head_width).transpose(1, 2)
        scores = heads @ heads.transpose(-1, -2) / math.sqrt(head_width)
        return scores.masked_fill(~keys, torch.finfo(scores.dtype).min).log_softmax(-1)


#: Every loss, by the ``kind`` its config carries.
LOSSES: dict[str, type[DistillationLoss]] = {
    cls.kind: cls
    for cls in (
        HintonDistillationLoss,
        LogitMSEDistillationLoss,
        HiddenStateDistillationLoss,
        PKDDistillationLoss,
        AttentionDistillationLoss,
        EmbeddingDistillationLoss,
        CosineDistillationLoss,
        MiniLMDistillationLoss,
    )
}


def kinds_needing(output: str) -> list[str]:
    """The loss kinds whose ``needs`` include ``output`` (``"hidden_states"``, ``"attentions"``, ``"qkv"``)."""
    return [kind for kind, cls in LOSSES.items() if output in cls.needs]


def build_loss(config: LossConfig, student: ModelInfo, teacher: ModelInfo) -> DistillationLoss:
    """The loss ``config`` describes, sized for ``student`` and ``teacher``.

    Raises :class:`ConfigError` when the loss cannot apply, e.g. a hidden-state loss with a student
    that has no transformer encoder. Seed torch first: learned projections are initialised randomly.
    """
    cls = LOSSES[config.kind]
    for role, info in (("student", student), ("teacher", teacher)):
        if cls.needs and info.layers == 0:
            logit_only = ", ".join(kind for kind, other in LOSSES.items() if not other.needs)
            raise ConfigError(
                f"loss '{config.kind}' compares the models' {', '.join(sorted(cls.needs))}, but the {role} "
                f"has no transformer encoder; only {logit_only} apply to it"
            )
    return cls.from_config(config, student, teacher)


class CombinedLoss(nn.Module):
    """A weighted sum of distillation losses, called like each of them.

    ``needs`` is the union of the parts' needs. After each call ``last_parts`` holds every part's
    unweighted value by its kind (``hidden``, ``hidden_2`` for a second one, ...), for logging.
    ``parameters()`` includes the parts' learned projections: optimise them with the student.
    """

    def __init__(self, parts: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("CombinedLoss needs at least one (weight, loss) part")
        self.weights = [float(weight) for weight, _ in parts]
        self.parts = nn.ModuleList(loss for _, loss in parts)
        self.needs: frozenset[str] = frozenset().union(*(loss.needs for _, loss in parts))
        self.names = _part_names([loss for _, loss in parts])
        self.last_parts: dict[str, float] = {}

    def teacher_layers(self) -> dict[str, set[int]]:
        """The union of the parts' :meth:`DistillationLoss.teacher_layers`."""
        merged: dict[str, set[int]] = {}
        for loss in self.parts:
            for kind, indices in loss.teacher_layers().items():
                merged.setdefault(kind, set()).update(indices)
        return merged

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        values = [loss(student, teacher, labels, mask) for loss in self.parts]
        self.last_parts = {name: value.item() for name, value in zip(self.names, values, strict=True)}
        return torch.stack([weight * value for weight, value in zip(self.weights, values, strict=True)]).sum()


def _part_names(losses: list[nn.Module]) -> list[str]:
    seen: Counter[str] = Counter()
    names = []
    for loss in losses:
        base = getattr(loss, "kind", type(loss).__name__)
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names
