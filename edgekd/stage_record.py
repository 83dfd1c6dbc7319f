"""The base classes of every typed record (:class:`Record`, and the frozen :class:`FrozenRecord`,
:class:`FullRecord` and :class:`RoleRecord` of the stages), and reading one back from a stage's ``stage.json``
metrics or another JSON file (:func:`read_stored`), with one clear line when it is malformed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd.config.loading import format_key_path
from edgekd.errors import StorageError

RecordT = TypeVar("RecordT", bound=BaseModel)


def read_stage_record(model: type[RecordT], record: dict[str, Any], key: str | None = None) -> RecordT:
    """The stage ``record``'s metrics (or its metrics' ``key``) as ``model``; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    metrics = record["metrics"]
    prefix = "metrics" if key is None else f"metrics.{key}"
    where = stage_record_file(record)
    if key is not None and key not in metrics:
        raise StorageError(f"{where}: {prefix}: missing")
    return read_stored(model, metrics if key is None else metrics[key], where, prefix)


def stage_record_file(record: dict[str, Any]) -> str:
    """``NN-<stage>/stage.json``: the file of a stage ``record``, relative to its run directory."""
    return f"{record['index']:02d}-{record['stage']}/stage.json"


def read_stored(model: type[RecordT], stored: Any, where: str, prefix: str = "") -> RecordT:
    """``stored`` (JSON read back from the file ``where``, under the key path ``prefix`` if any) as ``model``; a
    malformed one raises a one-line :class:`StorageError` naming the file, the first bad field and what is wrong."""
    try:
        return model.model_validate(stored)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = format_key_path(_stored_path(stored, error["loc"]))
        joint = "" if not prefix or not field or field.startswith("[") else "."
        key = f"{prefix}{joint}{field}"
        raise StorageError(f"{where}: {key + ': ' if key else ''}{error['msg']}") from None


def _stored_path(data: Any, loc: tuple[Any, ...]) -> list[Any]:
    """The part of a pydantic error location that names keys of the stored ``data``.

    pydantic inserts each union member's tag (``classifier`` in ``classifier.chosen``), which is not a key of the
    file, though a tag may share its name with one (``kv_cache``). A part absent from ``data`` is a tag (skipped)
    unless it is the last (a missing key, kept); a part present in ``data`` may still be a tag, so both readings are
    followed, and the one leaving the fewest parts unmatched by ``data`` wins (then the one keeping more parts).
    """
    readings: list[tuple[int, int, list[Any]]] = []

    def read(value: Any, index: int, shown: list[Any], unmatched: int) -> None:
        if index == len(loc):
            readings.append((unmatched, -len(shown), shown))
            return
        part, last = loc[index], index == len(loc) - 1
        present = (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value))
        if present or last or not isinstance(part, str):
            read(value[part] if present else None, index + 1, [*shown, part], unmatched + (not present))
        if isinstance(part, str) and not last:
            read(value, index + 1, shown, unmatched)

    read(data, 0, [], 0)
    return min(readings, key=lambda reading: reading[:2])[2]


class Record(BaseModel):
    """The base of every typed record edgekd writes or reads back (stage records, ``report.json``,
    ``bench.json``): records are read back by scripts, so unknown keys, which would go unnoticed, are refused.
    Records that are assembled and then written whole (``report.json``, ``bench.json``) derive from it as it is;
    stage records are frozen (:class:`FrozenRecord`, :class:`FullRecord`)."""

    model_config = ConfigDict(extra="forbid")


class FrozenRecord(Record):
    """A stage's typed record: unknown keys are refused (a script reading it back would miss them) and only the
    fields given are written (:meth:`to_json`), so a record keeps the shape the stage wrote."""

    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the fields given (optional fields a stage did not set are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


class FullRecord(Record):
    """A typed part of a record that is always written whole (:meth:`to_json` writes every field, defaults
    included); unknown keys are refused. Stage records compose these parts (a :class:`FrozenRecord` deriving from
    several of them writes only the fields it was given)."""

    model_config = ConfigDict(frozen=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return self.model_dump(mode="json")


class RoleRecord(FrozenRecord):
    """A stage record with one entry per model role besides its own fields; a subclass types the entries by
    declaring ``__pydantic_extra__: dict[str, <entry type>] = Field(init=False)``."""

    model_config = ConfigDict(extra="allow")

    @property
    def models(self) -> dict[str, Any]:
        """Each model's entry, by role, in the order the stage wrote them."""
        return dict(self.model_extra or {})
