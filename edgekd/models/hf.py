"""Hugging Face classifiers: BERT built from sizes, any family (``arch: hf``) loaded or built, or layer-dropped.

A model that answers per token (token classification: ``InputSignature.per_token``) is the family's
``…ForTokenClassification`` class (``AutoModelForTokenClassification``) where a sentence classifier is the
``…ForSequenceClassification`` one; everything else is shared.

Models are built with the eager attention implementation so that attention probabilities can be
returned for attention-transfer losses, and weights are only ever read as safetensors or, for a checkpoint
holding only ``pytorch_model.bin``, with torch's restricted ``weights_only`` loader; ``trust_remote_code``
stays off unless a recipe asks for it.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.data.examples import InputSignature
from edgekd.errors import ConfigError, ModelError, first_line
from edgekd.models import families
from edgekd.models.checkpoint_files import load_options, saved_shapes
from edgekd.models.data_fit import channel_misfit, vocabulary_misfit
from edgekd.models.head_labels import (
    fresh_head,
    head_layer,
    keep_head_rows,
    match_head_labels,
    subset_rows,
    unmatched_note,
)
from edgekd.models.packaged import resolve_pretrained
from edgekd.models.specs import BertSpec, DropLayersSpec, HFSpec

log = logging.getLogger(__name__)

ATTENTION = "eager"  # attention probabilities are only returned by the eager implementation
#: Weights load (and so train and export) in float32 whatever a checkpoint stores: transformers ≥ 5 keeps a
#: checkpoint's float16/bfloat16, in which training overflows to NaN and onnxruntime's CPU kernels are missing.
LOAD_DTYPE = torch.float32
MIN_POSITIONS = 512  # as BERT: device profiles may run longer inputs than training truncated to


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def build_bert(spec: BertSpec, *, vocab_size: int, num_classes: int, pad_id: int, max_positions: int,
               per_token: bool = False, class_names: tuple[str, ...] | None = None) -> nn.Module:
    """A ``BertForSequenceClassification`` (``per_token``: ``BertForTokenClassification``): ``spec.pretrained``
    weights, or a fresh config of ``spec``'s sizes.

    A checkpoint is loaded as :func:`build_hf` loads one (its head kept, trimmed to the data's classes or replaced,
    the same fit to the tokenizer); ``class_names`` (default ``'0'``, ``'1'``, ...) name the head's labels."""
    quiet_transformers()
    import transformers
    from transformers import BertConfig

    if spec.pretrained is not None:
        signature = InputSignature(kind="text", vocab_size=vocab_size, pad_id=pad_id, max_length=max_positions,
                                   per_token=per_token)
        checkpoint = HFSpec(arch="hf", pretrained=spec.pretrained, trust_remote_code=spec.trust_remote_code)
        return build_hf(checkpoint, signature, class_names or tuple(str(index) for index in range(num_classes)))
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.ffn or 4 * spec.hidden,
        hidden_dropout_prob=spec.dropout,
        attention_probs_dropout_prob=spec.dropout,
        max_position_embeddings=max(max_positions, MIN_POSITIONS),
        pad_token_id=pad_id,
        num_labels=num_classes,
    )
    config._attn_implementation = ATTENTION
    model_class = transformers.BertForTokenClassification if per_token else transformers.BertForSequenceClassification
    return model_class(config)


def auto_class(modality: str, per_token: bool = False) -> Any:
    """``AutoModelForImageClassification`` for image families, ``AutoModelForTokenClassification`` for a per-token
    text model, ``AutoModelForSequenceClassification`` otherwise."""
    import transformers

    if modality == "image":
        return transformers.AutoModelForImageClassification
    if per_token:
        return transformers.AutoModelForTokenClassification
    return transformers.AutoModelForSequenceClassification


def build_hf(spec: HFSpec, signature: InputSignature, class_names: tuple[str, ...]) -> nn.Module:
    """Any Hugging Face classifier: ``spec.pretrained`` loaded (its family from config.json) or ``spec.config`` built.

    The head gets one output per class and the class names as labels; a checkpoint whose head has another
    label count (or none) gets a new head, said in one log line. Text models get the tokenizer's padding id
    when their config has none (decoders pool the last non-padding token).
    """
    quiet_transformers()
    from transformers import AutoConfig

    missing = missing_classifier(spec.model_type, spec.modality, signature.per_token)
    if missing is not None:
        raise ModelError(f"{_named(spec)}: {missing}")
    labels = _labels(class_names)
    auto = auto_class(spec.modality, signature.per_token)
    if spec.pretrained is None:
        module = auto.from_config(_fresh_config(spec, signature, labels))
    else:
        source = resolve_pretrained(spec.pretrained)
        try:
            config = AutoConfig.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
            # a head naming more classes than the data's, every one of them among its labels, keeps their rows
            rows = subset_rows(config.id2label, class_names) if _has_head(config, signature.per_token) else None
            # problem_type is the checkpoint's old task's (transformers' pipelines pick softmax, sigmoid or identity
            # by it): cleared, as a model built from a config has none; edgekd's losses follow data.task.
            module, info = checkpoint_class(config, spec.modality, signature.per_token).from_pretrained(
                source, **({} if rows else labels), problem_type=None, ignore_mismatched_sizes=True,
                attn_implementation=ATTENTION, dtype=LOAD_DTYPE, trust_remote_code=spec.trust_remote_code,
                output_loading_info=True, **load_options(source))
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load pretrained model '{spec.pretrained}': {first_line(exc)}") from exc
        frozen_as_built(module)
        refuse_misfits(module, info, spec.pretrained, len(class_names))
        if rows and not keep_head_rows(module, rows, class_names, spec.pretrained):
            raise ModelError(f"pretrained model '{spec.pretrained}': its classification head layer (one output per "
                             f"label of its {config.num_labels}) was not found to keep the data's classes' rows")
        if not rows and _note_head(spec.pretrained, config, class_names, signature.per_token):
            match_head_labels(module, config.id2label, class_names, spec.pretrained)
        elif not rows and not _has_head(config, signature.per_token):
            fresh_head(module, len(class_names))  # not another kind of head's rows, loaded by name
    _fit_data(module, spec, signature)
    return module


def checkpoint_class(config: Any, modality: str, per_token: bool = False) -> Any:
    """The class to load a classifier checkpoint of ``config`` with: the family's auto class (:func:`auto_class`),
    or for a model edgekd pruned or factorized (its structure in the config) the classifier rebuilt to that structure
    (:mod:`edgekd.prune.structure`); loaded with the auto class, its pruned layers had the original widths and were
    drawn at random."""
    from edgekd.prune.structure import CONFIG_KEY, pruned_class

    if hasattr(config, CONFIG_KEY):
        return pruned_class(classifier_class(config, modality, per_token))
    return auto_class(modality, per_token)


def weights_misfit(mismatched: list[tuple[str, Any, Any]]) -> str:
    """``mismatched`` (transformers' ``mismatched_keys``: name, shape saved, shape built) in one clause."""
    listed = ", ".join(f"{name} is {list(saved)} in the weights but {list(built)} by config.json"
                       for name, saved, built in mismatched[:2])
    more = f" (and {len(mismatched) - 2} more)" if len(mismatched) > 2 else ""
    return f"its weights do not fit its config.json: {listed}{more}"


def refuse_misfits(module: nn.Module, info: dict[str, Any], pretrained: str, classes: int | None) -> None:
    """Refuse (one line, :func:`misfit_reason`) checkpoint ``pretrained`` just loaded into ``module``."""
    reason = misfit_reason(module, info, classes)
    if reason is not None:
        raise ModelError(f"pretrained model '{pretrained}': {reason}")


def misfit_reason(module: nn.Module, info: dict[str, Any], classes: int | None) -> str | None:
    """Why a checkpoint loaded into ``module`` (``info``: transformers' loading info) is refused: weights of other
    shapes than its config gives them, but for the classification head of ``classes`` outputs (replaced when the
    data has other classes; None: no head is replaced, as a causal LM's), or base-model weights it lacks or holds
    beyond the config's layers (:func:`unloaded_weights`); None when none. transformers draws such weights at random
    (``ignore_mismatched_sizes``, asked for the head) or drops them, silently. A BERT pruned by transformers'
    ``prune_heads`` is one (its config records ``pruned_heads``, which the model class does not rebuild). The one
    rule of the load (:func:`build_hf`) and of ``edgekd validate`` (:func:`checkpoint_misfit`)."""
    head = _head_parameters(module, classes) if classes is not None else set()
    misfits = sorted(entry for entry in info.get("mismatched_keys") or () if entry[0] not in head)
    reason = weights_misfit(misfits) if misfits else unloaded_weights(module, info)
    if reason is None:
        return None
    return (f"{reason}; edgekd does not load a model whose layers it would have to draw at random or drop: save it "
            "again with save_pretrained from the model that has these weights")


def unloaded_weights(module: nn.Module, info: dict[str, Any]) -> str | None:
    """The base model's weights (``module.base_model_prefix``) a checkpoint loaded into ``module`` lacks, or holds
    for more layers than its config has, in one clause; None when it has them all.

    A task head (outside the base model) is new whenever the checkpoint was saved for another task, and a pooler
    is one some checkpoints lack and some classes leave out: neither counts. Names that carry a prefix over the
    model's (a ``module.`` of a wrapper's ``state_dict``) are said so."""
    prefix = getattr(module, "base_model_prefix", "")
    if not prefix:
        return None
    missing = sorted(name for name in info.get("missing_keys") or ()
                     if name.startswith(f"{prefix}.") and ".pooler." not in f".{name}")
    if missing:
        wrapped = _wrapper_prefix(missing, info.get("unexpected_keys") or ())
        return (f"its weights hold nothing for {len(missing)} of the model's tensors ({', '.join(missing[:2])}"
                f"{', …' if len(missing) > 2 else ''})" + (f": its tensors are named '{wrapped}…', a prefix over the "
                                                           "model's" if wrapped else ""))
    layered = {_layer_pattern(name) for name, _ in module.named_parameters()}
    extra = sorted(name for name in info.get("unexpected_keys") or () if _layer_pattern(name) in layered)
    if extra:
        return (f"its weights hold {len(extra)} tensors of layers its config.json does not have ({', '.join(extra[:2])}"
                f"{', …' if len(extra) > 2 else ''})")
    return None


def _layer_pattern(name: str) -> str:
    """A parameter name with its layer numbers blanked: ``encoder.layer.#.output.dense.weight``."""
    return re.sub(r"\.\d+(?=\.)", ".#", name)


def _wrapper_prefix(missing: list[str], unexpected: Iterable[str]) -> str | None:
    """The prefix the checkpoint's names carry over the model's (``module.`` for ``module.bert.…``), if one does."""
    wanted = set(missing)
    for name in unexpected:
        for cut in range(1, len(name)):
            if name[cut - 1] == "." and name[cut:] in wanted:
                return name[:cut]
    return None


def checkpoint_misfit(spec: HFSpec | BertSpec, *, per_token: bool = False, causal: bool = False) -> str | None:
    """Why the local checkpoint ``spec.pretrained`` would be refused when loaded (:func:`misfit_reason`), asked
    without reading its weights: the shapes its files' headers give (:func:`saved_shapes`), as meta tensors, loaded
    by transformers into the class that loads it (a classifier, ``per_token`` a token classifier; ``causal`` a causal
    LM) built for its own config.json on the meta device, so its own key renames and conversions decide what fits, as
    at the load (the head, of the config's ``num_labels`` outputs, is the one the load keeps or replaces). None when
    the weights fit, or the class cannot be built so (its load then says what is wrong). Milliseconds."""
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve_pretrained(spec.pretrained)
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=False)
        loader = AutoModelForCausalLM if causal else checkpoint_class(config, spec.modality, per_token)
        state = {name: torch.empty(shape, device="meta") for name, shape in saved_shapes(Path(source)).items()}
        module, info = type(built_on_meta(loader, config)).from_pretrained(
            None, config=copy.deepcopy(config), state_dict=state, device_map="meta", use_kernels=False,
            ignore_mismatched_sizes=True, output_loading_info=True, attn_implementation=ATTENTION, dtype=LOAD_DTYPE)
    except Exception as exc:  # noqa: BLE001 - what stops the class building or loading is said by the load itself
        log.debug("%s: weights not compared with the class that loads them: %s", spec.pretrained, first_line(exc))
        return None
    return misfit_reason(module, info, None if causal else config.num_labels)


def _head_parameters(module: nn.Module, classes: int) -> set[str]:
    """The names of the classification head layer's parameters (:func:`head_layer`)."""
    head = head_layer(module, classes)
    return {f"{name}.{kind}" for name, layer in module.named_modules() if layer is head for kind in ("weight", "bias")}


def frozen_as_built(module: nn.Module) -> nn.Module:
    """``module`` (just loaded by ``from_pretrained``) with the parameters its class builds frozen frozen again.

    transformers (5.x) loads every saved tensor as a trainable parameter, so a table its model class fixes —
    RoFormer's sinusoidal positions (``requires_grad=False`` when built) — became trainable: training changed it,
    and Torch-Pruning, seeing a trainable table coupled to every head's query and key, removed no RoFormer head.
    The class is built once on the meta device (no memory, no weights) to read which parameters it freezes; a class
    that cannot be built so is left as loaded. Returns ``module``.
    """
    try:
        built = built_on_meta(type(module), module.config)
    except Exception:  # noqa: BLE001 - a class needing more than its config to build: nothing to learn from it
        return module
    frozen = {name for name, parameter in built.named_parameters() if not parameter.requires_grad}
    for name, parameter in module.named_parameters():
        if name in frozen:
            parameter.requires_grad_(False)
    return module


def built_on_meta(model_class: Any, config: Any) -> nn.Module:
    """``model_class`` (a transformers model class, or an auto class picking one by ``config``) built for a copy of
    ``config`` (a model's ``__init__`` may adjust it) on the meta device: no memory, no weights."""
    from transformers import PreTrainedModel

    with torch.device("meta"):
        if issubclass(model_class, PreTrainedModel):
            return model_class(copy.deepcopy(config))
        return model_class.from_config(copy.deepcopy(config))


def dense_attention(module: nn.Module) -> None:
    """Give a model of block-sparse attention (BigBird's ``attention_type: block_sparse``) full attention over the
    same weights, as transformers itself does for inputs up to ``(5 + 2 · num_random_blocks) · block_size`` tokens:
    the ONNX exporter traced the sparse pattern at one length (the graph failed at another), and attention losses
    read probabilities the sparse kernel does not form. Said in one log line; saved in the model's config."""
    config = getattr(module, "config", None)
    if getattr(config, "attention_type", None) != "block_sparse":
        return
    for part in module.modules():
        if hasattr(part, "set_attention_type"):
            part.set_attention_type("original_full")
    config.attention_type = "original_full"
    log.info("%s: block-sparse attention replaced by full attention over the same weights (transformers does so "
             "itself for inputs up to %d tokens); ONNX export and attention losses need it", type(module).__name__,
             (5 + 2 * config.num_random_blocks) * config.block_size)


def _labels(class_names: tuple[str, ...]) -> dict[str, Any]:
    """The config fields naming the data's classes."""
    return {"num_labels": len(class_names), "id2label": dict(enumerate(class_names)),
            "label2id": {name: index for index, name in enumerate(class_names)}}


def _fresh_config(spec: HFSpec, signature: InputSignature, labels: dict[str, Any]) -> Any:
    """The transformers config of a model built from the recipe's ``config`` (the data's sizes under it)."""
    from transformers import AutoConfig

    sizes = {key: value for key, value in (spec.config or {}).items() if key != "model_type"}
    config = AutoConfig.for_model(spec.model_type, **{**_data_sizes(spec, signature), **sizes, **labels})
    config._attn_implementation = ATTENTION
    _name_the_class(config, spec.modality, signature.per_token)
    return config


def untrained_classifier(spec: HFSpec | BertSpec, signature: InputSignature, class_names: tuple[str, ...]
                         ) -> nn.Module:
    """The classifier :func:`build_hf` (a checkpoint, ``build_bert``'s too) builds for data of ``signature``, of the
    same class and config but randomly initialised: its checkpoint's weights are not read, so ``edgekd validate``
    can try it on the data (:mod:`edgekd.models.data_fit`) without loading them. Seed torch first."""
    quiet_transformers()
    from transformers import AutoConfig

    modality = "text" if isinstance(spec, BertSpec) else spec.modality
    auto = auto_class(modality, signature.per_token)
    if spec.pretrained is None and isinstance(spec, HFSpec):
        return auto.from_config(_fresh_config(spec, signature, _labels(class_names)))
    config = AutoConfig.from_pretrained(resolve_pretrained(spec.pretrained), trust_remote_code=False,
                                        **_labels(class_names), problem_type=None)
    config._attn_implementation = ATTENTION
    module = auto.from_config(config)
    if signature.kind == "text":
        ids_like_tokenizer(module, signature, quiet=True)
    return module


def _name_the_class(config: Any, modality: str, per_token: bool = False) -> None:
    """Set ``config.architectures`` to the family's plain classifier when transformers maps it to several.

    DeiT and LeViT have a classifier and one "with teacher" (Perceiver three); the auto class then picks
    by ``config.architectures``, which a config built from sizes does not have (transformers raises a
    TypeError). The first listed is the plain classifier.
    """
    names = _classifier_names(config.model_type, modality, per_token)
    if isinstance(names, tuple) and not getattr(config, "architectures", None):
        config.architectures = [names[0]]


def classifier_class(config: Any, modality: str, per_token: bool = False) -> type:
    """The transformers classifier class of ``config``'s family for ``modality`` (``per_token``: its token
    classifier; of several, the one ``config.architectures`` names, else the plain one)."""
    import transformers

    names = _classifier_names(config.model_type, modality, per_token)
    if isinstance(names, tuple):
        saved = [name for name in getattr(config, "architectures", None) or () if name in names]
        names = saved[0] if saved else names[0]
    if not isinstance(names, str) or not hasattr(transformers, names):
        raise ModelError(f"transformers has no {modality} classifier for model_type '{config.model_type}'")
    return getattr(transformers, names)


def missing_classifier(model_type: str, modality: str, per_token: bool = False) -> str | None:
    """Why a model of family ``model_type`` cannot classify the data (transformers has no classifier of the kind the
    data asks for: a causal LM family without a sequence classifier, say); None when it has one."""
    if _classifier_names(model_type, modality, per_token) is not None:
        return None
    kind = "image" if modality == "image" else "token" if per_token else "sequence"
    return (f"transformers has no {kind} classifier for model_type '{model_type}', so it cannot classify the data; "
            f"use a family with one ({auto_class(modality, per_token).__name__} lists them)")


def has_token_classifier(model_type: str) -> bool:
    """Whether transformers has a token classifier (``…ForTokenClassification``) for ``model_type``."""
    return _classifier_names(model_type, "text", per_token=True) is not None


def _classifier_names(model_type: str, modality: str, per_token: bool = False) -> str | tuple[str, ...] | None:
    """The classifier class name(s) transformers maps ``model_type`` to, for ``modality`` (and ``per_token``)."""
    from transformers.models.auto import modeling_auto

    if modality == "image":
        return modeling_auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.get(model_type)
    return (modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES if per_token
            else modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES).get(model_type)


def _data_sizes(spec: HFSpec, signature: InputSignature) -> dict[str, Any]:
    """Config fields a fresh model takes from the data (the recipe's ``config`` overrides them)."""
    if signature.kind == "image":
        channels, height, _width = signature.image_shape
        return {"num_channels": channels, "image_size": height}
    ends = {} if signature.end_id is None else {"eos_token_id": signature.end_id}  # where BART and T5 read answers
    # T5's config has no decoder start; its convention (the padding id) gives the decoder's first position
    starts = {"decoder_start_token_id": signature.pad_id} if families.is_encoder_decoder(spec.model_type) else {}
    return {"vocab_size": signature.vocab_size, "pad_token_id": signature.pad_id, **ends, **starts}


def _note_head(pretrained: str, config: Any, class_names: tuple[str, ...], per_token: bool = False) -> bool:
    """One log line when the classification head is not the checkpoint's (transformers' own report is muted;
    a replaced head's line says which of the data's classes its labels name and which not); a token classifier's
    head is the checkpoint's only when the checkpoint is a token classifier. Whether the checkpoint's head is
    kept."""
    kind = "token classification" if per_token else "classification"
    heads = _has_head(config, per_token)
    num_labels = len(class_names)
    if not heads:
        log.info("classifier added: %d labels (%s has no %s head)", num_labels, pretrained, kind)
    elif config.num_labels != num_labels:
        log.info("classifier replaced: %d labels, checkpoint had %d%s", num_labels, config.num_labels,
                 unmatched_note(config.id2label, class_names))
    return heads and config.num_labels == num_labels


def _has_head(config: Any, per_token: bool = False) -> bool:
    """Whether the checkpoint of ``config`` has a classification head of the kind asked (a token classifier's
    for ``per_token``)."""
    token = [name.endswith("ForTokenClassification") for name in config.architectures or []]
    return any(token) if per_token else any(name.endswith("Classification") and not is_token
                                            for name, is_token in zip(config.architectures or [], token, strict=True))


def _fit_data(module: nn.Module, spec: HFSpec, signature: InputSignature) -> None:
    """Refuse (one line) a model the data cannot feed: token ids beyond its vocabulary, other image channels."""
    config = module.config
    where = _named(spec)
    if signature.kind == "text":
        _check_fits_tokenizer(module, where, signature.vocab_size, signature.max_length)
        ids_like_tokenizer(module, signature, where=where)
    else:
        misfit = channel_misfit(config, signature.image_shape[0])
        if misfit is not None:
            raise ConfigError(f"{where}: {misfit}")


def ids_like_tokenizer(module: nn.Module, signature: InputSignature, *, where: str = "", quiet: bool = False) -> None:
    """Give ``module``'s config the padding and end-of-text ids of the data's tokenizer where its classifier reads
    them (:func:`pad_like_tokenizer`, :func:`end_like_tokenizer`)."""
    pad_like_tokenizer(module, signature.pad_id, where=where, quiet=quiet)
    end_like_tokenizer(module, signature.end_id, where=where, quiet=quiet)


def pad_like_tokenizer(module: nn.Module, pad_id: int, *, where: str = "", quiet: bool = False) -> None:
    """Give ``module``'s config the id the data's tokenizer pads with where it has none, or where its classifier
    reads its answer at the last token that is not ``pad_token_id`` (decoders: GPT-2, OPT, Llama, ...): a checkpoint's
    own pad id there (OPT's 1) beside a tokenizer padding with another (0) read the answer off a padding position,
    so a padded input (as the bundle pads) got another answer than an unpadded one. Other models keep their own id
    (RoBERTa builds its position ids from it). A changed id is logged (``where`` names the model) unless ``quiet``."""
    config = module.config
    own = getattr(config, "pad_token_id", None)
    if own == pad_id or (own is not None and not _reads_last_token(module)):
        return
    if own is not None and not quiet:
        log.info("%s: pad_token_id %s → %s, the id the data's tokenizer pads with", where, own, pad_id)
    config.pad_token_id = pad_id


def end_like_tokenizer(module: nn.Module, end_id: int | None, *, where: str = "", quiet: bool = False) -> None:
    """Give ``module``'s config the id the data's tokenizer ends every example with, where its classifier reads its
    answer at the end-of-text token (``eos_token_id``: BART's, T5's and their peers' sequence classifiers): a
    checkpoint's own id (BART's 2) beside a tokenizer ending rows with another (a trained WordPiece's ``[SEP]``, 3,
    where 2 is ``[CLS]``) read the answer at the first token instead. Logged (``where``) unless ``quiet``."""
    config = module.config
    own = getattr(config, "eos_token_id", None)
    if end_id is None or own == end_id or not _forward_reads(module, "eos_token_id"):
        return
    if not quiet:
        log.info("%s: eos_token_id %s → %s, the id the data's tokenizer ends each example with", where, own, end_id)
    config.eos_token_id = end_id


def _reads_last_token(module: nn.Module) -> bool:
    """Whether the classifier's forward looks for the last token that is not ``config.pad_token_id`` (its source
    names it: transformers' decoder sequence classifiers do, encoders pool the first token or all of them)."""
    return _forward_reads(module, "pad_token_id")


def _forward_reads(module: nn.Module, key: str) -> bool:
    """Whether the classifier's forward names the config field ``key`` (its source)."""
    try:
        return key in inspect.getsource(type(module).forward)
    except (OSError, TypeError):  # no source (a compiled or dynamically made class): leave the checkpoint's id
        return False


def _named(spec: HFSpec) -> str:
    """How build-time messages name the model: its checkpoint, or the recipe's config."""
    return (f"pretrained model '{spec.pretrained}'" if spec.pretrained is not None
            else f"model config (model_type {spec.model_type})")


def _check_fits_tokenizer(model: nn.Module, where: str, vocab_size: int, max_length: int) -> None:
    """Refuse a model whose embeddings cannot take the tokenizer's ids or lengths (an IndexError later).

    ``where`` names the model in the message: ``pretrained model '<path>'`` or the recipe's config.
    """
    misfit = vocabulary_misfit(model, vocab_size)
    if misfit is not None:
        raise ModelError(f"{where}: {misfit}")
    positions = usable_positions(model)
    if positions is not None and positions < max_length:
        raise ModelError(f"{where}: it takes at most {positions} tokens, fewer than the "
                         f"tokenizer's max_length {max_length}; lower tokenizer.max_length")


def usable_positions(model: nn.Module) -> int | None:
    """How many tokens a text model takes: its ``max_position_embeddings`` (``n_positions``), less the
    positions RoBERTa-style embeddings skip (they number positions after the padding id, so 514 rows take
    512 tokens); None when the config gives no limit."""
    config = model.config
    positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if not isinstance(positions, int):
        return None
    embeddings = getattr(getattr(model, "base_model", model), "embeddings", None)
    offset = getattr(embeddings, "padding_idx", None)
    if isinstance(offset, int) and getattr(embeddings, "position_embeddings", None) is not None:
        positions -= offset + 1
    return positions


def drop_layers(teacher: nn.Module, spec: DropLayersSpec) -> nn.Module:
    """DistilBERT's student initialisation: a copy of ``teacher`` keeping only some encoder layers.

    ``every_other`` keeps layers 0, 2, 4, … (DistilBERT keeps one layer in two); a list keeps
    those layer indices (0-based) in order; a count keeps that many, spread evenly. Embeddings,
    pooler and classifier are copied as they are.
    """
    encoder = _encoder_layers(teacher)
    keep = spec.layers_kept(len(encoder))
    student = copy.deepcopy(teacher)
    holder, name = _layer_stack(student)
    setattr(holder, name, nn.ModuleList(copy.deepcopy(encoder[i]) for i in keep))
    for key in _per_layer_keys(student.config):
        setattr(student.config, key, [getattr(student.config, key)[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    _keep_backbone_stages(student.config, keep)
    for index, layer in enumerate(getattr(holder, name)):
        _renumber(layer, index)
    return student


def _per_layer_keys(config: Any) -> list[str]:
    """The config's lists with one entry per layer (each layer's attention kind, ``layer_types``; SmolLM3's
    ``no_rope_layers`` …): lists as long as the stack whose default, in a config of the class one layer deeper,
    grows with it — so a list that is merely as long (an ``image_size`` of two sides) is not taken for one."""
    depth = config.num_hidden_layers
    candidates = [key for key, value in config.to_dict().items()
                  if isinstance(value, list | tuple) and len(value) == depth and key != "architectures"]
    if not candidates:
        return []
    try:
        deeper = type(config)(num_hidden_layers=depth + 1)
    except Exception:  # noqa: BLE001 - a config class that needs more to build: only layer_types is known
        return [key for key in candidates if key == "layer_types"]
    return [key for key in candidates
            if isinstance(grown := getattr(deeper, key, None), list | tuple) and len(grown) == depth + 1]


def _keep_backbone_stages(config: Any, keep: list[int]) -> None:
    """Cut a backbone config's stages to the kept layers (BEiT, DINOv2 …: transformers' ``BackboneConfigMixin``).

    Such a config names a stage per layer after the stem (``stage_names``: ``stem``, ``stage1`` …) and the stages a
    backbone outputs (``out_features``/``out_indices``), derived from ``num_hidden_layers`` when it is built: a config
    keeping the teacher's would not load again (transformers refuses out_features beyond stage_names). The stage
    names are those the config class gives the kept depth; an output stage of a kept layer stays the same layer's,
    and when none is kept the backbone outputs the last stage (transformers' default).
    """
    stages = getattr(config, "stage_names", None)
    if not stages or not hasattr(config, "set_output_features_output_indices"):
        return
    fresh = {key: value for key, value in config.to_dict().items()
             if key not in ("stage_names", "out_features", "out_indices")}
    kept_stage = {0: 0} | {layer + 1: index + 1 for index, layer in enumerate(keep)}  # stage 0 is the stem
    outputs = [kept_stage[stage % len(stages)] for stage in config.out_indices or ()
               if stage % len(stages) in kept_stage]
    config.stage_names = type(config).from_dict(fresh).stage_names
    config.set_output_features_output_indices(out_features=None, out_indices=outputs or None)


def layer_count(model: nn.Module) -> int:
    """How many blocks the model's stack has (what ``drop_layers`` keeps some of)."""
    return len(_encoder_layers(model))


def _layer_stack(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the model's stack of blocks and the stack's attribute name.

    The stack is the ``nn.ModuleList`` of ``config.num_hidden_layers`` blocks under ``base_model``
    (``encoder.layer``, ``transformer.layer``, ``h``, ``layers``: names differ by family and version).
    """
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    uncut = families.why_not_stacked(model_type) if model_type is not None else "it is not a Hugging Face model"
    if uncut is None:
        for path, module in model.base_model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == config.num_hidden_layers and path:
                parent, _, name = path.rpartition(".")
                return (model.base_model.get_submodule(parent) if parent else model.base_model), name
        uncut = f"its base model holds no list of its {config.num_hidden_layers} layers"
    raise ConfigError(f"student.model.arch 'drop_layers' keeps some layers of one stack of transformer blocks; a "
                      f"{type(model).__name__} cannot be cut so: {uncut}")


def _encoder_layers(model: nn.Module) -> Any:
    holder, name = _layer_stack(model)
    return getattr(holder, name)


def _renumber(layer: nn.Module, index: int) -> None:
    """Keep the per-layer index some attention implementations use for caching consistent."""
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


def is_hf_model(model: nn.Module) -> bool:
    """True for Hugging Face ``PreTrainedModel`` instances."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)
