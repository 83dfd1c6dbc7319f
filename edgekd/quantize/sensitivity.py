"""Which nodes INT8 hurts most: each node's own contribution to the output error, layer by layer.

Both graphs (the FP32 graph that was quantized and its quantized version) expose every candidate
node's activation inputs and output as extra graph outputs and run on the same calibration
batches. A tensor's error is its relative L2 error, ‖quantized − fp32‖ / ‖fp32‖. Errors add up
along the graph, so a node is ranked by the error it *adds*: the error of its output minus the
largest error of its inputs. Quantized graphs keep the FP32 tensor names at node outputs (dynamic
and QDQ quantization both do); a node whose tensors are missing ranks last. A node the quantizer
left as it was (an attention MatMul of two activations, under dynamic quantization) is not ranked:
excluding it would change nothing.

The extra outputs are declared without a type, which onnxruntime then infers from the producing
node: a fused graph's tensors are not all float (``EmbedLayerNormalization``'s mask index is int32),
and ONNX shape inference does not know the contrib operators that produce them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from edgekd.quantize.evaluate import cpu_session, run_batches
from edgekd.quantize.feeds import Feed

_EPS = 1e-12


def rank_nodes(reference: Path, quantized: Path, nodes: Sequence[str], feeds: Sequence[Feed],
               threads: int) -> list[tuple[str, float]]:
    """Those of ``nodes`` that ``quantized`` changed, with the error each adds, most sensitive first."""
    graph = onnx.load(str(reference), load_external_data=False).graph
    nodes = quantized_nodes(graph, onnx.load(str(quantized), load_external_data=False).graph, nodes)
    weights = {t.name for t in graph.initializer}
    wanted = set(nodes)
    io = {node.name: ([i for i in node.input if i and i not in weights], node.output[0])
          for node in graph.node if node.name in wanted}
    tensors = sorted({name for inputs, output in io.values() for name in (*inputs, output)})
    fp32 = _tensor_values(reference, tensors, feeds, threads)
    quant = _tensor_values(quantized, tensors, feeds, threads)
    error = {name: _relative_error(fp32[name], quant[name]) for name in tensors if name in fp32 and name in quant}
    scores = []
    for name in nodes:
        inputs, output = io.get(name, ([], ""))
        added = error[output] - max((error.get(i, 0.0) for i in inputs), default=0.0) if output in error else -1.0
        scores.append((name, float(added)))
    return sorted(scores, key=lambda item: item[1], reverse=True)


def quantized_nodes(reference: onnx.GraphProto, quantized: onnx.GraphProto, nodes: Sequence[str]) -> list[str]:
    """Those of ``nodes`` that are not in ``quantized`` as they were in ``reference`` (same name, operator, inputs).

    Dynamic quantization replaces a node (``MatMul`` → ``MatMulInteger`` and friends); QDQ keeps its
    name and operator but feeds it from ``DequantizeLinear``: either way the node differs.
    """
    before = {node.name: (node.op_type, list(node.input)) for node in reference.node}
    after = {node.name: (node.op_type, list(node.input)) for node in quantized.node}
    return [name for name in nodes if name not in after or after[name] != before.get(name)]


def _tensor_values(path: Path, tensors: Sequence[str], feeds: Sequence[Feed], threads: int) -> dict[str, np.ndarray]:
    """The values of ``tensors`` (those the graph has) over every batch of ``feeds``, flattened.

    The graph gets the tensors as extra outputs in memory; nothing is written to disk.
    """
    model = onnx.load(str(path))
    produced = {out for node in model.graph.node for out in node.output}
    present = [name for name in tensors if name in produced]
    if not present:
        return {}
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in present if name not in outputs)
    session = cpu_session(model.SerializeToString(), threads, path)
    runs = run_batches(session, feeds, path, outputs=present)
    return {name: np.concatenate([np.asarray(run[i], dtype=np.float64).ravel() for run in runs])
            for i, name in enumerate(present)}


def _relative_error(reference: np.ndarray, actual: np.ndarray) -> float:
    if reference.shape != actual.shape:
        return float("inf")
    return float(np.linalg.norm(actual - reference) / (np.linalg.norm(reference) + _EPS))
