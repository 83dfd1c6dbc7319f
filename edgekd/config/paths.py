"""The one place a path a user writes is expanded: ``~`` and environment variables (``$VAR``, ``${VAR}``).

Every path-valued field of a recipe, device profile or export preset (data files and folders, a local
``pretrained`` checkpoint, a tokenizer or image processor directory, an ONNX teacher, the ``device`` and
export ``target`` files, a teacher cache folder) is validated through :func:`expand_path` (the
:data:`~edgekd.config.base.LocalPath` and :data:`~edgekd.config.base.PathOrId` types), and so are the path
arguments of the Python API and the CLI (:func:`user_path`: recipe, ``--device`` and preset files, model files,
``--out`` and run directories, calibration, evaluation and sample files). Relative paths are then made
relative to the recipe's folder where the recipe is read (:mod:`edgekd.config.loading`).

The rules, the same everywhere:

- ``${NAME}`` and ``$NAME`` are the environment variable's value; ``NAME`` is a letter or ``_`` then letters,
  digits and ``_``. One that is not set, or set to the empty string, is an error naming it (a path silently
  left as ``${DATA}/train.tsv``, or made ``/train.tsv``, would be read from the wrong place).
- ``$$`` is a literal ``$``; a ``$`` followed by anything else (``a$1``, a trailing ``$``) is kept as it is.
- then a leading ``~`` or ``~user`` is that home directory (also when it came from a variable's value).
- Windows' ``%NAME%`` is not a variable here: it stays as written.

A hub id (``org/name``) or a built-in name has neither ``~`` nor ``$`` and passes unchanged. What is recorded
(the run record, the stage fingerprints, :meth:`Pipeline.to_yaml`, which writes its ``$`` as ``$$``) is the
expanded path, the file that was read: pointing ``DATA`` elsewhere is another input.

Values validated again from a record edgekd wrote (a run directory's recipe, the recipe ``compress`` derives)
are already expanded and are not expanded twice (:data:`ALREADY_EXPANDED`), so a real folder named ``a$b``
survives the round trip.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import SerializationInfo, SerializerFunctionWrapHandler, ValidationInfo

from edgekd.errors import ConfigValueError

#: The pydantic validation context of a value edgekd expanded before (a record it wrote): not expanded again.
ALREADY_EXPANDED = {"paths_expanded": True}


def recorded_context(checkpoints: dict[str, str]) -> dict[str, Any]:
    """The validation context of a finished run's recipe (``run.json``): paths expanded already, and checked when
    the run began, so a checkpoint moved or deleted since is not refused; ``checkpoints`` gives the model type of
    each ``pretrained`` checkpoint as the run read it (what an ``arch: hf`` spec needs of one it cannot read)."""
    return {**ALREADY_EXPANDED, "recorded_checkpoints": dict(checkpoints)}


def recorded_checkpoints(info: ValidationInfo) -> dict[str, str] | None:
    """The model types of a finished run's checkpoints when ``info`` validates its record (:func:`recorded_context`),
    else None."""
    return (info.context or {}).get("recorded_checkpoints")

_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_DOLLAR = re.compile(rf"\$(?:\{{(?P<braced>[^}}]*)\}}|(?P<name>{_NAME})|(?P<dollar>\$)|(?P<open>\{{))")


def expand_path(text: str) -> str:
    """``text`` with its environment variables and a leading ``~`` expanded (see the module docstring).

    Raises :class:`~edgekd.errors.ConfigValueError` (a ``ValueError`` too, so a validator reports it at its key)
    naming the variable that is not set or is empty, or a malformed ``${…}``.
    """
    if "$" in text:
        text = _DOLLAR.sub(_value, text)
    if text.startswith("~"):
        try:
            return str(Path(text).expanduser())
        except RuntimeError:  # no home directory for that user: read as a name, reported as not found
            return text
    return text


def _value(match: re.Match[str]) -> str:
    if match["dollar"] is not None:
        return "$"
    if match["open"] is not None:
        raise ConfigValueError("'${' without a closing '}'; expected ${NAME} (write $$ for a literal '$')")
    name = match["name"] if match["name"] is not None else match["braced"]
    if not re.fullmatch(_NAME, name):
        raise ConfigValueError(f"'${{{name}}}' is not a variable name; expected ${{NAME}} with NAME a letter or '_' "
                               "then letters, digits or '_' (write $$ for a literal '$')")
    value = os.environ.get(name)
    if value is None:
        raise ConfigValueError(f"environment variable {name} is not set")
    if not value:
        raise ConfigValueError(f"environment variable {name} is set but empty")
    return value


def expanded_or_given(text: str) -> str:
    """:func:`expand_path` of ``text``, or ``text`` unchanged when it cannot be expanded: for the readers that
    look at a raw recipe value before its field is validated (the field's validation then reports it)."""
    try:
        return expand_path(text)
    except ConfigValueError:
        return text


def escaped(text: str) -> str:
    """``text`` (an expanded path) written so that :func:`expand_path` gives it back: each ``$`` as ``$$``."""
    return text.replace("$", "$$")


def expand_field(value: Any, info: ValidationInfo) -> Any:
    """A path field's value expanded (the ``BeforeValidator`` of the path types): a ``pathlib.Path`` is taken as
    its text; any other type is left to the field's own validation to refuse."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str) and not (info.context or {}).get("paths_expanded"):
        return expand_path(value)
    return value


#: The serialization context of a dump that is read back as a recipe (``Pipeline.to_yaml``): paths escaped.
AS_WRITTEN = {"paths_escaped": True}


def escape_field(value: Any, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
    """A path field dumped (the ``WrapSerializer`` of the path types): as it is, or, for a dump read back as a recipe
    (:data:`AS_WRITTEN`), each ``$`` as ``$$`` so that expanding it again gives the same path."""
    dumped = handler(value)
    context = info.context or {}
    return escaped(dumped) if isinstance(dumped, str) and context.get("paths_escaped") else dumped


def user_path(value: str | os.PathLike[str], what: str) -> Path:
    """A path argument of the Python API or the CLI, expanded; an error is one line starting with ``what`` (the
    argument's name, ``--out``)."""
    return Path(user_text(value, what))


def user_text(value: str | os.PathLike[str], what: str) -> str:
    """:func:`user_path` as text (a name that may be a path: a device, a recipe, a hub id); a value of another type
    (``out=5``: os.fspath's TypeError named no argument) is a one-line :class:`ConfigValueError` naming ``what``."""
    if not isinstance(value, str | os.PathLike):
        raise ConfigValueError(f"{what}: expected a path (a str or a pathlib.Path), got {type(value).__name__}")
    try:
        text = expand_path(os.fspath(value))
    except ConfigValueError as exc:
        raise ConfigValueError(f"{what}: {exc}") from None
    try:  # a shell's bytes that are not UTF-8 arrive as surrogates: safetensors and others refuse such paths later
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
        raise ConfigValueError(f"{what}: '{shown}' is not valid UTF-8; name it in UTF-8") from None
    return text
