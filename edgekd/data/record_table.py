"""Labelled text in JSON or Parquet files, read as a table of records.

JSON holds one object per line (JSON lines, what ``datasets``' ``to_json`` and pandas' ``to_json(orient="records",
lines=True)`` write; blank lines are skipped) or one array of objects (pandas' ``to_json(orient="records")``);
Parquet (what the Hugging Face hub stores datasets as, pandas' ``to_parquet``) is read with pyarrow. The columns
are the records' keys, in the order they first appear. Cells become the text the TSV/CSV reader would have read:
a string as it is, a number as written in JSON, ``true``/``false``, and a null or a missing key as an empty cell
(refused where a text or label is needed, naming the line or row). A list is a multi-label row in the label
column (a list literal, :mod:`edgekd.data.label_kind`) and the words or tags of a row in the tokens and tags
columns (:mod:`edgekd.data.token_tags`); a list in the text column, or a mapping, date or bytes in any column
read, is refused naming its line or row and column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from edgekd.errors import DataError

#: What a column is read as: the text, the label, a row's tokens or tags, or not read.
Role = Literal["text", "label", "words"]
#: Records and what their positions count (``line``, ``record`` of a JSON array, ``row`` of a Parquet file).
Records = tuple[list[tuple[int, dict[str, Any]]], str]


def json_records(where: str, content: str) -> Records:
    """The (position, object) records of JSON ``content``; ``where`` starts each one-line :class:`DataError`:
    text that is not JSON (naming the line), or a record that is not an object of columns."""
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
            raise DataError(f"{where} {unit} {position}: a JSON {_type_name(record)}, expected an object of "
                            "columns (e.g. {\"sentence\": \"...\", \"label\": 1})")
    return records, unit


def parquet_records(where: str, path: Path) -> Records:
    """The (row, columns) records of the Parquet file ``path`` (rows counted from 1); a file pyarrow cannot read
    is a one-line :class:`DataError` starting with ``where``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where}: not a readable Parquet file ({detail})") from None
    return list(enumerate(table.to_pylist(), start=1)), "row"


def record_columns(records: list[tuple[int, dict[str, Any]]]) -> list[str]:
    """The records' keys, in the order they first appear."""
    return list(dict.fromkeys(key for _, record in records for key in record))


def record_cell(where: str, column: str, value: Any, role: Role) -> str:
    """``value`` of ``column`` as the text a table's cell would hold (see the module docstring); ``where`` names the
    line or row in a :class:`DataError`."""
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
    raise DataError(f"{where}: column '{column}' holds {_type_name(value, article=True)}, expected {expected}")


def _type_name(value: Any, *, article: bool = False) -> str:
    """How a message names ``value``'s type: JSON's names for JSON's types, else Python's."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    name = names.get(type(value))
    if name is None:
        return f"a {type(value).__name__} value" if article else type(value).__name__
    return f"a JSON {name}" if article else name


def _item_types(values: list[Any]) -> str:
    return " and ".join(sorted({_type_name(item) + "s" for item in values}))
