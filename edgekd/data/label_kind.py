"""What a label column holds — one class, a set of classes, or a number — and its encoding as arrays.

A recipe's ``data.task`` names the task; unset, it is inferred from the training split's labels when
that is unambiguous:

- every label a number and at least one fractional (``0.53``) → ``regression``;
- some label holding several names (``pos,movie``, ``pos|movie``, or a list literal ``['pos', 'movie']`` as
  pandas writes a column of lists) → ``multi_label`` (from a separator with a warning, once per file: a class
  name may hold one, ``Arts, Culture``, which ``data.task: single_label`` reads as one class);
- otherwise (class names, or whole numbers such as SST-2's 0/1) → ``single_label``.

Fractional numbers mixed with names (``0.5`` and ``pos``) fit no task: refused with one line naming
``data.task``. A label written as a missing-value marker (pandas' default ``na_values``: ``N/A``, ``NaN``,
``null``, ``#N/A``, ...; not ``None`` or ``NA``, which may name a class) is no label, refused as an empty one
is (see :func:`is_missing`), never a class or a number. Encodings: ``single_label`` int64 class indices
``[N]``; ``multi_label`` float32 multi-hot rows ``[N, classes]`` (the distinct names, sorted); ``regression``
float32 values ``[N]`` with the one output named after the label column.
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Sequence
from typing import Any, get_args

import numpy as np

from edgekd.data.config import TaskKind
from edgekd.errors import DataError, quoted

TASKS: tuple[str, ...] = get_args(TaskKind)
log = logging.getLogger(__name__)
#: The files whose separated labels were warned about (:func:`_warn_separated`), so each is warned about once.
_WARNED: set[str] = set()


def infer_task(name: str, labels: Sequence[str], lines: Sequence[int], unit: str) -> TaskKind:
    """The task ``labels`` read as (see the module docstring); :class:`DataError` when ambiguous."""
    numbers = [as_number(label) for label in labels]
    fractional = next((i for i, n in enumerate(numbers) if n is not None and not n.is_integer()), None)
    if fractional is not None:
        other = next((i for i, n in enumerate(numbers) if n is None), None)
        if other is None:
            return "regression"
        if _non_finite(labels[other]) or is_missing(labels[other]):
            raise DataError(f"{name} {unit} {lines[other]}: {_not_a_number(labels[other])}; expected a number for "
                            f"every example of a regression ({unit} {lines[fractional]} holds "
                            f"{quoted(labels[fractional])})")
        raise DataError(f"{name} {unit} {lines[other]}: label {quoted(labels[other])} is not a number but "
                        f"{unit} {lines[fractional]} holds {quoted(labels[fractional])}, so the task is ambiguous; "
                        f"set data.task to one of {', '.join(TASKS)}")
    if any(_listed(label) is not None for label in labels):
        return "multi_label"
    separated = next((i for i, label in enumerate(labels) if _SEPARATOR.search(label)), None)
    if separated is not None:
        _warn_separated(name, labels[separated], f"{unit} {lines[separated]}")
        return "multi_label"
    return "single_label"


def _warn_separated(name: str, label: str, where: str) -> None:
    """Say once per file that its labels were read as multi-label because one holds ',' or '|': a class name
    holding a comma (``Arts, Culture``) is otherwise split into two classes without a word."""
    if name in _WARNED:
        return
    _WARNED.add(name)
    log.warning("%s %s: label %s holds ',' or '|', so the task is read as multi_label (each label a set of "
                "classes split there); if a class name holds the separator, set data.task: single_label",
                name, where, quoted(label))


#: The cells pandas reads as missing by default (``pandas.read_csv``'s ``na_values``), but ``None`` and ``NA``: words a
#: class may be named by (an intent set's "None", North America), which stay classes.
MISSING_MARKERS = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                             "<NA>", "N/A", "NULL", "NaN", "n/a", "nan", "null"})


def is_missing(label: str) -> bool:
    """Whether ``label`` is empty or a missing-value marker (:data:`MISSING_MARKERS`): no label (pandas reads it as
    NaN), which must not become a class of its own or a number."""
    return label.strip() in MISSING_MARKERS


def missing_what(label: str) -> str:
    """How a message describes the missing label ``label``: ``empty``, or ``'N/A', a missing-value marker``."""
    return f"{quoted(label)}, a missing-value marker" if label.strip() else "empty"


def whole_numbers(labels: Sequence[str]) -> list[str] | None:
    """The labels written as plain integers (``'1.0'`` → ``'1'``) when every one is a whole number and no two
    written forms are one number, else None: a class column pandas wrote as floats (an integer column with a gap
    becomes float) is the same classes as the integers another file holds, but ``01`` beside ``1`` in one file are
    two classes as written (codes), which the conversion would merge."""
    values = [as_number(label) for label in labels]
    if not values or any(value is None or not value.is_integer() for value in values):
        return None
    converted = [str(int(value)) for value in values]  # type: ignore[arg-type]
    return converted if len(set(converted)) == len(set(labels)) else None


def label_name(value: Any, names: Sequence[str] | None) -> str:
    """A ``datasets`` label value as text: a ClassLabel index as its name, a list as comma-separated names.

    A null, or a ClassLabel's -1 (how ``datasets`` marks an unlabelled row, e.g. GLUE's test splits), is ``''``:
    no label, which the loaders refuse for single-label data naming the row.
    """
    if isinstance(value, list):
        return ",".join(label_name(item, names) for item in value)
    if value is None or (names is not None and value == -1):
        return ""
    return names[value] if names is not None and 0 <= value < len(names) else str(value)


def label_sets(labels: Sequence[str]) -> list[tuple[str, ...]]:
    """Each multi-label row's names: separated by commas or ``|``, or a list literal (``['a', 'b']``, ``["a"]``,
    ``[]``); stripped, empty names dropped (an empty row has none)."""
    rows = []
    for label in labels:
        listed = _listed(label)
        parts = listed if listed is not None else _SEPARATOR.split(label)
        rows.append(tuple(part.strip() for part in parts if part.strip()))
    return rows


#: What separates a multi-label row's names written as text.
_SEPARATOR = re.compile(r"[,|]")


def _listed(label: str) -> list[str] | None:
    """The names of a label written as a Python/JSON list of strings or integers (a ``datasets`` or pandas column
    of lists saved as text), else None."""
    text = label.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if isinstance(value, list) and all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
        return [str(item) for item in value]
    return None


def multi_hot(name: str, labels: Sequence[str], lines: Sequence[int], unit: str,
              class_names: tuple[str, ...]) -> np.ndarray:
    """Multi-hot float32 rows ``[N, classes]``; a name outside ``class_names`` is a :class:`DataError`."""
    index = {label: i for i, label in enumerate(class_names)}
    rows = np.zeros((len(labels), len(class_names)), dtype=np.float32)
    for row, names in enumerate(label_sets(labels)):
        for label in names:
            if label not in index:
                raise DataError(f"{name} {unit} {lines[row]}: label {quoted(label)} is not one of the training "
                                f"split's labels ({', '.join(quoted(n) for n in class_names[:10])})")
            rows[row, index[label]] = 1.0
    return rows


def regression_values(name: str, labels: Sequence[str], lines: Sequence[int], unit: str) -> np.ndarray:
    """The labels as float32 values ``[N]``; a label that is not a finite number is a :class:`DataError`."""
    values = [as_number(label) for label in labels]
    bad = next((i for i, value in enumerate(values) if value is None), None)
    if bad is not None:
        raise DataError(f"{name} {unit} {lines[bad]}: {_not_a_number(labels[bad])} (data.task is regression)")
    return np.asarray(values, dtype=np.float32)


#: A number written with a decimal comma (``0,671``, ``-1,5e3``): one comma, digits after it.
_DECIMAL_COMMA = re.compile(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?")


def decimal_point(label: str) -> str:
    """``label`` with its decimal comma made a point when it is a number written with one (``0,671`` → ``0.671``),
    else as written: in a semicolon-separated CSV (Excel's where the decimal mark is a comma) such a label is that
    number, never a list of two names."""
    return label.replace(",", ".") if _DECIMAL_COMMA.fullmatch(label) else label


def _not_a_number(label: str) -> str:
    """What a regression's message says of ``label``, which is not a finite number: NaN or an infinity as written
    (``nan``, ``-inf``), no label (empty, or a missing-value marker such as ``N/A``), or a word."""
    if is_missing(label) and not _non_finite(label):
        return f"no label ({missing_what(label)})"
    return f"label {quoted(label)} is not a finite number"


def _non_finite(label: str) -> bool:
    """Whether ``label`` reads as NaN or an infinity."""
    try:
        return not math.isfinite(float(label))
    except ValueError:
        return False


def as_number(label: str) -> float | None:
    """``label`` read as a finite number; None when it is not one."""
    try:
        value = float(label)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
