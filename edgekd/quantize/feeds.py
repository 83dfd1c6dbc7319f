"""Input feeds for ONNX models from a recipe's dataset: the one place that turns data into feeds.

Every consumer in :mod:`edgekd.quantize` (calibration, accuracy, agreement, sensitivity) reads a
dataset through :func:`dataset_feeds`, so supporting a new kind of data means extending it alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgekd.data import DatasetSplits
from edgekd.errors import DataError

Split = Literal["train", "val", "test"]
Feed = dict[str, np.ndarray]
LabelledBatch = tuple[Feed, np.ndarray]

#: The graph input name of models :mod:`edgekd.export` writes for image and tabular data.
IMAGE_INPUT = "input"


def dataset_feeds(data: object, split: Split, batch_size: int, *, limit: int | None = None,
                  drop_last: bool = False) -> Iterator[LabelledBatch]:
    """Batches of ``split`` as (onnxruntime feeds by input name, int64 labels), in dataset order.

    Image data gives ``{"input": float32 [N, C, H, W]}``. ``limit`` keeps only the first examples;
    ``drop_last`` drops a last batch smaller than ``batch_size`` (unless it is the only one).
    Raises :class:`DataError` for a kind of data that has no feeds yet.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if not isinstance(data, DatasetSplits):
        raise DataError(f"quantize: no ONNX input feeds for {type(data).__name__} data yet; "
                        "use a recipe with image data (data.source: sklearn)")
    features = getattr(data, f"x_{split}").numpy()
    labels = getattr(data, f"y_{split}").numpy()
    count = len(labels) if limit is None else min(limit, len(labels))
    if drop_last and count > batch_size:
        count -= count % batch_size
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        yield {IMAGE_INPUT: np.ascontiguousarray(features[start:stop], dtype=np.float32)}, labels[start:stop]


@dataclass(frozen=True)
class QuantData:
    """The batches quantization reads: unlabelled calibration feeds, labelled validation and test batches.

    Calibration batches must all have one shape: entropy and percentile calibration pool every
    batch's activations (pad token ids to one length).
    """

    calibration: tuple[Feed, ...]
    val: tuple[LabelledBatch, ...]
    test: tuple[LabelledBatch, ...]

    @classmethod
    def from_dataset(cls, data: object, calibration_samples: int, batch_size: int = 64) -> QuantData:
        """Calibration from the first training examples; evaluation on all of val and test.

        Calibration takes whole batches of one shape: ``calibration_samples`` rounded down to a
        multiple of ``batch_size`` (at least one batch).
        """
        calibration = tuple(feed for feed, _ in dataset_feeds(data, "train", min(batch_size, calibration_samples),
                                                              limit=calibration_samples, drop_last=True))
        return cls(calibration=calibration, val=tuple(dataset_feeds(data, "val", batch_size)),
                   test=tuple(dataset_feeds(data, "test", batch_size)))
