"""Patient KD (Sun et al., 2019): normalised [CLS] vectors of mapped layers."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor

from edgekd.distill.layer_map import map_layers
from edgekd.distill.layer_map_config import LayerMap
from edgekd.distill.losses.base import HiddenPairsLoss, WeightedLoss
from edgekd.distill.outputs import ModelInfo


class PKDLoss(WeightedLoss):
    """Patient KD: MSE between L2-normalised [CLS] vectors of mapped layers."""

    needs: ClassVar[frozenset[str]] = frozenset({"hidden_states"})

    kind: Literal["pkd"]
    layer_map: LayerMap = LayerMap(kind="skip", k=2)


class PKDDistillationLoss(HiddenPairsLoss):
    """Patient KD (Sun et al., 2019), "Patient Knowledge Distillation for BERT Model Compression":
    MSE between the L2-normalised [CLS] (position 0) vectors of mapped layers.

    As in the authors' code the squared differences are averaged over the vector too (the paper's
    formula sums them, a factor of the width). Widths that differ get a learned projection per pair
    (before normalising): add this module's ``parameters()`` to the optimizer.
    """

    config_model = PKDLoss

    @classmethod
    def from_config(cls, config: PKDLoss, student: ModelInfo, teacher: ModelInfo) -> PKDDistillationLoss:
        return cls(map_layers(config.layer_map, student.layers, teacher.layers), student.hidden, teacher.hidden)

    def distance(self, student: Tensor, teacher: Tensor, mask: Tensor | None) -> Tensor:
        return F.mse_loss(F.normalize(student[:, 0], dim=-1), F.normalize(teacher[:, 0], dim=-1))
