"""Pruning the plain two-layer MLPs of any family its :class:`~edgekd.models.families.PlainMLP` describes.

GPT-2 (``c_fc``/``c_proj``, transformers' transposed ``Conv1D``), Phi (``fc1``/``fc2``), DistilBERT
(``lin1``/``lin2``), ViT and DeiT (``mlp.fc1``/``mlp.fc2``, formerly ``intermediate.dense``/``output.dense``):
each layer computes ``out(act(into(x)))``, so a channel is one output of ``into`` (its weight row and bias entry)
and one input of ``out``; removing both leaves the layer exact for the channels kept. A fused gated input
projection (Phi-3's ``gate_up_proj``, ``[gate | up]``, whose halves are multiplied) stacks two blocks of channels:
a channel is then one output of each block. Channels are ranked by the
importance criteria of the rest of the pruning code over those coupled weights
(:mod:`edgekd.prune.unit_importance`) and removed in every layer alike: the family's config states one
width (GPT-2 ``n_inner``, Phi and ViT ``intermediate_size``, DistilBERT ``hidden_dim``), rewritten by
:func:`sync_plain_config` so the pruned model reloads with plain ``from_pretrained``. A factorized
projection is pruned through its outer dimensions only (its rank stays). Neither the hidden width nor
the attention changes.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from edgekd.errors import ModelError
from edgekd.models.families import PlainMLP, family
from edgekd.prune.kv_groups import groups_to_remove
from edgekd.prune.structure import at_path, feature_dim, inner_linear, keep_features, out_features, outer_linear
from edgekd.prune.unit_importance import Coupled, Importance, unit_importance

log = logging.getLogger(__name__)


def _layout(model: nn.Module) -> PlainMLP | None:
    config = getattr(model, "config", None)
    return family(config.model_type).mlp if config is not None and hasattr(config, "model_type") else None


def plain_mlps(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """Every layer's ``(into, out)`` projection pair of ``model``'s plain MLPs (none for other families)."""
    layout = _layout(model)
    if layout is None:
        return []
    for into_path, out_path in layout.paths:
        pairs = [(at_path(m, into_path), at_path(m, out_path)) for m in model.modules()]
        found = [(into, out) for into, out in pairs if into is not None and out is not None]
        if found:
            return found
    return []


def _parts(model: nn.Module) -> int:
    """How many blocks of channels the input projections stack (the family's ``PlainMLP.parts``)."""
    layout = _layout(model)
    return layout.parts if layout is not None else 1


def channel_importance(into: nn.Module, out: nn.Module, kind: Importance, parts: int = 1) -> torch.Tensor:
    """One score per channel of a plain MLP (higher: more important) by the ``kind`` criterion; ``into`` stacks
    ``parts`` blocks of channels (a channel is one output of each)."""
    producer, reader = outer_linear(into), inner_linear(out)
    width = out_features(into) // parts
    coupled: list[Coupled] = [(reader.weight, feature_dim(reader, outputs=False))]
    for part in range(parts):
        coupled.append((producer.weight, feature_dim(producer, outputs=True), part * width, width))
        if producer.bias is not None:
            coupled.append((producer.bias, 0, part * width, width))
    return unit_importance(coupled, width, kind)


def prune_plain_mlps(model: nn.Module, kind: Importance, ratio: float) -> int:
    """Remove ``ratio`` of every plain MLP's channels, the least important by ``kind`` (in place); returns how
    many each layer lost. The config is rewritten by :func:`sync_plain_config`."""
    removed, parts = 0, _parts(model)
    for into, out in plain_mlps(model):
        width = out_features(into) // parts
        removed = groups_to_remove(width, ratio)
        if removed:
            scores = channel_importance(into, out, kind, parts)
            keep = torch.topk(scores, width - removed).indices.sort().values
            keep_features(outer_linear(into), torch.cat([keep + part * width for part in range(parts)]), outputs=True)
            keep_features(inner_linear(out), keep, outputs=False)
    log.info("MLP channels removed per layer: %d", removed)
    return removed


def sync_plain_config(model: nn.Module) -> None:
    """State the plain MLPs' (common) width in the family's config field, so ``from_pretrained`` reloads it."""
    widths = {out_features(into) // _parts(model) for into, _ in plain_mlps(model)}
    if len(widths) != 1:
        raise ModelError(f"the {model.config.model_type} MLPs have different widths {sorted(widths)}; its config "
                         "states one (prune with scope: layer)")
    setattr(model.config, _layout(model).width, widths.pop())
