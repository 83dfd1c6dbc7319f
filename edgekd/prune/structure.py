"""How a pruned or factorized model is described, so its directory rebuilds it from plain JSON and safetensors.

Pruning and factorization change shapes that a model's spec or config no longer states. The
model directory carries the difference as a small JSON mapping, the **structure**:

``{"heads": [h_1, ...], "intermediate": [f_1, ...], "low_rank": {"module.name": rank, ...}}``

- ``heads`` / ``intermediate`` (BERT-family models): attention heads and feed-forward
  width of every encoder layer (the head size stays ``hidden_size / num_attention_heads``);
- ``heads`` / ``kv_heads`` (families an :class:`~edgekd.models.families.Attention` describes whose config
  cannot state fewer heads of the same size: GPT-2, DistilBERT and ALBERT derive the head size from the head
  count, DeBERTa-v2 sizes its output projection by the hidden width): every attention module's query and
  key/value heads (ALBERT's layers share one),
  the config's head count left as it was so the head size it derives stays; families whose config states
  ``head_dim`` (Llama, Qwen2, Phi, ViT …) have none: their configs state pruned head counts and MLP widths
  themselves (:mod:`edgekd.prune.kv_groups`, :mod:`edgekd.prune.gated_mlp`, :mod:`edgekd.prune.plain_mlp`);
- ``channels`` (image CNN families, :mod:`edgekd.prune.channel_structure`): every module channel pruning
  narrowed, with its changed attributes and tensor shapes;
- ``low_rank``: linear layers (``nn.Linear``, or the transposed ``Conv1D`` of GPT-2) replaced by a
  :class:`LowRankLinear` of that rank, and embedding
  tables replaced by a :class:`LowRankEmbedding` (ALBERT-style: a thin table, then a projection).

Hugging Face models keep it in ``config.json`` under ``edgekd_structure`` and reload with
``from_pretrained`` of the class :func:`pruned_class` derives (the architecture is built, then
reshaped to the structure, before the weights are read); plain models keep ``low_rank`` in
``edgekd_model.json`` and their widths in their spec. A BERT whose heads are all kept, with one
feed-forward width and no low-rank layer, needs no structure: ``intermediate_size`` says it, and
``AutoModelForSequenceClassification.from_pretrained`` reloads it as it is.

Transformers 5 dropped ``config.pruned_heads``/``prune_heads``, and its BERT config cannot state a
head count whose heads keep their size, hence the structure rather than HF's own bookkeeping.
"""

from __future__ import annotations

import sys
from functools import reduce
from typing import Any

import torch
from torch import nn

from edgekd.errors import ModelError
from edgekd.models.families import Attention, family
from edgekd.models.layer_shapes import replace_submodule
from edgekd.prune.channel_structure import CHANNELS_KEY, reshape_channels

CONFIG_KEY = "edgekd_structure"


def _conv1d() -> tuple[type, ...]:
    """transformers' ``Conv1D`` (GPT-2's linear layer, its weight stored transposed as ``[in, out]``), as a type
    tuple for ``isinstance``; empty while transformers' layers are not imported (no such layer exists then), so
    plain models never import transformers."""
    layers = sys.modules.get("transformers.pytorch_utils")
    return (layers.Conv1D,) if layers is not None else ()


class LowRankLinear(nn.Sequential):
    """``x W^T + b`` as ``(x A^T) B^T + b`` with ``A: [rank, in]`` and ``B: [out, rank]`` (two ``nn.Linear``)."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))

    @property
    def rank(self) -> int:
        return self[0].out_features


class LowRankEmbedding(nn.Sequential):
    """An embedding table ``E [num, dim]`` as ``E_r [num, rank]`` followed by ``P: [dim, rank]`` (``E ≈ E_r Pᵀ``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: int | None = None) -> None:
        super().__init__(nn.Embedding(num_embeddings, rank, padding_idx=padding_idx),
                         nn.Linear(rank, embedding_dim, bias=False))

    @property
    def rank(self) -> int:
        return self[0].embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        """The whole table ``E_r Pᵀ`` ``[num, dim]``, for model code that reads a table rather than looking rows up
        (DeBERTa-v2's encoder reads its relative-position embeddings ``rel_embeddings.weight`` whole)."""
        return self[0].weight @ self[1].weight.T


class LowRankConv2d(nn.Sequential):
    """A conv ``W [out, in, kh, kw]`` as ``rank`` filters of its kernel (stride, padding and dilation kept), then a
    1 × 1 conv to ``out`` channels with its bias: ``W`` reshaped ``[out, in·kh·kw]`` as a factor pair (Denton et al.,
    2014; Zhang et al., 2016), so MACs per output position fall from ``out·in·kh·kw`` to
    ``rank·(in·kh·kw + out)``."""

    def __init__(self, conv: nn.Conv2d | LowRankConv2d, rank: int) -> None:
        """An uninitialised pair of ``rank`` for a dense ``conv`` (or for an earlier pair: same geometry)."""
        first, last = (conv[0], conv[1]) if isinstance(conv, LowRankConv2d) else (conv, conv)
        super().__init__(
            nn.Conv2d(first.in_channels, rank, first.kernel_size, stride=first.stride, padding=first.padding,
                      dilation=first.dilation, bias=False, padding_mode=first.padding_mode),
            nn.Conv2d(rank, last.out_channels, 1, bias=last.bias is not None))

    @property
    def rank(self) -> int:
        return self[0].out_channels

    # The geometry of the conv it replaced, for model code that reads it (MobileNet pads TensorFlow-style by its
    # conv's kernel, stride and dilation).
    in_channels = property(lambda self: self[0].in_channels)
    out_channels = property(lambda self: self[1].out_channels)
    kernel_size = property(lambda self: self[0].kernel_size)
    stride = property(lambda self: self[0].stride)
    padding = property(lambda self: self[0].padding)
    dilation = property(lambda self: self[0].dilation)
    groups = 1


#: The factor-pair modules; the structure's ``low_rank`` lists every kind by name.
LowRank = LowRankLinear | LowRankEmbedding | LowRankConv2d


def is_dense_conv(module: nn.Module) -> bool:
    """Whether ``module`` is exactly ``nn.Conv2d`` with one group: a subclass may change what its weight means (BiT's
    weight-standardised conv), and a grouped or depthwise conv has no one matrix to factorize."""
    return type(module) is nn.Conv2d and module.groups == 1


def is_dense_linear(module: nn.Module) -> bool:
    """Whether ``module`` is a plain linear layer: ``nn.Linear`` or transformers' transposed ``Conv1D``."""
    return isinstance(module, (nn.Linear, *_conv1d()))


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """``(out, in)`` features of an ``nn.Linear``, a ``Conv1D`` or a :class:`LowRankLinear`."""
    if isinstance(module, LowRankLinear):
        return module[1].out_features, module[0].in_features
    if isinstance(module, _conv1d()):
        return module.nf, module.nx
    return module.out_features, module.in_features


def out_features(module: nn.Module) -> int:
    """Output width of an ``nn.Linear``, a ``Conv1D`` or a :class:`LowRankLinear`."""
    return linear_shape(module)[0]


def dense_weight(layer: nn.Module) -> torch.Tensor:
    """The matrix a layer applies: ``[out, in]`` for linear layers (``Conv1D``'s transposed back), the
    ``[num, dim]`` table for embeddings (the product of a factor pair)."""
    if isinstance(layer, LowRankLinear):
        return layer[1].weight @ layer[0].weight
    if isinstance(layer, LowRankEmbedding):
        return layer[0].weight @ layer[1].weight.T
    if isinstance(layer, LowRankConv2d):
        return layer[1].weight.flatten(1) @ layer[0].weight.flatten(1)
    if isinstance(layer, nn.Conv2d):
        return layer.weight.flatten(1)
    if isinstance(layer, _conv1d()):
        return layer.weight.T
    return layer.weight


def outer_linear(layer: nn.Module) -> nn.Module:
    """The layer producing a linear layer's outputs (the second factor of a :class:`LowRankLinear`)."""
    return layer[1] if isinstance(layer, LowRankLinear) else layer


def inner_linear(layer: nn.Module) -> nn.Module:
    """The layer reading a linear layer's inputs (the first factor of a :class:`LowRankLinear`)."""
    return layer[0] if isinstance(layer, LowRankLinear) else layer


def feature_dim(layer: nn.Module, *, outputs: bool) -> int:
    """The weight dimension holding a dense layer's outputs (or inputs): ``Conv1D`` stores ``[in, out]``."""
    transposed = not isinstance(layer, nn.Linear)
    return int(outputs == transposed)


@torch.no_grad()
def keep_features(layer: nn.Module, keep: torch.Tensor | list[int], *, outputs: bool) -> None:
    """Keep only the outputs (or inputs) ``keep`` of a dense ``nn.Linear`` or ``Conv1D`` (in place)."""
    if not is_dense_linear(layer):
        raise ModelError(f"cannot prune a {type(layer).__name__} (expected nn.Linear or Conv1D)")
    keep = torch.as_tensor(keep, dtype=torch.long, device=layer.weight.device)
    layer.weight = nn.Parameter(layer.weight.index_select(feature_dim(layer, outputs=outputs), keep).contiguous())
    if outputs and layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.index_select(0, keep).contiguous())
    size = len(keep)
    if isinstance(layer, nn.Linear):
        setattr(layer, "out_features" if outputs else "in_features", size)
    else:
        setattr(layer, "nf" if outputs else "nx", size)


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every linear layer of ``model`` in order: ``nn.Linear``, ``Conv1D`` and :class:`LowRankLinear`.

    The parts of a factor pair (including a :class:`LowRankEmbedding`'s projection) are not listed.
    """
    pairs = {name for name, m in model.named_modules() if isinstance(m, LowRank)}
    return [(name, m) for name, m in model.named_modules()
            if (name in pairs and isinstance(m, LowRankLinear))
            or (is_dense_linear(m) and name.rpartition(".")[0] not in pairs)]


def conv_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv layer of ``model`` a factor pair can replace (:func:`is_dense_conv`) and every
    :class:`LowRankConv2d`, in order (not the latter's parts)."""
    pairs = {name for name, m in model.named_modules() if isinstance(m, LowRankConv2d)}
    return [(name, m) for name, m in model.named_modules()
            if name in pairs or (is_dense_conv(m) and name.rpartition(".")[0] not in pairs)]


def embedding_tables(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every embedding table of ``model``: ``nn.Embedding`` and :class:`LowRankEmbedding` (not the latter's parts)."""
    pairs = {name for name, m in model.named_modules() if isinstance(m, LowRankEmbedding)}
    return [(name, m) for name, m in model.named_modules()
            if name in pairs or (isinstance(m, nn.Embedding) and name.rpartition(".")[0] not in pairs)]


def low_rank_layers(model: nn.Module) -> dict[str, int]:
    """The factor pairs (:class:`LowRankLinear`, :class:`LowRankEmbedding`) of ``model`` by name, with their ranks."""
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, LowRank)}


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule ``name`` wherever ``model`` holds that module (in place).

    A module held under several names (weights shared by aliasing one module) is replaced under all of them, so
    every use computes with ``new`` and its parameters exist once; ``named_modules`` lists it under its first name.
    """
    replace_submodule(model, model.get_submodule(name), new)


def apply_low_rank(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """Replace the layers named in ``ranks`` by empty factor pairs of those ranks (in place).

    An ``nn.Linear`` or ``Conv1D`` becomes a :class:`LowRankLinear`, an ``nn.Embedding`` a :class:`LowRankEmbedding`,
    an ``nn.Conv2d`` a :class:`LowRankConv2d`.
    """
    for name, rank in ranks.items():
        dense = model.get_submodule(name)
        if isinstance(dense, nn.Conv2d):
            pair: nn.Module = LowRankConv2d(dense, rank)
        elif isinstance(dense, nn.Embedding):
            pair = LowRankEmbedding(dense.num_embeddings, dense.embedding_dim, rank, dense.padding_idx)
        else:
            out_dim, in_dim = linear_shape(dense)
            pair = LowRankLinear(in_dim, out_dim, rank, dense.bias is not None)
        replace_module(model, name, pair)
    return model


# --------------------------------------------------------------------------- BERT-family layout


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder layers of a BERT-family model (``base_model.encoder.layer``)."""
    return list(model.base_model.encoder.layer)


def bert_structure(model: nn.Module) -> dict[str, Any]:
    """The structure of a (possibly pruned or factorized) BERT-family model, as stored in its config."""
    layers = encoder_layers(model)
    return {
        "heads": [out_features(layer.attention.self.query) // layer.attention.self.attention_head_size
                  for layer in layers],
        "intermediate": [out_features(layer.intermediate.dense) for layer in layers],
        "low_rank": low_rank_layers(model),
    }


def sync_bert_config(model: nn.Module) -> None:
    """After pruning: set each attention module's head counts, and the config's structure (see module doc)."""
    for layer in encoder_layers(model):
        attention = layer.attention.self
        attention.all_head_size = out_features(attention.query)
        attention.num_attention_heads = attention.all_head_size // attention.attention_head_size
    structure = bert_structure(model)
    config = model.config
    uniform_ffn = len(set(structure["intermediate"])) == 1
    if set(structure["heads"]) == {config.num_attention_heads} and uniform_ffn and not structure["low_rank"]:
        config.intermediate_size = structure["intermediate"][0]
        if hasattr(config, CONFIG_KEY):
            delattr(config, CONFIG_KEY)
    else:
        setattr(config, CONFIG_KEY, structure)


def sync_low_rank_config(model: nn.Module, heads: dict[str, list[int]] | None = None) -> None:
    """A model whose config states its other shapes (decoders, GPT-2 …): record its low-rank layers and the per-layer
    ``heads`` (``{"heads": [...], "kv_heads": [...]}``, for a config that cannot state them), if any, in the config."""
    structure = {**(heads or {}), "low_rank": low_rank_layers(model)}
    if heads or structure["low_rank"]:
        setattr(model.config, CONFIG_KEY, structure)
    elif hasattr(model.config, CONFIG_KEY):
        delattr(model.config, CONFIG_KEY)


def restructure(model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Rebuild a freshly initialised model to ``structure``: BERT-family heads and widths, or another family's
    per-layer heads, when it states them, then its low-rank layers; or an image CNN's low-rank layers, then its
    pruned channels (recorded against the model with its factor pairs, whose channels pruning narrows too)."""
    if CHANNELS_KEY in structure:  # recorded against the model with its factor pairs in place
        return reshape_channels(apply_low_rank(model, structure["low_rank"]), structure[CHANNELS_KEY])
    if "intermediate" in structure:
        return reshape_bert(model, structure)
    if "heads" in structure:
        reshape_attention(model, structure["heads"], structure["kv_heads"])
    return apply_low_rank(model, structure["low_rank"])


# --------------------------------------------------------------------------- attention a family describes


def at_path(root: Any, dotted: str) -> Any:
    """The attribute at the dotted path ``dotted`` from ``root`` (``self.query_proj``), ``None`` if it is missing."""
    return reduce(lambda obj, name: getattr(obj, name, None) if obj is not None else None, dotted.split("."), root)


def set_at_path(root: Any, dotted: str, value: Any) -> None:
    """Set the attribute at the dotted path ``dotted`` from ``root`` to ``value`` (its parent must exist)."""
    parent, _, name = dotted.rpartition(".")
    setattr(at_path(root, parent) if parent else root, name, value)


def attention_layout(model: nn.Module) -> Attention | None:
    """Where ``model``'s attention lives and which config fields state it (``None``: not described)."""
    config = getattr(model, "config", None)
    return family(config.model_type).attention if hasattr(config, "model_type") else None


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """Every layer's self-attention module of ``model`` (the one holding its family's q/k/v and output projections;
    cross-attention, transformers' ``is_cross_attention``, reads another sequence's keys and is left as it is)."""
    layout = attention_layout(model)
    if layout is None or any(getattr(model.config, flag, False) for flag in layout.unless):
        return []
    return [m for m in model.modules() if all(at_path(m, name) is not None for name in (*layout.qkv, layout.out))
            and not getattr(m, "is_cross_attention", False)]


def per_head_projections(block: nn.Module, layout: Attention) -> list[str]:
    """The paths of the family's ``per_head`` projections and parameters ``block`` has (built under some configs
    only)."""
    return present(block, layout.per_head)


def present(block: nn.Module, paths: tuple[str, ...]) -> list[str]:
    """Those of ``paths`` (from ``block``) that lead to a module or parameter (some are built under some configs
    only, e.g. DeBERTa's talking-head projections are ``None`` without ``talking_head``)."""
    return [name for name in paths if at_path(block, name) is not None]


def head_counts(block: nn.Module, layout: Attention) -> tuple[int, int, int]:
    """``(query heads, key/value heads, head size)`` of an attention module now, read from its projections."""
    size = at_path(block, layout.head_size)
    queries = linear_shape(at_path(block, layout.out))[1] // size
    if layout.fused:
        rows = linear_shape(at_path(block, layout.qkv[0]))[0]
        kv, rest = divmod(rows - queries * size, 2 * size)
        if rest or kv <= 0:
            raise ModelError(f"a fused {layout.qkv[0]} of {rows} outputs is not [queries | keys | values] of "
                             f"{size}-wide heads around {queries} query heads")
        return queries, kv, size
    return queries, linear_shape(at_path(block, layout.qkv[1]))[0] // size, size


def set_head_counts(block: nn.Module, layout: Attention, heads: int, kv_heads: int) -> None:
    """State ``heads`` query and ``kv_heads`` key/value heads in the attention module's own attributes (its forward
    reads them)."""
    size = at_path(block, layout.head_size)
    for name in layout.module_heads:
        set_at_path(block, name, heads)
    for name in layout.module_kv_heads:
        set_at_path(block, name, kv_heads)
    for name in layout.module_width:
        set_at_path(block, name, heads * size)


def per_unit_size(block: nn.Module, name: str, units: int) -> int:
    """How wide each of ``units`` equal spans is in the ``per_head``/``per_kv_head`` entry ``name`` of ``block``: of
    a layer's outputs, or of a parameter's first dimension."""
    found = at_path(block, name)
    if isinstance(found, nn.ModuleList):
        width = len(found)
    else:
        width = found.shape[0] if isinstance(found, torch.Tensor) else linear_shape(found)[0]
    if width % units:
        raise ModelError(f"{name} has {width} outputs, not {units} equal spans, one per head")
    return width // units


def _resized(found: Any, size: int) -> Any:
    """A fresh layer (``nn.Linear`` or ``Conv1D``) or parameter like ``found`` with ``size`` outputs (a parameter:
    along its first dimension; a list of one module per head: its first ``size``, all alike)."""
    if isinstance(found, nn.ModuleList):
        return nn.ModuleList(list(found)[:size])
    if isinstance(found, torch.Tensor):
        return nn.Parameter(found.new_empty(size, *found.shape[1:]))
    return _dense_like(found, size, linear_shape(found)[1])


def _dense_like(layer: nn.Module, out_dim: int, in_dim: int) -> nn.Module:
    """A fresh dense layer of ``layer``'s kind (``nn.Linear`` or ``Conv1D``, with or without bias), resized."""
    if isinstance(layer, nn.Linear):
        return nn.Linear(in_dim, out_dim, bias=layer.bias is not None)
    return type(layer)(out_dim, in_dim)


def reshape_attention(model: nn.Module, heads: list[int], kv_heads: list[int]) -> nn.Module:
    """Rebuild a freshly initialised model's attention to ``heads`` query and ``kv_heads`` key/value heads per layer,
    each of the head size it was built with (weights are loaded afterwards)."""
    layout = attention_layout(model)
    for block, queries, kv in zip(attention_blocks(model), heads, kv_heads, strict=True):
        built, built_kv, size = head_counts(block, layout)
        shapes = ({layout.qkv[0]: (queries + 2 * kv) * size} if layout.fused else
                  dict(zip(layout.qkv, (queries * size, kv * size, kv * size), strict=True)))
        shapes |= {name: per_unit_size(block, name, built) * queries for name in per_head_projections(block, layout)}
        shapes |= {name: per_unit_size(block, name, built_kv) * kv for name in present(block, layout.per_kv_head)}
        for name, rows in shapes.items():
            set_at_path(block, name, _resized(at_path(block, name), rows))
        for name in present(block, layout.head_mixers):
            set_at_path(block, name, _dense_like(at_path(block, name), queries, queries))
        out = at_path(block, layout.out)
        set_at_path(block, layout.out, _dense_like(out, linear_shape(out)[0], queries * size))
        set_head_counts(block, layout, queries, kv)
    return model


def reshape_bert(model: nn.Module, structure: dict[str, Any]) -> nn.Module:
    """Rebuild a freshly initialised BERT-family model to ``structure`` (weights are loaded afterwards)."""
    hidden = model.config.hidden_size
    for layer, heads, width in zip(encoder_layers(model), structure["heads"], structure["intermediate"], strict=True):
        attention = layer.attention.self
        attention.num_attention_heads = heads
        attention.all_head_size = heads * attention.attention_head_size
        for name in ("query", "key", "value"):
            setattr(attention, name, nn.Linear(hidden, attention.all_head_size))
        layer.attention.output.dense = nn.Linear(attention.all_head_size, hidden)
        layer.intermediate.dense = nn.Linear(hidden, width)
        layer.output.dense = nn.Linear(width, hidden)
    return apply_low_rank(model, structure["low_rank"])


_PRUNED_CLASSES: dict[type, type] = {}


def unpruned_class(cls: type) -> type:
    """The Hugging Face model class a :func:`pruned_class` derives from (``cls`` itself if it is none)."""
    while cls in _PRUNED_CLASSES.values():
        cls = cls.__bases__[0]
    return cls


def pruned_class(base: type) -> type:
    """A subclass of the Hugging Face model class ``base`` that reshapes itself to ``config.edgekd_structure``.

    ``pruned_class(BertForSequenceClassification).from_pretrained(directory)`` then reloads a
    pruned directory with Hugging Face's own loader. The subclass shares ``base``'s checkpoint key renames
    (transformers looks a family's renames up by class name, then ``model_type``, and skips both for classes
    defined outside transformers, e.g. GPT-NeoX's saved ``embed_out`` for ``lm_head``), so it reads what ``base``
    writes.
    """
    if base not in _PRUNED_CLASSES:
        def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
            base.__init__(self, config, *args, **kwargs)
            restructure(self, getattr(config, CONFIG_KEY))

        name = f"Pruned{base.__name__}"
        _PRUNED_CLASSES[base] = type(name, (base,), {"__init__": __init__})
        _share_key_renames(base, name)
    return _PRUNED_CLASSES[base]


def _share_key_renames(base: type, derived: str) -> None:
    """Register the checkpoint key renames transformers keeps for the class ``base`` (by its name, else its
    family's ``model_type``) under the class name ``derived`` too (transformers versions without renames: none)."""
    try:
        from transformers import conversion_mapping
    except ImportError:
        return
    model_type = getattr(getattr(base, "config_class", None), "model_type", None)
    renames = (conversion_mapping.get_checkpoint_conversion_mapping(base.__name__)
               or (conversion_mapping.get_checkpoint_conversion_mapping(model_type) if model_type else None))
    if renames:
        conversion_mapping.register_checkpoint_conversion_mapping(derived, renames, overwrite=True)
