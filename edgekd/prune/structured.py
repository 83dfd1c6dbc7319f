"""Structured pruning with Torch-Pruning's dependency graph (Fang et al., "DepGraph", CVPR 2023).

Torch-Pruning groups every parameter coupled to a channel (a conv's filters, the batch norm after
it and the next layer's input channels; the query, key and value rows of an attention head and
the output projection's columns) and removes whole groups, so the tensors are physically smaller.

- BERT-family models: attention heads (``prune_num_heads`` with the ``num_heads`` map) and
  feed-forward channels. Everything that writes the hidden width (embeddings, attention and FFN
  output projections, pooler, classifier) is ignored, so the hidden size is never pruned; the
  attention modules' head counts and the config's structure are updated afterwards
  (:func:`edgekd.prune.structure.sync_bert_config`).
- other Hugging Face families edgekd knows the layout of: attention heads, whole grouped-query KV groups
  (:mod:`edgekd.prune.kv_groups`, where each layer's attention lives is the family's
  :class:`~edgekd.models.families.Attention`: Llama-layout decoders, GPT-2, GPT-NeoX, OPT, Phi, Phi-3,
  DistilBERT, DeBERTa, ModernBERT, ViT, DINOv2 …), gated MLP channels (:mod:`edgekd.prune.gated_mlp`,
  Llama-layout decoders) and plain MLP channels (:mod:`edgekd.prune.plain_mlp`, the family's
  :class:`~edgekd.models.families.PlainMLP`), every layer alike, the config's head counts (or the structure's
  per-layer heads) and MLP width rewritten.
- image classifiers (``cnn``, ``mlp``, ``resnet``, ``mobilenet_v2``): conv channels and hidden
  units, the classifier's outputs kept; the spec is rewritten with the new widths (``resnet`` and
  ``mobilenet_v2``: every layer's shape) so the model directory rebuilds it.

Importance criteria: group L1/L2 magnitude (Li et al., 2017), first-order Taylor (Molchanov et
al., 2019; needs gradients, see ``gradients``), and random as a control. The factor pairs of a
factorized layer are pruned only through their outer dimensions, never their rank.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError, ModelError
from edgekd.models.architectures import IMAGE_ARCHS
from edgekd.models.call import model_inputs
from edgekd.models.families import family
from edgekd.models.layer_shapes import layer_shapes
from edgekd.models.logits import model_logits
from edgekd.models.task_model import TaskModel
from edgekd.models.user_module import unwrap
from edgekd.prune.channels import channel_plan, pruning, sync_channel_config
from edgekd.prune.config import PruneConfig
from edgekd.prune.gated_mlp import gated_mlps, gated_plan, sync_gated_config
from edgekd.prune.kv_groups import attention_blocks, prune_kv_groups, sync_attention_config
from edgekd.prune.plain_mlp import plain_mlps, prune_plain_mlps, sync_plain_config
from edgekd.prune.structure import (
    LowRank,
    LowRankConv2d,
    LowRankEmbedding,
    LowRankLinear,
    encoder_layers,
    linear_layers,
    out_features,
    outer_linear,
    sync_bert_config,
    sync_low_rank_config,
)
from edgekd.prune.tp_warnings import torch_pruning_warnings_logged
from edgekd.prune.user_module import module_plan, rebuildable

log = logging.getLogger(__name__)

#: Training batches (and their size) whose loss gradients feed Taylor importance.
TAYLOR_BATCHES, TAYLOR_BATCH_SIZE = 4, 32
#: A share of any one layer's channels always kept under global ranking, so no layer disappears.
MAX_LAYER_RATIO = 0.9


def importance(kind: str) -> Any:
    """Torch-Pruning's importance estimator for a recipe's ``importance``."""
    import torch_pruning as tp

    if kind == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if kind == "l2":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    return tp.importance.RandomImportance()


def prune_step(
    model: TaskModel,
    config: PruneConfig,
    ratio: float,
    example_inputs: dict[str, torch.Tensor],
    *,
    gradients: Callable[[nn.Module], None] | None = None,
) -> None:
    """Remove ``ratio`` of ``model``'s current prunable units (in place) and update its spec or config.

    ``gradients(module)`` fills ``.grad`` for Taylor importance (e.g. a few training batches' loss).
    """
    module = model.module
    own = model.spec.get("arch") == "module"  # a user's own module: see edgekd.prune.user_module
    if is_channel_family(model):
        prune_hf_channels(module, config, ratio, model_inputs(module, example_inputs), gradients)
        record_structure(model)
        return
    if model.is_hf and not family(module.config.model_type).bert_layout:
        prune_decoder(module, config, ratio, model_inputs(module, example_inputs), gradients)
        record_structure(model)
        return
    if model.is_hf:
        plan = _bert_plan(module, config, ratio)
    elif own:
        plan = module_plan(module, config.targets, example_inputs, _rank_factors(module))
    elif model.spec.get("arch") in IMAGE_ARCHS:
        plan = _plain_plan(module, config)
    else:
        raise ConfigError(f"prune supports BERT-family models and {', '.join(map(repr, IMAGE_ARCHS))}, "
                          f"not '{model.spec.get('arch')}'")
    if model.is_hf:
        inputs: Any = model_inputs(module, example_inputs)
    else:
        inputs = example_inputs if own else next(iter(example_inputs.values()))
    widths = _head_widths(plan)
    with rebuildable(module, example_inputs) if own else nullcontext():
        prune_module(module, inputs, config, ratio, plan, gradients=gradients)
    if plan.get("head_pruning_ratio") and _head_widths(plan) == widths:
        log.warning("prune: no attention head of this %s was removed (Torch-Pruning found none it could remove); "
                    "its heads are unchanged and only its other targets shrank", module.config.model_type)
    record_structure(model)


def _head_widths(plan: dict[str, Any]) -> list[int]:
    """The output widths of the projections whose heads ``plan`` prunes (they shrink as heads go)."""
    return [projection.out_features for projection in plan.get("num_heads", {})]


def trial_prune(module: nn.Module, example: dict[str, torch.Tensor], config: PruneConfig) -> None:
    """Prune a copy of a user's untrained ``module`` (wrapped as edgekd calls it) by the stage's whole ``ratio`` and
    run it once, so what the prune stage would refuse after training (a module Torch-Pruning cannot follow, or one
    that no longer runs once pruned) is refused before it: a :class:`ConfigError`. The channels chosen do not
    matter here, so importance is L1 whatever the stage ranks by."""
    module = copy.deepcopy(module)
    plan = module_plan(module, config.targets, example, _rank_factors(module))
    with rebuildable(module, example):
        prune_module(module, example, config.model_copy(update={"importance": "l1"}), config.ratio, plan)


def prune_image_classifier(
    module: nn.Module,
    example: torch.Tensor,
    config: PruneConfig,
    ratio: float,
    *,
    gradients: Callable[[nn.Module], None] | None = None,
) -> None:
    """Remove ``ratio`` of the conv channels and hidden units of any image classifier (in place).

    Torch-Pruning's dependency graph finds what is coupled (residual additions, depthwise
    convolutions, batch norms), so this works beyond edgekd's own ``cnn``: e.g. the ResNet and
    MobileNet classifiers of ``transformers`` or torchvision. The last linear layer's outputs (the
    classes) are kept.
    """
    prune_module(module, example, config, ratio, _plain_plan(module, config), gradients=gradients)


def prune_hf_channels(module: nn.Module, config: PruneConfig, ratio: float, inputs: dict[str, torch.Tensor],
                      gradients: Callable[[nn.Module], None] | None) -> None:
    """Remove ``ratio`` of a Hugging Face image CNN's conv channels (in place; see :mod:`edgekd.prune.channels`).
    ``inputs`` are the model's keyword inputs for tracing."""
    if "channels" not in config.targets:
        raise ConfigError(f"targets: a {module.config.model_type} model prunes 'channels', "
                          f"not {', '.join(config.targets)}")
    with pruning(module):
        prune_module(module, inputs, config, ratio, channel_plan(module, inputs), gradients=gradients)


def is_channel_family(model: TaskModel) -> bool:
    """Whether ``model`` is a Hugging Face model of a family whose conv channels are pruned (image CNNs)."""
    return model.is_hf and "channels" in family(model.module.config.model_type).prune_targets


def prune_module(
    module: nn.Module,
    example: Any,
    config: PruneConfig,
    ratio: float,
    plan: dict[str, Any],
    *,
    gradients: Callable[[nn.Module], None] | None = None,
) -> None:
    """Run one Torch-Pruning ``MetaPruner`` step over ``module`` with ``plan``'s arguments (ignored layers, heads);
    Torch-Pruning's warnings go to the debug log (:mod:`edgekd.prune.tp_warnings`)."""
    import torch_pruning as tp

    _fill_gradients(module, config, gradients)
    with torch_pruning_warnings_logged():
        pruner = tp.pruner.MetaPruner(
            module, example, importance=importance(config.importance), pruning_ratio=ratio,
            global_pruning=config.scope == "global", max_pruning_ratio=MAX_LAYER_RATIO,
            output_transform=model_logits, **plan,
        )
        module.eval()
        pruner.step()
    module.zero_grad(set_to_none=True)


def _fill_gradients(module: nn.Module, config: PruneConfig, gradients: Callable[[nn.Module], None] | None) -> None:
    """For Taylor importance: fresh ``.grad`` of every parameter from ``gradients(module)``."""
    if config.importance == "taylor":
        if gradients is None:
            raise ValueError("Taylor importance needs a gradients function")
        module.zero_grad(set_to_none=True)
        gradients(module)


def prune_decoder(module: nn.Module, config: PruneConfig, ratio: float, inputs: dict[str, torch.Tensor],
                  gradients: Callable[[nn.Module], None] | None) -> None:
    """A described family's attention heads / KV groups (``heads``) and gated or plain MLP channels (``ffn``,
    :mod:`edgekd.prune.gated_mlp`, :mod:`edgekd.prune.plain_mlp`), every layer alike (in place; the config is
    rewritten by :func:`sync_decoder_config`). ``inputs`` are the model's keyword inputs for tracing."""
    kind = module.config.model_type
    targets = {"heads": attention_blocks(module), "ffn": gated_mlps(module) or plain_mlps(module)}
    if not any(targets[t] for t in config.targets if t in targets):
        traits = family(kind)
        has = " and/or ".join(f"'{t}'" for t in sorted(traits.prune_targets))
        why = f" ({traits.why_not})" if traits.why_not else ""
        raise ModelError(f"targets: a {kind} model prunes {has}{why}" if has else f"a {kind} model cannot be "
                         f"pruned{why}")
    if "heads" in config.targets and not targets["heads"]:
        log.info("attention heads are not pruned: %s", family(kind).why_not)
    if "heads" in config.targets and targets["heads"]:
        _fill_gradients(module, config, gradients)
        module.eval()
        prune_kv_groups(module, config.importance, ratio)
        sync_attention_config(module)  # a forward reading head counts from the config (Phi-3) runs before ffn's
        module.zero_grad(set_to_none=True)
    if "ffn" in config.targets and gated_mlps(module):
        prune_module(module, inputs, config, ratio, gated_plan(module), gradients=gradients)
    elif "ffn" in config.targets and targets["ffn"]:
        _fill_gradients(module, config, gradients)
        prune_plain_mlps(module, config.importance, ratio)
        module.zero_grad(set_to_none=True)


def record_structure(model: TaskModel) -> None:
    """After pruning or factorization: state the new shapes where the model directory rebuilds them from.

    BERT-family: head counts and the config's structure; image CNN families: the config's structure of pruned
    modules, checked by rebuilding the model from it (:mod:`edgekd.prune.channels`); other Hugging Face models: the
    config's head counts and MLP width, and the structure's low-rank layers; ``cnn``/``mlp``: the spec's widths;
    ``resnet``/``mobilenet_v2``: the spec's layer ``shapes`` (the low-rank layers of plain models
    are found by :meth:`TaskModel.save` itself).
    """
    if model.is_hf and family(model.module.config.model_type).bert_layout:
        sync_bert_config(model.module)
    elif is_channel_family(model):
        sync_channel_config(model.module, model_inputs(model.module, check_inputs(model)))
    elif model.is_hf:
        sync_decoder_config(model.module)
    elif model.spec.get("arch") in ("cnn", "mlp"):
        model.spec = plain_spec(model.spec, model.module)
    elif model.spec.get("arch") in IMAGE_ARCHS:
        model.spec = {**model.spec, "shapes": layer_shapes(model.module)}
    elif model.spec.get("arch") == "module":
        model.spec = {**model.spec, "shapes": dense_layer_shapes(unwrap(model.module))}


def dense_layer_shapes(module: nn.Module) -> dict[str, list[int]]:
    """:func:`~edgekd.models.layer_shapes.layer_shapes` of a user's module with each factor pair in place of the
    dense layer it replaced (its name, that layer's shape): the module is rebuilt from its factory, reshaped as these
    record, and the pairs then made from those layers (:func:`~edgekd.prune.structure.apply_low_rank`). The pair's
    own two layers (``a.0``, ``a.1``) exist in no freshly built module, which failed every later stage."""
    pairs = {name: layer for name, layer in module.named_modules() if isinstance(layer, LowRank)}
    shapes = {name: shape for name, shape in layer_shapes(module).items()
              if not any(name.startswith(f"{pair}.") for pair in pairs)}
    for name, pair in pairs.items():
        if isinstance(pair, LowRankLinear):
            shapes[name] = [pair[0].in_features, pair[1].out_features]
        elif isinstance(pair, LowRankConv2d):
            shapes[name] = [pair.in_channels, pair.out_channels, 1]
        elif isinstance(pair, LowRankEmbedding):
            shapes[name] = [pair[0].num_embeddings, pair[1].out_features]
    return shapes


def check_inputs(model: TaskModel, batch: int = 2) -> dict[str, torch.Tensor]:
    """Random inputs of the model's input signature (seeded, not zeros: a layer that differs must show it)."""
    if model.signature.kind != "image":
        return model.example_inputs(batch)
    generator = torch.Generator().manual_seed(0)
    return {"input": torch.randn(batch, *model.signature.image_shape, generator=generator)}


def sync_decoder_config(module: nn.Module) -> None:
    """A Hugging Face model's config after pruning or factorization (not BERT-layout): its head counts and MLP
    width, and the structure's per-layer heads (where the config cannot state them) and low-rank layers (so
    ``from_pretrained``, or ``pruned_class`` with a structure, reloads it)."""
    if gated_mlps(module):
        sync_gated_config(module)
    if plain_mlps(module):
        sync_plain_config(module)
    heads = sync_attention_config(module) if attention_blocks(module) else {}
    sync_low_rank_config(module, heads)


def _bert_plan(model: nn.Module, config: PruneConfig, ratio: float) -> dict[str, Any]:
    """MetaPruner arguments pruning heads and/or FFN channels of a BERT-family model, never its hidden size."""
    if not {"heads", "ffn"} & set(config.targets):
        raise ConfigError("targets: a BERT-family model prunes 'heads' and/or 'ffn'")
    ignored: list[nn.Module] = [model.base_model.embeddings]
    num_heads: dict[nn.Module, int] = {}
    for layer in encoder_layers(model):
        attention = layer.attention.self
        projections = [outer_linear(getattr(attention, name)) for name in ("query", "key", "value")]
        ignored += [outer_linear(layer.attention.output.dense), outer_linear(layer.output.dense)]
        if "heads" in config.targets:
            num_heads.update({p: attention.num_attention_heads for p in projections})
        else:
            ignored += projections
        if "ffn" not in config.targets:
            ignored.append(outer_linear(layer.intermediate.dense))
    ignored += [outer_linear(m) for name, m in linear_layers(model)
                if ".encoder." not in f".{name}."]  # pooler, classifier
    if num_heads and min(num_heads.values()) == 1:
        log.warning("prune: the attention layers are down to one head, which stays: 'heads' removes nothing more%s",
                    "" if "ffn" in config.targets else " (add 'ffn' to the targets to prune further)")
    return {"ignored_layers": ignored + _rank_factors(model), "num_heads": num_heads,
            "prune_num_heads": bool(num_heads), "prune_head_dims": False,
            "head_pruning_ratio": head_ratio(ratio, min(num_heads.values())) if num_heads else 0.0}


def head_ratio(ratio: float, heads: int) -> float:
    """The head-pruning ratio Torch-Pruning is given for ``ratio`` of layers of ``heads`` heads: at most what leaves
    one head. It removes ``ceil(ratio × heads)`` heads of a layer and skips a layer it would empty, so 0.7 of 3
    heads (ceil 2.1 = 3) removed none at all where 2 of them can go."""
    return min(ratio, (heads - 1) / heads - 1e-6) if heads > 1 else 0.0


def _plain_plan(model: nn.Module, config: PruneConfig) -> dict[str, Any]:
    """MetaPruner arguments pruning an image classifier's channels and hidden units, keeping its class outputs."""
    if "channels" not in config.targets:
        raise ConfigError("targets: an image classifier ('cnn', 'mlp') prunes 'channels'")
    _, classifier = linear_layers(model)[-1]
    return {"ignored_layers": [outer_linear(classifier), *_rank_factors(model)]}


def _rank_factors(model: nn.Module) -> list[nn.Module]:
    """The first factor of every pair: pruning it would cut the rank, which factorization decides."""
    return [m[0] for m in model.modules() if isinstance(m, LowRankLinear)]


def plain_spec(spec: dict[str, Any], model: nn.Module) -> dict[str, Any]:
    """A ``cnn``/``mlp`` spec rewritten with ``model``'s current widths (so the directory rebuilds it)."""
    widths = [out_features(m) for _, m in linear_layers(model)]
    if spec["arch"] == "cnn":
        channels = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
        return {**spec, "channels": channels, "hidden": widths[0]}
    return {**spec, "hidden": widths[:-1]}
