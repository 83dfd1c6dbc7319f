"""Causal LMs to ONNX with a KV cache, in Optimum's text-generation-with-past layout.

Inputs: ``input_ids`` ``[batch, sequence]``, ``attention_mask`` ``[batch, past + sequence]`` and, per
layer ``i``, ``past_key_values.{i}.key`` / ``.value`` ``[batch, kv_heads, past, head_dim]`` (each layer's sizes as
its own cache has them, :func:`probed_layout`). Outputs:
``logits`` ``[batch, sequence, vocab]`` and ``present.{i}.key`` / ``.value`` (the cache after this call,
``past + sequence`` long). One graph serves the prompt (an empty past) and every cached step. The
model's context length is kept in the graph's metadata (``edgekd.context_length``).
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_path
from edgekd.errors import ExportError, first_line
from edgekd.export.op_patches import exportable_ops
from edgekd.export.torch_log import quiet_torch_exporter
from edgekd.profile.generate import CONTEXT_KEY  # the graph metadata key of the context the generation loop reads

log = logging.getLogger(__name__)


def probed_layout(model: nn.Module) -> list[tuple[int, int, int]]:
    """Each layer's ``(kv_heads, key_dim, value_dim)`` in the cache ``model`` itself returns after one call on two
    tokens: what a config states can differ from what the model builds (Falcon's ``multi_query`` keeps one
    key/value head whatever ``num_kv_heads`` says; multi-head latent attention caches keys wider than values;
    Gemma-4-style layers and a model pruned per layer differ between layers). Raises :class:`ExportError` (one line)
    when it returns no cache, or one holding more than attention keys and values (recurrent state)."""
    with torch.no_grad():
        out = model.eval()(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    layers = getattr(getattr(out, "past_key_values", None), "layers", None)
    if not layers:
        raise ExportError(f"{type(model).__name__} returns no key/value cache (an encoder's language-model head, or a "
                          "recurrent state such as Mamba's), so it cannot be exported as a generating decoder")
    other = sorted({type(layer).__name__ for layer in layers if not isinstance(getattr(layer, "keys", None), Tensor)})
    if other:
        raise ExportError(f"{type(model).__name__}'s cache holds {', '.join(other)} layers (recurrent or "
                          "linear-attention state), not only the attention keys and values the exported graph carries")
    return [(layer.keys.shape[1], layer.keys.shape[3], layer.values.shape[3]) for layer in layers]


def past_names(layers: int) -> list[str]:
    """The cache input names, layer by layer: ``past_key_values.{i}.key``, ``past_key_values.{i}.value``."""
    return [f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value")]


def present_names(layers: int) -> list[str]:
    """The cache output names, layer by layer: ``present.{i}.key``, ``present.{i}.value``."""
    return [f"present.{i}.{part}" for i in range(layers) for part in ("key", "value")]


class _WithPast(nn.Module):
    """The model called with a flat list of cache tensors, returning logits and the flat new cache."""

    def __init__(self, model: nn.Module, layers: int) -> None:
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids: Tensor, attention_mask: Tensor, *past: Tensor) -> tuple[Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        positions = attention_mask.cumsum(-1)[:, -input_ids.shape[1]:] - 1  # traced: no baked-in past length
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                         cache_position=positions[0], past_key_values=cache, use_cache=True)
        flat = [tensor for layer in out.past_key_values.layers for tensor in (layer.keys, layer.values)]
        return (out.logits, *flat)


def causal_lm_onnx(model: nn.Module, opset: int = 17) -> bytes:
    """``model`` (a Hugging Face causal LM) as ONNX bytes with KV-cache inputs and outputs, its context length
    in the graph's metadata (:data:`CONTEXT_KEY`)."""
    shapes = probed_layout(model)
    layers = len(shapes)
    past = [torch.zeros(1, heads, 3, dim) for heads, key_dim, value_dim in shapes for dim in (key_dim, value_dim)]
    example = (torch.zeros(1, 2, dtype=torch.long), torch.ones(1, 5, dtype=torch.long), *past)
    inputs, outputs = ["input_ids", "attention_mask", *past_names(layers)], ["logits", *present_names(layers)]
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"},
            "logits": {0: "batch", 1: "sequence"}}
    axes |= {name: {0: "batch", 2: "past"} for name in past_names(layers)}
    axes |= {name: {0: "batch", 2: "total"} for name in present_names(layers)}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), quiet_torch_exporter(), exportable_ops():
        warnings.simplefilter("ignore")
        try:
            # tracing leaves the traced model computing different logits afterwards: trace a copy
            torch.onnx.export(_WithPast(copy.deepcopy(model), layers), example, buffer, input_names=inputs,
                              output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False)
        except Exception as exc:  # the exporter's own checks raise AssertionError, ValueError … as well
            raise ExportError(f"exporting {type(model).__name__} with a KV cache failed: {type(exc).__name__}: "
                              f"{first_line(exc)}") from None
    graph = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(graph, context_metadata(model))
    log.info("exported %s with a %d-layer KV cache", type(model).__name__, layers)
    return graph.SerializeToString()


def context_metadata(model: nn.Module) -> dict[str, str]:
    """The graph metadata that records ``model``'s context length."""
    return {CONTEXT_KEY: str(model.config.max_position_embeddings)}


def export_causal_lm(model: nn.Module, path: Path, opset: int = 17) -> Path:
    """Write ``model`` to ``path`` as ONNX with its KV cache (:func:`causal_lm_onnx`), atomically and unchecked
    (the export stage checks parity step by step before it writes)."""
    path = Path(path)
    onnx_bytes = causal_lm_onnx(model, opset)
    with atomic_path(path) as tmp:
        tmp.write_bytes(onnx_bytes)
    return path
