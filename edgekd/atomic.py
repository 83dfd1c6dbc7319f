"""Atomic file writes: write to a temporary file beside the target, then rename over it.

A crash or a full disk leaves either the old file or no file, never a half-written one. A full
disk, a read-only filesystem or a directory the user may not write to is reported as a one-line
:class:`~edgekd.errors.StorageError` naming the file; what a killed process leaves behind
(``.<name>.*.tmp``) is cleared by :func:`remove_temporaries`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekd.cache import cache_root
from edgekd.errors import StorageError

#: errno values of a full disk or quota (libraries with their own exception types quote their text).
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: errno of a file over the size a process may write (``ulimit -f``) or its filesystem holds (FAT's 4 GiB).
_TOO_LARGE = (errno.EFBIG,)
#: errno values of a place the user cannot write to, whatever the space.
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
#: errno values of a directory to create where a file is (``mkdir`` of ``file.txt/out``, or of ``file.txt``).
_NOT_A_DIRECTORY = (errno.ENOTDIR, errno.EEXIST)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The caller writes the whole file to the yielded path (e.g. a library that only accepts a
    path, like ``torch.onnx.export``). On an exception the temporary file is removed and
    ``target`` is untouched; a full disk raises :class:`StorageError` naming ``target``.
    """
    target = Path(target)
    with write_errors_reported(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
    tmp = Path(tmp_name)
    try:
        with write_errors_reported(target):
            yield tmp
            _persist(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _persist(tmp: Path, target: Path) -> None:
    """Flush the finished ``tmp`` to disk and rename it to ``target`` (a full disk shows here at the latest)."""
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
    os.replace(tmp, target)


@contextmanager
def write_errors_reported(target: Path) -> Iterator[None]:
    """Turn a full disk, a file over the size limit, a read-only filesystem or a missing permission while writing
    ``target`` into a one-line :class:`StorageError`."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        if exc.filename is None or not Path(target).is_relative_to(Path(exc.filename)):
            raise
        # creating the target or a directory above it: a filesystem taking no new entries (/proc) says ENOENT
        raise StorageError(f"{target}: cannot write it: {exc.filename} cannot be created there ({exc.strerror.lower()}"
                           "); choose a place you can write to") from exc
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL + _TOO_LARGE + _NOT_WRITABLE + _NOT_A_DIRECTORY:
            code: int | None = exc.errno
        else:
            code = next((c for c in _DISK_FULL + _TOO_LARGE if os.strerror(c) in str(exc)), None)
        if code is None:
            raise
        if code in _NOT_A_DIRECTORY:
            raise StorageError(f"{target}: cannot write it: a part of its path is a file, not a directory; "
                               "choose another place") from exc
        advice = ("free some space and run again" if code in _DISK_FULL else
                  "raise the file size limit (ulimit -f) or choose a filesystem that holds larger files"
                  if code in _TOO_LARGE else "choose a place you can write to")
        if Path(target).is_relative_to(cache_root()):
            advice += " (edgekd's cache: set EDGEKD_CACHE)"
        raise StorageError(f"{target}: cannot write it: {os.strerror(code).lower()}; {advice} (an earlier "
                           "version of it, if any, is kept)") from exc


def refuse_if_full(directory: Path, needed: int, exc: BaseException) -> None:
    """After a library failed to write a file of about ``needed`` bytes into ``directory`` (onnxruntime says only
    "Protobuf serialization failed"): a one-line :class:`StorageError` when the filesystem has less room than that
    left, so a full disk is told as such rather than as a broken model."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < needed:
        raise StorageError(f"{directory}: no space left for a file of about {needed / 2**20:.1f} MiB "
                           f"({free / 2**20:.1f} MiB free); free some space and run again") from exc


def remove_temporaries(directory: Path) -> None:
    """Delete what interrupted atomic writes left anywhere under ``directory`` (``.<name>.*.tmp``/``.old``)."""
    for pattern in (".*.tmp", ".*.old"):
        for leftover in sorted(Path(directory).rglob(pattern), reverse=True):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_with(target: Path, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` and atomically move the result to ``target``."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_bytes(target: Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``target``."""
    return write_with(target, lambda tmp: tmp.write_bytes(data))


def write_text(target: Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``target``."""
    return write_bytes(target, text.encode("utf-8"))


def write_json(target: Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented, key-sorted JSON to ``target``."""
    return write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``target``; on success it replaces ``target``.

    For writers that produce several files (``save_pretrained``): readers see the old directory
    or the complete new one, never a mix. On an exception the temporary directory is removed; a
    full disk raises :class:`StorageError` naming ``target``.
    """
    target = Path(target)
    with write_errors_reported(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    old = tmp.with_suffix(".old")
    try:
        with write_errors_reported(target):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700; give the usual permissions
            if target.exists():
                os.replace(target, old)  # keep the old directory until the new one is in place
            os.replace(tmp, target)
    finally:
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
