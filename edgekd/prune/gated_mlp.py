"""Pruning the gated feed-forward blocks of decoder classifiers (Llama, Qwen2, Mistral).

Each decoder layer's MLP is ``down_proj(act(gate_proj(x)) * up_proj(x))``: Torch-Pruning's dependency
graph couples a channel's ``gate_proj`` and ``up_proj`` rows with its ``down_proj`` column, so whole
channels are removed. Every other layer (embeddings, attention projections, ``down_proj``'s outputs,
the score head) is ignored, so neither the hidden width nor the attention heads change. The
family's config states one ``intermediate_size`` for all layers, so every layer loses the same share
(``scope: layer``; ``edgekd validate`` refuses ``global``) and the pruned model reloads with plain
``from_pretrained`` once ``config.intermediate_size`` is rewritten (:func:`sync_gated_config`).
A factorized projection is pruned through its outer dimensions only (its rank stays). Attention heads
are pruned by whole key/value groups in :mod:`edgekd.prune.kv_groups`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from edgekd.errors import ModelError
from edgekd.prune.structure import out_features, outer_linear


def gated_mlps(model: nn.Module) -> list[nn.Module]:
    """Every decoder layer's gated MLP (a module with ``gate_proj``, ``up_proj`` and ``down_proj``)."""
    return [m for m in model.modules() if all(hasattr(m, name) for name in ("gate_proj", "up_proj", "down_proj"))]


def gated_plan(model: nn.Module) -> dict[str, Any]:
    """MetaPruner arguments pruning only the gated MLPs' channels (see the module docstring)."""
    prunable = {id(outer_linear(m)) for mlp in gated_mlps(model) for m in (mlp.gate_proj, mlp.up_proj)}
    ignored = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Embedding) and id(m) not in prunable]
    return {"ignored_layers": ignored}


def sync_gated_config(model: nn.Module) -> None:
    """After pruning: ``config.intermediate_size`` is the MLPs' (common) width, so ``from_pretrained`` reloads it."""
    widths = {out_features(mlp.gate_proj) for mlp in gated_mlps(model)}
    if len(widths) != 1:
        raise ModelError(f"pruning left the {model.config.model_type} MLPs with different widths {sorted(widths)}; "
                         "its config states one intermediate_size (prune with scope: layer)")
    model.config.intermediate_size = widths.pop()
