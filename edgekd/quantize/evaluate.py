"""An ONNX model's outputs on labelled batches with onnxruntime (:mod:`edgekd.quantize.quality` scores them)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekd.errors import ModelError
from edgekd.export.manifest import scored_output, tensor_specs
from edgekd.export.parity import one_line
from edgekd.models.onnx_teacher import sigmoid_logits, two_class_logits
from edgekd.ort_options import session_options
from edgekd.quantize.feeds import Feed, LabelledBatch


def cpu_session(model: Path | bytes, threads: int, label: Path) -> ort.InferenceSession:
    """An onnxruntime CPU session on a file or serialized model; load failures are ModelErrors naming ``label``."""
    try:
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), session_options(threads),
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


def model_outputs(path: Path, batches: Sequence[LabelledBatch], threads: int,
                  single_score: str | None = None, scores: str | None = None) -> np.ndarray:
    """The model's scores for every example of ``batches``, in order (``[N, ...]``, as the graph gives it;
    :mod:`edgekd.quantize.quality` scores it for the task): its output ``scores`` when given, else the one named
    ``logits``, else its first floating-point tensor (:func:`~edgekd.export.manifest.scored_output`); a ModelError
    when it has none. A binary classifier's one score per example (``single_score``: ``'sigmoid'`` probabilities
    or ``'logit'``s, see :class:`~edgekd.quantize.feeds.QuantData`) comes back as two classes' logits."""
    session = cpu_session(path, threads, path)
    outputs = run_batches(session, [feed for feed, _ in batches], path, outputs=[scores or scored_output_name(path)])
    # a short last batch of a static-batch graph was filled up with copies of its first row: their outputs dropped
    scores = np.concatenate([np.asarray(out[0])[:len(labels)] for out, (_, labels) in zip(outputs, batches,
                                                                                           strict=True)])
    if single_score is None:
        return scores
    return two_class_logits(sigmoid_logits(scores) if single_score == "sigmoid" else scores)


def scored_output_name(path: Path, outputs: list[dict[str, Any]] | None = None, chosen: str | None = None) -> str:
    """The name of the output of ``path``'s graph that evaluation scores: ``chosen`` when the user names one, else
    :func:`~edgekd.export.manifest.scored_output`'s choice (``outputs``: the graph's output specs, read from the
    file when not given); a ModelError naming its outputs when none is a floating-point tensor (a graph answering
    only with labels cannot be scored against them) or ``chosen`` is not one."""
    if outputs is None:
        _, outputs = tensor_specs(path)
    scored = scored_output(outputs, chosen, path)
    if scored is None:
        listed = ", ".join(f"{spec['name']!r} ({spec['dtype']})" for spec in outputs)
        raise ModelError(f"{path}: no output is a floating-point tensor of scores to evaluate (outputs: {listed}); "
                         "export the model with its logits or probabilities as an output")
    return scored["name"]
