"""Multiply-accumulate operations (MACs) and parameters of an ONNX model, counted from its graph.

One count for every model edgekd reports on (exported teachers and students, quantized models,
any file given to ``edgekd bench``): the graph as stored in the file, one inference at the
device profile's input shapes.

The shape of every tensor is taken from one onnxruntime run with graph optimizations disabled
and every node output exposed, so the count works for any operator onnxruntime can run,
including its fused and quantized contrib operators (``FusedConv``, ``QLinearConv``,
``MatMulInteger``, ...), which ONNX shape inference does not know. Counted operators:

- convolutions (``Conv``, ``FusedConv``, ``ConvInteger``, ``QLinearConv``): output elements ×
  input channels per group × kernel size; ``ConvTranspose``: input elements × the same per input;
- matrix products (``MatMul``, ``FusedMatMul``, ``MatMulInteger``, ``QLinearMatMul``,
  ``MatMulNBits``, ``Gemm``, ``FusedGemm``): output elements × the shared dimension;
- recurrent layers (``LSTM``, ``GRU``, ``RNN``): time steps × batch × the elements of the input
  and recurrence weights (``W`` and ``R``: every gate of every direction, once per step).

Element-wise operators, pooling and normalization are not counted (they are a small share of
the arithmetic of the models edgekd builds). Nodes inside subgraphs (``If``, ``Loop``) are not
counted either.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from edgekd.errors import ModelError, first_line
from edgekd.model_file import model_format
from edgekd.ort_options import session_options
from edgekd.profile.inputs import ShapeLike, make_feeds
from edgekd.stage_record import FullRecord

#: Convolution-like operators and the input index of their weight ([C_out, C_in / group, *kernel]).
CONV_WEIGHT_INPUT = {"Conv": 1, "FusedConv": 1, "ConvInteger": 1, "QLinearConv": 3}
#: Matrix-product operators (their first input is the left operand ``A``).
MATMUL_OPS = frozenset({"MatMul", "FusedMatMul", "MatMulInteger", "QLinearMatMul", "MatMulNBits", "Gemm",
                        "FusedGemm"})

#: Recurrent operators (inputs ``X``, ``W``, ``R``; ``X`` is [steps, batch, ...], or [batch, steps, ...] with layout=1).
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})

Shapes = dict[str, tuple[int, ...]]


class GraphCount(FullRecord):
    """MACs of one inference at the given input shapes, and parameters (initializer elements)."""

    macs: int
    params: int
    macs_by_op: dict[str, int]


def count_macs(onnx_path: str | Path, shape: ShapeLike) -> GraphCount:
    """Count the MACs of one inference of ``onnx_path`` at ``shape`` (a device profile's ``inputs``).

    Raises :class:`ModelError` (one line, naming the file) when the file cannot be read or run.
    """
    path = Path(onnx_path)
    return _count(_load(path), make_feeds(path, shape), path)


def count_macs_fed(onnx_path: str | Path, feeds: Mapping[str, np.ndarray]) -> GraphCount:
    """:func:`count_macs` of one inference on ``feeds`` (an array for every graph input) instead of a device profile's
    shapes: for a caller that holds the very inputs the graph was made for (a compression stage's model)."""
    path = Path(onnx_path)
    return _count(_load(path), feeds, path)


def _load(path: Path) -> onnx.ModelProto:
    """The ONNX graph at ``path``, or :class:`ModelError` (one line) when it cannot be read."""
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises several unrelated types for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


def _count(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], path: Path) -> GraphCount:
    """The :class:`GraphCount` of ``model`` (read from ``path``) run once on ``feeds``."""
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in model.graph.initializer}
    shapes.update(_run_shapes(model, feeds, path))
    by_op: dict[str, int] = {}
    for node in model.graph.node:
        macs = node_macs(node, shapes)
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    params = sum(math.prod(t.dims) for t in model.graph.initializer)
    return GraphCount(macs=sum(by_op.values()), params=int(params), macs_by_op=dict(sorted(by_op.items())))


def graph_figures(model_path: str | Path, shape: ShapeLike) -> dict[str, Any]:
    """:func:`count_macs` as JSON for an ONNX file; nulls for an ORT format model, which has no ONNX graph to count."""
    if model_format(model_path) == "ort":
        return {"macs": None, "params": None, "macs_by_op": {}}
    return count_macs(model_path, shape).to_json()


def node_macs(node: onnx.NodeProto, shapes: Shapes) -> int:
    """MACs of one node given the shapes of its tensors (0 for uncounted operators or unknown shapes)."""

    def shape(index: int) -> tuple[int, ...] | None:
        return shapes.get(node.input[index]) if index < len(node.input) else None

    output = shapes.get(node.output[0]) if node.output else None
    if node.op_type in CONV_WEIGHT_INPUT:
        weight = shape(CONV_WEIGHT_INPUT[node.op_type])
        return math.prod(output) * math.prod(weight[1:]) if output and weight else 0
    if node.op_type == "ConvTranspose":
        data, weight = shape(0), shape(1)
        return math.prod(data) * math.prod(weight[1:]) if data and weight else 0
    if node.op_type in RECURRENT_OPS:
        steps_batch, weights, recurrence = shape(0), shape(1), shape(2)
        if not steps_batch or not weights or not recurrence:
            return 0
        return steps_batch[0] * steps_batch[1] * (math.prod(weights) + math.prod(recurrence))
    if node.op_type in MATMUL_OPS:
        left = shape(0)
        if not output or not left:
            return 0
        trans_a = any(a.name == "transA" and a.i for a in node.attribute)
        shared = left[-2] if trans_a and len(left) >= 2 else left[-1]
        return math.prod(output) * shared
    return 0


def _run_shapes(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray], path: Path) -> Shapes:
    """The shape of every node output, from one unoptimized onnxruntime run exposing them all."""
    exposed = onnx.ModelProto()
    exposed.CopyFrom(model)
    names = {o.name for o in exposed.graph.output}
    for node in exposed.graph.node:
        for name in node.output:
            if name and name not in names:
                exposed.graph.output.append(onnx.ValueInfoProto(name=name))
                names.add(name)
    options = session_options()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
        values = session.run(None, dict(feeds))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"{path}: onnxruntime cannot run it to count MACs: {first_line(exc)}") from None
    shapes = {name: tuple(array.shape) for name, array in feeds.items()}
    shapes.update({o.name: tuple(np.shape(v)) for o, v in zip(session.get_outputs(), values, strict=True)})
    return shapes
