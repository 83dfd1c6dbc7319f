"""Calibration for static INT8: a data reader over recipe data or a ``.npz`` set, and the calibration methods."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from edgekd.data.npz import load_npz
from edgekd.quantize.feeds import IMAGE_INPUT, Feed

_METHODS = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}


class FeedReader(CalibrationDataReader):
    """Hands onnxruntime's calibrator the given feeds, one batch per call; rewindable."""

    def __init__(self, feeds: Sequence[Feed]) -> None:
        if not feeds:
            raise ValueError("calibration needs at least one batch of inputs")
        self._feeds = list(feeds)
        self._iterator = iter(self._feeds)

    def get_next(self) -> dict[str, Any] | None:
        """The next batch, or None when all have been read."""
        return next(self._iterator, None)

    def rewind(self) -> None:
        """Start again from the first batch."""
        self._iterator = iter(self._feeds)


def calibration_method(name: str) -> CalibrationMethod:
    """onnxruntime's calibration method for ``minmax``, ``entropy`` or ``percentile``."""
    return _METHODS[name]


def npz_calibration_feeds(path: Path, samples: int, batch_size: int = 64,
                          input_name: str = IMAGE_INPUT) -> tuple[Feed, ...]:
    """Calibration batches of one shape from a ``.npz`` image set (e.g. ``dataset_distill``'s synthetic set).

    Every one of the first ``samples`` examples is used, in batches of the largest size up to
    ``batch_size`` that divides their number: 100 distilled images (stored class by class) calibrate
    as two batches of 50, so no class is left out the way whole batches of 64 would leave 7–9 out.
    """
    inputs = load_npz(path).inputs
    count = min(samples, len(inputs))
    batch = equal_batch_size(count, batch_size)
    return tuple({input_name: np.ascontiguousarray(inputs[start:start + batch])} for start in range(0, count, batch))


def equal_batch_size(count: int, largest: int) -> int:
    """The largest batch size ≤ ``largest`` that splits ``count`` examples into equal batches."""
    return next(size for size in range(min(largest, count), 0, -1) if count % size == 0)
