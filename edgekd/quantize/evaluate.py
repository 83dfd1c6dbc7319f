"""Predictions of an ONNX model on labelled batches with onnxruntime, and the figures quantization gates on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekd.errors import ModelError
from edgekd.export.parity import one_line
from edgekd.quantize.feeds import Feed, LabelledBatch


@dataclass(frozen=True)
class SplitScores:
    """Accuracy on the labels and agreement with the reference model's predictions, on one split."""

    accuracy: float
    agreement: float


def cpu_session(model: Path | bytes, threads: int, label: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session on a file or serialized model; load failures are ModelErrors naming ``label``."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{label}: onnxruntime cannot load the model: {one_line(exc)}") from exc


def run_batches(session: ort.InferenceSession, feeds: Sequence[Feed], label: Path,
                outputs: Sequence[str] | None = None) -> list[list[np.ndarray]]:
    """Every batch's outputs (all of them, or ``outputs`` by name); failures are ModelErrors."""
    try:
        return [session.run(list(outputs) if outputs else None, dict(feed)) for feed in feeds]
    except Exception as exc:
        raise ModelError(f"{label}: onnxruntime failed on the evaluation data: {one_line(exc)}") from exc


def predict(path: Path, batches: Sequence[LabelledBatch], threads: int) -> np.ndarray:
    """The arg-max class of the model's first output for every example of ``batches``, in order.

    An example whose output holds NaN or infinity has no class (NaN, a float array then): it counts
    as wrong and as disagreeing with any reference, never as class 0 (numpy's arg-max of NaN).
    """
    session = cpu_session(path, threads, path)
    outputs = run_batches(session, [feed for feed, _ in batches], path)
    logits = np.concatenate([np.asarray(out[0]).reshape(len(out[0]), -1) for out in outputs])
    classes = logits.argmax(axis=1)
    broken = ~np.isfinite(logits).all(axis=1)
    return np.where(broken, np.nan, classes) if broken.any() else classes


def score(predictions: np.ndarray, batches: Sequence[LabelledBatch], reference: np.ndarray) -> SplitScores:
    """Accuracy of ``predictions`` on the batches' labels and their agreement with ``reference``."""
    labels = np.concatenate([labels for _, labels in batches])
    return SplitScores(accuracy=float(np.mean(predictions == labels)),
                       agreement=float(np.mean(predictions == reference)))
