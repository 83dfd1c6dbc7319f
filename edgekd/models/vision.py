"""Standard image classifiers, ResNet and MobileNetV2, from the ``transformers`` implementations.

Each is wrapped in a :class:`VisionClassifier`, which returns the logits tensor and is not a
Hugging Face ``PreTrainedModel``: edgekd then treats it like its own ``cnn`` (weights saved as
safetensors next to the spec, ONNX export of one tensor, channel pruning through Torch-Pruning).
Pruning changes layer shapes the spec's sizes no longer state, so the pruned shapes are written to
the spec's ``shapes`` (:func:`layer_shapes`) and restored when the model is rebuilt
(:func:`reshape_layers`) before its weights are read.

(torchvision's ``resnet18``/``mobilenet_v3_small`` would be the usual source; the torchvision wheels
reachable on the machines this was built on are CUDA builds that do not import with the CPU torch.)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError
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


def layer_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Each conv, batch-norm and linear layer's shape: ``[in, out, groups]``, ``[features]``, ``[in, out]``."""
    shapes: dict[str, list[int]] = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            shapes[name] = [layer.in_channels, layer.out_channels, layer.groups]
        elif isinstance(layer, nn.BatchNorm2d):
            shapes[name] = [layer.num_features]
        elif isinstance(layer, nn.Linear):
            shapes[name] = [layer.in_features, layer.out_features]
    return shapes


def reshape_layers(module: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace each named layer whose shape differs from the recorded one by a fresh one of that shape, other
    settings kept (in place); a layer of the recorded shape stays as built (weights its factory tied stay tied)."""
    built = layer_shapes(module)
    for name, shape in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        old = getattr(parent, child)
        if built.get(name) == list(shape):
            continue
        new: nn.Module
        if isinstance(old, nn.Conv2d):
            new = nn.Conv2d(shape[0], shape[1], old.kernel_size, stride=old.stride, padding=old.padding,
                            dilation=old.dilation, groups=shape[2], bias=old.bias is not None,
                            padding_mode=old.padding_mode)
        elif isinstance(old, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], eps=old.eps, momentum=old.momentum, affine=old.affine,
                                 track_running_stats=old.track_running_stats)
        elif isinstance(old, nn.Linear):
            new = nn.Linear(shape[0], shape[1], bias=old.bias is not None)
        else:
            raise ConfigError(f"model.shapes: '{name}' is a {type(old).__name__}, "
                              "not a conv, batch norm or linear layer")
        replace_submodule(module, old, new)
    return module


def replace_submodule(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``root`` holds ``old`` (in place): a module held under several names (``self.classifier
    = self.head``, weights shared by aliasing one module) is replaced under all of them, so every use computes with
    ``new``. (``named_children`` lists such a module once per parent, so the parents' own tables are read.)"""
    for _, parent in root.named_modules(remove_duplicate=False):
        for child, module in list(parent._modules.items()):
            if module is old:
                setattr(parent, child, new)


def _channels(arch: str, input_shape: tuple[int, ...]) -> int:
    if len(input_shape) != 3:
        raise ConfigError(f"model arch '{arch}' needs image inputs (channels, height, width), got shape {input_shape}")
    return input_shape[0]


def _finish(model: Any, spec: ResNetSpec | MobileNetV2Spec) -> nn.Module:
    wrapped = VisionClassifier(model)
    return reshape_layers(wrapped, spec.shapes) if spec.shapes else wrapped
