"""Reading a typed record back from a stage's ``stage.json`` metrics, with one clear line when it is malformed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from edgekd.config.loading import format_key_path
from edgekd.errors import StorageError

RecordT = TypeVar("RecordT", bound=BaseModel)


def read_stage_record(model: type[RecordT], record: dict[str, Any], key: str | None = None) -> RecordT:
    """The stage ``record``'s metrics (or its metrics' ``key``) as ``model``; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    metrics = record["metrics"]
    prefix = "metrics" if key is None else f"metrics.{key}"
    try:
        return model.model_validate(metrics if key is None else metrics[key])
    except ValidationError as exc:
        error = exc.errors()[0]
        field = format_key_path(_stored_path(metrics if key is None else metrics[key], error["loc"]))
        where = f"{record['index']:02d}-{record['stage']}/stage.json"
        joint = "" if not field or field.startswith("[") else "."
        raise StorageError(f"{where}: {prefix}{joint}{field}: {error['msg']}") from None


def _stored_path(data: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The part of a pydantic error location that names keys of the stored ``data``: the tags pydantic inserts for a
    union's member (``classifier`` in ``classifier.chosen``) are not in the file; a missing key (the last part) is
    kept."""
    shown: list[Any] = []
    for index, part in enumerate(loc):
        present = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if present:
            data = data[part]
        if present or index == len(loc) - 1:
            shown.append(part)
    return shown
