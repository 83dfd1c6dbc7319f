"""Low-rank factorization of linear layers by truncated SVD (Denton et al., 2014; LadaBERT, Mao et al., 2020).

A weight ``W [out, in]`` with singular values ``s_1 ≥ s_2 ≥ …`` is replaced by ``B A`` where
``A = sqrt(S_r) V_r^T [r, in]`` and ``B = U_r sqrt(S_r) [out, r]``: the best rank-``r`` approximation
(Eckart–Young), whose Frobenius error is ``sqrt(sum_{i>r} s_i²)``. The rank of a layer keeps a share
``energy`` of ``sum s_i²``, or gives a share ``param_ratio`` of its parameters; a layer whose
factor pair would keep more than ``max_size_ratio`` of the dense parameters is left dense (two
smaller matrix products only pay when the rank is well below ``in·out / (in + out)``).
A layer factorized earlier is re-factorized from its product ``B A`` (a lower rank each time).
A layer several layers share (ALBERT's layer group, one module run in every layer of the group) is
factorized once, in every place that holds it, so every use computes with the same pair and its
parameters count once.

With ``embeddings`` set, embedding tables ``E [num, dim]`` are factorized the same way into a thin
table ``[num, r]`` and a projection ``[r, dim]`` (ALBERT's factorized embedding, Lan et al., 2020;
LadaBERT factorizes them too): in a small BERT the word embeddings are a quarter of the parameters
and nothing else touches them. A factorized table answers ``.weight`` with the product of its factors,
for model code that reads a table whole (DeBERTa-v2's relative-position embeddings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.models.task_model import TaskModel
from edgekd.prune.config import FactorizeConfig
from edgekd.prune.structure import (
    LowRank,
    LowRankConv2d,
    LowRankEmbedding,
    LowRankLinear,
    conv_layers,
    dense_weight,
    embedding_tables,
    linear_layers,
    replace_module,
)
from edgekd.prune.structured import is_channel_family, record_structure


@dataclass(frozen=True)
class LayerRank:
    """What factorization decided for one linear layer."""

    name: str
    shape: tuple[int, int]
    rank: int | None
    """``None``: left as it was (the factorized form would not be small enough)."""
    energy_kept: float


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values hold at least ``energy`` of the total squared sum."""
    squared = singular_values.double() ** 2
    cumulative = torch.cumsum(squared, 0) / squared.sum().clamp_min(1e-30)
    return min(int(torch.searchsorted(cumulative, torch.tensor(energy, dtype=torch.float64))) + 1,
               len(singular_values))


def rank_for_params(shape: tuple[int, int], param_ratio: float) -> int:
    """Largest rank whose factor pair has at most ``param_ratio`` of the dense layer's weights (at least 1)."""
    out_dim, in_dim = shape
    return max(1, math.floor(param_ratio * out_dim * in_dim / (out_dim + in_dim)))


@torch.no_grad()
def factorize_layer(layer: nn.Module, rank: int) -> LowRank:
    """The rank-``rank`` truncated SVD of a linear layer, conv layer or embedding table (or an earlier pair) as a
    factor pair."""
    original = dense_weight(layer)
    weight = original.double()
    u, s, vh = torch.linalg.svd(weight, full_matrices=False)
    root = s[:rank].sqrt()
    left, right = u[:, :rank] * root[None, :], root[:, None] * vh[:rank]  # weight ≈ left @ right
    if isinstance(layer, nn.Embedding | LowRankEmbedding):
        table = layer[0] if isinstance(layer, LowRankEmbedding) else layer
        embedding = LowRankEmbedding(weight.shape[0], weight.shape[1], rank, table.padding_idx).to(original.dtype)
        embedding[0].weight.copy_(left)
        embedding[1].weight.copy_(right.T)
        return embedding
    if isinstance(layer, nn.Conv2d | LowRankConv2d):
        conv = LowRankConv2d(layer, rank).to(original.dtype)
        conv[0].weight.copy_(right.view(conv[0].weight.shape))
        conv[1].weight.copy_(left.view(conv[1].weight.shape))
        bias = layer[1].bias if isinstance(layer, LowRankConv2d) else layer.bias
        if bias is not None:
            conv[1].bias.copy_(bias)
        return conv
    bias = layer[1].bias if isinstance(layer, LowRankLinear) else layer.bias
    pair = LowRankLinear(weight.shape[1], weight.shape[0], rank, bias=bias is not None).to(original.dtype)
    pair[0].weight.copy_(right)
    pair[1].weight.copy_(left)
    if bias is not None:
        pair[1].bias.copy_(bias)
    return pair


def choose_rank(layer: nn.Module, config: FactorizeConfig) -> tuple[int, float]:
    """The rank ``config`` gives ``layer`` and the share of squared singular values it keeps."""
    weight = dense_weight(layer).detach().double()
    singular = torch.linalg.svdvals(weight)
    if config.param_ratio is not None:
        rank = min(rank_for_params(tuple(weight.shape), config.param_ratio), len(singular))
    else:
        rank = rank_for_energy(singular, config.energy)
    squared = singular**2
    return rank, float(squared[:rank].sum() / squared.sum().clamp_min(1e-30))


def factorize_model(model: nn.Module, config: FactorizeConfig, *, skip: tuple[str, ...] = (),
                    convs: bool = False) -> list[LayerRank]:
    """Factorize every linear layer (and embedding table, with ``config.embeddings``; conv layer, with ``convs``)
    that ``config`` makes smaller (in place).

    ``skip`` names modules left alone (e.g. a classifier whose outputs the graph must keep).
    Returns one :class:`LayerRank` per layer considered (a conv's shape: ``[out, in·kh·kw]``).
    """
    decisions: list[LayerRank] = []
    for name, layer in considered_layers(model, config, skip=skip, convs=convs):
        out_dim, in_dim = dense_weight(layer).shape
        rank, kept = choose_rank(layer, config)
        current = layer.rank if isinstance(layer, LowRank) else None
        small_enough = rank * (out_dim + in_dim) <= config.max_size_ratio * out_dim * in_dim
        if not small_enough or (current is not None and rank >= current):
            decisions.append(LayerRank(name, (out_dim, in_dim), None, kept))
            continue
        replace_module(model, name, factorize_layer(layer, rank))
        decisions.append(LayerRank(name, (out_dim, in_dim), rank, kept))
    return decisions


def considered_layers(model: nn.Module, config: FactorizeConfig, *, skip: tuple[str, ...] = (),
                      convs: bool = False) -> list[tuple[str, nn.Module]]:
    """The layers :func:`factorize_model` weighs: every linear layer, conv layer (with ``convs``) and embedding
    table (with ``config.embeddings``) not in ``skip``."""
    layers = (linear_layers(model) + (conv_layers(model) if convs else [])
              + (embedding_tables(model) if config.embeddings else []))
    return [(name, layer) for name, layer in layers if name not in skip]


def can_shrink(layer: nn.Module, config: FactorizeConfig) -> bool:
    """Whether a rank ``config`` may choose makes ``layer``'s factor pair at most ``max_size_ratio`` of its dense
    weights: the rank ``param_ratio`` gives (its shape's alone), or under ``energy`` (the trained weights') rank 1."""
    out_dim, in_dim = dense_weight(layer).shape
    rank = 1 if config.param_ratio is None else min(rank_for_params((out_dim, in_dim), config.param_ratio),
                                                    out_dim, in_dim)
    return rank * (out_dim + in_dim) <= config.max_size_ratio * out_dim * in_dim


def classifier_skip(model: nn.Module) -> tuple[str, ...]:
    """The name of ``model``'s classifier, its last linear layer (its few outputs never pay for two products);
    none for a model without linear layers (a conv producing the logits)."""
    linears = linear_layers(model)
    return (linears[-1][0],) if linears else ()


def shrinkable_layers(model: nn.Module, config: FactorizeConfig, *, convs: bool = False) -> list[str]:
    """The layers of ``model`` but its classifier that a factorize step by ``config`` may make smaller
    (:func:`can_shrink`); none: the step would leave the model as it was."""
    return [name for name, layer in considered_layers(model, config, skip=classifier_skip(model), convs=convs)
            if can_shrink(layer, config)]


def factorize_task_model(model: TaskModel, config: FactorizeConfig) -> list[LayerRank]:
    """Factorize every linear layer of ``model`` but the classifier, and an image CNN family's conv layers.

    The model's spec or config then states its new structure, so its directory rebuilds it. (The convs of
    edgekd's own ``cnn``/``resnet``/``mobilenet_v2`` and of a user's module are left dense: their specs record
    layer shapes by name, which a factor pair's two convs would not fit.)
    """
    decisions = factorize_model(model.module, config, skip=classifier_skip(model.module),
                                convs=is_channel_family(model))
    record_structure(model)
    return decisions


def nothing_factorized(decisions: list[LayerRank], config: FactorizeConfig) -> str | None:
    """Why a factorize step whose ``decisions`` factorized no layer left the model as it was; None when it
    factorized one."""
    if any(decision.rank is not None for decision in decisions):
        return None
    if not decisions:
        return ("it has no layer factorize rewrites (linear layers but the classifier"
                f"{', embedding tables' if config.embeddings else ''}, an image CNN family's convs)")
    rule = f"param_ratio {config.param_ratio:g}" if config.param_ratio is not None else f"energy {config.energy:g}"
    return (f"at {rule} no factor pair of its {len(decisions)} layer(s) ({', '.join(d.name for d in decisions[:3])}"
            f"{' ...' if len(decisions) > 3 else ''}) is at most max_size_ratio {config.max_size_ratio:g} of the "
            "dense weights")
