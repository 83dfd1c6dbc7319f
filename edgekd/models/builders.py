"""The plain image classifiers ``cnn`` and ``mlp``, built from their spec, and :func:`count_params`.

Every architecture is registered in :mod:`edgekd.models.architectures`, which picks the builder of a spec.
"""

from __future__ import annotations

from torch import nn

from edgekd.errors import ConfigError
from edgekd.models.specs import CNNSpec, MLPSpec


def build_cnn(spec: CNNSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Conv-BN-ReLU blocks, each halving the image (max-pool), then global average pooling and an MLP head."""
    if len(input_shape) != 3:
        raise ConfigError(f"model arch 'cnn' needs image inputs (channels, height, width), got shape {input_shape}")
    channels_in, height, width = input_shape
    if min(height, width) < 2 ** len(spec.channels):
        raise ConfigError(
            f"model.channels: {len(spec.channels)} pooling blocks need images of at least "
            f"{2 ** len(spec.channels)} pixels a side, got {height}×{width}"
        )
    layers: list[nn.Module] = []
    for channels_out in spec.channels:
        layers += [
            nn.Conv2d(channels_in, channels_out, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]
        channels_in = channels_out
    layers += [
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(channels_in, spec.hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(spec.dropout),
        nn.Linear(spec.hidden, num_classes),
    ]
    return nn.Sequential(*layers)


def build_mlp(spec: MLPSpec, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Flatten, then Linear-ReLU-Dropout per hidden width, then the classifier."""
    width_in = 1
    for dim in input_shape:
        width_in *= dim
    layers: list[nn.Module] = [nn.Flatten()]
    for width in spec.hidden:
        layers += [nn.Linear(width_in, width), nn.ReLU(inplace=True), nn.Dropout(spec.dropout)]
        width_in = width
    layers.append(nn.Linear(width_in, num_classes))
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) in ``model``, with those a submodule holds outside torch (an ONNX
    graph's weights, its ``external_parameters``)."""
    return sum(p.numel() for p in model.parameters()) + \
        sum(getattr(module, "external_parameters", 0) for module in model.modules())

