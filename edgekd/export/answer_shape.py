"""Where one example's answer is in a model's output, by the shape its graph declares (:func:`tensor_specs` of
:mod:`edgekd.export.manifest`: ints static, names or ``?`` dynamic).

A graph made for batches starts its output with a batch axis (``[batch, 10]``; ``[1, 10]`` when exported for a
batch of one); one made for a single example has none (``[10]``). The manifest's reading of an output and the
bundle README's code both go by it.
"""

from __future__ import annotations

from typing import Any


def has_batch_axis(shape: list[Any]) -> bool:
    """Whether a tensor of this shape starts with a batch axis: a dynamic first axis, or a 1 before other axes (a
    graph exported for a batch of one). ``[10]``, one example's ten scores, has none."""
    return bool(shape) and (not isinstance(shape[0], int) or shape[0] <= 0 or shape[0] == 1 and len(shape) > 1)


def example_shape(shape: list[Any]) -> list[Any]:
    """The shape of one example's part of a tensor of this shape: without its batch axis (:func:`has_batch_axis`)."""
    return shape[1:] if has_batch_axis(shape) else shape
