"""Calling any model by keyword, with exactly the inputs its ``forward`` names.

Batches carry every input a model family may take (text: ``input_ids``, ``attention_mask``,
``token_type_ids``; images: one tensor named ``input``). A positional call would put them in
whatever slots the forward happens to list first: ``token_type_ids`` in DistilBERT's
``inputs_embeds`` (a crash) or in Llama's ``position_ids`` (silently wrong logits). So every call
goes through :func:`call_model`, which passes each tensor by the name the forward gives it and
leaves out the ones it does not take:

- a batch entry whose name the forward lists is passed under that name;
- ``token_type_ids`` only to a Hugging Face model with more than one token type
  (``config.type_vocab_size`` > 1, as BERT): GPT-2's forward accepts them but adds them through its
  word embeddings, RoBERTa has a single type, and neither tokenizer gives them;
- a lone tensor whose name the forward does not list (an image batch ``{"input": x}``) is passed
  as the forward's first parameter (``pixel_values``, ``x``, …).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.models.logits import model_logits

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
TOKEN_TYPES = "token_type_ids"


def forward_parameters(model: nn.Module) -> tuple[str, ...]:
    """The names of the parameters ``model.forward`` takes by keyword, in order (``*args``/``**kwargs`` left out)."""
    signature = inspect.signature(model.forward)
    return tuple(name for name, p in signature.parameters.items() if p.kind in _NAMED)


def bind_inputs(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, str]:
    """Forward parameter → batch key, for the batch entries ``model`` takes (see the module docstring)."""
    params = forward_parameters(model)
    accepted = set(params)
    if TOKEN_TYPES in accepted and not _has_token_types(model):
        accepted.discard(TOKEN_TYPES)
    bound = {name: name for name in batch if name in accepted}
    if not bound and len(batch) == 1 and params:
        bound = {params[0]: next(iter(batch))}
    return bound


def model_inputs(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The keyword arguments ``model`` is called with for ``batch``."""
    return {param: batch[key] for param, key in bind_inputs(model, batch).items()}


def used_inputs(model: nn.Module, batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``batch`` (under their batch names, in batch order) that ``model`` takes."""
    keys = set(bind_inputs(model, batch).values())
    return {key: tensor for key, tensor in batch.items() if key in keys}


def call_model(model: nn.Module, batch: Mapping[str, Tensor], **options: Any) -> Any:
    """``model(**inputs, **options)`` with the inputs of ``batch`` the model takes (see :func:`model_inputs`)."""
    return model(**model_inputs(model, batch), **options)


def _has_token_types(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return True  # not a Hugging Face model: its own forward names what it takes
    return (getattr(config, "type_vocab_size", 0) or 0) > 1


def call_logits(model: nn.Module, batch: Mapping[str, Tensor]) -> Tensor:
    """The logits of :func:`call_model` (a tensor, or a Hugging Face output's ``.logits``)."""
    return model_logits(call_model(model, batch))


def parameter_device(model: nn.Module) -> torch.device:
    """The device ``model``'s parameters are on (where its inputs must be; the CPU for a model without any, such
    as an ONNX teacher run by onnxruntime)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's own mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


def layers_called(layers: Iterable[nn.Module], forward: Callable[[], Any]) -> tuple[Any, list[tuple[nn.Module, Any]]]:
    """What ``forward()`` returns, and which of ``layers`` it ran, in the order they ran, each with its output
    (a layer run twice appears twice): how edgekd finds a model's output layer."""
    called: list[tuple[nn.Module, Any]] = []
    handles = [layer.register_forward_hook(lambda layer, _, out: called.append((layer, out))) for layer in layers]
    try:
        result = forward()
    finally:
        for handle in handles:
            handle.remove()
    return result, called
