"""Hugging Face BERT-family sequence classifiers: built from a config, loaded, or layer-dropped.

Models are built with the eager attention implementation so that attention probabilities can be
returned for attention-transfer losses, and weights are only ever read as safetensors (or with
``weights_only`` loading); ``trust_remote_code`` stays off unless a recipe asks for it.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from torch import nn

from edgekd.errors import ConfigError, ModelError
from edgekd.models.packaged import resolve_pretrained
from edgekd.models.specs import BertSpec, DropLayersSpec

log = logging.getLogger(__name__)

ATTENTION = "eager"  # attention probabilities are only returned by the eager implementation
MIN_POSITIONS = 512  # as BERT: device profiles may run longer inputs than training truncated to


def quiet_transformers() -> None:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def build_bert(spec: BertSpec, *, vocab_size: int, num_classes: int, pad_id: int, max_positions: int) -> nn.Module:
    """A ``BertForSequenceClassification``: ``spec.pretrained`` weights, or a fresh config of ``spec``'s sizes."""
    quiet_transformers()
    from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

    if spec.pretrained is not None:
        source = resolve_pretrained(spec.pretrained)
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                source, num_labels=num_classes, attn_implementation=ATTENTION,
                trust_remote_code=spec.trust_remote_code, use_safetensors=True,
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load pretrained model '{spec.pretrained}': {str(exc).splitlines()[0]}") from exc
        _check_fits_tokenizer(model, spec.pretrained, vocab_size, max_positions)
        return model
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
    return BertForSequenceClassification(config)


def _check_fits_tokenizer(model: nn.Module, name: str, vocab_size: int, max_length: int) -> None:
    """Refuse a pretrained model whose embeddings cannot take the tokenizer's ids or lengths (an IndexError later)."""
    rows = model.get_input_embeddings().num_embeddings
    if rows < vocab_size:
        raise ModelError(f"pretrained model '{name}': its vocabulary has {rows} tokens, fewer than the tokenizer's "
                         f"{vocab_size}; use the model's own tokenizer (tokenizer.pretrained) or a smaller vocab_size")
    positions = getattr(model.config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions < max_length:
        raise ModelError(f"pretrained model '{name}': it takes at most {positions} tokens, fewer than the "
                         f"tokenizer's max_length {max_length}; lower tokenizer.max_length")


def drop_layers(teacher: nn.Module, spec: DropLayersSpec) -> nn.Module:
    """DistilBERT's student initialisation: a copy of ``teacher`` keeping only some encoder layers.

    ``every_other`` keeps layers 0, 2, 4, … (DistilBERT keeps one layer in two); a list keeps
    those layer indices (0-based) in order. Embeddings, pooler and classifier are copied as they are.
    """
    encoder = _encoder_layers(teacher)
    total = len(encoder)
    keep = list(range(0, total, 2)) if spec.keep == "every_other" else list(spec.keep)
    bad = [i for i in keep if i >= total]
    if bad or not keep or len(set(keep)) != len(keep):
        raise ConfigError(
            f"student.model.keep: expected distinct layer indices below {total} (the teacher's layers), got {keep}"
        )
    student = copy.deepcopy(teacher)
    student.base_model.encoder.layer = nn.ModuleList(copy.deepcopy(encoder[i]) for i in keep)
    student.config.num_hidden_layers = len(keep)
    for index, layer in enumerate(student.base_model.encoder.layer):
        _renumber(layer, index)
    return student


def _encoder_layers(model: nn.Module) -> Any:
    try:
        return model.base_model.encoder.layer
    except AttributeError:
        raise ConfigError(
            f"student.model.arch 'drop_layers' needs a BERT-family teacher, got {type(model).__name__}"
        ) from None


def _renumber(layer: nn.Module, index: int) -> None:
    """Keep the per-layer index some attention implementations use for caching consistent."""
    for module in layer.modules():
        if hasattr(module, "layer_idx"):
            module.layer_idx = index


def is_hf_model(model: nn.Module) -> bool:
    """True for Hugging Face ``PreTrainedModel`` instances."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)
