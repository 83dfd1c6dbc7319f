"""The one place that knows how to get logits out of any model's output."""

from __future__ import annotations

import numpy as np
import torch

#: How far from 1 a row of probabilities may sum (float32 softmax rounding over many classes).
PROBABILITY_TOLERANCE = 1e-3


def model_logits(output: object) -> torch.Tensor:
    """The output tensor of a model: itself, or the ``logits`` of a Hugging Face model output."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model returned {type(output).__name__}; expected a single tensor or an object with .logits")
    return logits


def are_probabilities(scores: np.ndarray) -> bool:
    """Whether ``scores`` (``[..., classes]``, two or more classes) look like a softmax's output: every value
    non-negative and every row summing to 1 (within :data:`PROBABILITY_TOLERANCE`). Logits of a model edgekd trains
    almost never do; log-probabilities (a ``log_softmax``) are negative and do not."""
    if scores.ndim == 0 or scores.shape[-1] < 2 or scores.size == 0 or scores.min() < 0:
        return False
    return bool(np.allclose(scores.sum(axis=-1, dtype=np.float64), 1.0, atol=PROBABILITY_TOLERANCE))
