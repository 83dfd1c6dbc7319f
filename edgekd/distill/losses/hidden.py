"""FitNets / TinyBERT: hidden states of mapped layers."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.layer_map import LayerPairs, map_layers
from edgekd.distill.layer_map_config import LayerMap
from edgekd.distill.losses.base import HiddenPairsLoss, WeightedLoss, masked_mean, real_tokens
from edgekd.distill.outputs import ModelInfo


class HiddenLoss(WeightedLoss):
    """FitNets / TinyBERT / Patient KD: hidden states of mapped layers, projected when widths differ."""

    needs: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    kind: Literal["hidden"]
    metric: Literal["mse", "cosine"] = "mse"
    layer_map: LayerMap = LayerMap()


def _token_mse(student: Tensor, teacher: Tensor) -> Tensor:
    return (student - teacher).pow(2).mean(-1)


def _token_cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1)


#: Per-token distances ``[B, T]`` between ``[B, T, D]`` states, by metric name.
_TOKEN_DISTANCES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"mse": _token_mse, "cosine": _token_cosine_distance}


class HiddenStateDistillationLoss(HiddenPairsLoss):
    """FitNets (Romero et al., 2015) / TinyBERT (Jiao et al., 2020) hidden-state loss: MSE or
    ``1 − cosine`` per real token between mapped layers' states, averaged over tokens and pairs.

    Widths that differ get a learned projection per pair: add this module's ``parameters()`` to the
    optimizer.
    """

    config_model = HiddenLoss

    def __init__(self, pairs: LayerPairs, student_hidden: int, teacher_hidden: int, metric: str = "mse") -> None:
        super().__init__(pairs, student_hidden, teacher_hidden)
        self.token_distance = _TOKEN_DISTANCES[metric]

    @classmethod
    def from_config(cls, config: HiddenLoss, student: ModelInfo, teacher: ModelInfo) -> HiddenStateDistillationLoss:
        pairs = map_layers(config.layer_map, student.layers, teacher.layers)
        return cls(pairs, student.hidden, teacher.hidden, config.metric)

    def distance(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        return masked_mean(self.token_distance(student, teacher), real_tokens(mask, student))
