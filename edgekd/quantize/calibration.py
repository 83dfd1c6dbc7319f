"""Calibration for static INT8: a data reader over recipe data and the calibration methods."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod

from edgekd.quantize.feeds import Feed

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
