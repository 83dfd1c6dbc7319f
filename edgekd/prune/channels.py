"""Conv-channel pruning of Hugging Face image CNN families (ResNet, RegNet, BiT, MobileNet V1/V2, EfficientNet,
ConvNeXt V1/V2, PoolFormer, MobileViT).

Torch-Pruning's dependency graph removes conv channels with everything coupled to them: residual
additions, depthwise convolutions, batch norms, layer norms over channels, squeeze-and-excitation
convolutions, ConvNeXt's layer-scale parameters. The layer producing the logits keeps its outputs
(the classes), and the blocks a family keeps whole (:attr:`~edgekd.models.families.Family.whole`:
MobileViT's transformer blocks, whose attention splits channels into heads) keep theirs, with every
channel coupled to them.

The family's config still states the unpruned widths, so the pruned modules are recorded in the
config's structure (:mod:`edgekd.prune.channel_structure`) and rebuilt from it by ``pruned_class``.
After each step the model is rebuilt that way and run beside the pruned one, layer by layer: a layer
whose rebuilt output differs (a module that caches a width the structure cannot state, say) is
refused by name, so a pruned model is never saved that would reload differently.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from edgekd.errors import ModelError, first_line
from edgekd.models.families import family
from edgekd.models.layer_shapes import channel_dim
from edgekd.prune.channel_structure import CHANNELS_KEY, channel_changes
from edgekd.prune.structure import CONFIG_KEY, apply_low_rank, low_rank_layers, pruned_class, unpruned_class
from edgekd.prune.user_module import output_layer

#: Largest difference between a pruned layer's output and the rebuilt one's, relative to the output's scale.
REBUILD_TOLERANCE = 1e-5
#: Layer types whose own parameters Torch-Pruning reshapes along their stated dimension; a per-channel parameter
#: held by any other module (ConvNeXt's layer scale) is given to it with its channel dimension
#: (``unwrapped_parameters``).
_WRAPPED = (nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm, nn.PReLU, nn.Embedding)

Inputs = Mapping[str, torch.Tensor]


def channel_plan(model: nn.Module, inputs: Inputs) -> dict[str, Any]:
    """MetaPruner arguments for a Hugging Face image CNN: its output layer and the family's whole blocks kept,
    bare per-channel parameters pruned with their channels."""
    whole = family(model.config.model_type).whole
    kept = [m for m in model.modules() if type(m).__name__ in whole]
    bare = [(p, channel_dim(p)) for m in model.modules() if not isinstance(m, _WRAPPED)
            for p in m.parameters(recurse=False) if channel_dim(p) is not None]
    return {"ignored_layers": [output_layer(model, dict(inputs)), *kept], "unwrapped_parameters": bare}


@contextmanager
def pruning(model: nn.Module) -> Iterator[None]:
    """Run a pruning step over a Hugging Face image CNN; a graph Torch-Pruning cannot trace or prune is one line
    naming the family."""
    try:
        yield
    except (RuntimeError, TypeError, ValueError, NotImplementedError, AttributeError, IndexError) as exc:
        raise ModelError(f"prune: Torch-Pruning cannot prune this {model.config.model_type} model's channels: "
                         f"{first_line(exc)}") from exc


def sync_channel_config(model: nn.Module, inputs: Inputs) -> None:
    """After channel pruning: record the pruned modules in the config's structure, then check that the model
    rebuilt from its config and weights computes what ``model`` does on ``inputs`` (see the module doc)."""
    config = copy.deepcopy(model.config)
    if hasattr(config, CONFIG_KEY):
        delattr(config, CONFIG_KEY)
    low_rank = low_rank_layers(model)
    with torch.device("meta"):  # the model its config builds, with its factor pairs (restructure's order)
        reference = apply_low_rank(unpruned_class(type(model))(config), low_rank)
    changes = channel_changes(model, reference)
    if changes or low_rank:
        setattr(model.config, CONFIG_KEY, {CHANNELS_KEY: changes, "low_rank": low_rank})
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)
    check_rebuilds(model, inputs)


def rebuilt(model: nn.Module) -> nn.Module:
    """``model`` built afresh from its config (through :func:`pruned_class` when it has a structure), its weights
    loaded from its state dict: what reloading its saved directory gives."""
    config = copy.deepcopy(model.config)
    base = unpruned_class(type(model))
    built = (pruned_class(base) if hasattr(config, CONFIG_KEY) else base)(config)
    try:
        built.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as exc:
        raise ModelError(f"prune: the pruned {config.model_type} model is not rebuilt from its structure: "
                         f"{first_line(exc)}") from None
    return built.eval()


def check_rebuilds(model: nn.Module, inputs: Inputs) -> None:
    """Refuse by name the first layer whose output differs between ``model`` and :func:`rebuilt` on ``inputs``."""
    training = model.training
    try:
        mine = layer_outputs(model.eval(), inputs)
        theirs = layer_outputs(rebuilt(model), inputs)
    finally:
        model.train(training)
    modules = dict(model.named_modules())
    for name, output in mine.items():
        other = theirs.get(name)
        if other is None or other.shape != output.shape:
            raise ModelError(_not_rebuilt(name, modules[name], "its rebuilt output has another shape "
                                          f"{None if other is None else tuple(other.shape)} ≠ {tuple(output.shape)}"))
        diff = (output - other).abs().max().item() if output.numel() else 0.0
        if diff > REBUILD_TOLERANCE * (1.0 + output.abs().max().item()):
            raise ModelError(_not_rebuilt(name, modules[name], f"its rebuilt output differs by {diff:.2e}"))


def _not_rebuilt(name: str, module: nn.Module, why: str) -> str:
    return (f"prune: layer '{name}' ({type(module).__name__}) cannot be channel-pruned: {why} (a width the saved "
            "structure cannot state); keep it out of pruning or use another family")


def layer_outputs(model: nn.Module, inputs: Inputs) -> dict[str, torch.Tensor]:
    """Every named module's output tensor (the first tensor of a tuple or model output) on ``inputs``, in the
    order the modules finish; a forward that fails is a :class:`ModelError` naming the innermost running module."""
    outputs: dict[str, torch.Tensor] = {}
    running: list[str] = []

    def enter(name: str) -> Callable[..., None]:
        return lambda *_: running.append(name)

    def leave(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            running.pop()
            tensor = _first_tensor(output)
            if tensor is not None:
                outputs[name] = tensor.detach()
        return hook

    handles = []
    for name, module in model.named_modules():
        if name:
            handles += [module.register_forward_pre_hook(enter(name)), module.register_forward_hook(leave(name))]
    try:
        with torch.no_grad():
            model(**inputs)
    except Exception as exc:  # noqa: BLE001 - whatever a layer raises, name the layer
        where = running[-1] if running else type(model).__name__
        kind = type(model.get_submodule(where)).__name__ if running else "model"
        raise ModelError(f"prune: layer '{where}' ({kind}) does not run after channel pruning: "
                         f"{first_line(exc)}") from None
    finally:
        for handle in handles:
            handle.remove()
    return outputs


def _first_tensor(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output
    values = output.values() if isinstance(output, Mapping) else output if isinstance(output, (tuple, list)) else ()
    return next((value for value in values if isinstance(value, torch.Tensor)), None)
