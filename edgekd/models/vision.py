"""Standard image classifiers, ResNet and MobileNetV2, from the ``transformers`` implementations.

Each is wrapped in a :class:`VisionClassifier`, which returns the logits tensor and is not a
Hugging Face ``PreTrainedModel``: edgekd then treats it like its own ``cnn`` (weights saved as
safetensors next to the spec, ONNX export of one tensor, channel pruning through Torch-Pruning).
Pruning changes layer shapes the spec's sizes no longer state, so the pruned shapes are written to
the spec's ``shapes`` and restored when the model is rebuilt (:mod:`edgekd.models.layer_shapes`) before
its weights are read.

(torchvision's ``resnet18``/``mobilenet_v3_small`` would be the usual source; the torchvision wheels
reachable on the machines this was built on are CUDA builds that do not import with the CPU torch.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.layer_shapes import reshape_layers
from edgekd.models.specs import MobileNetV2Spec, ResNetSpec


class VisionClassifier(nn.Module):
    """A ``transformers`` image classifier that takes ``pixel_values`` and returns the logits tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def build_resnet(spec: ResNetSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A ResNet of ``spec``'s stages (the defaults are ResNet-18: 11.7 M parameters at 1,000 classes)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(num_channels=_channels(spec.arch, input_shape), embedding_size=spec.stem,
                          hidden_sizes=spec.widths, depths=spec.depths, layer_type=spec.block,
                          num_labels=num_classes)
    return _finish(ResNetForImageClassification(config), spec)


def build_mobilenet_v2(spec: MobileNetV2Spec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A MobileNetV2 (3.5 M parameters at width 1.0 and 1,000 classes)."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(num_channels=_channels(spec.arch, input_shape), image_size=input_shape[-1],
                               depth_multiplier=spec.width_multiplier, classifier_dropout_prob=spec.dropout,
                               num_labels=num_classes)
    return _finish(MobileNetV2ForImageClassification(config), spec)


def _channels(arch: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3:
        raise ConfigError(f"model arch '{arch}' needs image inputs (channels, height, width), got shape {input_shape}")
    return input_shape[0]


def _finish(model: Any, spec: ResNetSpec | MobileNetV2Spec) -> nn.Module:
    wrapped = VisionClassifier(model)
    return reshape_layers(wrapped, spec.shapes) if spec.shapes else wrapped
