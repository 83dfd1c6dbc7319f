"""TinyBERT: attention distributions of mapped layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from torch import Tensor

from edgekd.distill.layer_map import LayerPairs, map_layers
from edgekd.distill.layer_map_config import LayerMap
from edgekd.distill.losses.base import EPS, DistillationLoss, WeightedLoss, masked_mean, real_tokens, row_kl
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.errors import ConfigError


class AttentionLoss(WeightedLoss):
    """TinyBERT: attention distributions of mapped layers (heads averaged when head counts differ)."""

    needs: ClassVar[frozenset[str]] = frozenset({"attentions"})

    kind: Literal["attention"]
    metric: Literal["mse", "kl"] = "mse"
    layer_map: LayerMap = LayerMap()


def _attention_mse(student: Tensor, teacher: Tensor, tokens: Tensor) -> Tensor:
    both_real = tokens[:, None, :, None] & tokens[:, None, None, :]
    return masked_mean((student - teacher).pow(2), both_real)


def _attention_kl(student: Tensor, teacher: Tensor, tokens: Tensor) -> Tensor:
    log_s, log_t = student.clamp_min(EPS).log(), teacher.clamp_min(EPS).log()
    return masked_mean(row_kl(log_t, log_s, tokens[:, None, None, :]), tokens[:, None, :])


#: Losses between attention maps ``[B, H, T, T]`` given real tokens ``[B, T]``, by metric name.
_ATTENTION_DISTANCES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "mse": _attention_mse,
    "kl": _attention_kl,
}


class AttentionDistillationLoss(DistillationLoss):
    """TinyBERT (Jiao et al., 2020) attention loss between mapped layers' attention probabilities.

    ``metric`` is ``mse`` (mean over real query/key pairs and heads) or ``kl`` (KL(teacher ‖
    student) of each real query's row over real keys, averaged over rows and heads). When the head
    counts differ, both models' heads are averaged to one map first. TinyBERT itself compares
    pre-softmax scores; probabilities are bounded and need no masking constant.
    """

    config_model = AttentionLoss

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
            distances.append(self.metric(s_map, t_map, real_tokens(mask, s_map)))
        return torch.stack(distances).mean()

    def teacher_layers(self) -> dict[str, set[int]]:
        return {"attentions": {t - 1 for _, t in self.pairs}}
