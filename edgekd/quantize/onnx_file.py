"""``edgekd quantize MODEL.onnx``: the quantize stage's machinery on an ONNX file a user already has.

The candidates, the ISA-aware choice of ``modes: [auto]``, the interleaved timing against FP32
and the decision are the stage's own (:func:`edgekd.quantize.model.quantize_model`). Data comes
from ``.npz`` files (:mod:`edgekd.quantize.npz_feeds`): without a calibration file static INT8
cannot be made (``auto`` then tries dynamic INT8); without an evaluation file nothing is scored,
so no accuracy or agreement gate applies and the decision is by speed (and size) alone. Both are
said in the record's ``notes``. A variant that misses a gate even after its retries is recorded
and not kept (the decision says why); unlike the stage, the command does not stop there.

``OUT`` receives the kept model, ``<stem>.<variant>.onnx`` (``fp32``: a copy of the input), and
``quantize.json``: every variant's figures, the decision and why, the data and settings used.
Candidates are built in a temporary directory inside ``OUT`` and removed; files are written
atomically; ``OUT`` must be new, empty or an earlier ``edgekd quantize`` output.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.atomic import write_json
from edgekd.config.device import DeviceProfile
from edgekd.errors import ConfigError, ModelError
from edgekd.model_file import copy_model, require_onnx
from edgekd.profile.cpu import detect_cpu, device_isa
from edgekd.quantize.config import QuantizeSettings, QuantizeStage
from edgekd.quantize.evaluate import cpu_session
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.model import quantize_model
from edgekd.quantize.npz_feeds import load_quant_data
from edgekd.quantize.record import QuantizedModel
from edgekd.rundir import check_source_outside, claimed, read_command_record
from edgekd.version import __version__

log = logging.getLogger(__name__)

RECORD = "quantize.json"
COMMAND = "quantize"


@dataclass(frozen=True)
class QuantizedFile:
    """What ``edgekd quantize`` wrote: the kept model, the record, and the record's content."""

    model: Path
    record_path: Path
    record: dict[str, Any]
    quantized: QuantizedModel
    """The record's variants, decision, INT8 settings and fusions, typed."""

    @property
    def kept(self) -> str:
        """The kept variant's name (``fp32`` when no other variant paid)."""
        return self.quantized.decision

    @property
    def reason(self) -> str:
        """One sentence saying why that variant was kept."""
        return self.quantized.reason

    def to_json(self) -> dict[str, Any]:
        """The record (``quantize.json``'s content)."""
        return self.record


def quantize_file(model: Path, device: DeviceProfile, out: Path, *, calibration: Path | None = None,
                  evaluation: Path | None = None, settings: QuantizeSettings | None = None,
                  scores: str | None = None) -> QuantizedFile:
    """Quantize the ONNX file ``model`` for ``device`` into ``out``; see the module docstring. ``scores`` names the
    output evaluation reads (default: the one named ``logits``, else the first floating-point one)."""
    source = require_onnx(model, "edgekd quantize")
    check_quantizable(source)
    cpu_session(source, 1, source)  # a graph onnxruntime cannot load: named as the user's file, not a scratch copy
    config = QuantizeStage(**(settings or QuantizeSettings()).model_dump())
    if "static" in config.modes and calibration is None:
        raise ConfigError("--mode static: static INT8 needs calibration data; pass --calibration FILE.npz (one array "
                          "per graph input, named as the input)")
    data = load_quant_data(source, calibration=calibration, evaluation=evaluation,
                           calibration_samples=config.calibration_samples, eval_batch=device.inputs.batch,
                           scores=scores)
    out = Path(out)
    check_source_outside(source, out, "edgekd quantize")
    with claimed(out, record=RECORD):
        previous = read_command_record(out / RECORD)
        with tempfile.TemporaryDirectory(prefix=".quantize-", suffix=".tmp", dir=out) as work:
            # scratch files are named "model": edgekd's own names for them must fit where the user's name just does
            result = quantize_model(source.resolve(), Path(work), "model", data, config, device,
                                    label=str(source), strict=False)
            kept = out / kept_name(source.stem, result.kept.name)
            copy_model(result.kept.path, kept)
        quantized = QuantizedModel.model_validate(result.to_json(lambda path: kept.name if path == result.kept.path
                                                                 else None))
        record = {
            "edgekd_version": __version__,
            "command": COMMAND,
            "source": str(source),
            "model": kept.name,
            "device": device.model_dump(mode="json"),
            "device_isa": device_isa(device),
            "cpu": detect_cpu().to_json(),
            "settings": config.model_dump(mode="json", exclude={"stage", "roles"}),
            "data": _data_json(data, calibration, evaluation),
            "notes": _notes(data, config),
            **quantized.to_json(),
        }
        path = write_json(out / RECORD, record)
        _remove_replaced(out, previous, kept.name)
    log.debug("%s: %s", source, result.decision.reason)
    return QuantizedFile(model=kept, record_path=path, record=record, quantized=quantized)


#: Operators a quantized graph has and an FP32 one does not.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                           "ConvInteger", "QLinearConv", "QLinearMatMul", "MatMulNBits", "DynamicQuantizeMatMul"})


def check_quantizable(source: Path) -> None:
    """Refuse, in one line, a graph the quantizers cannot start from: half-precision weights or already quantized.

    onnxruntime's quantizers read FP32 weights; given float16 ones they fail deep inside with an internal
    name, and an already quantized graph would be quantized twice.
    """
    import onnx

    graph = onnx.load(str(source), load_external_data=False).graph
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
    floats = [t.data_type for t in graph.initializer if t.data_type in half | {onnx.TensorProto.FLOAT}]
    if floats and all(kind in half for kind in floats):
        raise ModelError(f"{source}: its weights are 16-bit floats; edgekd quantize starts from an FP32 model "
                         "(export the model in FP32, and let the fp16 variant be chosen only where it pays)")
    quantized = sorted({node.op_type for node in graph.node} & QUANTIZED_OPS)
    if quantized:
        raise ModelError(f"{source}: already quantized (it has {', '.join(quantized)} operators); give edgekd "
                         "quantize the FP32 model it was made from")


#: The longest file name most filesystems take, in bytes, less what an atomic write adds around it
#: (``.<name>.<8 random characters>.tmp``).
NAME_BYTES = 255 - len("..12345678.tmp")


def kept_name(stem: str, variant: str) -> str:
    """``<stem>.<variant>.onnx``, its stem cut (at a character boundary) so the name fits :data:`NAME_BYTES`: a
    file name the filesystem just took gave a kept variant's name it does not."""
    suffix = f".{variant}.onnx"
    room = NAME_BYTES - len(suffix.encode())
    return stem.encode()[:room].decode(errors="ignore") + suffix


def _data_json(data: QuantData, calibration: Path | None, evaluation: Path | None) -> dict[str, Any]:
    """Which files fed calibration and evaluation, and how many examples each gave."""
    return {"calibration": {"file": str(calibration), "examples": data.calibration_examples,
                            "batches": len(data.calibration)} if calibration else None,
            "eval": {"file": str(evaluation), "examples": sum(len(labels) for _, labels in data.val)}
            if evaluation else None}


def _notes(data: QuantData, config: QuantizeStage) -> list[str]:
    """What the data files left out (static INT8 only when the modes let edgekd choose the variants: asked for by
    name, static INT8 without calibration data is refused before), and an evaluation set too small for the accuracy
    gate to mean anything (one example weighs more than the tolerance; a tolerance of 0 allows no change at all,
    whatever the count)."""
    notes = []
    if not data.calibration and "auto" in config.modes:
        notes.append("static INT8 not offered: it needs calibration data (--calibration FILE.npz); "
                     "dynamic INT8 and FP16 need none")
    if not data.val:
        notes.append("accuracy not checked: without --eval FILE.npz no variant was scored, so no accuracy or "
                     "agreement gate applied and the decision is by speed and size alone")
    examples = sum(len(labels) for _, labels in data.val)
    if examples and config.tolerance and examples < fine_gate_examples(config.tolerance):
        notes.append(f"accuracy gate coarse: the {examples} evaluation example(s) each weigh "
                     f"{100 / examples:.3g} points, more than the {100 * config.tolerance:g}-point tolerance, so one "
                     f"example's answer decides it; give at least {fine_gate_examples(config.tolerance)} examples "
                     "(--eval)")
    return notes


def fine_gate_examples(tolerance: float) -> int:
    """The fewest evaluation examples none of which weighs more than ``tolerance`` (> 0): 100 at 0.01, where one
    changed answer is a drop of exactly the tolerance, which the gate allows (at 99 it is more)."""
    return math.ceil(1 / tolerance)


def _remove_replaced(out: Path, previous: dict[str, Any] | None, kept: str) -> None:
    """Delete the model an earlier ``edgekd quantize`` into ``out`` kept, when this run kept another file."""
    name = previous.get("model") if previous else None
    if isinstance(name, str) and name != kept and Path(name).name == name and name.endswith(".onnx"):
        (out / name).unlink(missing_ok=True)
