"""What a prune/factorize step is judged by: the task's metric, parameters, MACs and the exported model's latency.

Quality is the data's task's own (:mod:`edgekd.task_heads`): accuracy for single-label classifiers, micro-F1
for multi-label ones, MSE (lower is better) for regression, token accuracy for token classification; a
snapshot names it (``metric``) and holds every figure of the task (``figures``, as the distill stage records them).

MACs are counted by PyTorch's ``FlopCounterMode`` (matrix products and convolutions; FLOPs / 2) at
the device profile's input shapes; the ONNX file is written by
:func:`edgekd.export.onnx_export.export_onnx`, whose parity gate checks it against PyTorch. The
exports of every measured step are timed together at the end (:func:`time_interleaved`), in
interleaved rounds under the device profile, so that the latencies and speed-ups recorded compare
models timed side by side rather than minutes apart under whatever load the machine had then.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from edgekd.config.device import DeviceProfile
from edgekd.data.task_data import TaskData
from edgekd.distill.task_metrics import evaluation_metrics
from edgekd.errors import ModelError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.stage import PARITY_SAMPLES
from edgekd.models.call import call_logits, call_model
from edgekd.models.task_model import TaskModel
from edgekd.profile.bench import benchmark, paired_speedup
from edgekd.profile.runner import profile_onnx
from edgekd.prune.record import StepRecord

#: Export preset of the checks: plain FP32 ONNX, onnxruntime's basic optimizations.
CHECK_TARGET = "onnx-fp32"
#: Timing of the checked exports: runs per model, split over interleaved rounds (sessions) of ``WARMUP`` warm-up
#: runs each; the rounds give the speed-up's interval.
WARMUP, RUNS, ROUNDS = 10, 60, 4


class Snapshot(StepRecord):
    """A model's figures at one point of a compression schedule (as its stage record keeps them)."""

    @property
    def latency_ms(self) -> float | None:
        """The latency a hybrid stage's ``target_latency_ms`` is compared with: the ONNX p50."""
        return self.onnx_p50_ms


def device_inputs(model: TaskModel, device: DeviceProfile) -> dict[str, torch.Tensor]:
    """Placeholder inputs at the device profile's batch and sequence length."""
    return model.example_inputs(batch=device.inputs.batch, sequence=device.inputs.sequence_length)


@torch.no_grad()
def count_macs(model: TaskModel, inputs: dict[str, torch.Tensor]) -> int:
    """Multiply-accumulates of one forward pass on ``inputs`` (PyTorch's FLOP counter / 2)."""
    model.module.eval()
    with _frozen(model.module), FlopCounterMode(display=False) as counter:
        call_model(model.module, inputs)
    return counter.get_total_flops() // 2


@contextmanager
def _frozen(module: torch.nn.Module) -> Iterator[None]:
    """``module``'s parameters require no gradients meanwhile: the FLOP counter hooks the gradients of every module
    input that requires them, and fails on a parameter passed to a module as its input under ``no_grad`` (DeBERTa-v2
    hands its relative-position table to a dropout)."""
    flags = [(param, param.requires_grad) for param in module.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


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
             onnx_path: Path | None = None, timed_now: bool = False) -> Snapshot:
    """Figures of ``model`` now; with ``onnx_path``, also exported there (parity-gated) for :func:`time_interleaved`.

    ``timed_now`` times the export at once, for a decision that cannot wait (a latency target); the
    figure recorded is the interleaved one :func:`time_interleaved` puts in its place.
    """
    p50 = parity = None
    if onnx_path is not None:
        _, sample, _ = next(data.test.batches(PARITY_SAMPLES, shuffle=False))
        result = export_onnx(model.module, sample, onnx_path, load_export_target(CHECK_TARGET),
                             extra_dynamic_axes=model.signature.dynamic_axes())
        parity = result.parity.max_abs_diff
        if timed_now:
            p50 = profile_onnx(onnx_path, device, warmup=WARMUP, runs=RUNS).p50_ms
    figures = evaluation_metrics(model, data)
    metric = figures.get("primary_metric", "accuracy")
    return Snapshot(step=step, params=model.params, macs=count_macs(model, device_inputs(model, device)),
                    metric=metric, score=figures[metric], val_score=figures[f"val_{metric}"],
                    accuracy=figures["accuracy"], val_accuracy=figures["val_accuracy"], figures=figures,
                    onnx_p50_ms=p50, parity_max_abs_diff=parity)


def time_interleaved(snapshots: Sequence[Snapshot], exports: dict[int, Path], device: DeviceProfile) -> list[Snapshot]:
    """``snapshots`` with the latency of each exported step (``exports``: step → ONNX file) timed in one
    interleaved run, and its speed-up over the first exported step; the files are deleted afterwards."""
    steps = sorted(exports)
    if not steps:
        return list(snapshots)
    results = dict(zip(steps, benchmark([exports[s] for s in steps], device, warmup=WARMUP, runs=RUNS,
                                        rounds=ROUNDS), strict=True))
    for path in exports.values():
        path.unlink()
    return [shot.model_copy(update={"onnx_p50_ms": results[shot.step].p50_ms,
                                    "speedup": paired_speedup(results[steps[0]], results[shot.step])})
            if shot.step in results else shot.model_copy(update={"onnx_p50_ms": None}) for shot in snapshots]
