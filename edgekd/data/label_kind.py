"""Refusing labels that are not single class names, instead of training a wrong task on them.

edgekd trains single-label classifiers. Regression targets (``0.53``) would each become a class of
its own, and comma-separated multi-label rows (``pos,movie``) one class per combination: both train
and report silently wrong figures. A training split whose labels read as either is refused with one
line naming the file, the line and what was found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edgekd.errors import DataError

NOT_YET = "edgekd trains single-label classifiers (one class name per row); this task is not supported yet"


def refuse_other_tasks(name: str, labels: Sequence[str], lines: Sequence[int], unit: str) -> None:
    """Raise :class:`DataError` when ``labels`` read as regression targets or as multi-label rows."""
    numbers = [_number(label) for label in labels]
    if labels and all(n is not None for n in numbers):
        fractional = next((i for i, n in enumerate(numbers) if n is not None and not n.is_integer()), None)
        if fractional is not None:
            raise DataError(f"{name} {unit} {lines[fractional]}: label '{labels[fractional]}' is a fractional "
                            f"number, so the labels read as regression targets; {NOT_YET}")
    joined = next((i for i, label in enumerate(labels) if "," in label), None)
    if joined is not None:
        raise DataError(f"{name} {unit} {lines[joined]}: label '{labels[joined]}' holds comma-separated names, so "
                        f"the labels read as multi-label; {NOT_YET}")


def _number(label: str) -> float | None:
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
