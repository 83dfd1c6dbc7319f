"""Run directories: which ones edgekd may write into, one writer at a time, and which stage results it trusts.

A run directory (``--out``) is claimed before anything is written: it must be new, empty, or an
earlier edgekd run (a ``run.json`` edgekd wrote, or a stage directory holding an edgekd stage
record). Anything else — a file, a filesystem root, a directory of the user's own files — is
refused with a one-line :class:`~edgekd.errors.ConfigError`, so edgekd never deletes or overwrites
files it did not write (the temporaries a killed edgekd process left in a directory it had claimed,
beside its lock file, are its own: removed when the directory is claimed again). While a run works
in the directory it holds an advisory lock (``.edgekd.lock``, :func:`fcntl.flock`): a second run on
the same directory stops at once and names the process holding it.

Each stage's ``stage.json`` lists the files the stage wrote (:func:`inventory`: size, and the
sha256 of small files). A finished stage is reused only when its record has the expected shape
(its metrics read back as its stage kind's typed record), every path in it stays inside the run directory, and its
files are still there as recorded
(:func:`cached_record`); otherwise it runs again. Stage directories are deleted only when they
carry edgekd's own markers (:func:`remove_stale_stage_dirs`, :func:`replace_stage_dir`), or, where a finished
stage is committed, hold nothing but files that stage lists (what an interrupted delete of its earlier run left).
A stage directory being replaced is renamed aside first, so a kill at any moment leaves a run that resumes.

What stages write at the top of the run directory, beside their stage directories (``bundle/``, ``bundle.zip``,
``report.json`` and the plots), is listed in ``run.json`` (:data:`OUTPUTS_KEY`, :func:`note_outputs`) before it is
written; a re-run removes those no stage of its recipe writes again (:func:`remove_outputs`), and nothing else.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from edgekd.atomic import write_errors_reported, write_json
from edgekd.digest import file_digest
from edgekd.errors import ConfigError, listing
from edgekd.model_metrics import ModelMetrics

if TYPE_CHECKING:
    from edgekd.stage_kind import StageKind

log = logging.getLogger(__name__)

RUN_RECORD = "run.json"
STAGE_RECORD = "stage.json"
FINGERPRINT_FILE = ".fingerprint"
"""Marks a stage's ``.partial`` working directory with the fingerprint it is working towards."""
LOCK_FILE = ".edgekd.lock"
FILES_KEY = "files"
"""The key of a stage record listing the files the stage wrote (path relative to the stage directory)."""
HASHED_BELOW = 1 << 20
"""Files smaller than this (records, manifests, configs, tokenizer files: what a person edits) are also
hashed; larger ones (weights, models) are checked by size, which catches truncation without re-reading
hundreds of megabytes on every re-run."""
_NOT_WRITTEN_BY_STAGE = {STAGE_RECORD, FINGERPRINT_FILE, LOCK_FILE}
OUTPUTS_KEY = "outputs"
"""The key of ``run.json`` listing the names of the files and folders edgekd wrote at the top of the run directory,
beside the stage directories (``bundle``, ``bundle.zip``, ``report.json``, the plots): a run's stages and
``edgekd report`` add a name before they write it there, so a re-run knows what of the directory's top is its own."""


def stage_dir_name(index: int, stage: str) -> str:
    """``NN-<stage>``: the directory of the recipe's stage ``index`` (numbered from 1 in recipe order)."""
    return f"{index:02d}-{stage}"

def is_stage_dir_name(name: str) -> bool:
    """``NN-<stage>`` or ``.NN-<stage>.partial``: the names the pipeline gives stage directories."""
    name = name.removeprefix(".").removesuffix(".partial")
    return name[:2].isdigit() and name[2:3] == "-"


@contextmanager
def claimed(run_dir: Path, *, main: bool = True, record: str = RUN_RECORD) -> Iterator[None]:
    """Check that ``run_dir`` may be used, create it, and hold its lock while the block runs.

    Only the main process of a data-parallel run (``main``) claims; the others use what it claimed.
    ``record`` is the file that marks the directory as edgekd's (see :func:`check_claimable`).
    Raises :class:`ConfigError` for a directory edgekd must not write into or one another run holds.
    """
    if not main:
        yield
        return
    check_claimable(run_dir, record)
    with write_errors_reported(run_dir):
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = _open_lock(run_dir / LOCK_FILE)
    try:
        _lock(handle, run_dir)
        _remove_leftovers(run_dir)
        yield
    finally:
        handle.close()  # closing releases the lock; the file stays (deleting it would race a waiting process)


def check_source_outside(source: Path, out: Path, command: str) -> None:
    """Refuse a one-file command's input that lies inside its output directory ``out``: the command replaces what
    it wrote there before, so re-running it on its own earlier output deleted the file it read."""
    try:
        inside = source.resolve().is_relative_to(out.resolve())
    except (OSError, RuntimeError):  # a symlink loop: check_claimable names it
        return
    if inside:
        raise ConfigError(f"{source}: is inside the output directory {out} (--out), whose earlier outputs {command} "
                          "replaces; give another --out, or copy the file out of it first")


def check_claimable(run_dir: Path, record: str = RUN_RECORD) -> None:
    """Refuse a run directory that is a file, a filesystem root, or a non-empty directory of other files.

    A directory is edgekd's when it holds a pipeline run (``record`` = ``run.json``), or, for the
    output of a one-file command (``edgekd quantize``, ``edgekd bundle``), that command's ``record``.
    """
    try:
        resolved = run_dir.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ConfigError(f"{run_dir}: cannot use it as the run directory (--out): {exc}") from None
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"{run_dir}: is the root of the filesystem; give the run its own directory (--out)")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: is a file, not a directory; --out names the run directory to create or reuse")
    try:
        if not run_dir.is_dir() or (is_edgekd_run(run_dir) if record == RUN_RECORD
                                    else read_command_record(run_dir / record) is not None):
            return
        claimed_before = (run_dir / LOCK_FILE).is_file()
        foreign = sorted(p.name for p in run_dir.iterdir()
                         if p.name != LOCK_FILE and not (claimed_before and _is_leftover(p.name)))
    except OSError as exc:
        raise ConfigError(f"{run_dir}: cannot read the run directory (--out): {exc.strerror or exc}") from None
    if foreign:
        raise ConfigError(
            f"{run_dir}: not empty and not an edgekd run directory (it holds {listing(foreign, 3)}); edgekd writes "
            f"only into a new or empty directory or an earlier run's (with its {record}): choose another --out")


def _is_leftover(name: str) -> bool:
    """A name edgekd gives its temporary files and directories (``.<name>.*.tmp``, ``.quantize-*.tmp``, ``.*.old``):
    what a killed command leaves in a directory it had claimed (its lock file is there)."""
    return name.startswith(".") and name.endswith((".tmp", ".old"))


def _remove_leftovers(run_dir: Path) -> None:
    """Delete the temporaries a killed edgekd process left at the top of ``run_dir`` (its lock is held now)."""
    for path in run_dir.iterdir():
        if not _is_leftover(path.name):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def is_edgekd_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds an edgekd run record, or a stage directory with an edgekd stage record."""
    if read_run_record(run_dir / RUN_RECORD) is not None:
        return True
    return any(read_stage_record(path / STAGE_RECORD) is not None
               for path in run_dir.iterdir() if is_stage_dir_name(path.name) and path.is_dir())


def _open_lock(path: Path) -> IO[str]:
    """Open the lock file ``path`` for reading and writing, creating it; refuse anything but a file.

    Its holder is written into it: a symlink is never followed (it would overwrite a file outside the run
    directory), and a directory or device is not taken for it. A lock sharing its file with another name (a
    directory copied with hard links, as a search's kept candidates are) is replaced by a file of its own first,
    so the other name's file is never written through.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EISDIR):
            raise
        raise _not_a_lock(path, "a symbolic link" if exc.errno == errno.ELOOP else "a directory") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_a_lock(path, "not a regular file")
    if info.st_nlink > 1:
        os.close(fd)
        own = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # a claim's leftover clean-up removes it if killed
        own.touch()
        os.replace(own, path)
        return _open_lock(path)
    return os.fdopen(fd, "r+", encoding="utf-8")


def _not_a_lock(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: is {what}, not edgekd's lock file; edgekd writes its lock only into a file of its "
                       "own: remove it and run again")


def _lock(handle: Any, run_dir: Path) -> None:
    """Take the run directory's lock or raise :class:`ConfigError` naming its holder; then record ourselves."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = _holder(handle.read())
        raise ConfigError(f"{run_dir}: another edgekd run is using this directory ({holder}); wait for it to "
                          "finish or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": datetime.now(UTC).isoformat(timespec="seconds")}) + "\n")
    handle.flush()


def _holder(text: str) -> str:
    """The lock holder's description from the lock file's content (it may not have written it yet)."""
    try:
        info = json.loads(text)
        return f"process {int(info['pid'])} on {str(info['host'])[:64]} since {str(info['since'])[:32]}"
    except (ValueError, TypeError, KeyError):
        return "a process that has just started"


def read_run_record(path: Path) -> dict[str, Any] | None:
    """A ``run.json`` as edgekd writes it (version, recipe, device), or None for anything else."""
    record = read_json(path)
    if not isinstance(record, dict) or not isinstance(record.get("edgekd_version"), str):
        return None
    return record if isinstance(record.get("recipe"), dict) and isinstance(record.get("device"), dict) else None


def read_command_record(path: Path) -> dict[str, Any] | None:
    """The record a one-file command wrote (``edgekd_version`` and ``command``), or None for anything else."""
    record = read_json(path)
    ok = isinstance(record, dict) and isinstance(record.get("edgekd_version"), str) and "command" in record
    return record if ok else None


def read_stage_record(path: Path) -> dict[str, Any] | None:
    """A ``stage.json`` of the shape the pipeline writes, every path in it inside the run; else None."""
    record = read_json(path)
    return record if isinstance(record, dict) and _record_problem(record) is None else None


def stage_record_problem(path: Path) -> str | None:
    """Why :func:`read_stage_record` refuses ``path`` (naming the field where the file reads as a JSON object),
    or None."""
    if not path.is_file():
        return "missing"
    record = read_json(path)
    if not isinstance(record, dict):
        return "not readable as JSON (UTF-8)" if record is None else "not a JSON object"
    return _record_problem(record)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _record_problem(record: dict[str, Any]) -> str | None:
    """What is wrong with a stage record's shape or paths, or None."""
    types = {"stage": str, "index": int, "fingerprint": str, "artifact": dict, "metrics": dict,
             "wall_seconds": (int, float)}
    for key, kind in types.items():
        if not isinstance(record.get(key), kind):
            return f"'{key}' missing or of the wrong type"
    for role, model in record["artifact"].items():
        refs = _model_refs(model)
        if refs is None:
            return f"artifact '{role}' is not a model record"
        metrics = ModelMetrics.problem(model.get("metrics", {}))
        if metrics is not None:  # a damaged figure would fail every stage after this one reads it
            return f"artifact '{role}' metrics.{metrics}"
        outside = next((ref for ref in refs if not (isinstance(ref, str) and _inside(ref))), None)
        if outside is not None:
            return f"artifact '{role}' points outside the run directory ({str(outside)[:80]!r})"
    return None


def _model_refs(model: Any) -> list[Any] | None:
    """Every file reference of a model record (weights, ONNX, ensemble members, deployable files); None if malformed."""
    if not isinstance(model, dict) or not isinstance(model.get("role"), str):
        return None
    metrics, members = model.get("metrics", {}), model.get("members", [])
    # a stage.json written before deploy files left the metrics has them there
    legacy = metrics.get("deploy_files") if isinstance(metrics, dict) else None
    deploy = (model.get("deploy_files") or legacy or {}) if isinstance(metrics, dict) else None
    if not isinstance(members, list) or not isinstance(deploy, dict):
        return None
    return [model[key] for key in ("weights", "onnx") if model.get(key) is not None] + members + list(deploy.values())


def _inside(ref: str) -> bool:
    """Whether a recorded path is relative and stays below the directory it is relative to."""
    path = PurePosixPath(ref)
    return bool(ref) and "\\" not in ref and not path.is_absolute() and ".." not in path.parts


def inventory(stage_dir: Path, *, hash_below: float = HASHED_BELOW) -> dict[str, dict[str, Any]]:
    """The files a stage wrote (path relative to ``stage_dir`` → bytes, and sha256 of files smaller than
    ``hash_below`` bytes)."""
    files = {}
    for path in sorted(p for p in stage_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        name = path.relative_to(stage_dir).as_posix()
        if name in _NOT_WRITTEN_BY_STAGE:
            continue
        size = path.stat().st_size
        files[name] = {"bytes": size, "sha256": file_digest(path)} if size < hash_below else {"bytes": size}
    return files


def cached_record(stage_dir: Path, fingerprint: str, kind: StageKind) -> dict[str, Any] | None:
    """The record of a finished stage of ``kind`` in ``stage_dir`` with ``fingerprint`` whose files verify, else None.

    A record that exists with the right fingerprint but fails (wrong shape, metrics that do not read back as the
    kind's typed record, a path outside the run, a file missing or changed) is logged with the reason: the stage
    runs again.
    """
    path = stage_dir / STAGE_RECORD
    record = read_json(path)
    if not isinstance(record, dict) or record.get("fingerprint") != fingerprint:
        return None
    problem = stage_problem(stage_dir, record, kind)
    if problem is not None:
        log.warning("%s: not reused (%s); running the stage again", path, problem)
        return None
    return record


def stage_problem(stage_dir: Path, record: dict[str, Any], kind: StageKind) -> str | None:
    """Why a finished stage's record (read from ``stage_dir``) cannot be trusted, or None when it can: its shape or
    paths, its metrics read back as the typed record of its stage ``kind``
    (:meth:`~edgekd.stage_kind.StageKind.record_problem`), or the files it lists."""
    return (_record_problem(record) or kind.record_problem(record)
            or files_problem(stage_dir, record.get(FILES_KEY)))


def files_problem(stage_dir: Path, files: Any) -> str | None:
    """What differs between the files a record lists (:func:`inventory`) and ``stage_dir``'s, or None."""
    if not isinstance(files, dict):
        return f"it has no '{FILES_KEY}' list to check"
    root = stage_dir.resolve()
    for name, entry in files.items():
        if not _inside(name):
            return f"'{FILES_KEY}' points outside the stage directory ({name[:80]!r})"
        path = stage_dir / name
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
            return f"'{FILES_KEY}' entry {name!r} is not a size record"
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(root):
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{name} has {size} bytes, {entry['bytes']} were written"
        if "sha256" in entry and file_digest(path) != entry["sha256"]:
            return f"{name} changed since it was written"
    return None


def replace_stage_dir(source: Path, target: Path) -> None:
    """Move the finished ``source`` stage directory to ``target``, replacing edgekd's earlier one there.

    The earlier directory is renamed aside to ``.<name>.old`` (a temporary of the run directory, which the next
    claim removes should a kill come before it is deleted here) before ``source`` takes its place: at every instant
    ``target`` is the earlier stage, the new one or absent beside the finished ``source``, all of which a re-run
    completes. Deleting it in place left a directory without its stage record (deleted first) that no run took for
    edgekd's again; such a leftover (:func:`_left_by_interrupted_delete`) is replaced too.
    """
    trash = None
    if target.is_symlink() or target.exists():
        if not (_owned(target) or _left_by_interrupted_delete(target, source)):
            raise ConfigError(f"{target}: exists and was not written by edgekd (no {STAGE_RECORD} in it); move it "
                              "away and run again")
        trash = target.with_name(f".{target.name}.old")
        os.replace(target, trash)
    os.replace(source, target)
    if trash is not None:
        shutil.rmtree(trash)


def _left_by_interrupted_delete(path: Path, finished: Path) -> bool:
    """Whether the stage directory ``path``, which has no marker, is what an interrupted delete of an earlier run of
    its stage left: only directories and files the finished stage directory ``finished`` lists (the same stage writes
    the same names), no symlink, no file of anyone else's."""
    record = read_stage_record(finished / STAGE_RECORD)
    listed = record.get(FILES_KEY) if record is not None else None
    if not isinstance(listed, dict) or path.is_symlink() or not path.is_dir():
        return False
    try:
        walked = list(os.walk(path, onerror=_raise))
    except OSError:  # a directory it cannot read may hold anything
        return False
    for root, dirs, files in walked:
        for entry in (Path(root, name) for name in dirs + files):
            if entry.is_symlink() or not (entry.is_dir() or (entry.is_file() and
                                                             entry.relative_to(path).as_posix() in listed)):
                return False
    return True


def _raise(exc: OSError) -> None:
    raise exc


def remove_stale_stage_dirs(run_dir: Path, planned: set[str]) -> None:
    """Delete the stage directories edgekd wrote for stages no longer in the recipe; leave any others alone."""
    for path in run_dir.iterdir():
        name = path.name.removeprefix(".").removesuffix(".partial")
        if is_stage_dir_name(path.name) and name not in planned and path.is_dir():
            if _owned(path):
                shutil.rmtree(path)
            else:
                log.warning("%s: left in place: not a stage directory edgekd wrote", path)


def _owned(path: Path) -> bool:
    """Whether a stage directory carries edgekd's marks: a stage record, or a partial stage's fingerprint."""
    return not path.is_symlink() and path.is_dir() and any(
        (path / marker).is_file() for marker in (STAGE_RECORD, FINGERPRINT_FILE))


def recorded_outputs(run_dir: Path) -> list[str] | None:
    """The names ``run.json`` lists as written by edgekd at the top of ``run_dir`` (:data:`OUTPUTS_KEY`), or None
    when it lists none (no run record, or one written before edgekd kept the list). Only plain names beside the stage
    directories are read back: never a path, a stage directory, a record, the lock or a temporary."""
    record = read_run_record(run_dir / RUN_RECORD)
    listed = record.get(OUTPUTS_KEY) if record is not None else None
    if not isinstance(listed, list):
        return None
    return sorted({name for name in listed if isinstance(name, str) and is_output_name(name)})


def is_output_name(name: str) -> bool:
    """Whether ``name`` may be an output at the top of a run directory: one plain, visible name that is not a stage
    directory, ``run.json`` or the lock."""
    return (_inside(name) and "/" not in name and not name.startswith(".") and not is_stage_dir_name(name)
            and name not in (RUN_RECORD, LOCK_FILE))


def note_outputs(run_dir: Path, *, add: Iterable[str] = (), drop: Iterable[str] = ()) -> None:
    """List the outputs ``add`` in ``run_dir``'s ``run.json`` (before they are written there, so a kill while writing
    them leaves them listed) and no longer list ``drop`` (once they are removed). A ``run.json`` without the list
    (written before edgekd kept it) is left alone: the next run lists what edgekd's records name."""
    record = read_run_record(run_dir / RUN_RECORD)
    listed = recorded_outputs(run_dir)
    if record is None or listed is None:
        return
    outputs = sorted((set(listed) | set(add)) - set(drop))
    if outputs != record.get(OUTPUTS_KEY):
        write_json(run_dir / RUN_RECORD, {**record, OUTPUTS_KEY: outputs})


def remove_outputs(run_dir: Path, names: Iterable[str]) -> list[str]:
    """Delete the outputs ``names`` (listed by :func:`recorded_outputs`) from the top of ``run_dir``; returns those
    gone. A folder is renamed aside to ``.<name>.old`` first (a temporary the next claim removes), so a kill leaves it
    whole or gone, never half deleted; a symlink or anything but a file or folder is left in place (edgekd writes
    none), so nothing outside the run directory is touched."""
    gone = []
    for name in names:
        path = run_dir / name
        if not is_output_name(name):
            continue
        if not (path.is_symlink() or path.exists()):
            gone.append(name)
        elif path.is_symlink() or not (path.is_file() or path.is_dir()):
            log.warning("%s: left in place: not a file or folder edgekd wrote", path)
        elif path.is_file():
            path.unlink()
            gone.append(name)
        else:
            trash = path.with_name(f".{name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(path, trash)
            shutil.rmtree(trash)
            gone.append(name)
    return gone
