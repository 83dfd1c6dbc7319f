"""Quantization data of ``edgekd quantize`` from NumPy ``.npz`` files, checked against the model's graph.

A calibration file holds one array per graph input, named as the input, whose first axis counts
examples (``np.savez("calib.npz", input=x)``); an evaluation file holds the same plus ``y``, the
integer class of every example (0 or 1 for a binary classifier answering with one score per example,
``[batch, 1]``: a Sigmoid's probability, or a logit). Each array must have the input's element type and rank, and its
size on every static axis after the first; all arrays must count the same examples. A graph with
a static batch axis of size B is fed batches of B examples. Any disagreement is a one-line
:class:`~edgekd.errors.DataError` naming the file, the array and what the graph expects.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgekd.errors import DataError, first_line
from edgekd.export.manifest import other_scores, tensor_specs
from edgekd.models.onnx_teacher import filled, score_activation
from edgekd.profile.inputs import token_id_limits
from edgekd.quantize.calibration import equal_batch_size
from edgekd.quantize.evaluate import cpu_session, run_batches, scored_output_name
from edgekd.quantize.feeds import CALIBRATION_BATCH, Feed, LabelledBatch, QuantData

#: The evaluation file's array of class labels.
LABELS = "y"
Spec = dict[str, Any]
#: How a binary classifier's one score per example reads (see :class:`~edgekd.quantize.feeds.QuantData`).
SingleScore = Literal["sigmoid", "logit"] | None


def load_quant_data(model: Path, *, calibration: Path | None, evaluation: Path | None,
                    calibration_samples: int, eval_batch: int, scores: str | None = None) -> QuantData:
    """Calibration batches (the first ``calibration_samples`` examples) and labelled evaluation batches of
    ``eval_batch`` examples (the device's batch, see :meth:`QuantData.from_dataset`; a static batch axis: its own),
    scored on the output ``scores`` (default: the one named ``logits``, else the first floating-point one).

    The evaluation file serves as both the validation split (the gates) and the test split (the
    accuracy recorded). Either file may be absent: no calibration (no static INT8), no evaluation
    (no accuracy, agreement or gates).
    """
    inputs, outputs = tensor_specs(model)
    if scores is not None:
        scored_output_name(model, outputs, scores)  # a name the graph lacks is refused, evaluated or not
    calibration_feeds: tuple[Feed, ...] = ()
    if calibration is not None:
        arrays = _read(calibration, model, inputs, labelled=False)
        count = min(calibration_samples, _count(arrays))
        batch = _static_batch(inputs) or equal_batch_size(count, CALIBRATION_BATCH)  # dynamic: every example used
        calibration_feeds = tuple(feed for feed, _ in _batches(arrays, count - count % batch, batch,
                                                               labelled=False))
        if not calibration_feeds:
            raise DataError(f"{calibration}: {count} example(s), fewer than one batch of the graph's static batch "
                            f"size {batch}")
    batches: tuple[LabelledBatch, ...] = ()
    single_score: SingleScore = None
    if evaluation is not None:
        scored = scored_output_name(model, outputs, scores)  # a graph without scores is refused before any work
        arrays = _read(evaluation, model, inputs, labelled=True)
        count = _count(arrays)
        static = _static_batch(inputs)
        batches = tuple(_batches(arrays, count, static or eval_batch, labelled=True, static=static is not None))
        single_score = _check_labels(evaluation, arrays[LABELS], model, scored, batches[0][0])
    return QuantData(calibration=calibration_feeds, val=batches, test=batches, single_score=single_score,
                     scores=scores)


def _read(path: Path, model: Path, inputs: list[Spec], *, labelled: bool) -> dict[str, np.ndarray]:
    """Every array of ``path``, checked against the graph inputs (and ``y`` when ``labelled``)."""
    what = f"{_expected(inputs)}{f' and {LABELS!r} (int labels)' if labelled else ''}"
    if labelled and any(spec["name"] == LABELS for spec in inputs):
        raise DataError(f"{path}: {model} has a graph input named {LABELS!r}, the name an evaluation file gives its "
                        f"labels, so one .npz cannot hold both; rename the input (the calibration file may hold it)")
    arrays = read_arrays(path, what)
    names = [spec["name"] for spec in inputs] + ([LABELS] if labelled else [])
    missing = [name for name in names if name not in arrays]
    extra = sorted(name for name in arrays if name not in names)
    if missing or extra:
        problem = "; ".join(part for part in (
            f"missing {_quoted(missing)}" if missing else "", f"unexpected {_quoted(extra)}" if extra else "") if part)
        raise DataError(f"{path}: {problem}; expected arrays {what} ({model} has these graph inputs)")
    counts = {name: array.shape[0] if array.ndim else None for name, array in arrays.items()}
    limits = token_id_limits(model)
    for spec in inputs:
        _check_input(path, arrays[spec["name"]], spec)
        _check_ids(path, arrays[spec["name"]], spec["name"], limits.get(spec["name"]), model)
    if len(set(counts.values())) != 1:
        raise DataError(f"{path}: arrays count different numbers of examples on their first axis "
                        f"({', '.join(f'{k}: {v}' for k, v in counts.items())}); they must all count the same")
    if _count(arrays) == 0:
        raise DataError(f"{path}: the arrays hold no examples (their first axis is 0)")
    return arrays


def read_arrays(path: Path, what: str) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (no object arrays); ``what`` says in errors what it should hold."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected a .npz of {what})")
    if not zipfile.is_zipfile(path):  # numpy would guess pickled data for any other file, and refuse it as such
        raise DataError(f"{path}: not a readable NumPy .npz file (not a zip archive: write it with np.savez); "
                        f"expected arrays {what}")
    try:
        with np.load(path) as npz:  # object arrays refused: numpy loads plain arrays only by default
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{path}: not a readable NumPy .npz file ({first_line(exc)}); expected arrays "
                        f"{what}") from None


def _check_input(path: Path, array: np.ndarray, spec: Spec) -> None:
    """The array of one graph input: its element type, rank, static sizes after the example axis and, for floating
    point, finite values."""
    name, dims = spec["name"], spec["shape"]
    if array.dtype != np.dtype(spec["dtype"]):
        raise DataError(f"{path}: array {name!r} is {array.dtype}, expected {spec['dtype']} (the type of graph input "
                        f"{name!r}); convert it with .astype(np.{spec['dtype']})")
    wrong_axis = next((axis for axis in range(1, len(dims))
                       if axis < array.ndim and isinstance(dims[axis], int) and dims[axis] > 0
                       and array.shape[axis] != dims[axis]), None)
    if dims and dims[0] != 1 and list(array.shape[1:]) == dims:  # every axis static: one example, no batch axis
        raise DataError(f"{path}: array {name!r} has shape {list(array.shape)}, one {_shape(dims)} example per row, "
                        f"but graph input {name!r} is {_shape(dims)}, without an example (batch) axis; edgekd quantize "
                        "feeds batches along the first axis: export the model with a batch axis first")
    if array.ndim != len(dims) or wrong_axis is not None:
        expected = "[" + ", ".join(["N", *(str(d) for d in dims[1:])]) + "]"
        raise DataError(f"{path}: array {name!r} has shape {list(array.shape)}, expected {expected} (N examples; "
                        f"graph input {name!r} is {_shape(dims)})")
    if array.dtype.kind in "fc" and array.size and not np.isfinite(array).all():
        rows = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1) if array.ndim else np.array([True])
        raise DataError(f"{path}: array {name!r} holds NaN or infinite values ({int(rows.sum())} of {rows.size} "
                        f"example(s), the first at row {int(np.flatnonzero(rows)[0])}); expected finite numbers (a "
                        "model's outputs on them, and a calibration's ranges, would be meaningless)")


def _check_ids(path: Path, array: np.ndarray, name: str, rows: int | None, model: Path) -> None:
    """An input that indexes an embedding table of ``rows`` rows (token ids) must hold ids 0 .. rows − 1: onnxruntime
    fails on any other with its kernel's message (and some kernels read past the table)."""
    if rows is None or not array.size or array.dtype.kind not in "iu":
        return
    outside = (array < 0) | (array >= rows)
    if outside.any():
        row = int(np.flatnonzero(outside.reshape(len(array), -1).any(axis=1))[0]) if array.ndim else 0
        raise DataError(f"{path}: array {name!r} holds id {int(array[outside][0])} (example {row}), but {model}'s "
                        f"input {name!r} indexes an embedding table of {rows} rows: expected ids 0..{rows - 1}")


def _check_labels(path: Path, labels: np.ndarray, model: Path, name: str, feed: Feed) -> SingleScore:
    """``y``: one integer class per example, each below the number of classes of the scored output ``name``, which
    must give one row of class scores per example (``[batch, classes]``), or one score per example of a binary
    classifier (``[batch, 1]``, the second class's: a probability when a Sigmoid computes it, else a logit; which,
    is returned). The output's shape is read from the graph run on the first batch, ``feed``: a symbolic class axis
    (``['batch', 'classes']``) or an undeclared shape says nothing."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: array {LABELS!r} is {labels.dtype} of shape {list(labels.shape)}, expected one "
                        "integer class per example (shape [N])")
    (scores,) = run_batches(cpu_session(model, 1, model), [feed], model, outputs=[name])[0]
    shape = list(np.shape(scores))
    if len(shape) != 2:
        raise DataError(f"{path}: array {LABELS!r} holds one class per example, but {model}'s output {name!r} gives "
                        f"shape {shape} for {len(next(iter(feed.values())))} example(s); --eval scores a classifier "
                        "whose output is one row of class scores per example ([batch, classes]), or one score per "
                        f"example of a binary classifier ([batch, 1]){other_scores(model, name)}")
    classes = max(shape[1], 2)
    bad = labels[(labels < 0) | (labels >= classes)]
    if bad.size:
        what = "one score per example: a binary classifier's" if shape[1] == 1 else f"{classes} classes"
        raise DataError(f"{path}: array {LABELS!r} holds label {int(bad[0])}, expected classes 0..{classes - 1} "
                        f"(output {name!r} has {what}){other_scores(model, name)}")
    if shape[1] > 1:
        return None
    return "sigmoid" if score_activation(model, name) == "sigmoid" else "logit"


def _batches(arrays: dict[str, np.ndarray], count: int, batch: int, *, labelled: bool,  # noqa: ANN202 - generator
             static: bool = False):
    """(feed, labels) batches of the first ``count`` examples; labels are empty unless ``labelled`` (``y``
    holds them; unlabelled, an array ``y`` is the graph input of that name). For a graph of a ``static`` batch
    size, which takes no other, a short last batch is fed as ``batch`` rows, filled up with copies of its first
    row, and keeps only its own labels: the copies' outputs are dropped
    (:func:`~edgekd.quantize.evaluate.model_outputs`)."""
    for start in range(0, count, batch):
        stop = min(start + batch, count)
        feed = {name: np.ascontiguousarray(array[start:stop]) for name, array in arrays.items()
                if not (labelled and name == LABELS)}
        feed = filled(feed, batch) if static else feed
        labels = arrays[LABELS][start:stop].astype(np.int64) if labelled else np.empty(0, np.int64)
        yield feed, labels


def _static_batch(inputs: list[Spec]) -> int | None:
    """The graph's static batch size (the first axis of its inputs), or None when it is dynamic."""
    return next((spec["shape"][0] for spec in inputs
                 if spec["shape"] and isinstance(spec["shape"][0], int) and spec["shape"][0] > 0), None)


def _count(arrays: dict[str, np.ndarray]) -> int:
    return int(next(iter(arrays.values())).shape[0])


def _expected(inputs: list[Spec]) -> str:
    return ", ".join(f"{spec['name']!r} ({spec['dtype']} {_shape(spec['shape'])})" for spec in inputs)


def _shape(dims: list[Any]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)
