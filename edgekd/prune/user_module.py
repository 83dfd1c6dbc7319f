"""Structured pruning of a user's own module (``arch: module``) through Torch-Pruning's dependency graph.

Any module Torch-Pruning can trace is pruned: the layer producing the logits keeps its outputs, and layers
whose shapes a run directory cannot record (:mod:`edgekd.models.layer_shapes`: anything but convolutions, batch
norms, ``Linear``, ``LayerNorm`` and ``Embedding``) keep theirs. A container's own per-channel parameters (a layer
scale ``[C]``) are given to Torch-Pruning to prune with the channels they scale, and recorded too. A layer whose
parameters pruning would reshape
anyway (a custom layer with its own parameters coupled to pruned channels) is refused by name, as is a module that
cannot be traced. A step that can remove nothing (every prunable layer is coupled to one kept whole: a GRU, a
subclass of a layer type) says so in a warning naming those layers, rather than passing for a pruned model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError, first_line
from edgekd.models.call import eval_mode, layers_called
from edgekd.models.layer_shapes import channel_dim, is_rebuilt, layer_shapes, loose_parameters, rebuilt_kinds
from edgekd.models.user_module import unwrap

log = logging.getLogger(__name__)

def module_plan(model: nn.Module, targets: list[str], example: dict[str, torch.Tensor],
                ignored: list[nn.Module]) -> dict[str, Any]:
    """MetaPruner arguments for a user's module: its output layer, the layers not rebuilt and the layers sharing a
    parameter (``c.weight = b.weight``: Torch-Pruning would cut each use into a tensor of its own) are kept whole."""
    if "channels" not in targets:
        raise ConfigError("targets: a user's module ('module') prunes 'channels'")
    sharing = _layers_sharing_a_parameter(model)
    loose = loose_parameters(model)
    fixed = [kept for _, layer in _own_parameter_layers(model) if not is_rebuilt(layer) or layer in sharing
             for kept in _kept_whole(layer, loose.values())]
    return {"ignored_layers": [output_layer(model, example), *fixed, *ignored],
            "unwrapped_parameters": [(parameter, channel_dim(parameter)) for parameter in loose.values()]}


def _kept_whole(layer: nn.Module, loose: Iterable[nn.Parameter]) -> list[nn.Module | nn.Parameter]:
    """What Torch-Pruning must leave whole of a layer edgekd cannot rebuild: the layer, or, for a module holding
    layers besides parameters of its own (a learnt class prior added to the logits), only those parameters that are
    not ``loose`` per-channel ones, which are pruned with their channels (Torch-Pruning keeps an ignored module's
    every submodule whole: nothing in the model was pruned)."""
    if any(True for _ in layer.children()):
        return [parameter for parameter in layer.parameters(recurse=False)
                if not any(parameter is other for other in loose)]
    return [layer]


def output_layer(model: nn.Module, example: dict[str, torch.Tensor]) -> nn.Module:
    """The last layer holding parameters that a forward pass runs (the one producing the logits): a layer without
    sub-layers, so a module holding a parameter of its own beside its layers (a learnt class prior added to the
    logits) is not taken for it, which kept all its layers whole."""
    layers = [layer for _, layer in _own_parameter_layers(model)]
    leaves = [layer for layer in layers if not any(True for _ in layer.children())] or layers
    with torch.no_grad(), eval_mode(model):
        _, called = layers_called(leaves, lambda: model(**example))
    if not called:
        raise ConfigError(f"prune: the module ({type(unwrap(model)).__name__}) runs no layer with parameters")
    return called[-1][0]


@contextmanager
def rebuildable(model: nn.Module, example: dict[str, torch.Tensor]) -> Iterator[None]:
    """Run a pruning step; refuse by name a layer it cannot trace through or reshapes beyond what is recorded, and
    a pruned module that no longer runs on ``example`` (a size written into its forward, ``x.view(-1, 256)``)."""
    inner = unwrap(model)
    before, tied = _shapes(inner), _tied_names(inner)
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:  # Torch-Pruning's tracing and index arithmetic raise any type on what it cannot follow
        raise ConfigError(f"prune: Torch-Pruning cannot prune the module ({type(inner).__name__}): "
                          f"{type(exc).__name__}: {first_line(exc)}") from exc
    owners = dict(_own_parameter_layers(inner))
    if _shapes(inner) == before:
        kept = [f"{name or 'the module itself'} ({type(layer).__name__})" for name, layer in owners.items()
                if not is_rebuilt(layer)]
        log.warning("prune: nothing in the module (%s) was removed: %s; its size and speed are unchanged (drop the "
                    "prune stage%s)", type(inner).__name__,
                    f"its layers are coupled to ones kept whole, e.g. {', '.join(kept[:3])}" if kept
                    else "the ratio removes no whole channel", ", or try factorize" if _factorizes(inner) else "")
        return
    recorded = layer_shapes(inner)
    for name, shape in _shapes(inner).items():
        if before.get(name) != shape and name not in recorded:  # a loose per-channel parameter is recorded itself
            layer_name = name.rpartition(".")[0]
            layer = owners.get(layer_name)
            if layer is None or not is_rebuilt(layer):
                kind = type(layer).__name__ if layer is not None else "parameter"
                raise ConfigError(
                    f"prune: layer '{layer_name or name}' ({kind}) cannot be pruned: its parameter '{name}' would "
                    f"change shape {before.get(name)} → {shape}, and only these layers are rebuilt from a run "
                    f"directory: {rebuilt_kinds()}; make it one of those or keep its channels out of pruning")
    parameters = dict(inner.named_parameters(remove_duplicate=False))
    for names in tied:
        if len({id(parameters[name]) for name in names}) > 1:
            raise ConfigError(f"prune: {' and '.join(repr(n) for n in names)} are one parameter of the module "
                              f"({type(inner).__name__}), which pruning cuts into tensors of their own; untie them "
                              "(give each layer its own parameter) or keep the prune stage off this module")
    try:
        with torch.no_grad():
            model.eval()(**example)
    except Exception as exc:  # the user's forward on its new shapes
        raise ConfigError(f"prune: the pruned module ({type(inner).__name__}) fails on its inputs: "
                          f"{type(exc).__name__}: {first_line(exc)}; "
                          "a size written into its forward cannot follow pruned channels: compute it from the input "
                          "(x.flatten(1)), or keep that layer out of pruning") from exc


def _factorizes(module: nn.Module) -> bool:
    """Whether a factorize stage (its defaults) would change ``module``: it has a linear layer besides its classifier
    (a user's module's convs stay dense), so the prune warning may suggest it."""
    from edgekd.prune.config import FactorizeConfig
    from edgekd.prune.lowrank import shrinkable_layers  # it imports this module (through structured)

    return bool(shrinkable_layers(module, FactorizeConfig()))


def _tied_names(model: nn.Module) -> list[tuple[str, ...]]:
    """The names of each parameter registered under several (``c.weight = b.weight``), one tuple per parameter."""
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    return [tuple(group) for group in names.values() if len(group) > 1]


def _layers_sharing_a_parameter(model: nn.Module) -> list[nn.Module]:
    """The layers one of whose own parameters is also another layer's (weights tied by assigning a parameter)."""
    owners: dict[int, list[nn.Module]] = {}
    for _, layer in _own_parameter_layers(model):
        for parameter in layer.parameters(recurse=False):
            owners.setdefault(id(parameter), []).append(layer)
    return [layer for layers in owners.values() if len(layers) > 1 for layer in layers]


def _own_parameter_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every submodule that holds parameters of its own (not only through its children)."""
    return [(name, layer) for name, layer in model.named_modules()
            if any(True for _ in layer.parameters(recurse=False))]


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(p.shape) for name, p in model.named_parameters()}
