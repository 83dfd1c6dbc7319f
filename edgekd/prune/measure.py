"""What a prune/factorize step is judged by: accuracy, parameters, MACs and the exported model's latency.

MACs are counted by PyTorch's ``FlopCounterMode`` (matrix products and convolutions; FLOPs / 2) at
the device profile's input shapes; the ONNX file is written by
:func:`edgekd.export.onnx_export.export_onnx`, whose parity gate checks it against PyTorch, and timed
by :func:`edgekd.profile.runner.profile_onnx` under the device profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgekd.config.device import DeviceProfile
from edgekd.data.task_data import TaskData
from edgekd.distill.trainer import accuracy
from edgekd.errors import ModelError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.stage import PARITY_SAMPLES
from edgekd.models.call import call_logits, call_model
from edgekd.models.task_model import TaskModel
from edgekd.profile.runner import profile_onnx

#: Export preset of the checks: plain FP32 ONNX, onnxruntime's basic optimizations.
CHECK_TARGET = "onnx-fp32"
#: Timing of each checked export (short: it runs after every step of a schedule).
WARMUP, RUNS = 10, 60


@dataclass(frozen=True)
class Snapshot:
    """A model's figures at one point of a compression schedule."""

    step: int
    params: int
    macs: int
    accuracy: float
    val_accuracy: float
    onnx_p50_ms: float | None = None
    parity_max_abs_diff: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def device_inputs(model: TaskModel, device: DeviceProfile) -> dict[str, torch.Tensor]:
    """Placeholder inputs at the device profile's batch and sequence length."""
    return model.example_inputs(batch=device.inputs.batch, sequence=device.inputs.sequence_length)


@torch.no_grad()
def count_macs(model: TaskModel, inputs: dict[str, torch.Tensor]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (PyTorch's FLOP counter / 2)."""
    model.module.eval()
    with FlopCounterMode(display=False) as counter:
        call_model(model.module, inputs)
    return counter.get_total_flops() // 2


@torch.no_grad()
def output_shape(model: TaskModel, inputs: dict[str, torch.Tensor]) -> tuple[int, ...]:
    model.module.eval()
    return tuple(call_logits(model.module, inputs).shape)


def check_shape(expected: tuple[int, ...], model: TaskModel, inputs: dict[str, torch.Tensor], what: str) -> None:
    """Raise :class:`ModelError` when ``model``'s output shape is no longer ``expected``."""
    shape = output_shape(model, inputs)
    if shape != expected:
        raise ModelError(f"{what} changed the model's output shape from {list(expected)} to {list(shape)}")


def snapshot(model: TaskModel, data: TaskData, device: DeviceProfile, step: int, *,
             onnx_path: Path | None = None) -> Snapshot:
    """Figures of ``model`` now; with ``onnx_path``, also exported there (parity-gated) and timed on ``device``."""
    p50 = parity = None
    if onnx_path is not None:
        _, sample, _ = next(data.test.batches(PARITY_SAMPLES, shuffle=False))
        result = export_onnx(model.module, sample, onnx_path, load_export_target(CHECK_TARGET),
                             extra_dynamic_axes=model.signature.dynamic_axes())
        parity = result.parity.max_abs_diff
        p50 = profile_onnx(onnx_path, device, warmup=WARMUP, runs=RUNS).p50_ms
        onnx_path.unlink()
    return Snapshot(step=step, params=model.params, macs=count_macs(model, device_inputs(model, device)),
                    accuracy=accuracy(model.module, data.test), val_accuracy=accuracy(model.module, data.val),
                    onnx_p50_ms=p50, parity_max_abs_diff=parity)
