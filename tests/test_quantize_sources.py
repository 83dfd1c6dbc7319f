"""``edgekd quantize`` refuses, in one line and before any work, graphs its quantizers cannot start from."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from tests.reliability import assert_user_error, cli, tiny_onnx


def _half(source: Path, target: Path, kind: int) -> Path:
    """``source`` with every FP32 weight stored as ``kind`` (float16/bfloat16).

    Not a runnable graph (its inputs stay FP32): the check reads the weights only, before anything runs.
    """
    model = onnx.load(str(source))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            values = numpy_helper.to_array(tensor)
            half = onnx.helper.make_tensor(tensor.name, kind, values.shape, values.astype("float32").flatten().tolist())
            tensor.CopyFrom(half)
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize("kind", [onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16])
def test_half_precision_weights_are_refused(kind: int, tmp_path: Path) -> None:
    model = _half(tiny_onnx(tmp_path / "fp32.onnx"), tmp_path / "half.onnx", kind)
    out = tmp_path / "out"
    assert_user_error(cli("quantize", model, "--device", "host-cpu", "--out", out), str(model),
                      "weights are 16-bit floats", "starts from an FP32 model")
    assert not out.exists()


def test_an_already_quantized_graph_is_refused(tmp_path: Path) -> None:
    source = tiny_onnx(tmp_path / "fp32.onnx")
    quantized = tmp_path / "int8.onnx"
    quantize_dynamic(str(source), str(quantized), weight_type=QuantType.QInt8)
    out = tmp_path / "out"
    assert_user_error(cli("quantize", quantized, "--device", "host-cpu", "--out", out), str(quantized),
                      "already quantized", "DynamicQuantizeLinear")
    assert not out.exists()


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_a_file_inside_the_output_directory_is_refused_and_kept(command: str, tmp_path: Path) -> None:
    """Quantizing the file an earlier quantize kept, into that same directory, deleted it (the command replaces its
    earlier outputs)."""
    out = tmp_path / "out"
    out.mkdir()
    model = tiny_onnx(out / "model.fp32.onnx")
    before = model.read_bytes()
    assert_user_error(cli(command, model, "--device", "host-cpu", "--out", out), str(model),
                      "is inside the output directory", "give another --out")
    assert model.read_bytes() == before
