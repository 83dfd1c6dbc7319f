"""Host→device speed ratios from a published latency of a public reference model.

A device edgekd cannot run on (a phone, a Raspberry Pi) is described by one published figure:
model X runs in D ms on it with T threads. edgekd rebuilds X's architecture here from a
``transformers`` config with random weights (latency does not depend on the weight values),
exports it to ONNX once, times it with min(T, physical cores) threads (H ms) and takes
ratio = D / H. A model's device latency is then estimated as its host latency × ratio.

The ONNX file and the measured host time are cached under ``${EDGEKD_CACHE:-~/.cache/edgekd}/
reference/``; the host time is keyed by CPU brand, reference model, threads and onnxruntime
version, so each machine measures each reference once. The ratio itself is recomputed from the
cached host time, so correcting a published figure in a device profile needs no re-measuring.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekd.atomic import atomic_path, write_json
from edgekd.cache import cache_root
from edgekd.config.device import InputShape, ReferenceFigure
from edgekd.errors import ConfigError
from edgekd.profile.cpu import detect_cpu, host_threads

log = logging.getLogger(__name__)

HOST_WARMUP = 10
HOST_RUNS = 50


@dataclass(frozen=True)
class ReferenceModel:
    """A public architecture edgekd can rebuild, with the input shape its figure was taken at."""

    key: str
    description: str
    shape: InputShape
    build: Callable[[Path], None]


@dataclass(frozen=True)
class SpeedRatio:
    """``ratio`` = published device latency ÷ latency of the same model measured here."""

    ratio: float
    host_ms: float
    device_ms: float
    reference_model: str
    source: str
    threads: int
    cpu: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


def cache_dir() -> Path:
    """Where reference models and measured host times are kept."""
    return cache_root() / "reference"


def speed_ratio(reference: ReferenceFigure, threads: int | None = None) -> SpeedRatio:
    """Measure (once per machine) how much slower the reference device is than this host.

    ``threads`` is the number of threads used here; by default the published figure's thread
    count capped at this machine's physical cores.
    """
    model = reference_model(reference.model)
    threads = threads or host_threads(reference.threads)
    cpu = detect_cpu()
    import onnxruntime

    key = {"cpu": cpu.brand, "reference": model.key, "threads": threads,
           "onnxruntime": onnxruntime.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    record_path = cache_dir() / f"host-ms-{model.key}-{digest}.json"
    host_ms = _cached_host_ms(record_path, key)
    if host_ms is None:
        host_ms = measure_host_ms(model, threads)
        write_json(record_path, {**key, "host_ms": host_ms, "runs": HOST_RUNS, "warmup": HOST_WARMUP,
                                 "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return SpeedRatio(
        ratio=reference.latency_ms / host_ms,
        host_ms=host_ms,
        device_ms=reference.latency_ms,
        reference_model=model.key,
        source=reference.source,
        threads=threads,
        cpu=cpu.to_json(),
    )


def measure_host_ms(model: ReferenceModel, threads: int) -> float:
    """Median latency (ms) of ``model`` on this machine, timed in a fresh worker process."""
    from edgekd.profile.runner import time_onnx

    path = reference_onnx(model)
    log.info("measuring reference model %s on this CPU with %d thread(s)", model.key, threads)
    timing = time_onnx(path, model.shape, threads=threads, warmup=HOST_WARMUP, runs=HOST_RUNS)
    return timing.p50_ms


def reference_onnx(model: ReferenceModel) -> Path:
    """The reference model's ONNX file, built and cached on first use."""
    path = cache_dir() / f"{model.key}.onnx"
    if not path.is_file():
        log.info("building reference model %s (random weights) at %s", model.key, path)
        with atomic_path(path) as tmp:
            model.build(tmp)
    return path


def reference_model(key: str) -> ReferenceModel:
    """The reference architecture named ``key`` (a ``ReferenceFigure.model`` value)."""
    try:
        return REFERENCE_MODELS[key]
    except KeyError:
        known = ", ".join(sorted(REFERENCE_MODELS))
        raise ConfigError(f"unknown reference model '{key}'; known: {known}") from None


def _cached_host_ms(path: Path, key: dict[str, Any]) -> float | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if any(record.get(k) != v for k, v in key.items()) or not record.get("host_ms", 0) > 0:
        return None
    return float(record["host_ms"])


# --------------------------------------------------------------------------- reference builders


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
                       InputShape(batch=1, sequence_length=128), _encoder_builder("mobilebert", 128)),
        ReferenceModel("bert-base-seq128", "BERT-base encoder, fp32, batch 1 × 128 tokens",
                       InputShape(batch=1, sequence_length=128), _encoder_builder("bert", 128)),
        ReferenceModel("mobilenet-v2-int8-224", "MobileNetV2 1.0, static INT8, batch 1 × 3×224×224",
                       InputShape(batch=1, image_size=224), _build_mobilenet_v2_int8),
    )
}
