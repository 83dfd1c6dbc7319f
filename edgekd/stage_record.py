"""Reading a typed record back from a stage's ``stage.json`` metrics, with one clear line when it is malformed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd.errors import StorageError

RecordT = TypeVar("RecordT", bound=BaseModel)


def read_stage_record(model: type[RecordT], record: dict[str, Any], key: str | None = None) -> RecordT:
    """The stage ``record``'s metrics (or its metrics' ``key``) as ``model``; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    metrics = record["metrics"]
    prefix = "metrics" if key is None else f"metrics.{key}"
    where = f"{record['index']:02d}-{record['stage']}/stage.json"
    if key is not None and key not in metrics:
        raise StorageError(f"{where}: {prefix}: missing")
    try:
        return model.model_validate(metrics if key is None else metrics[key])
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"])
        raise StorageError(f"{where}: {prefix}{'.' + field if field else ''}: {error['msg']}") from None


class FrozenRecord(BaseModel):
    """A stage's typed record: unknown keys are refused (a script reading it back would miss them) and only the
    fields given are written (:meth:`to_json`), so a record keeps the shape the stage wrote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the fields given (optional fields a stage did not set are left out)."""
        return self.model_dump(mode="json", exclude_unset=True)
