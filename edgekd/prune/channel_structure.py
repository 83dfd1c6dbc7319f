"""The pruned layers of a channel-pruned Hugging Face model, as plain JSON its directory rebuilds it from.

Channel pruning (:mod:`edgekd.prune.channels`) narrows conv, norm and linear layers, and any bare parameter
coupled to their channels (ConvNeXt's layer scale), below what the family's config states. The model's
structure (``config.edgekd_structure``, :mod:`edgekd.prune.structure`) then holds, under ``channels``, every
module that differs from the one the config builds:

``{"module.path": {"attributes": {"out_channels": 4, ...}, "tensors": {"weight": [4, 8, 3, 3], ...}}, ...}``

- ``attributes``: the module's plain attributes (numbers, strings, tuples of them) that pruning changed, as
  Torch-Pruning's own ``tp.state_dict`` keeps a module's attributes (``in_channels``, ``groups``,
  ``num_features``, ``normalized_shape`` …), but only the changed ones and as JSON rather than a pickle;
- ``tensors``: the new shape of each of its own parameters and buffers whose shape changed (weights,
  biases, batch-norm running statistics, layer scales).

:func:`reshape_channels` applies it to a model freshly built from the config, before the weights (plain
safetensors) are read into it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.errors import ModelError

#: The structure's key for channel-pruned modules.
CHANNELS_KEY = "channels"
#: Module attributes that say how it runs now, not its shape (train/eval mode).
_MODE = frozenset({"training"})

Plain = int | float | bool | str


def _plain(value: Any) -> bool:
    """Whether ``value`` is a number, string or a (nested) tuple/list of them: what JSON keeps exactly."""
    if isinstance(value, (tuple, list)):
        return all(_plain(item) for item in value)
    return isinstance(value, Plain)


def _own_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters and buffers ``module`` holds itself (not through its children)."""
    tensors = {name: t for name, t in module._parameters.items() if t is not None}
    return {**tensors, **{name: t for name, t in module._buffers.items() if t is not None}}


def _jsonable(value: Any) -> Any:
    return [_jsonable(item) for item in value] if isinstance(value, (tuple, list)) else value


def module_changes(module: nn.Module, reference: nn.Module) -> dict[str, Any]:
    """How ``module`` differs from ``reference`` (the same module as built from the config): its changed plain
    attributes and the new shapes of its own tensors whose shape changed (empty when none)."""
    ref_tensors = _own_tensors(reference)
    tensors = {name: list(t.shape) for name, t in _own_tensors(module).items()
               if name in ref_tensors and t.shape != ref_tensors[name].shape}
    ref_attributes = vars(reference)
    attributes = {key: _jsonable(value) for key, value in vars(module).items()
                  if not key.startswith("_") and key not in _MODE and _plain(value)
                  and key in ref_attributes and _plain(ref_attributes[key]) and value != ref_attributes[key]}
    return {"attributes": attributes, "tensors": tensors} if tensors or attributes else {}


def channel_changes(model: nn.Module, reference: nn.Module) -> dict[str, dict[str, Any]]:
    """Every module of ``model`` whose attributes or tensor shapes differ from ``reference`` (the model its config
    builds, without a structure; on the meta device will do), by name: the ``channels`` part of its structure."""
    modules = dict(model.named_modules())
    changes = {name: module_changes(modules[name], ref) for name, ref in reference.named_modules() if name in modules}
    return {name: change for name, change in changes.items() if change}


def reshape_channels(model: nn.Module, channels: dict[str, dict[str, Any]]) -> nn.Module:
    """Reshape a freshly built ``model`` to the structure's ``channels`` (in place): set each module's recorded
    attributes and replace its recorded tensors by uninitialised ones of the recorded shapes (the weights are read
    next). A module or tensor the model does not have is a :class:`ModelError` naming it."""
    for name, change in channels.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelError(f"config.edgekd_structure.channels: the model has no module '{name}'") from None
        for key, value in change.get("attributes", {}).items():
            current = getattr(module, key, None)
            setattr(module, key, _as_type_of(current, value))
        for tensor_name, shape in change.get("tensors", {}).items():
            _replace_tensor(module, name, tensor_name, shape)
    return model


def _as_type_of(current: Any, value: Any) -> Any:
    """``value`` read from JSON, as tuples where the module held tuples (``kernel_size``, ``normalized_shape``)."""
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _replace_tensor(module: nn.Module, module_name: str, tensor_name: str, shape: list[int]) -> None:
    old = _own_tensors(module).get(tensor_name)
    if old is None:
        raise ModelError(f"config.edgekd_structure.channels: module '{module_name}' has no tensor '{tensor_name}'")
    new = torch.empty(shape, dtype=old.dtype, device=old.device)
    if tensor_name in module._parameters:
        setattr(module, tensor_name, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module.register_buffer(tensor_name, new, persistent=tensor_name not in module._non_persistent_buffers_set)
