"""Pruning whole key/value groups of decoder attention (Llama, Mistral, Qwen2, Qwen3, Gemma).

With ``num_key_value_heads`` K below ``num_attention_heads`` H (grouped-query attention, Ainslie et al.,
2023; K = H is plain multi-head attention), each key/value head is shared by ``H / K`` query heads. A
group is removed whole: its key and value head (rows of ``k_proj`` and ``v_proj``), its query heads
(rows of ``q_proj``) and the columns of ``o_proj`` that read them. Every layer so stays a valid GQA
layer with the same queries per group and the same ``head_dim``, and the rewritten config
(``num_attention_heads``, ``num_key_value_heads``, ``head_dim`` stated explicitly) reloads the model
with plain ``from_pretrained``. The config states one head count for all layers, so every layer loses
the same number of groups: ``ceil(ratio · K)``, at most ``K − 1``.

Torch-Pruning's dependency graph does not couple these projections (rotary embeddings and
``repeat_kv`` sit between them) and its own GQA mode removes query heads inside each group while
keeping every KV head; so the groups are ranked here and their rows and columns removed with
Torch-Pruning's layer functions. A group's importance follows the criteria of the rest of the
pruning code over all of its coupled weights (bias rows included): L1 or L2 magnitude (Li et al.,
2017), first-order Taylor ``Σ |w · ∂L/∂w|`` (Molchanov et al., 2019), or random as a control.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from edgekd.errors import ModelError
from edgekd.prune.structure import inner_linear, out_features, outer_linear
from edgekd.prune.unit_importance import Importance, unit_importance

log = logging.getLogger(__name__)

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """Every decoder layer's attention (a module with ``q_proj``, ``k_proj``, ``v_proj`` and ``o_proj``)."""
    return [m for m in model.modules() if all(hasattr(m, name) for name in PROJECTIONS)]


def kv_heads(block: nn.Module) -> int:
    """The block's key/value heads now (``k_proj`` rows over ``head_dim``)."""
    return out_features(block.k_proj) // block.head_dim


def group_importance(block: nn.Module, kind: Importance) -> torch.Tensor:
    """One score per KV group of ``block`` (higher: more important) by the ``kind`` criterion, over all of its
    coupled weights: its rows of ``q_proj``, ``k_proj``, ``v_proj`` (bias rows included) and columns of ``o_proj``."""
    rows = [outer_linear(getattr(block, name)) for name in ("q_proj", "k_proj", "v_proj")]
    coupled = [(layer.weight, 0) for layer in rows] + [(layer.bias, 0) for layer in rows if layer.bias is not None]
    return unit_importance([*coupled, (inner_linear(block.o_proj).weight, 1)], kv_heads(block), kind)


def groups_to_remove(groups: int, ratio: float) -> int:
    """How many of ``groups`` KV groups a step of ``ratio`` removes (at least one group always stays)."""
    return min(math.ceil(round(ratio * groups, 9)), groups - 1)


@torch.no_grad()
def remove_groups(block: nn.Module, removed: list[int]) -> None:
    """Physically remove the KV groups ``removed`` (rows of q/k/v, columns of o) from ``block``."""
    import torch_pruning as tp

    size, groups = block.head_dim, kv_heads(block)
    queries = out_features(block.q_proj) // groups
    query_rows = [i for g in removed for i in range(g * queries, (g + 1) * queries)]
    kv_rows = [i for g in removed for i in range(g * size, (g + 1) * size)]
    tp.prune_linear_out_channels(outer_linear(block.q_proj), query_rows)
    for name in ("k_proj", "v_proj"):
        tp.prune_linear_out_channels(outer_linear(getattr(block, name)), kv_rows)
    tp.prune_linear_in_channels(inner_linear(block.o_proj), query_rows)


def prune_kv_groups(model: nn.Module, kind: Importance, ratio: float) -> dict[int, list[int]]:
    """Remove ``ratio`` of every attention layer's KV groups, the least important by ``kind`` (in place).

    Returns the groups removed per layer (by index in the layer before the step); the config is
    rewritten by :func:`sync_attention_config`.
    """
    removed: dict[int, list[int]] = {}
    for index, block in enumerate(attention_blocks(model)):
        count = groups_to_remove(kv_heads(block), ratio)
        if count:
            scores = group_importance(block, kind)
            removed[index] = sorted(torch.topk(scores, count, largest=False).indices.tolist())
            remove_groups(block, removed[index])
    log.info("KV groups removed (layer: groups): %s", removed or "none, every layer has one group left, which stays")
    return removed


def sync_attention_config(model: nn.Module) -> None:
    """State the attention's (common) head counts and head size in ``model.config`` (``from_pretrained`` reloads it)."""
    blocks = attention_blocks(model)
    counts = {(out_features(b.q_proj) // b.head_dim, kv_heads(b), b.head_dim) for b in blocks}
    if len(counts) != 1:
        raise ModelError(f"the {model.config.model_type} attention layers have different head counts "
                         f"{sorted(counts)}; its config states one (prune with scope: layer)")
    heads, kv, head_dim = counts.pop()
    model.config.num_attention_heads, model.config.num_key_value_heads = heads, kv
    model.config.head_dim = head_dim
