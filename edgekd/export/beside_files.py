"""The files ``edgekd export MODEL.onnx`` writes beside the user's own, replaced only when it wrote them.

Converting an ONNX file writes ``<stem>.ort``, ``<stem>.required_operators.config`` and, for targets that keep the
ONNX file, a copy of it into the output directory — by default the model's own folder, which holds the user's other
files. A directory claim (:func:`edgekd.rundir.claimed`, what ``edgekd quantize`` and ``edgekd bundle`` use for their
own ``--out``) would refuse that default, so the rule here is per file: the command records what it wrote in
``<stem>.export.json`` (each file's size and sha256), and a later export replaces a file only when that record lists
it unchanged. Any other file in the way — a model of the user's named ``student.onnx``, notes in ``student.ort``, a
file edited since — is refused in one line before the conversion starts, naming the files.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgekd.atomic import write_json
from edgekd.digest import file_digest
from edgekd.errors import ConfigError, listing
from edgekd.rundir import read_command_record
from edgekd.version import __version__

COMMAND = "export"
SOURCE_RECORD = "export.json"
"""The record of ``edgekd export`` of a PyTorch model, in the directory it claims (``<stem>.export.json`` cannot be
this name, so converting its ``model.onnx`` afterwards keeps both records)."""


def record_path(out_dir: Path, onnx_path: Path) -> Path:
    """``<stem>.export.json`` in ``out_dir``: the record of the files ``edgekd export`` wrote converting the ONNX file
    ``onnx_path`` (the export of a PyTorch model records its own directory in :data:`SOURCE_RECORD`)."""
    return Path(out_dir) / f"{Path(onnx_path).stem}.export.json"


def check_replaceable(record: Path, outputs: Iterable[Path], source: Path) -> None:
    """Refuse, naming them, the ``outputs`` (and ``record`` itself) that exist and were not written by the export
    ``record`` lists (or changed since). A file with the same bytes as ``source`` is no loss: the copy it would get."""
    earlier = _earlier_files(record)
    in_the_way = [record] if record.exists() and earlier is None else []
    in_the_way += [path for path in outputs if path.exists() and path.resolve() != source.resolve()
                   and not _written_before(path, earlier or {}) and not _same_bytes(path, source)]
    if in_the_way:
        raise ConfigError(
            f"{record.parent}: holds {listing(sorted(p.name for p in in_the_way), 3)}, which edgekd export would "
            "replace but did not write (or which changed since it did); move them or choose another --out")


def write_record(record: Path, written: Iterable[Path], details: dict[str, Any], *, source: Path | None = None
                 ) -> Path:
    """Record the files this export wrote (size and sha256 each) with ``details``, then delete the files an earlier
    export listed that this one did not write again (unchanged since: what another target wrote), never ``source``
    (the model converted) nor a symbolic link."""
    files = {path.name: _entry(path) for path in written}
    for name, entry in (_earlier_files(record) or {}).items():
        stale = record.parent / name
        if (name not in files and Path(name).name == name and stale.is_file() and not stale.is_symlink()
                and (source is None or stale.resolve() != source.resolve()) and _entry(stale) == entry):
            stale.unlink()
    return write_json(record, {"edgekd_version": __version__, "command": COMMAND, **details, "files": files})


def _earlier_files(record: Path) -> dict[str, Any] | None:
    """The files an earlier export listed in ``record``, or None when ``record`` is not such a record."""
    content = read_command_record(record)
    files = content.get("files") if content is not None and content.get("command") == COMMAND else None
    return files if isinstance(files, dict) else None


def _written_before(path: Path, earlier: dict[str, Any]) -> bool:
    return earlier.get(path.name) == _entry(path)


def _same_bytes(path: Path, source: Path) -> bool:
    return path.is_file() and path.stat().st_size == source.stat().st_size and file_digest(path) == file_digest(source)


def _entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": file_digest(path)}
