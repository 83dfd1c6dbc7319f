"""Loading YAML into config models with one-line errors.

:func:`load_yaml_model` turns YAML syntax errors and pydantic validation errors into a one-line
:class:`ConfigError` naming the file, the key path and what was expected (with a "did you mean" for
misspelled keys).
"""

from __future__ import annotations

import difflib
import reprlib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ValidationError

from edgekd.config.base import PATTERN_WORDS, M
from edgekd.config.paths import ALREADY_EXPANDED
from edgekd.config.yaml_reader import MAX_BYTES, DuplicateKeyError, YamlLimitError, load_bounded
from edgekd.errors import ConfigError


def read_yaml(path: Path) -> Any:
    """Parse a YAML file within :mod:`edgekd.config.yaml_reader`'s bounds; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; expected a YAML file under {MAX_BYTES:,} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read file ({exc})") from exc
    return parse_yaml(text, str(path))


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` as :func:`read_yaml` parses a file's; errors start with ``source``."""
    try:
        return load_bounded(text)
    except (YamlLimitError, DuplicateKeyError) as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply; expected a recipe's few levels of keys") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = _tab_hint(text, mark) or _variable_hint(text, mark)
        raise ConfigError(f"{source}: malformed YAML: {where}{problem}{hint}") from exc


def _variable_hint(text: str, mark: Any) -> str:
    """Why YAML stopped, when the line has a ``${VAR}``: its braces end a ``{…}`` mapping written on one line."""
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or "${" not in lines[mark.line]:
        return ""
    return " (a ${VAR} inside {…} or […]: quote the value, e.g. train: \"${DATA}/train.tsv\")"


def _tab_hint(text: str, mark: Any) -> str:
    """Why YAML stopped, when it stopped at a tab: YAML allows no tab in indentation, which editors hide."""
    lines = text.splitlines()
    if mark is None or mark.line >= len(lines) or "\t" not in lines[mark.line][:mark.column + 1]:
        return ""
    return " (a tab character: YAML indents with spaces only)"


def load_yaml_model(path: Path, model: type[M], *, base_dir: Path | None = None) -> M:
    """Load ``path`` into ``model``; relative ``Path`` fields are resolved against ``base_dir``.

    ``base_dir`` defaults to the file's own directory, so a recipe can name files beside it.
    """
    path = Path(path)
    data = read_yaml(path)
    return validate_model(data, model, source=str(path), base_dir=base_dir or path.parent)


def validate_model(data: Any, model: type[M], *, source: str, base_dir: Path | None = None,
                   expanded: bool = False, context: dict[str, Any] | None = None) -> M:
    """Validate a parsed mapping into ``model``, raising a one-line :class:`ConfigError`.

    Path fields have ``~`` and ``$VAR``/``${VAR}`` expanded (:mod:`edgekd.config.paths`) unless ``expanded`` says
    ``data`` is a record edgekd wrote from a model it validated before (its paths are expanded already);
    ``context`` replaces that validation context (:func:`~edgekd.config.paths.recorded_context`).
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {kind}")
    if context is None and expanded:
        context = ALREADY_EXPANDED
    try:
        obj = model.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, model, source)) from None
    return _resolve_paths(obj, base_dir) if base_dir is not None else obj


def _resolve_paths(obj: M, base_dir: Path) -> M:
    """``obj`` with every relative path made absolute, relative to ``base_dir`` (the recipe's folder), in its
    fields, lists and nested models (a stage's). ``~`` and variables were expanded when the fields were validated
    (:mod:`edgekd.config.paths`), so a path still relative here was written relative."""
    def resolved(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return _resolve_paths(item, base_dir)
        if not isinstance(item, Path) or item.is_absolute():
            return item
        try:
            return (base_dir / item).resolve()
        except (OSError, RuntimeError):  # a symlink loop: reported as not found where the file is read
            return base_dir / item

    updates: dict[str, Any] = {}
    for name, value in obj:
        items = value if isinstance(value, list) else [value]
        new = [resolved(item) for item in items]
        if any(a is not b for a, b in zip(new, items, strict=True)):
            updates[name] = new if isinstance(value, list) else new[0]
    return obj.model_copy(update=updates) if updates else obj


def describe_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The one-line message of ``exc``, raised validating ``model`` from ``source``: the key path of its first
    error (a misspelt key's did-you-mean first), what was expected and what was given."""
    errors = exc.errors(include_url=False)
    first = _typo_first(errors)
    loc = tuple(first["loc"])
    parent, shown = _walk(model, loc[:-1]) if loc else (model, [])
    last = loc[-1] if loc else None
    explained = 1  # errors the message covers
    if first["type"] == "extra_forbidden":
        key_parts, message = shown + [last], f"unknown key '{last}'"
        if parent is not None:
            valid = list(parent.model_fields)
            close = difflib.get_close_matches(str(last), valid, n=1)
            message += f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(valid)}"
    elif first["type"] == "union_tag_invalid":
        ctx = first.get("ctx", {})
        key_parts = shown + ([last] if last is not None else []) + [ctx.get("discriminator", "").strip("'")]
        tag, expected = ctx.get("tag"), ctx.get("expected_tags", "")
        options = [t.strip(" '") for t in str(expected).split(",")]
        close = difflib.get_close_matches(str(tag), options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        message = f"unknown value '{tag}'{hint}; expected one of {expected}"
    elif first["type"] == "union_tag_not_found":
        _, key_parts = _walk(model, loc)
        key_parts.append(first.get("ctx", {}).get("discriminator", "").strip("'"))
        message = "required key is missing"
    else:
        _, key_parts = _walk(model, loc)
        if first["type"] == "missing":
            message = "required key is missing"
        elif first["type"] == "value_error":
            message = first["msg"].removeprefix("Value error, ")
        else:  # a value a union rejects fails each member at the same key
            members = [e for e in errors if _walk(model, tuple(e["loc"]))[1] == key_parts]
            explained = len(members)
            message = f"{' or '.join(union_expectations(members))} (got {brief(first.get('input'))})"
    others = len(errors) - explained
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    key = format_key_path(key_parts)
    where = f"{key}: " if key else ""
    return f"{source}: {where}{message}{more}"


def union_expectations(errors: list[Any]) -> list[str]:
    """What a value rejected by every member of a union (``errors``: one per member) should have been: the members
    of its own type say which of its values would do (``keep: 0`` → 'greater than or equal to 1', not also 'should
    be every_other' and 'a valid list'); when none is of its type, what each member expected."""
    fitting = [_said(e) for e in errors if e["type"] != "literal_error" and not e["type"].endswith("_type")]
    return list(dict.fromkeys(fitting or [_said(e) for e in errors]))


def _said(error: Any) -> str:
    """pydantic's message of ``error``, a spelt pattern's in words (:func:`~edgekd.config.base.spelt_pattern`)."""
    words = PATTERN_WORDS.get(error.get("ctx", {}).get("pattern", "")) if error["type"] == "string_pattern_mismatch" \
        else None
    return f"expected {words}" if words else error["msg"]


def _typo_first(errors: list[Any]) -> Any:
    """The error to describe: pydantic's first, except that a key missing beside an unknown key spelt like it is
    that key misspelt, so the unknown key (with its 'did you mean') is said rather than 'required key is missing'."""
    first = errors[0]
    if first["type"] == "missing" and first["loc"]:
        parent, missing = tuple(first["loc"])[:-1], str(first["loc"][-1])
        return next((e for e in errors if e["type"] == "extra_forbidden" and tuple(e["loc"])[:-1] == parent
                     and difflib.get_close_matches(str(e["loc"][-1]), [missing], n=1)), first)
    return first


def _brief_repr() -> reprlib.Repr:
    shortened = reprlib.Repr()
    shortened.maxlevel, shortened.maxlist, shortened.maxdict = 2, 4, 4
    shortened.maxstring = shortened.maxother = shortened.maxlong = 40
    return shortened


_BRIEF = _brief_repr()


def brief(value: Any) -> str:
    """A short repr of a user's value for an error line (a 50 MB list is shown as its first items)."""
    return _BRIEF.repr(value)


def format_key_path(parts: list[Any]) -> str:
    """A key path as a user writes it: ``stages[1].distill.alpha`` from ``['stages', 1, 'distill', 'alpha']``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, list[Any]]:
    """Follow a pydantic error location through fields, lists and tagged unions.

    Returns the model class at the end of ``loc`` (or None) and the location as a user wrote it,
    without the union tags pydantic inserts (``stages[1].distill.alpha`` → ``stages[1].alpha``).
    """
    current: Any = model
    shown: list[Any] = []
    for part in loc:
        current = _unwrap(current)
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        member = None if is_model and str(part) in current.model_fields else _union_member(current, str(part))
        if member is not None:
            current = member
            continue
        if typing.get_origin(current) in (Union, types.UnionType) and isinstance(part, str):
            current = None  # pydantic's name of a union member ('constrained-int'), not a key the user wrote
            continue
        if is_model:
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        else:
            current = None
        shown.append(part)
    current = _unwrap(current)
    found = current if isinstance(current, type) and issubclass(current, BaseModel) else None
    return found, shown


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _union_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    """The member of a tagged union (or a lone tagged model) whose Literal tag equals ``tag``."""
    is_union = typing.get_origin(annotation) in (Union, types.UnionType)
    for member in typing.get_args(annotation) if is_union else (annotation,):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        for field in member.model_fields.values():
            if typing.get_origin(field.annotation) is Literal and tag in typing.get_args(field.annotation):
                return member
    return None
