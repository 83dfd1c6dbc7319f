"""Writing quantized variants of an FP32 ONNX graph with ``onnxruntime.quantization``.

Each function writes one file atomically and returns its path. Known friction is handled here
rather than left to crash: graphs fused by the transformer optimizer contain ``com.microsoft``
operators that ONNX shape inference cannot type, so every quantizer call passes
``DefaultTensorType=FLOAT``; only MatMuls with a constant weight are quantized
(``MatMulConstBOnly``), never activation × activation products such as attention scores.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekd.atomic import atomic_path
from edgekd.errors import ModelError
from edgekd.export.parity import one_line
from edgekd.log_level import raised_level
from edgekd.quantize.calibration import FeedReader, calibration_method
from edgekd.quantize.feeds import Feed
from edgekd.quantize.isa import Int8Settings

#: Operators whose weights hold the compute; the nodes exclusion retries choose among.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Attention"})
#: Smallest initializer (elements) stored as FP16 by :func:`fp16_weights`; smaller ones stay FP32.
FP16_MIN_ELEMENTS = 16


@dataclass(frozen=True)
class Int8Options:
    """How INT8 variants are quantized: ISA-chosen types plus the recipe's granularity and symmetry."""

    settings: Int8Settings
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True

    def extra_options(self) -> dict[str, object]:
        """onnxruntime ``extra_options`` shared by the dynamic and static quantizers."""
        return {"DefaultTensorType": onnx.TensorProto.FLOAT, "MatMulConstBOnly": True,
                "ActivationSymmetric": self.symmetric_activations, "WeightSymmetric": self.symmetric_weights}


def quantize_dynamic_int8(source: Path, target: Path, options: Int8Options, exclude: Sequence[str] = ()) -> Path:
    """Dynamic INT8: weights quantized offline, activations at run time (no calibration). ``exclude`` names nodes
    kept in FP32; onnxruntime turns a Gemm into a MatMul named ``<name>_MatMul`` before it reads them, so both names
    are given (a Gemm excluded by its own name alone was quantized all the same)."""
    from onnxruntime.quantization import quantize_dynamic

    with _writing(source, target, "dynamic INT8") as tmp:
        quantize_dynamic(str(source), str(tmp), per_channel=options.per_channel,
                         reduce_range=options.settings.reduce_range,
                         weight_type=_quant_type(options.settings.weight_type),
                         nodes_to_exclude=[*exclude, *(f"{name}_MatMul" for name in exclude)],
                         extra_options=options.extra_options())
    return target


def quantize_static_int8(source: Path, target: Path, options: Int8Options, calibration: Sequence[Feed],
                         method: str, exclude: Sequence[str] = (), *, op_types: Sequence[str] | None = None) -> Path:
    """Static INT8 in QDQ format, activation ranges calibrated on ``calibration`` with ``method``.

    ``op_types`` limits quantization (and calibration) to those operators; None is onnxruntime's
    default set. Transformers pass :data:`WEIGHTED_OPS`: their attention-mask arithmetic adds
    float32's lowest value, a range histogram calibration (entropy, percentile) cannot bin, and
    INT8 Softmax/LayerNorm cost accuracy for little speed.
    """
    from onnxruntime.quantization import QuantFormat, quantize_static

    with _writing(source, target, f"static INT8 ({method} calibration)") as tmp:
        quantize_static(str(source), str(tmp), FeedReader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=options.per_channel, reduce_range=options.settings.reduce_range,
                        activation_type=_quant_type(options.settings.activation_type),
                        weight_type=_quant_type(options.settings.weight_type),
                        calibrate_method=calibration_method(method), nodes_to_exclude=list(exclude),
                        op_types_to_quantize=list(op_types) if op_types is not None else None,
                        extra_options=options.extra_options())
    return target


def fp16_weights(source: Path, target: Path) -> Path:
    """FP16 weight storage: float initializers become FP16 with a Cast back to FP32 before use.

    Halves the file; onnxruntime folds the Casts when it loads the model, so the arithmetic (and
    speed) stay FP32 on CPUs without FP16 kernels.
    """
    model = onnx.load(str(source))
    casts = []
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.data_type != onnx.TensorProto.FLOAT or int(np.prod(tensor.dims)) < FP16_MIN_ELEMENTS:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), f"{tensor.name}__fp16")
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], name=f"{tensor.name}__cast",
                                      to=onnx.TensorProto.FLOAT))
        model.graph.initializer[index].CopyFrom(half)
    nodes = [*casts, *model.graph.node]  # producers first: the graph stays topologically sorted
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with atomic_path(target) as tmp:
        onnx.save(model, str(tmp))
    return target


def weighted_nodes(path: Path) -> list[str]:
    """Names of the nodes of ``path`` whose weights INT8 quantizes (the exclusion candidates)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type in WEIGHTED_OPS and node.name]


@contextlib.contextmanager
def _writing(source: Path, target: Path, what: str) -> Iterator[Path]:
    """Atomic output for a quantizer, its failures as one-line ModelErrors, its chatter muted.

    onnxruntime's quantizers advise pre-processing on the root logger (it has been done) and its
    calibrators print progress to stdout.
    """
    try:
        with raised_level(None, logging.ERROR), atomic_path(target) as tmp, \
                contextlib.redirect_stdout(io.StringIO()):
            yield tmp
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"{source}: {what} quantization failed: {one_line(exc)}") from exc


def _quant_type(name: str):  # noqa: ANN202 - onnxruntime's QuantType, imported lazily
    from onnxruntime.quantization import QuantType

    return {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[name]
