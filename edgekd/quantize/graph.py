"""Graph optimization before quantization: onnxruntime's transformer fusions, or its basic passes.

Every model gets a *pre-processed* graph (:func:`onnxruntime.quantization.shape_inference.quant_pre_process`:
symbolic shape inference, onnxruntime's basic graph optimizations, ONNX shape inference), the
graph onnxruntime's quantizers expect. A transformer (a graph with integer token inputs and a
Softmax) also gets a *fused* graph from ``onnxruntime.transformers.optimizer`` (Attention,
SkipLayerNormalization, BiasGelu, EmbedLayerNormalization fusions); the attention heads and hidden
size it needs are read from the graph (:func:`attention_shape`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekd.atomic import atomic_path
from edgekd.errors import ModelError
from edgekd.export.parity import one_line
from edgekd.log_level import raised_level
from edgekd.model_file import convert_opset, copy_model, default_opset, external_data_locations
from edgekd.quantize.evaluate import cpu_session

log = logging.getLogger(__name__)

_INTEGER_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


@dataclass(frozen=True)
class PreparedGraphs:
    """The FP32 graphs quantization starts from."""

    preprocessed: Path
    fused: Path | None
    transformer: bool
    fusions: dict[str, int] = field(default_factory=dict)

    @property
    def optimized(self) -> Path:
        """The most optimized FP32 graph: the fused one for a transformer, else the pre-processed one."""
        return self.fused or self.preprocessed


def is_transformer(model: onnx.ModelProto) -> bool:
    """True for a graph with integer (token id) inputs and a Softmax: a BERT-family encoder."""
    integer_inputs = any(i.type.tensor_type.elem_type in _INTEGER_TYPES for i in model.graph.input)
    return integer_inputs and any(node.op_type == "Softmax" for node in model.graph.node)


def prepare_graphs(source: Path, out_dir: Path, stem: str) -> PreparedGraphs:
    """Write ``<stem>.preprocessed.onnx`` (and ``<stem>.fused.onnx`` for a transformer) to ``out_dir``. A graph
    keeping its weights in external data files is first copied with them embedded (onnxruntime's pre-processing
    writes its scratch copy elsewhere and cannot find them there)."""
    model = onnx.load(str(source), load_external_data=False)
    if external_data_locations(model):
        source = copy_model(source, out_dir / f"{stem}.embedded.onnx")
    transformer = is_transformer(model)
    source = quantizable_opset(source, model, out_dir / f"{stem}.opset{QUANTIZE_MIN_OPSET}.onnx")
    preprocessed = preprocess(source, out_dir / f"{stem}.preprocessed.onnx")
    if not transformer:
        return PreparedGraphs(preprocessed=preprocessed, fused=None, transformer=False)
    try:
        fused, fusions = fuse_transformer(source, out_dir / f"{stem}.fused.onnx", attention_shape(model))
    except ModelError as exc:  # the optimizer knows BERT's graph; a decoder's (GPT-2) or an odd one's can break it
        log.info("%s; quantizing the unfused graph", exc)
        return PreparedGraphs(preprocessed=preprocessed, fused=None, transformer=True)
    return PreparedGraphs(preprocessed=preprocessed, fused=fused, transformer=True, fusions=fusions)


#: The lowest ONNX opset the INT8 quantizers write valid graphs for: per-channel DequantizeLinear's ``axis``
#: arrived in opset 13 (on an opset-11 graph onnxruntime's static quantizer wrote a model it cannot load).
QUANTIZE_MIN_OPSET = 13


def quantizable_opset(source: Path, model: onnx.ModelProto, target: Path) -> Path:
    """``source`` itself when its default-domain opset is :data:`QUANTIZE_MIN_OPSET` or newer, else the graph
    converted to that opset by ONNX's version converter, written to ``target``; a ModelError naming ``source``
    when the converter cannot convert it."""
    opset = default_opset(model)
    if opset is None or opset >= QUANTIZE_MIN_OPSET:
        return source
    convert_opset(source, onnx.load(str(source)), QUANTIZE_MIN_OPSET, target, "INT8 quantization")
    log.info("%s: opset %d graph converted to opset %d for quantization", source, opset, QUANTIZE_MIN_OPSET)
    return target


def preprocess(source: Path, target: Path) -> Path:
    """onnxruntime's quantization pre-processing; symbolic shape inference is skipped where it fails.

    It runs in a scratch working directory: a failing symbolic shape inference leaves
    ``sym_shape_infer_temp.onnx`` and its external data in the current directory.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    for skip_symbolic in (False, True):
        try:
            with atomic_path(target) as tmp, tempfile.TemporaryDirectory() as scratch:
                paths = str(source.resolve()), str(tmp.resolve())  # before the chdir: either may be relative
                with contextlib.chdir(scratch):
                    quant_pre_process(*paths, skip_symbolic_shape=skip_symbolic)
            return target
        except Exception as exc:  # symbolic shape inference raises plain Exceptions on unknown ops
            if skip_symbolic:
                raise ModelError(f"{source}: cannot pre-process the graph for quantization: {one_line(exc)}") from exc
            log.info("%s: symbolic shape inference failed (%s); pre-processing without it", source, one_line(exc))
    raise AssertionError("unreachable")


def fuse_transformer(source: Path, target: Path, shape: tuple[int, int] | None) -> tuple[Path, dict[str, int]]:
    """Fuse a BERT-family graph with onnxruntime's transformer optimizer; returns the fused op counts."""
    from onnxruntime.transformers import optimizer

    num_heads, hidden_size = shape or (0, 0)
    try:  # its modules log under their own top-level names ("fusion_embedlayer"): "failed to detect num_heads" and
        # "word_embedding_table size 300 <= position_embedding_table" noise, once a candidate of a search
        with raised_level(None, logging.ERROR), raised_level("onnxruntime.transformers", logging.ERROR):
            fused = optimizer.optimize_model(str(source), model_type="bert", num_heads=num_heads,
                                             hidden_size=hidden_size)
        with atomic_path(target) as tmp:
            fused.save_model_to_file(str(tmp))
    except Exception as exc:
        raise ModelError(f"{source}: onnxruntime's transformer optimizer failed: {one_line(exc)}") from exc
    fusions = {op: count for op, count in fused.get_fused_operator_statistics().items() if count}
    cpu_session(target, 1, target)  # a fusion onnxruntime itself cannot run is no graph to quantize
    return target, fusions


def attention_shape(model: onnx.ModelProto) -> tuple[int, int] | None:
    """(attention heads, attention width) of a BERT-family graph, or None when they cannot be read.

    The head size is the last entry of the shapes the graph reshapes activations to ([batch, sequence,
    heads, head_size]), written as a constant or as the last constant piece of a Concat. The width is
    the output size of the projection weights those reshapes split into heads (heads × head size): it is
    the hidden size (the first LayerNormalization scale's length) unless heads were pruned, when fewer
    heads of the same size remain. Layers of different widths give None (onnxruntime then detects them).
    """
    scales = {t.name: int(np.prod(t.dims)) for t in model.graph.initializer}
    hidden = next((scales[n.input[1]] for n in model.graph.node
                   if n.op_type == "LayerNormalization" and n.input[1] in scales), None)
    if hidden is None:
        return None
    constants = _int_constants(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    widths = {t.name: int(t.dims[-1]) for t in model.graph.initializer if len(t.dims) == 2}
    head_sizes: collections.Counter[int] = collections.Counter()
    split_widths: dict[int, set[int]] = collections.defaultdict(set)
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = constants.get(node.input[1])
        concat = producers.get(node.input[1])
        if shape is None and concat is not None and concat.op_type == "Concat":
            shape = constants.get(concat.input[-1])
            shape = shape if shape is not None and shape.size == 1 else None
        if shape is not None and shape.size in (1, 4) and 1 < int(shape.ravel()[-1]) < hidden:
            size = int(shape.ravel()[-1])
            head_sizes[size] += 1
            width = _projection_width(node.input[0], producers, widths)
            if width is not None:
                split_widths[size].add(width)
    head_size = next((size for size, _ in head_sizes.most_common() if hidden % size == 0 or split_widths[size]),
                     None)
    if head_size is None:
        return None
    found = split_widths[head_size]
    if len(found) > 1:
        return None
    width = found.pop() if found else hidden
    return (width // head_size, width) if width % head_size == 0 else None


def _projection_width(tensor: str, producers: dict[str, onnx.NodeProto], widths: dict[str, int]) -> int | None:
    """The output size of the MatMul weight ``tensor`` comes from (through its bias Add), or None."""
    node = producers.get(tensor)
    if node is not None and node.op_type == "Add":
        node = next((producers[name] for name in node.input if name in producers
                     and producers[name].op_type == "MatMul"), None)
    if node is None or node.op_type != "MatMul":
        return None
    return next((widths[name] for name in node.input if name in widths), None)


def _int_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Integer initializers and Constant-node values by tensor name."""
    tensors = [(t.name, t) for t in model.graph.initializer]
    tensors += [(n.output[0], n.attribute[0].t) for n in model.graph.node
                if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"]
    return {name: numpy_helper.to_array(t) for name, t in tensors if t.data_type in _INTEGER_TYPES}
