"""Model-ready example sets: what the training loop iterates over, for images and for text.

Both kinds yield ``(indices, inputs, labels)`` batches, where ``inputs`` is a dict of named
tensors in the order the model takes them and ``indices`` are positions in the set (so cached
teacher outputs can be looked up). Labels of ``-1`` mark unlabelled examples (an augmented
transfer set that only the teacher labels).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch

from edgekd.data.batching import bucket_batches, collate

UNLABELLED = -1
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Batch = tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class InputSignature:
    """What a model is fed: images of a fixed shape, or token ids from a tokenizer's vocabulary; and whether it
    answers per token (``per_token``: logits ``[batch, sequence, classes]``, token classification)."""

    kind: Literal["image", "text"]
    image_shape: tuple[int, ...] = ()
    vocab_size: int = 0
    pad_id: int = 0
    max_length: int = 0
    per_token: bool = False
    end_id: int | None = None
    """The special token the tokenizer ends every example with (``[SEP]``, ``</s>``); None for none, or unknown."""
    preprocessing: dict[str, Any] | None = field(default=None, hash=False)
    """Image files: how decoded images became the inputs (colour, resize, crop, rescale, mean, std; see
    :mod:`edgekd.data.image_prep`); None for inputs given as tensors."""

    @property
    def names(self) -> tuple[str, ...]:
        """ONNX input names, in the order the model takes them."""
        return ("input",) if self.kind == "image" else TEXT_INPUTS

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Axes beyond the batch that vary at run time (the sequence axis of text inputs, and of the
        ``logits`` of a per-token model)."""
        if self.kind == "image":
            return {}
        return {name: {1: "sequence"} for name in (*TEXT_INPUTS, *(("logits",) if self.per_token else ()))}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "image_shape": list(self.image_shape), "vocab_size": self.vocab_size,
                "pad_id": self.pad_id, "max_length": self.max_length, **({"per_token": True} if self.per_token else {}),
                **({"end_id": self.end_id} if self.end_id is not None else {}),
                **({"preprocessing": self.preprocessing} if self.preprocessing is not None else {})}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSignature:
        return cls(kind=data["kind"], image_shape=tuple(data["image_shape"]), vocab_size=data["vocab_size"],
                   pad_id=data["pad_id"], max_length=data["max_length"], per_token=data.get("per_token", False),
                   end_id=data.get("end_id"),
                   preprocessing=data.get("preprocessing"))


class Examples(Protocol):
    """A set of examples the training loop can batch."""

    labels: torch.Tensor

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Mini-batches covering every example once; shuffled (with ``generator``) when asked."""
        ...


@dataclass(frozen=True)
class ImageExamples:
    """Images already in memory as one float tensor ``[N, C, H, W]``, held in row-major strides.

    Images laid out channels-last (an image folder's height × width × channel pixels, permuted; a one-channel array
    numpy indexed, scikit-learn's digits after the split, whose channel stride is 1) make a convolution return
    channels-last activations, and a user's model doing ``x.view(x.size(0), -1)`` after it failed in training
    although validate had run it on row-major inputs."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        row_major = [1]
        for size in reversed(self.images.shape[1:]):
            row_major.insert(0, row_major[0] * size)
        if self.images.stride() != tuple(row_major):  # copied only when laid out otherwise
            object.__setattr__(self, "images", self.images.clone(memory_format=torch.contiguous_format))

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        for begin in range(0, len(order), batch_size):
            idx = order[begin : begin + batch_size]
            yield idx.numpy(), {"input": self.images[idx]}, self.labels[idx]


@dataclass(frozen=True)
class TextExamples:
    """Token-id sequences of varying length, padded per batch (length-bucketed when shuffled)."""

    encoded: tuple[np.ndarray, ...]
    labels: torch.Tensor
    pad_id: int

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        lengths = np.fromiter((len(ids) for ids in self.encoded), dtype=np.int64, count=len(self.encoded))
        for idx in bucket_batches(lengths, batch_size, shuffle=shuffle, generator=generator):
            yield idx, collate(self.encoded, idx, self.pad_id), self.labels[torch.from_numpy(idx)]
