"""Static INT8 calibrated on a given image set: a model trained in torch, exported, quantized, scored on test.

Measures what ``calibration: synthetic`` costs: the same FP32 graph quantized with synthetic and
with real calibration images, each scored on the real test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from edgekd.atomic import write_bytes
from edgekd.export.onnx_export import _torch_export
from edgekd.ort_options import session_options
from edgekd.profile.cpu import detect_cpu
from edgekd.quantize.feeds import IMAGE_INPUT
from edgekd.quantize.graph import preprocess
from edgekd.quantize.isa import int8_settings
from edgekd.quantize.quantizers import Int8Options, quantize_static_int8


def export_fp32(model: torch.nn.Module, example: torch.Tensor, target: Path) -> Path:
    """``model`` as an ONNX graph with a dynamic batch axis (edgekd's exporter), pre-processed for quantization."""
    raw = write_bytes(target.with_suffix(".raw.onnx"), _torch_export(
        model.eval(), {IMAGE_INPUT: example}, target, 17, {IMAGE_INPUT: {0: "batch"}, "logits": {0: "batch"}},
        "logits"))
    return preprocess(raw, target)


def onnx_accuracy(path: Path, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` the ONNX graph classifies as ``labels`` (one thread)."""
    session = ort.InferenceSession(str(path), session_options(1), providers=["CPUExecutionProvider"])
    logits = session.run(None, {IMAGE_INPUT: images.numpy().astype(np.float32)})[0]
    return float((logits.argmax(1) == labels.numpy()).mean())


def static_int8_accuracy(fp32: Path, calibration: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor],
                         target: Path, method: str = "minmax") -> float:
    """Test accuracy of ``fp32`` quantized to static INT8 (QDQ) with ``calibration`` images as one batch."""
    options = Int8Options(int8_settings(detect_cpu().isa))
    feeds = [{IMAGE_INPUT: np.ascontiguousarray(calibration.numpy(), dtype=np.float32)}]
    quantize_static_int8(fp32, target, options, feeds, method)
    return onnx_accuracy(target, *test)
