"""The model family synthetic examples are learnt for: building fresh networks and reading their embeddings."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.architectures import IMAGE_ARCHS, ModelSpec, build_model

T = TypeVar("T")


def image_family(spec: ModelSpec, where: str) -> ModelSpec:
    """``spec`` if the methods can build it and differentiate a loss through it to its inputs; else a one-line
    ConfigError (text families take token ids, which no gradient reaches; user modules are not rebuilt)."""
    if spec.arch not in IMAGE_ARCHS:
        raise ConfigError(f"{where}: model arch '{spec.arch}' is not a family dataset distillation can build and "
                          f"differentiate to its inputs ({', '.join(IMAGE_ARCHS)})")
    return spec


class Family:
    """Fresh, randomly initialised networks of one image family for one input shape and class count."""

    def __init__(self, spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int) -> None:
        self.spec, self.input_shape, self.num_classes = spec, tuple(input_shape), num_classes

    def build(self) -> nn.Module:
        """A new network (torch's global generator draws its weights: seed it beforehand)."""
        return build_model(self.spec, self.input_shape, self.num_classes)


def embedder(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function giving ``model``'s features of a batch, flattened: the feature maps before its global pooling.

    Without a global pooling layer (an MLP), the input of the last linear layer. The spatial layout of the
    maps is kept (Zhao & Bilen's ConvNet embedding): pooled features would not say where strokes are.
    """
    pools = [module for module in model.modules() if isinstance(module, nn.AdaptiveAvgPool2d)]
    last = pools[-1] if pools else [module for module in model.modules() if isinstance(module, nn.Linear)][-1]
    captured: list[torch.Tensor] = []

    def embed(images: torch.Tensor) -> torch.Tensor:
        handle = last.register_forward_hook(lambda _module, inputs, _output: captured.append(inputs[0]))
        try:
            model(images)
        finally:
            handle.remove()
        return captured.pop().flatten(1)

    return embed


def calibrate_batch_norm(model: nn.Module, forward: Callable[[torch.Tensor], T], images: torch.Tensor) -> T:
    """Run ``forward(images)`` (real images through ``model``) in train mode so every batch norm takes their statistics,
    then switch ``model`` to eval mode; returns what ``forward`` returned (computed without gradient).

    Synthetic images then go through the normalization of real data, whatever their batch (per class, or few).
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: one pass sets the statistics
    model.train()
    with torch.no_grad():
        result = forward(images)
    model.eval()
    return result
