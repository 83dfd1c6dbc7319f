"""The public reference models a device profile's published figure can name, and how to rebuild them.

A device edgekd cannot run on is described by a published latency of one of these models
(``reference.model`` in ``devices/*.yaml``); :mod:`edgekd.profile.speed_ratio` rebuilds it here with
random weights (latency does not depend on the weight values), times it, and derives the host→device
speed ratio. Adding a reference model is one entry in :data:`REFERENCE_MODELS`: device profiles may
name it at once (their schema takes its keys from here). Nothing here imports torch until a model is built.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import ConfigError


@dataclass(frozen=True)
class ReferenceModel:
    """A public architecture edgekd can rebuild, with the input shape its figure was taken at."""

    key: str
    description: str
    shape: dict[str, int]
    """The input shape its figure was taken at (:class:`~edgekd.config.device.InputShape` fields)."""
    build: Callable[[Path], None]


def reference_model(key: str) -> ReferenceModel:
    """The reference architecture named ``key`` (a ``ReferenceFigure.model`` value)."""
    try:
        return REFERENCE_MODELS[key]
    except KeyError:
        known = ", ".join(sorted(REFERENCE_MODELS))
        raise ConfigError(f"unknown reference model '{key}'; known: {known}") from None


def export_encoder(model: Any, target: Path, *, sequence_length: int, dynamic: bool = False,
                   output: str = "last_hidden_state") -> None:
    """Export a ``transformers`` BERT-family encoder to ONNX (opset 17, TorchScript exporter).

    Inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (int64, batch 1 ×
    ``sequence_length``; batch and sequence axes dynamic when ``dynamic``), one output: the model
    output field ``output`` (``last_hidden_state``, or ``logits`` of a classifier; its batch axis
    dynamic when ``dynamic``). The model is called with keyword arguments through a thin wrapper,
    which the tracer needs with transformers 5.
    """
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids)[output]

    names = ["input_ids", "attention_mask", "token_type_ids"]
    axes = {**{name: {0: "batch", 1: "sequence"} for name in names}, output: {0: "batch"}} if dynamic else None
    ids = torch.zeros(1, sequence_length, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow on shapes
        torch.onnx.export(Encoder(model.eval()), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(target),
                          input_names=names, output_names=[output], dynamic_axes=axes,
                          opset_version=17, dynamo=False)


def _encoder_builder(family: str, seq: int) -> Callable[[Path], None]:
    """A builder exporting a random-weight BERT-family encoder at batch 1 and ``seq`` tokens."""

    def build(target: Path) -> None:
        import torch
        import transformers

        torch.manual_seed(0)
        if family == "mobilebert":
            config: Any = transformers.MobileBertConfig()  # 24 layers, NoNorm + ReLU (the "OPT" model)
            model: Any = transformers.MobileBertModel(config)
        else:
            config = transformers.BertConfig()  # BERT-base: 12 layers, hidden 768
            model = transformers.BertModel(config)
        config._attn_implementation = "eager"  # plain MatMul/Softmax, as the on-device runtimes run it
        export_encoder(model, target, sequence_length=seq)

    return build


def _build_mobilenet_v2_int8(target: Path) -> None:
    """MobileNetV2 1.0/224 (1000 classes) with static INT8 QDQ quantization (per-tensor)."""
    import numpy as np
    import onnxruntime
    import torch
    import transformers
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class RandomImages(CalibrationDataReader):
        def __init__(self) -> None:
            rng = np.random.default_rng(0)
            self.batches = iter([{"pixel_values": rng.standard_normal((1, 3, 224, 224), dtype=np.float32)}
                                 for _ in range(4)])

        def get_next(self) -> dict[str, Any] | None:
            return next(self.batches, None)

    torch.manual_seed(0)
    config = transformers.MobileNetV2Config(num_labels=1000, tf_padding=False)
    model = transformers.MobileNetV2ForImageClassification(config).eval()
    fp32 = target.with_name(target.name + ".fp32.onnx")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(1, 3, 224, 224),), str(fp32), input_names=["pixel_values"],
                              output_names=["logits"], opset_version=17, dynamo=False)
        onnxruntime.set_default_logger_severity(3)
        quantize_static(str(fp32), str(target), RandomImages(), quant_format=QuantFormat.QDQ,
                        per_channel=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        fp32.unlink(missing_ok=True)


REFERENCE_MODELS: dict[str, ReferenceModel] = {
    m.key: m
    for m in (
        ReferenceModel("mobilebert-seq128", "MobileBERT encoder, fp32, batch 1 × 128 tokens",
                       {"batch": 1, "sequence_length": 128}, _encoder_builder("mobilebert", 128)),
        ReferenceModel("bert-base-seq128", "BERT-base encoder, fp32, batch 1 × 128 tokens",
                       {"batch": 1, "sequence_length": 128}, _encoder_builder("bert", 128)),
        ReferenceModel("mobilenet-v2-int8-224", "MobileNetV2 1.0, static INT8, batch 1 × 3×224×224",
                       {"batch": 1, "image_size": 224}, _build_mobilenet_v2_int8),
    )
}
