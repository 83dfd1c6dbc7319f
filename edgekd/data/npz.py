"""Labelled image sets as ``.npz`` files: written atomically, read back with one-line errors.

Keys: ``inputs`` (float32, N × C × H × W, already preprocessed as the model takes them), ``labels``
(int64), optionally ``class_names``, ``soft_labels`` (float32 probabilities, N × classes) and
``metadata`` (a JSON string: e.g. how a synthetic set was made and the preprocessing its inputs live in).
A recipe's ``data`` reads one with ``source: npz``; :mod:`edgekd.dataset_distill` writes its synthetic
sets this way.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import write_bytes
from edgekd.data.config import TaskKind
from edgekd.errors import DataError


@dataclass(frozen=True)
class NpzSet:
    """A labelled image set read from ``.npz``."""

    inputs: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    soft_labels: np.ndarray | None = None
    metadata: dict[str, Any] | None = None


def save_npz(path: Path, data: NpzSet) -> Path:
    """Write ``data`` to ``path`` atomically (never a half-written file)."""
    arrays: dict[str, np.ndarray] = {
        "inputs": np.ascontiguousarray(data.inputs, dtype=np.float32),
        "labels": np.asarray(data.labels, dtype=np.int64),
        "class_names": np.asarray(data.class_names, dtype=str),
        "metadata": np.asarray(json.dumps(data.metadata or {}, sort_keys=True, default=str)),
    }
    if data.soft_labels is not None:
        arrays["soft_labels"] = np.asarray(data.soft_labels, dtype=np.float32)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_bytes(Path(path), buffer.getvalue())


def load_npz(path: Path, task: TaskKind | None = "single_label") -> NpzSet:
    """Read a set written by :func:`save_npz` (or any ``.npz`` with ``inputs`` and ``labels``).

    ``labels`` are read as ``task`` says: ``single_label`` N class indices; ``multi_label`` N × classes
    0/1 rows (float32); ``regression`` N numbers (float32, the one output named ``class_names[0]`` or
    ``value``); None infers it from the array (2-D: multi-label, floats with a fraction: regression).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; expected a .npz file with 'inputs' and 'labels'")
    try:
        with np.load(path) as archive:  # numpy's default refuses object arrays: no code runs on load
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    missing = [key for key in ("inputs", "labels") if key not in arrays]
    if missing:
        raise DataError(f"{path}: missing array {', '.join(repr(k) for k in missing)}; expected 'inputs' "
                        f"(N × C × H × W) and 'labels' (N integers), got {', '.join(sorted(arrays)) or 'none'}")
    inputs, labels = arrays["inputs"], arrays["labels"]
    task = task or npz_task(labels)
    if inputs.ndim != 4 or labels.ndim != (2 if task == "multi_label" else 1) or len(inputs) != len(labels) \
            or not len(labels):
        raise DataError(f"{path}: expected 'inputs' N × C × H × W and 'labels' of N entries"
                        f"{' (rows of 0/1 per class)' if task == 'multi_label' else ''}, got shapes "
                        f"{inputs.shape} and {labels.shape}")
    if _channels_last(inputs.shape):
        raise DataError(f"{path}: 'inputs' of shape {inputs.shape} look channels-last (N, H, W, C): edgekd reads "
                        f"them as {inputs.shape[1]} channels of {inputs.shape[2]}×{inputs.shape[3]} pixels and "
                        "expects NCHW (N, C, H, W); save inputs.transpose(0, 3, 1, 2)")
    given = tuple(str(n) for n in arrays["class_names"]) if "class_names" in arrays else None
    labels, names = _labels(path, labels, task, given)
    try:
        metadata = json.loads(str(arrays["metadata"])) if "metadata" in arrays else None
    except ValueError:
        raise DataError(f"{path}: 'metadata' is not JSON text (edgekd writes it as a JSON string)") from None
    return NpzSet(_float_inputs(path, inputs), labels, names, _soft_labels(path, arrays, len(labels), len(names)),
                  metadata)


def _channels_last(shape: tuple[int, ...]) -> bool:
    """Whether N × C × H × W ``shape`` looks like images stored N × H × W × C: its last axis has 1, 3 or 4 entries
    (grey, RGB, RGBA), fewer than either other image axis, and its axis 1 is no such channel count."""
    return shape[3] in (1, 3, 4) and shape[3] < min(shape[1], shape[2]) and shape[1] not in (1, 3, 4)


def _float_inputs(path: Path, inputs: np.ndarray) -> np.ndarray:
    """``inputs`` as float32; numbers only, every one finite (a NaN trains a model to NaN and reads as divergence)."""
    if inputs.dtype.kind not in "biuf":
        raise DataError(f"{path}: 'inputs' holds {inputs.dtype} values; expected numbers (float32)")
    values = inputs.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(axis=1))
    if bad.size:
        raise DataError(f"{path}: 'inputs' of {bad.size} example(s) hold NaN or infinity (the first: example "
                        f"{int(bad[0])}); expected finite numbers")
    return values


def _soft_labels(path: Path, arrays: dict[str, np.ndarray], count: int, classes: int) -> np.ndarray | None:
    """The optional ``soft_labels``: one row of class probabilities (finite, ≥ 0, summing to 1) per example."""
    soft = arrays.get("soft_labels")
    if soft is None:
        return None
    if soft.shape != (count, classes) or not np.issubdtype(soft.dtype, np.floating):
        raise DataError(f"{path}: 'soft_labels' must be {count} × {classes} floats (a probability per class and "
                        f"example), got {soft.dtype} {soft.shape}")
    if not np.isfinite(soft).all() or (soft < 0).any() or not np.allclose(soft.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(f"{path}: 'soft_labels' rows must be probabilities (finite, ≥ 0, each summing to 1)")
    return soft.astype(np.float32)


def npz_task(labels: np.ndarray) -> TaskKind:
    """The task an npz ``labels`` array encodes: 2-D multi-label, numbers with a fraction regression, else classes."""
    if labels.ndim == 2:
        return "multi_label"
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.mod(labels, 1) == 0):
        return "regression"
    return "single_label"


def _labels(path: Path, labels: np.ndarray, task: TaskKind,
            given: tuple[str, ...] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """The labels as the task encodes them, and the names of the model's outputs."""
    if task == "regression":
        if not np.issubdtype(labels.dtype, np.number) or not np.isfinite(labels).all():
            raise DataError(f"{path}: 'labels' must be finite numbers (data.task is regression), got {labels.dtype}")
        return labels.astype(np.float32), given[:1] if given else ("value",)
    if task == "multi_label":
        if not np.isin(labels, (0, 1)).all():
            raise DataError(f"{path}: 'labels' must be 0/1 rows, one column per class (data.task is multi_label)")
        names = given or tuple(map(str, range(labels.shape[1])))
        if len(names) != labels.shape[1]:
            raise DataError(f"{path}: {labels.shape[1]} label columns but {len(names)} class_names")
        return labels.astype(np.float32), names
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        hint = (" of whole numbers: store class indices as integers (labels.astype(np.int64)), or set data.task: "
                "regression if they are values to predict" if np.issubdtype(labels.dtype, np.floating) else "")
        raise DataError(f"{path}: 'labels' must be class indices (integers ≥ 0), got {labels.dtype}{hint}")
    count = int(labels.max()) + 1
    names = given or tuple(map(str, range(count)))
    if len(names) < count:
        raise DataError(f"{path}: label {count - 1} has no class name ({len(names)} class_names)")
    return labels.astype(np.int64), names
