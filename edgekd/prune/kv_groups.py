"""Pruning whole attention heads of any family an :class:`~edgekd.models.families.Attention` describes; under
grouped-query attention, whole key/value groups.

With ``K`` key/value heads for ``H`` query heads (grouped-query attention, Ainslie et al., 2023: Llama, Qwen2,
Mistral, Phi with ``num_key_value_heads`` below ``num_attention_heads``; ``K = H`` is plain multi-head attention:
GPT-2, DistilBERT, ViT, DeiT) each key/value head is shared by ``H / K`` query heads. A group is removed whole: its
key and value head, its query heads (rows of the query, key and value projections, or the matching rows of each
part of a fused ``[q | k | v]`` projection such as GPT-2's ``c_attn``) and the output projection's columns that
read them, and the rows of any further projection laid out per query head (DeBERTa-v2's disentangled attention
projects the relative-position embeddings per head: ``pos_key_proj``, ``pos_query_proj``, or the query and key
projections themselves under ``share_att_key``). A fused projection laid out per group (GPT-NeoX's and DeBERTa's
``[q k v]`` per head, Falcon-style ``[queries k v]`` per group) loses one contiguous run of rows; parameters laid
out per head (DeBERTa's ``q_bias``/``v_bias``, OLMo-2's whole-width ``q_norm``/``k_norm`` weights) and lists of
one module per head (StableLM's per-head layer norms) lose the group's entries, and square layers over the heads
(DeBERTa's talking-head projections) its rows and columns. Every layer so stays a valid attention layer with the same
queries per group and the same head size; a partial rotary embedding (Phi) rotates the same leading share of
every head, so it is unaffected. Every layer loses the same number of groups, ``ceil(ratio · K)``, at most
``K − 1``. ALBERT's layers share one attention module: it is pruned once, for all of them.

The pruned model reloads: where the family's config states the head size (``head_dim``, read by Llama, Qwen2,
Phi, ViT, DeiT; DeBERTa-v2's ``attention_head_size``) and a model built from the rewritten config has the pruned
shapes, the config's head counts and head size are rewritten (plain ``from_pretrained``); otherwise (GPT-2,
DistilBERT and ALBERT derive the head size from the head count; Phi's ``qk_layernorm`` is sized by it; DeBERTa-v2
sizes its output projection ``hidden × hidden`` whatever the heads) the config keeps its counts and every layer's
heads are recorded in the model's structure, which :func:`~edgekd.prune.structure.pruned_class` rebuilds before
the weights load.

Torch-Pruning's dependency graph does not couple these projections (rotary embeddings, ``repeat_kv`` and the
head reshapes sit between them), so the groups are ranked here by the importance criteria of the rest of the
pruning code over all of their coupled weights (bias rows included): L1 or L2 magnitude (Li et al., 2017),
first-order Taylor ``Σ |w · ∂L/∂w|`` (Molchanov et al., 2019), or random as a control
(:mod:`edgekd.prune.unit_importance`).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any

import torch
from torch import nn

from edgekd.models.families import Attention
from edgekd.prune.structure import (
    CONFIG_KEY,
    LowRankLinear,
    at_path,
    attention_blocks,
    attention_layout,
    feature_dim,
    head_counts,
    inner_linear,
    is_dense_linear,
    keep_features,
    linear_shape,
    outer_linear,
    per_head_projections,
    per_unit_size,
    present,
    set_at_path,
    set_head_counts,
    unpruned_class,
)
from edgekd.prune.unit_importance import Coupled, Importance, unit_importance

log = logging.getLogger(__name__)

__all__ = ["attention_blocks", "group_importance", "groups_to_remove", "prune_kv_groups", "sync_attention_config"]


def _row_spans(block: nn.Module, layout: Attention) -> list[tuple[nn.Module, int, int]]:
    """``(layer, first row, rows)`` of the queries, keys and values: three projections, three parts of one, or
    one interleaved projection whose rows are whole groups in order."""
    queries, kv, size = head_counts(block, layout)
    if layout.fused:
        layer = outer_linear(at_path(block, layout.qkv[0]))
        if layout.interleaved:
            return [(layer, 0, (queries + 2 * kv) * size)]
        return [(layer, 0, queries * size), (layer, queries * size, kv * size),
                (layer, (queries + kv) * size, kv * size)]
    return [(outer_linear(at_path(block, name)), 0, rows)
            for name, rows in zip(layout.qkv, (queries * size, kv * size, kv * size), strict=True)]


def _per_group(block: nn.Module, layout: Attention) -> list[Any]:
    """The family's ``per_head`` and ``per_kv_head`` entries ``block`` has: layers (their producing factor) and
    parameters, all laid out in equal spans per KV group (a group's query heads are contiguous)."""
    found = [at_path(block, name) for name in _per_group_names(block, layout)]
    return [item if isinstance(item, torch.Tensor) else outer_linear(item) for item in found
            if not isinstance(item, nn.ModuleList)]  # one norm per head (StableLM's qk_layernorm): rides along


def _per_group_names(block: nn.Module, layout: Attention) -> list[str]:
    return [*per_head_projections(block, layout), *present(block, layout.per_kv_head)]


def group_importance(block: nn.Module, layout: Attention, kind: Importance) -> torch.Tensor:
    """One score per KV group of ``block`` (a head, without grouped-query attention; higher: more important) by the
    ``kind`` criterion, over all of its coupled weights: its query, key and value rows (bias rows included) and its
    columns of the output projection (and its spans of the family's ``per_head``/``per_kv_head`` entries, its rows
    and columns of any ``head_mixers``)."""
    coupled: list[Coupled] = []
    for layer, start, rows in _row_spans(block, layout):
        coupled.append((layer.weight, feature_dim(layer, outputs=True), start, rows))
        if layer.bias is not None:
            coupled.append((layer.bias, 0, start, rows))
    for item in _per_group(block, layout):
        if isinstance(item, torch.Tensor):
            coupled.append((item, 0))
            continue
        coupled.append((item.weight, feature_dim(item, outputs=True)))
        if item.bias is not None:
            coupled.append((item.bias, 0))
    for name in present(block, layout.head_mixers):
        mixer = at_path(block, name)
        coupled += [(outer_linear(mixer).weight, 0), (inner_linear(mixer).weight, 1)]
    out = inner_linear(at_path(block, layout.out))
    coupled.append((out.weight, feature_dim(out, outputs=False)))
    return unit_importance(coupled, head_counts(block, layout)[1], kind)


def groups_to_remove(groups: int, ratio: float) -> int:
    """How many of ``groups`` units (KV groups, MLP channels) a step of ``ratio`` removes (one always stays)."""
    return min(math.ceil(round(ratio * groups, 9)), groups - 1)


def _rows(groups: list[int], width: int, offset: int = 0) -> list[int]:
    return [offset + row for group in groups for row in range(group * width, (group + 1) * width)]


@torch.no_grad()
def remove_groups(block: nn.Module, layout: Attention, removed: list[int]) -> None:
    """Physically remove the KV groups ``removed`` (query, key and value rows, the ``per_head`` projections' rows,
    output columns) from ``block``."""
    queries, kv, size = head_counts(block, layout)
    share = queries // kv
    kept = [g for g in range(kv) if g not in removed]
    query_rows, kv_rows = _rows(kept, share * size), _rows(kept, size)
    spans = _row_spans(block, layout)
    if layout.interleaved:
        keep_features(spans[0][0], _rows(kept, (share + 2) * size), outputs=True)
    elif layout.fused:
        keep_features(spans[0][0], [*query_rows, *_rows(kept, size, spans[1][1]), *_rows(kept, size, spans[2][1])],
                      outputs=True)
    else:
        for (layer, _, _), rows in zip(spans, (query_rows, kv_rows, kv_rows), strict=True):
            keep_features(layer, rows, outputs=True)
    for name in _per_group_names(block, layout):
        _keep_groups(block, name, kept, kv)
    for name in present(block, layout.head_mixers):
        heads = _rows(kept, share)
        keep_features(outer_linear(at_path(block, name)), heads, outputs=True)
        keep_features(inner_linear(at_path(block, name)), heads, outputs=False)
    keep_features(inner_linear(at_path(block, layout.out)), query_rows, outputs=False)
    set_head_counts(block, layout, len(kept) * share, len(kept))


def _keep_groups(block: nn.Module, name: str, kept: list[int], groups: int) -> None:
    """Keep the spans of the KV groups ``kept`` (of ``groups`` equal ones) of the layer's outputs, the parameter's
    first dimension or the list of per-head modules at ``name``."""
    rows = _rows(kept, per_unit_size(block, name, groups))
    found = at_path(block, name)
    if isinstance(found, nn.ModuleList):
        set_at_path(block, name, nn.ModuleList([found[row] for row in rows]))
    elif isinstance(found, torch.Tensor):
        index = torch.as_tensor(rows, device=found.device)
        set_at_path(block, name, nn.Parameter(found.detach().index_select(0, index).contiguous()))
    else:
        keep_features(outer_linear(found), rows, outputs=True)


def prune_kv_groups(model: nn.Module, kind: Importance, ratio: float) -> dict[int, list[int]]:
    """Remove ``ratio`` of every attention layer's KV groups, the least important by ``kind`` (in place).

    Returns the groups removed per layer (by index in the layer before the step); the config is
    rewritten by :func:`sync_attention_config`.
    """
    layout = attention_layout(model)
    removed: dict[int, list[int]] = {}
    for index, block in enumerate(attention_blocks(model)):
        count = groups_to_remove(head_counts(block, layout)[1], ratio)
        if count:
            scores = group_importance(block, layout, kind)
            removed[index] = sorted(torch.topk(scores, count, largest=False).indices.tolist())
            remove_groups(block, layout, removed[index])
    log.info("KV groups removed (layer: groups): %s", removed or "none, every layer has one group left, which stays")
    return removed


def sync_attention_config(model: nn.Module) -> dict[str, list[int]]:
    """State the attention's head counts where ``from_pretrained`` reads them (see the module docstring).

    Returns the structure's per-layer ``{"heads": [...], "kv_heads": [...]}`` when the config cannot state them,
    else ``{}`` (the config is rewritten, or already states them).
    """
    layout = attention_layout(model)
    counts = [head_counts(block, layout) for block in attention_blocks(model)]
    config = model.config
    stated = getattr(config, layout.heads)
    stated_kv = getattr(config, layout.kv_heads) if layout.kv_heads else stated
    if {(queries, kv) for queries, kv, _ in counts} == {(stated, stated_kv or stated)}:
        return {}
    if layout.head_dim_field is not None and len(set(counts)) == 1:
        queries, kv, size = counts[0]
        fields = {layout.heads: queries, layout.head_dim_field: size}
        fields |= {layout.kv_heads: kv} if layout.kv_heads else {}
        if _config_builds(model, fields):
            for name, value in fields.items():
                setattr(config, name, value)
            return {}
    return {"heads": [queries for queries, _, _ in counts], "kv_heads": [kv for _, kv, _ in counts]}


def _config_builds(model: nn.Module, fields: dict[str, int]) -> bool:
    """Whether ``model``'s class built from its config with ``fields`` has the attention shapes ``model`` has now
    (built on the meta device: nothing is allocated)."""
    config = copy.deepcopy(model.config)
    for name, value in fields.items():
        setattr(config, name, value)
    if hasattr(config, CONFIG_KEY):
        delattr(config, CONFIG_KEY)
    try:
        with torch.device("meta"):
            built = unpruned_class(type(model))(config)
    except Exception as exc:  # the family's constructor checks: ValueError, AssertionError, TypeError …
        log.info("the config cannot state the pruned heads (%s): they are recorded per layer", exc)
        return False
    return all(_shapes(now) == _shapes(fresh)
               for now, fresh in zip(attention_blocks(model), attention_blocks(built), strict=True))


def _shapes(block: nn.Module) -> dict[str, tuple[int, ...]]:
    """The attention module's dense projections (``(out, in)``, factorized or not) and other parameters' shapes."""
    dense = {name: child for name, child in block.named_children()
             if is_dense_linear(child) or isinstance(child, LowRankLinear)}
    shapes = {name: linear_shape(child) for name, child in dense.items()}
    return shapes | {name: tuple(p.shape) for name, p in block.named_parameters()
                     if name.partition(".")[0] not in dense}
