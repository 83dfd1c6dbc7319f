"""Input feeds for ONNX models from a recipe's dataset: the one place that turns data into feeds.

Every consumer in :mod:`edgekd.quantize` (calibration, accuracy, agreement, sensitivity) reads a
dataset through :func:`dataset_feeds`, so supporting a new kind of data means extending it alone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edgekd.data.batching import collate
from edgekd.data.examples import ImageExamples, TextExamples
from edgekd.data.task_data import TaskData

Split = Literal["train", "val", "test"]
Feed = dict[str, np.ndarray]
LabelledBatch = tuple[Feed, np.ndarray]

#: The graph input name of models :mod:`edgekd.export` writes for image and tabular data.
IMAGE_INPUT = "input"


#: Examples per calibration batch (entropy and percentile calibration pool every batch's activations).
CALIBRATION_BATCH = 64


def dataset_feeds(data: TaskData, split: Split, batch_size: int, *, limit: int | None = None,
                  drop_last: bool = False, input_names: Collection[str] | None = None) -> Iterator[LabelledBatch]:
    """Batches of ``split`` as (onnxruntime feeds by input name, labels), in dataset order.

    Image data gives ``{"input": float32 [N, C, H, W]}``; text data gives int64 ``input_ids``,
    ``attention_mask`` and ``token_type_ids``, every batch padded to one length (the longest of the
    examples taken) because entropy and percentile calibration pool all batches' activations.
    Labels are as the task encodes them (:mod:`edgekd.task_heads`); token classification's ``[B, T]`` tags
    are as wide as the batch's feeds.
    ``input_names`` keeps only the inputs a graph has (the exporter drops inputs a model ignores).
    ``limit`` keeps only the first examples; ``drop_last`` drops a last batch smaller than
    ``batch_size`` (unless it is the only one).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    examples = {"train": data.train, "val": data.val, "test": data.test}[split]
    labels = examples.labels.numpy()
    count = len(labels) if limit is None else min(limit, len(labels))
    if drop_last and count > batch_size:
        count -= count % batch_size
    length = max((len(ids) for ids in examples.encoded[:count]), default=1) if isinstance(examples, TextExamples) else 0
    for start in range(0, count, batch_size):
        stop = min(start + batch_size, count)
        if isinstance(examples, ImageExamples):
            feed = {IMAGE_INPUT: np.ascontiguousarray(examples.images[start:stop].numpy(), dtype=np.float32)}
        else:
            batch = collate(examples.encoded, np.arange(start, stop), examples.pad_id)
            feed = {name: _pad_to(tensor.numpy(), length, examples.pad_id if name == "input_ids" else 0)
                    for name, tensor in batch.items()}
        if input_names is not None:
            feed = {name: value for name, value in feed.items() if name in input_names}
        yield feed, _labels_for(labels[start:stop], length)


def _labels_for(labels: np.ndarray, length: int) -> np.ndarray:
    """A batch's labels; token tags (int ``[B, T]``) cut to the feeds' ``length`` (past it they are all untagged)."""
    return labels[:, :length] if labels.ndim == 2 and labels.dtype.kind in "iu" else labels


def _pad_to(values: np.ndarray, length: int, pad: int) -> np.ndarray:
    """Right-pad the sequence axis of ``values`` [B, T] to ``length``."""
    return np.pad(values, ((0, 0), (0, length - values.shape[1])), constant_values=pad).astype(np.int64)


@dataclass(frozen=True)
class QuantData:
    """The batches quantization reads: unlabelled calibration feeds, labelled validation and test batches.

    Calibration batches must all have one shape: entropy and percentile calibration pool every
    batch's activations (pad token ids to one length).
    """

    calibration: tuple[Feed, ...]
    val: tuple[LabelledBatch, ...]
    test: tuple[LabelledBatch, ...]
    class_names: tuple[str, ...] | None = None
    """The labels' names (token classification's BIO tags give entity scores), or None."""
    single_score: Literal["sigmoid", "logit"] | None = None
    """A binary classifier answering with one score per example (``[batch, 1]``, of the second class): a sigmoid's
    probability or a logit; None when the scored output gives one score per class."""
    scores: str | None = None
    """The graph output evaluation reads, when a user's file names it (``edgekd quantize --scores``); None: the
    output named ``logits``, else the first floating-point one."""

    @property
    def calibration_examples(self) -> int:
        """How many examples the calibration batches hold (whole batches: fewer than asked when the data has fewer,
        or when the last batch would be short)."""
        return sum(len(next(iter(feed.values()))) for feed in self.calibration)

    @classmethod
    def from_dataset(cls, data: TaskData, calibration_samples: int, *, eval_batch: int,
                     input_names: Collection[str] | None = None) -> QuantData:
        """Calibration from the first training examples; evaluation on all of val and test.

        Calibration takes whole batches of one shape: ``calibration_samples`` rounded down to a
        multiple of :data:`CALIBRATION_BATCH` (at least one batch). Evaluation batches hold ``eval_batch``
        examples, the device's batch: dynamic INT8 quantizes each activation tensor with the range of its whole
        batch, so its scores depend on which examples share one (FP32's and static INT8's do not), and the device
        runs its own batch.
        """
        batch = min(CALIBRATION_BATCH, calibration_samples)
        calibration = tuple(feed for feed, _ in dataset_feeds(data, "train", batch, limit=calibration_samples,
                                                              drop_last=True, input_names=input_names))
        return cls(calibration=calibration,
                   val=tuple(dataset_feeds(data, "val", eval_batch, input_names=input_names)),
                   test=tuple(dataset_feeds(data, "test", eval_batch, input_names=input_names)),
                   class_names=data.class_names)
