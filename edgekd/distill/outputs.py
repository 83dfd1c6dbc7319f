"""What distillation losses read from a model: logits and, for transformers, intermediate states.

:func:`forward_outputs` runs a model once and collects only what the losses need, named by the
strings in a loss's ``needs``: ``"hidden_states"``, ``"attentions"`` and ``"qkv"``.

Attention probabilities come only from Hugging Face's *eager* attention: build or load models with
``attn_implementation="eager"`` (``BertConfig(..., attn_implementation="eager")`` or
``from_pretrained(..., attn_implementation="eager")``); the default SDPA kernels return none.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from edgekd.errors import ModelError
from edgekd.models.call import call_model

#: What :func:`forward_outputs` can collect beyond logits.
OUTPUT_KINDS = frozenset({"hidden_states", "attentions", "qkv"})


@dataclass
class ModelOutputs:
    """One forward pass, as the losses see it.

    ``logits`` are ``[B, C]``. ``hidden_states`` follow the Hugging Face convention: index 0 is the
    embedding output and index ``i`` the output of encoder layer ``i``, each ``[B, T, D]``.
    ``attentions`` hold each layer's softmax probabilities ``[B, H, T, T]`` (layer ``i`` at
    ``i - 1``). ``qkv`` are the last layer's query, key and value projections, each ``[B, T, D]``.
    Fields a pass was not asked for are ``None``.
    """

    logits: Tensor
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    qkv: tuple[Tensor, Tensor, Tensor] | None = None

    def require(self, name: str) -> tuple[Tensor, ...]:
        """The field ``name``, or a :class:`ModelError` saying it was not collected."""
        value = getattr(self, name)
        if value is None:
            raise ModelError(f"model outputs lack {name}: run forward_outputs with the loss's needs")
        return value


@dataclass(frozen=True)
class ModelInfo:
    """The encoder sizes losses are built for; ``layers == 0`` for models without a transformer encoder."""

    layers: int
    hidden: int
    heads: int

    @classmethod
    def declared(cls, spec: Any) -> ModelInfo | None:
        """The sizes of ``spec``'s model read from its own sizes or its transformers config without building it
        (:func:`~edgekd.models.specs.declared_config`), so that ``edgekd validate`` builds the losses the run will;
        None when only the built model can tell (an edgekd architecture that is not BERT, a ``drop_layers``
        student, a hub checkpoint not cached here)."""
        from edgekd.models.specs import BertSpec, declared_config

        if isinstance(spec, BertSpec) and spec.pretrained is None:
            return cls(spec.layers, spec.hidden, spec.heads)
        config = declared_config(spec)
        return None if config is None else cls._of_config(config)

    @classmethod
    def of(cls, model: nn.Module) -> ModelInfo:
        """Sizes of a Hugging Face ``PreTrainedModel`` from its config; ``ModelInfo(0, 0, 0)`` otherwise."""
        if not _is_hf(model):
            return cls(0, 0, 0)
        return cls._of_config(model.config)

    @classmethod
    def _of_config(cls, config: Any) -> ModelInfo:
        """The sizes a transformers config gives (image families without one transformer stack, ConvNeXt, have none
        of them: 0)."""
        return cls(*(getattr(config, name, 0) or 0
                     for name in ("num_hidden_layers", "hidden_size", "num_attention_heads")))


def forward_outputs(model: nn.Module, inputs: Mapping[str, Tensor], needs: frozenset[str]) -> ModelOutputs:
    """Run ``model(**inputs)`` once and collect its logits and what ``needs`` names.

    For Hugging Face models, hidden states and attentions are requested from the model only when
    needed (attentions need eager attention, see the module docstring), and ``"qkv"`` hooks the last
    encoder layer's query/key/value projections (BERT-family layout:
    ``base_model.encoder.layer[-1].attention.self.{query,key,value}``). Other modules must return
    logits, as a tensor or an object with ``.logits``, and can serve only logit losses.
    """
    unknown = needs - OUTPUT_KINDS
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; known: {sorted(OUTPUT_KINDS)}")
    if not _is_hf(model):
        if needs:
            raise ModelError(_not_a_transformer(model, needs))
        out = call_model(model, inputs)
        return ModelOutputs(logits=out if isinstance(out, Tensor) else out.logits)
    flags = {"output_hidden_states": "hidden_states" in needs, "output_attentions": "attentions" in needs}
    captured: dict[int, Tensor] = {}
    with _capture_qkv(model, captured) if "qkv" in needs else nullcontext():
        out = call_model(model, inputs, **{flag: True for flag, wanted in flags.items() if wanted})
    attentions = out.attentions if flags["output_attentions"] else None
    if flags["output_attentions"] and (not attentions or any(a is None for a in attentions)):
        raise ModelError(
            f"{type(model).__name__} returned no attention probabilities (attention implementation "
            f"'{model.config._attn_implementation}'); build or load it with attn_implementation=\"eager\""
        )
    return ModelOutputs(
        logits=out.logits,
        hidden_states=out.hidden_states if flags["output_hidden_states"] else None,
        attentions=attentions,
        qkv=(captured[0], captured[1], captured[2]) if "qkv" in needs else None,
    )


def _is_hf(model: nn.Module) -> bool:
    # A Hugging Face model exists only once transformers is imported, so there is no need to import
    # it (slow) for plain torch models.
    transformers = sys.modules.get("transformers")
    return transformers is not None and isinstance(model, transformers.PreTrainedModel)


def _not_a_transformer(model: nn.Module, needs: frozenset[str]) -> str:
    return (
        f"{type(model).__name__} is not a Hugging Face transformer, so it has no {', '.join(sorted(needs))}; "
        f"only losses on logits apply to it"
    )


@contextmanager
def _capture_qkv(model: nn.Module, into: dict[int, Tensor]) -> Iterator[None]:
    """Store the last encoder layer's query, key and value projection outputs as ``into[0..2]``."""
    try:
        attention = model.base_model.encoder.layer[-1].attention.self
        projections = [attention.query, attention.key, attention.value]
    except (AttributeError, IndexError, TypeError) as exc:
        raise ModelError(
            f"{type(model).__name__} has no BERT-style query/key/value projections "
            "(base_model.encoder.layer[-1].attention.self.query/key/value), which the losses on qkv relations need"
        ) from exc

    def keep(slot: int) -> Callable[[nn.Module, object, Tensor], None]:
        def hook(_module: nn.Module, _args: object, output: Tensor) -> None:
            into[slot] = output

        return hook

    handles = [projection.register_forward_hook(keep(slot)) for slot, projection in enumerate(projections)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()

