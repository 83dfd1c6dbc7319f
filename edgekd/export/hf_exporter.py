"""Hugging Face models to ONNX through transformers' own exporter (``transformers.exporters.OnnxExporter``).

transformers ships an ONNX exporter built on ``torch.export`` and onnxscript (the successor of Optimum's
``optimum-onnx``, which cannot be installed beside transformers 5): it patches each family's untraceable code
while tracing, so it exports families torch's TorchScript exporter cannot, mixture-of-experts routing first
among them (``benchmarks/hf_exporter.py`` measures it). edgekd uses it where its TorchScript path
(:mod:`edgekd.export.onnx_export`) cannot export a model (:mod:`edgekd.export.backends` picks). This module only
traces: it returns ONNX bytes, and the caller writes them through the same onnxruntime optimization and parity gate
as every export (:func:`edgekd.export.onnx_export.write_checked`).

The graphs keep edgekd's (and Optimum's) names: a classifier's inputs are its forward's keywords (``input_ids``,
``attention_mask``, ``token_type_ids``, ``pixel_values``) and its one output ``logits``; a causal LM's cache inputs
are ``past_key_values.{i}.key`` / ``.value`` and outputs ``present.{i}.key`` / ``.value`` (transformers names
them by the forward's keyword, ``cache.layers.{i}.keys`` or ``past_key_values.layers.{i}.keys``: renamed), with axes
named ``batch``, ``sequence``, ``past`` and ``total``. One difference: the causal LM's positions follow the cache
length (as transformers' own ``generate`` without padding), where the TorchScript graph counts them from the attention
mask, so only the TorchScript graph takes left-padded rows (edgekd's generation loops feed none). Its graphs declare
opset 18 at least (onnxscript's lowest), whatever the export target asks.
"""

from __future__ import annotations

import copy
import inspect
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from edgekd.export.causal_lm_onnx import context_metadata, past_names, present_names, probed_layout
from edgekd.export.torch_log import quiet_torch_exporter
from edgekd.models.call import bind_inputs

log = logging.getLogger(__name__)

#: The exporter's name in export records.
NAME = "transformers"


def unavailable() -> str | None:
    """Why transformers' exporter cannot run here (onnxscript or ``transformers.exporters`` missing), or ``None``."""
    try:
        import onnxscript  # noqa: F401
        from transformers.exporters import OnnxExporter  # noqa: F401
    except ImportError as exc:
        return f"transformers' ONNX exporter needs transformers ≥ 5.25 and onnxscript ({exc})"
    return None


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a Hugging Face ``PreTrainedModel`` (what transformers' exporter takes)."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


@contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress lines and version-drift notice, torch.onnx's registration warnings, and torch.export's
    symbolic-shape warnings and failure notes (which print a whole traced graph) held back: a failed trace is one
    :class:`~edgekd.errors.ExportError` line (:func:`edgekd.export.backends.write_first`)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.fx", "torch.export", "torch._export",
                                                    "transformers.exporters", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with quiet_torch_exporter(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _export(model: nn.Module, sample: Mapping[str, Any], dynamic_shapes: dict[str, Any], opset: int) -> Any:
    """The ``onnx_ir.Model`` transformers' exporter makes of ``model`` called on ``sample`` (a deep copy is traced:
    tracing may leave state behind), at ``opset`` or onnxscript's lowest above it."""
    from transformers.exporters import OnnxConfig, OnnxExporter

    config = OnnxConfig(dynamic_shapes=dynamic_shapes, opset_version=max(opset, 18))
    with _quiet(), torch.no_grad():
        return OnnxExporter().export(copy.deepcopy(model).eval(), dict(sample), config).program


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def classifier_onnx(model: nn.Module, sample: Mapping[str, Tensor], dynamic_axes: Mapping[str, Mapping[int, str]],
                    output_name: str, opset: int) -> bytes:
    """``model`` (a Hugging Face classifier) as ONNX bytes: its inputs named as ``sample``'s keys (passed by the
    forward's keywords, :mod:`edgekd.models.call`: an image batch's ``input`` is the forward's ``pixel_values``),
    dynamic on ``dynamic_axes`` (input name → axis → axis name; one name, one dimension), one output
    ``output_name`` (the logits)."""
    from torch.export import Dim

    bound = bind_inputs(model, sample)  # forward parameter → batch key
    # Dim.AUTO, not named dims: torch.export then infers the bounds a family puts on an axis (BERT's positions)
    # and which axes are one; an axis it had to fix fails the parity gate's other batch sizes and lengths
    shapes = {param: dict.fromkeys(dynamic_axes.get(key, {}), Dim.AUTO) for param, key in bound.items()}
    # torch.export fixes an axis traced at size 1: a one-row sample is traced as two
    inputs: dict[str, Any] = {param: sample[key] if len(sample[key]) > 1 else sample[key].repeat_interleave(2, 0)
                              for param, key in bound.items()}
    if _accepts(model, "use_cache"):
        inputs["use_cache"] = False  # a decoder classifier would return its cache as more outputs
    program = _export(model, inputs, shapes, opset)
    graph = program.graph
    for value in graph.inputs:
        value.name = bound.get(value.name, value.name)
    logits = next((value for value in graph.outputs if value.name == "logits"), graph.outputs[0])
    graph.outputs.clear()
    graph.outputs.append(logits)
    logits.name = output_name
    symbols = {_symbol(value.shape[axis]): axis_name for value in graph.inputs
               for axis, axis_name in dynamic_axes.get(value.name, {}).items() if value.shape is not None}
    return _serialized(program, symbols, {})


def causal_lm_onnx(model: nn.Module, opset: int) -> bytes:
    """``model`` (a Hugging Face causal LM) as ONNX bytes in edgekd's KV-cache layout
    (:mod:`edgekd.export.causal_lm_onnx`: the same inputs, outputs and context-length metadata), traced by
    transformers' exporter on a 3-token call after a 5-token cache, batch, sequence and past dynamic (the parity gate
    checks an empty cache and one-token steps)."""
    from torch.export import Dim
    from transformers import DynamicCache

    layers = probed_layout(model)
    with torch.no_grad():
        returned = model.eval()(input_ids=torch.full((2, 5), 4, dtype=torch.long), use_cache=True).past_key_values
    # a plain cache of the returned keys and values, as the TorchScript graph takes it: a model's own cache can
    # carry more per layer (a sliding-window layer's window size), which edgekd's layout has no input for
    cache = DynamicCache()
    for index, layer in enumerate(returned.layers):
        cache.update(layer.keys, layer.values, index)
    key = "cache" if _accepts(model, "cache") else "past_key_values"  # transformers 5 renamed it
    sample = {"input_ids": torch.full((2, 3), 5, dtype=torch.long),
              "attention_mask": torch.ones(2, 8, dtype=torch.long), key: cache}
    # batch and past dynamic in every key and value; heads and head size stay as traced (the graph's cache inputs
    # then have fixed sizes there, which edgekd's generation loop reads to build an empty cache)
    shapes = {"input_ids": {0: Dim.AUTO, 1: Dim.AUTO}, "attention_mask": {0: Dim.AUTO, 1: Dim.AUTO},
              key: [{0: Dim.AUTO, 2: Dim.AUTO}] * (2 * len(layers))}
    program = _export(model, {**sample, "use_cache": True}, shapes, opset)
    graph = program.graph
    _rename(graph.inputs, ["input_ids", "attention_mask", *past_names(len(layers))], "past_key_values")
    _rename(graph.outputs, ["logits", *present_names(len(layers))], "present")
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total"}}
    symbols = {_symbol(value.shape[axis]): name for value in graph.inputs
               for axis, name in axes.get(value.name, {0: "batch", 2: "past"}).items()}
    return _serialized(program, symbols, context_metadata(model))


#: A cache tensor's name as transformers' exporter writes it: ``[input.|output.]<keyword>.layers.<i>.<keys|values>``.
_CACHE_NAME = re.compile(r"\.layers\.(\d+)\.(keys|values)$")


def _rename(values: Any, expected: list[str], prefix: str) -> None:
    """Name the graph's cache ``values`` edgekd's way (``<prefix>.<i>.key``), the others as they are; raise unless
    the names are then ``expected``, in order."""
    for value in values:
        found = _CACHE_NAME.search(value.name or "")
        if found:
            value.name = f"{prefix}.{found.group(1)}.{found.group(2)[:-1]}"
    names = [value.name for value in values]
    if names != expected:
        raise ValueError(f"transformers' exporter made a graph with {names} where edgekd's cache layout has {expected}")


def _symbol(dim: Any) -> str | None:
    """A symbolic dimension's name (``s43``), ``None`` for a fixed one."""
    value = getattr(dim, "value", None)
    return value if isinstance(value, str) else None


def _serialized(program: Any, symbols: Mapping[str | None, str], metadata: Mapping[str, str]) -> bytes:
    """The ``onnx_ir`` model as ONNX bytes, its symbolic dimensions renamed by ``symbols`` (in expressions too:
    ``s36 + s70`` → ``past + sequence``), unused nodes dropped and ``metadata`` set."""
    import onnx
    import onnx_ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass

    RemoveUnusedNodesPass()(program)
    renames = {key: value for key, value in symbols.items() if key}
    if renames:
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, renames)) + r")\b")
        graph = program.graph
        values = [*graph.inputs, *graph.outputs, *(out for node in graph for out in node.outputs)]
        for value in values:
            shape = value.shape
            if shape is None:
                continue
            new = [onnx_ir.SymbolicDim(pattern.sub(lambda m: renames[m.group(1)], dim.value))
                   if isinstance(dim, onnx_ir.SymbolicDim) and dim.value else dim for dim in shape]
            value.shape = onnx_ir.Shape(new)
    proto = onnx_ir.serde.serialize_model(program)
    if metadata:
        onnx.helper.set_model_props(proto, dict(metadata))
    return proto.SerializeToString()
