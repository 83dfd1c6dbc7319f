"""What a prune/factorize step is judged by: the task's metric, parameters, MACs and the exported model's latency.

Quality is the data's task's own (:mod:`edgekd.task_heads`): accuracy for single-label classifiers, micro-F1
for multi-label ones, MSE (lower is better) for regression, token accuracy for token classification; a
snapshot names it (``metric``) and holds every figure of the task (``figures``, as the distill stage records them).

MACs are counted on the model's ONNX graph at the device profile's input shapes
(:func:`edgekd.profile.macs.count_macs_fed`), the count the profile stage and ``edgekd bench`` make of the
exported files, so a stage's ``macs_ratio`` (and the share a hybrid step prunes to land on a
``target_macs_ratio``) is the deployed graph's. Not PyTorch's FLOP counter: it counts what the graph does not
compute (the exporter folds away every product of weights alone, such as DeBERTa-v2's projections of its
relative-position table) and misses what its formulas do not cover (an LSTM on the CPU).
The ONNX file is written by :func:`edgekd.export.onnx_export.export_onnx`, whose parity gate checks it against
PyTorch: a step measured with latency is counted on the file it is timed with, any other count exports to a
temporary file (seconds for a 6-layer × 384 BERT). The
exports of every measured step are timed together at the end (:func:`time_interleaved`), in
interleaved rounds under the device profile, so that the latencies and speed-ups recorded compare
models timed side by side rather than minutes apart under whatever load the machine had then.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from edgekd.config.device import DeviceProfile
from edgekd.data.task_data import TaskData
from edgekd.distill.task_metrics import evaluation_metrics
from edgekd.errors import ModelError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import ExportResult, export_onnx
from edgekd.export.stage import PARITY_SAMPLES
from edgekd.log_level import raised_level
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.profile.bench import benchmark, paired_speedup
from edgekd.profile.macs import count_macs_fed
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


def count_macs(model: TaskModel, inputs: dict[str, torch.Tensor]) -> int:
    """Multiply-accumulates of one inference on ``inputs``, counted on the model's ONNX graph (exported to a
    temporary file; its export log is kept quiet, being no step of the stage's)."""
    with tempfile.TemporaryDirectory(prefix="edgekd-macs-") as tmp, raised_level("edgekd.export", logging.WARNING):
        return graph_macs(export_for_checks(model, inputs, Path(tmp) / "model.onnx"), inputs)


def export_for_checks(model: TaskModel, sample: dict[str, torch.Tensor], path: Path) -> ExportResult:
    """Export ``model`` to ``path`` as the checks do (:data:`CHECK_TARGET`, the text's sequence axis dynamic),
    parity-gated on ``sample``."""
    return export_onnx(model.module, sample, path, load_export_target(CHECK_TARGET),
                       extra_dynamic_axes=model.signature.dynamic_axes())


def graph_macs(export: ExportResult, inputs: dict[str, torch.Tensor]) -> int:
    """The MACs of one run of ``export``'s graph on ``inputs`` (those the graph takes)."""
    feeds = {name: inputs[name].numpy() for name in export.input_names}
    return count_macs_fed(export.path, feeds).macs


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
    inputs = device_inputs(model, device)
    if onnx_path is None:
        macs = count_macs(model, inputs)
    else:
        _, sample, _ = next(data.test.batches(PARITY_SAMPLES, shuffle=False))
        result = export_for_checks(model, sample, onnx_path)
        parity, macs = result.parity.max_abs_diff, graph_macs(result, inputs)
        if timed_now:
            p50 = profile_onnx(onnx_path, device, warmup=WARMUP, runs=RUNS).p50_ms
    figures = evaluation_metrics(model, data)
    metric = figures.get("primary_metric", "accuracy")
    return Snapshot(step=step, params=model.params, macs=macs,
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
