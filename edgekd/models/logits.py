"""The one place that knows how to get logits out of any model's output."""

from __future__ import annotations

import torch


def model_logits(output: object) -> torch.Tensor:
    """The output tensor of a model: itself, or the ``logits`` of a Hugging Face model output."""
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"model returned {type(output).__name__}; expected a single tensor or an object with .logits")
    return logits
