"""The shapes of a pruned model's layers, recorded in its spec and restored when the model is rebuilt.

Pruning changes layer shapes a model's constructor arguments no longer state (an image CNN built by edgekd, a
user's own module). :func:`layer_shapes` records each rebuildable layer's shape in the spec's ``shapes``;
:func:`reshape_layers` replaces each layer of a freshly built model whose shape differs by a new layer of the
recorded shape, every other setting taken from the layer it replaces, before the pruned weights are read.

Rebuildable are the layers whose shape is their constructor's sizes: convolutions (1-, 2- and 3-d), batch norms
(1-, 2- and 3-d), ``Linear``, ``LayerNorm`` and ``Embedding``, of exactly these types (a subclass may take other
constructor arguments or compute differently, so it is never rebuilt as its base class). So are a container's own
per-channel parameters (a module holding layers and a learnt ``[C]`` scale of its own, :func:`loose_parameters`):
recorded by their names (``blocks.0.scale``) and restored as parameters of the recorded shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.errors import ConfigError


@dataclass(frozen=True)
class Rebuild:
    """How one layer type's shape is read (``shape``) and a layer of another shape made like it (``make``)."""

    shape: Callable[[nn.Module], list[int]]
    make: Callable[[nn.Module, list[int]], nn.Module]


def _conv(old: nn.Module, shape: list[int]) -> nn.Module:
    assert isinstance(old, nn.Conv1d | nn.Conv2d | nn.Conv3d)
    return type(old)(shape[0], shape[1], old.kernel_size, stride=old.stride, padding=old.padding,
                     dilation=old.dilation, groups=shape[2], bias=old.bias is not None, padding_mode=old.padding_mode)


def _batch_norm(old: nn.Module, shape: list[int]) -> nn.Module:
    assert isinstance(old, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d)
    return type(old)(shape[0], eps=old.eps, momentum=old.momentum, affine=old.affine,
                     track_running_stats=old.track_running_stats)


def _layer_norm(old: nn.Module, shape: list[int]) -> nn.Module:
    assert isinstance(old, nn.LayerNorm)
    return nn.LayerNorm(shape, eps=old.eps, elementwise_affine=old.elementwise_affine,
                        bias=old.elementwise_affine and old.bias is not None)


def _embedding(old: nn.Module, shape: list[int]) -> nn.Module:
    assert isinstance(old, nn.Embedding)
    return nn.Embedding(shape[0], shape[1], padding_idx=old.padding_idx, max_norm=old.max_norm,
                        norm_type=old.norm_type, scale_grad_by_freq=old.scale_grad_by_freq, sparse=old.sparse)


_CONV = Rebuild(lambda layer: [layer.in_channels, layer.out_channels, layer.groups], _conv)
_BATCH_NORM = Rebuild(lambda layer: [layer.num_features], _batch_norm)

#: Each rebuildable layer type (exact type) and how; the shapes are ``[in, out, groups]`` for a convolution,
#: ``[features]`` for a batch norm, ``[in, out]`` for a linear layer, the normalized shape for a layer norm and
#: ``[rows, width]`` for an embedding.
REBUILDS: dict[type[nn.Module], Rebuild] = {
    nn.Conv1d: _CONV, nn.Conv2d: _CONV, nn.Conv3d: _CONV,
    nn.BatchNorm1d: _BATCH_NORM, nn.BatchNorm2d: _BATCH_NORM, nn.BatchNorm3d: _BATCH_NORM,
    nn.Linear: Rebuild(lambda layer: [layer.in_features, layer.out_features],
                       lambda old, shape: nn.Linear(shape[0], shape[1], bias=old.bias is not None)),
    nn.LayerNorm: Rebuild(lambda layer: list(layer.normalized_shape), _layer_norm),
    nn.Embedding: Rebuild(lambda layer: [layer.num_embeddings, layer.embedding_dim], _embedding),
}


def is_rebuilt(layer: nn.Module) -> bool:
    """Whether a run directory records and restores this layer's pruned shape."""
    return type(layer) in REBUILDS


def rebuilt_kinds() -> str:
    """The rebuildable layer types, for messages."""
    return ", ".join(kind.__name__ for kind in REBUILDS)


def channel_dim(parameter: torch.Tensor) -> int | None:
    """The one dimension of a bare per-channel parameter longer than 1 (a layer scale ``[C]``, ConvNeXt-V2's GRN
    ``[1, 1, 1, C]``); ``None`` for any other shape."""
    dims = [index for index, size in enumerate(parameter.shape) if size > 1]
    return dims[0] if len(dims) == 1 else None


def loose_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """The per-channel parameters (:func:`channel_dim`) that containers of ``module`` (modules holding layers)
    hold themselves, by name: pruned with the channels they scale, and restored to their recorded shape."""
    return {f"{owner}.{name}" if owner else name: parameter for owner, layer in module.named_modules()
            if any(True for _ in layer.children())
            for name, parameter in layer.named_parameters(recurse=False) if channel_dim(parameter) is not None}


def layer_shapes(module: nn.Module) -> dict[str, list[int]]:
    """Each rebuildable layer's shape and each loose per-channel parameter's, by its name in ``module``."""
    return {**{name: REBUILDS[type(layer)].shape(layer) for name, layer in module.named_modules() if is_rebuilt(layer)},
            **{name: list(parameter.shape) for name, parameter in loose_parameters(module).items()}}


def reshape_layers(module: nn.Module, shapes: dict[str, list[int]]) -> nn.Module:
    """Replace each named layer (or loose parameter) whose shape differs from the recorded one by a fresh one of that
    shape, other settings kept (in place); one of the recorded shape stays as built (weights its factory tied stay
    tied). The pruned weights are read into them after."""
    built = layer_shapes(module)
    for name, shape in shapes.items():
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name)
        old = getattr(parent, child)
        if built.get(name) == list(shape):
            continue
        if isinstance(old, nn.Parameter) and name in built:
            setattr(parent, child, nn.Parameter(old.new_empty(shape), requires_grad=old.requires_grad))
            continue
        if not is_rebuilt(old):
            raise ConfigError(f"model.shapes: '{name}' is a {type(old).__name__}, not one of the layers a pruned "
                              f"shape is restored for ({rebuilt_kinds()})")
        replace_submodule(module, old, REBUILDS[type(old)].make(old, list(shape)))
    return module


def replace_submodule(root: nn.Module, old: nn.Module, new: nn.Module) -> None:
    """Put ``new`` wherever ``root`` holds ``old`` (in place): a module held under several names (``self.classifier
    = self.head``, weights shared by aliasing one module) is replaced under all of them, so every use computes with
    ``new``. (``named_children`` lists such a module once per parent, so the parents' own tables are read.)"""
    for _, parent in root.named_modules(remove_duplicate=False):
        for child, module in list(parent._modules.items()):
            if module is old:
                setattr(parent, child, new)
