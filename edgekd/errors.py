"""Exception types for user mistakes.

Each kind of mistake a user can make has its own type. The CLI catches :class:`EdgekdError`
once, prints its message on one line and exits with code 2; anything else is an internal
error (exit code 1).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Sequence


class EdgekdError(Exception):
    """Base class of every error caused by the user's input rather than by a bug."""


class ConfigError(EdgekdError):
    """A recipe, device profile or export target is malformed or names something unknown."""


class ConfigTypeError(ConfigError, TypeError):
    """An argument of the Python API of a type it does not take (``edgekd.validate(None)``): a ``TypeError`` too,
    and an :class:`EdgekdError`, so a handler of edgekd's mistakes catches it with the rest."""


class ConfigValueError(ConfigError, ValueError):
    """A config object built in Python with a wrong value (:class:`edgekd.config.base.StrictModel`): a
    ``ValueError`` too, so a validator that builds one reports it as the field's error."""


class DataError(EdgekdError):
    """A dataset is missing, empty, or has the wrong columns or labels."""


class ModelError(EdgekdError):
    """A model file is missing, corrupt, or does not fit the recipe or device profile."""


class ExportError(EdgekdError):
    """Exporting a model failed or the exported model disagrees with the original."""


class BudgetError(EdgekdError):
    """A device budget cannot be met or is impossible."""


class TrainingError(EdgekdError):
    """Training diverged: the loss became infinite or NaN (a learning rate, loss weight or temperature too large)."""


class StorageError(EdgekdError):
    """A result cannot be written: the disk (or the user's quota) is full."""


#: A terminal colour or style escape (``\x1b[1m``).
_TERMINAL_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
#: What torch, onnxruntime and the C++ runtime say when an allocation fails (lower case).
_OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "not enough memory", "out of memory",
                  "std::bad_alloc", "failed to allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a failed memory allocation (Python's ``MemoryError``, or torch's / onnxruntime's error
    saying so): a model, batch or input too large for this machine, not a bug."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OUT_OF_MEMORY))


def too_long_name(exc: BaseException) -> str | None:
    """The name of an ``ENAMETOOLONG`` error in ``exc`` or what it was raised from (a path component over the
    filesystem's limit, usually 255 bytes, given as a file, directory or hub id): the user's input, not a bug."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENAMETOOLONG:
            name = str(seen.filename or "")
            return name if len(name) <= 120 else f"{name[:60]}…{name[-40:]}"
        seen = seen.__cause__ or seen.__context__
    return None


def quoted(value: object, most: int = 60) -> str:
    """``value`` in single quotes for a one-line message, its line breaks escaped, cut to its first ``most``
    characters (its length said) when longer: a whole file read as one column name or label must not fill the
    terminal."""
    text = str(value).replace("\r", "\\r").replace("\n", "\\n")
    return f"'{text}'" if len(text) <= most else f"'{text[:most]}…' ({len(text)} characters)"


def listing(names: Sequence[str], shown: int) -> str:
    """The first ``shown`` of ``names`` repr-quoted and comma-separated, then how many more, for one-line messages."""
    return ", ".join(repr(name) for name in names[:shown]) + (f" and {len(names) - shown} more"
                                                              if len(names) > shown else "")


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message (or its type name), for one-line errors, without the
    terminal escapes some libraries colour their messages with (torch's ``weights_only`` refusal)."""
    lines = [line.strip() for line in _TERMINAL_ESCAPE.sub("", str(exc)).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
