"""Labelled text in a JSON file, read as a table: JSON lines or one array of records.

JSON lines hold one object per line (what ``datasets``' ``to_json`` and pandas' ``to_json(orient="records",
lines=True)`` write; blank lines are skipped); an array of objects is what pandas' ``to_json(orient="records")``
writes. The columns are the objects' keys, in the order they first appear. Cells become the text the TSV/CSV
reader would have read: a string as it is, a number as written in JSON, ``true``/``false``, and a ``null`` or a
missing key as an empty cell (refused where a text or label is needed, naming the line or record). A list is a
multi-label row in the label column (a list literal, :mod:`edgekd.data.label_kind`) and the words or tags of a
row in the tokens and tags columns (:mod:`edgekd.data.token_tags`); a list in the text column, or an object in
any column read, is refused naming its line or record and column.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from edgekd.errors import DataError

#: What a column is read as: the text, the label, a row's tokens or tags, or not read.
Role = Literal["text", "label", "words", "other"]


def json_records(where: str, content: str) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """The (position, object) records of JSON ``content`` and what positions count (``line`` or ``record``).

    ``where`` starts each one-line :class:`DataError`: text that is not JSON (naming the line), or a record that
    is not an object of columns."""
    if content.lstrip().startswith("["):
        try:
            array = json.loads(content)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where} line {exc.lineno}: not JSON ({exc.msg}); expected one array of objects or "
                            "one object per line (JSON lines)") from None
        records, unit = list(enumerate(array, start=1)), "record"
    else:
        records, unit = [], "line"
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} line {number}: not JSON ({exc.msg}); expected one object per line (JSON "
                                "lines) or one array of objects") from None
    for position, record in records:
        if not isinstance(record, dict):
            raise DataError(f"{where} {unit} {position}: a JSON {_json_type(record)}, expected an object of columns "
                            "(e.g. {\"sentence\": \"...\", \"label\": 1})")
    return records, unit


def json_columns(records: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The records' keys, in the order they first appear."""
    return list(dict.fromkeys(key for _, record in records for key in record))


def json_cell(where: str, column: str, value: Any, role: Role) -> str:
    """``value`` of ``column`` as the text a table's cell would hold (see the module docstring); ``where`` names the
    line or record in a :class:`DataError`."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, list) and role in ("label", "words"):
        if not all(isinstance(item, str | int) and not isinstance(item, bool) for item in value):
            raise DataError(f"{where}: column '{column}' holds a list of {_item_types(value)}, expected strings or "
                            "whole numbers")
        if role == "label":
            return json.dumps(value)
        words = [str(item) for item in value]
        bad = next((word for word in words if not word or word.split() != [word]), None)
        if bad is not None:
            raise DataError(f"{where}: column '{column}' holds {bad!r}, which is empty or holds whitespace; "
                            "expected one word or tag per item")
        return " ".join(words)
    expected = "a text" if role == "text" else "a list of words or tags" if role == "words" else "a label"
    raise DataError(f"{where}: column '{column}' holds a JSON {_json_type(value)}, expected {expected}")


def _json_type(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(type(value), "number") \
        if value is not None else "null"


def _item_types(values: list[Any]) -> str:
    return " and ".join(sorted({_json_type(item) + "s" for item in values}))
