"""Changes to a recipe's keys given beside it: ``--set KEY=VALUE`` on the command line, ``overrides=`` in Python.

``KEY`` is a dotted path of the recipe's keys (``data.train``, ``teacher.model.pretrained``); a list item is its
index (``stages.1.epochs``), and an item of ``stages`` may also be named by its kind when the recipe has one stage
of that kind (``stages.distill.epochs``). A missing key is added (``data.limit_train=2000``), with the mappings
above it; validation then refuses a key the recipe does not have, naming it, as it would in the file. ``VALUE`` is
read as YAML (``3`` a number, ``true`` a boolean, ``[a, b]`` a list, ``null`` no value, anything else text).
Overrides apply in order, after the file is read and before it is validated, so the run's record, its stage
fingerprints and ``--dry-run`` see the changed recipe.

A path given this way is typed in a shell, so a relative one that names a file or folder from the working
directory is that file or folder (the recipe's own relative paths start from its folder): this applies to the
keys that hold paths (:func:`path_keys`), e.g. ``--set data.train=data/train.tsv``. Any other value, a hub id
or a built-in name, is taken as written.
"""

from __future__ import annotations

import copy
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, BeforeValidator

from edgekd.config.paths import escaped, expand_field, expanded_or_given
from edgekd.config.yaml_reader import load_bounded
from edgekd.errors import ConfigError

#: Overrides as callers give them: ``KEY=VALUE`` texts, one text, or none.
Overrides = Sequence[str] | str | None


@dataclass(frozen=True)
class Override:
    """One ``KEY=VALUE``: the key path (mapping keys, list indices or stage kinds) and the parsed value."""

    text: str
    keys: tuple[str, ...]
    value: Any


def parse_override(text: str) -> Override:
    """``KEY=VALUE`` read as the module docstring says; a one-line :class:`ConfigError` naming ``text`` otherwise."""
    key, equals, raw = text.partition("=")
    keys = tuple(part.strip() for part in key.split("."))
    if not equals or not all(keys):
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE with a dotted key, e.g. data.train=train.tsv or "
                          "stages.0.epochs=3")
    try:
        value = load_bounded(raw) if raw.strip() else None
    except Exception as exc:  # noqa: BLE001  (yaml's and the reader's bounds errors: any is an unreadable value)
        raise ConfigError(f"--set {text!r}: the value is not readable YAML ({str(exc).splitlines()[0]}); quote "
                          "text holding ': ' or '#', e.g. --set \"name='a: b'\"") from None
    return Override(text, keys, value)


def override_list(overrides: Overrides) -> list[str]:
    """``overrides`` as a list of ``KEY=VALUE`` texts (one text alone is one override, None none); anything but text
    is a one-line :class:`ConfigError`."""
    listed = [] if overrides is None else [overrides] if isinstance(overrides, str) else list(overrides)
    wrong = next((item for item in listed if not isinstance(item, str)), None)
    if wrong is not None:
        raise ConfigError(f"overrides: expected KEY=VALUE texts, got {type(wrong).__name__} {wrong!r}")
    return listed


def no_overrides_of_object(overrides: Overrides) -> None:
    """Refuse ``overrides`` beside a :class:`~edgekd.config.recipe.Recipe` object: they change a file's or a
    mapping's keys."""
    if overrides:
        raise ConfigError("overrides: they change the keys of a recipe file, a built-in recipe or a mapping, not of "
                          "a Recipe object (build the Recipe with the new values instead)")


def apply_overrides(data: Any, overrides: Overrides) -> Any:
    """A copy of the parsed recipe ``data`` with each ``KEY=VALUE`` of ``overrides`` set, in order."""
    overrides = override_list(overrides)
    if not overrides or not isinstance(data, dict):
        return data  # validation refuses a recipe that is no mapping, naming the file
    changed = copy.deepcopy(data)
    for text in overrides:
        override = parse_override(text)
        _set(changed, override, _from_working_directory(override))
    return changed


def _set(data: dict[str, Any], override: Override, value: Any) -> None:
    node: Any = data
    *parents, last = override.keys
    for depth, key in enumerate(parents):
        child = _child(node, key, override, depth)
        if child is None and isinstance(node, dict):
            _refuse_indexing_unset(override, depth)
            child = node[key] = {}
        if not isinstance(child, dict | list):
            where = ".".join(override.keys[: depth + 1])
            raise ConfigError(f"--set {override.text!r}: {where} is {child!r}, not a mapping or a list of keys")
        node = child
    if isinstance(node, list):
        node[_index(node, last, override, len(parents))] = value
    else:
        node[last] = value


def _refuse_indexing_unset(override: Override, depth: int) -> None:
    """Refuse a path through an item of a list the recipe does not give (its default applies): the item is not in
    the file to change, and a mapping made up in its place fails validation in words the user never wrote."""
    following = override.keys[depth + 1]
    if not following.isdigit() or override.keys[depth] not in list_keys():
        return
    where = ".".join(override.keys[: depth + 1])
    raise ConfigError(f"--set {override.text!r}: {where} is not in the recipe (its default applies), so it has no "
                      f"item {following} to change; set the whole list instead, e.g. --set '{where}=[...]'")


def _child(node: dict[str, Any] | list[Any], key: str, override: Override, depth: int) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    return node[_index(node, key, override, depth)]


def _index(items: list[Any], key: str, override: Override, depth: int) -> int:
    """The position ``key`` names in ``items``: a whole number within the list, or the kind of its one stage."""
    where = ".".join(override.keys[:depth]) or "the recipe"
    if key.isdigit():
        if int(key) < len(items):
            return int(key)
        numbered = f"numbered 0 to {len(items) - 1}" if items else "nothing to change"
        raise ConfigError(f"--set {override.text!r}: {where} has {len(items)} item(s), {numbered}; got {key}")
    kinds = [item.get("stage") if isinstance(item, dict) else None for item in items]
    matches = [i for i, kind in enumerate(kinds) if kind == key]
    if len(matches) == 1:
        return matches[0]
    named = ", ".join(f"{i} ({kind})" for i, kind in enumerate(kinds) if kind)
    problem = f"{len(matches)} '{key}' stages ({', '.join(map(str, matches))}): give its index" if matches else \
        f"no item named '{key}'; give an index" + (f" ({named})" if named else "")
    raise ConfigError(f"--set {override.text!r}: {where} has {problem}")


def _from_working_directory(override: Override) -> Any:
    """The override's value, a relative path of a path key naming something in the working directory made
    absolute (see the module docstring); else as given."""
    value = override.value
    if override.keys[-1] not in path_keys() or not isinstance(value, str) or not value:
        return value
    local = Path(expanded_or_given(value))
    if local.is_absolute() or not local.exists():
        return value
    return escaped(str(local.resolve()))


@cache
def path_keys() -> frozenset[str]:
    """The names of the recipe's keys (in any of its nested configs) that hold paths: what ``~`` and ``$VAR``
    expansion applies to."""
    return _keys_where(lambda parts: any(_holds_path(part) for part in parts))


@cache
def list_keys() -> frozenset[str]:
    """The names of the recipe's keys (in any of its nested configs) that hold lists, and mappings in none."""
    lists = _keys_where(lambda parts: _holds(parts[0], (list, tuple)))
    return lists - _keys_where(lambda parts: _holds(parts[0], (dict,)))


def _keys_where(wanted: Callable[[list[Any]], bool]) -> frozenset[str]:
    """The names of the recipe's keys whose annotation parts (type, then metadata) are ``wanted``."""
    from edgekd.config.recipe import Recipe

    names: set[str] = set()
    _collect_keys(Recipe, wanted, names, set())
    return frozenset(names)


def _collect_keys(model: type[BaseModel], wanted: Callable[[list[Any]], bool], names: set[str],
                  seen: set[type]) -> None:
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        if wanted([field.annotation, *field.metadata]):
            names.add(name)
        for nested in _models_in(field.annotation):
            _collect_keys(nested, wanted, names, seen)


def _holds(annotation: Any, origins: tuple[type, ...]) -> bool:
    """Whether ``annotation`` is, or is a union with, a generic of one of ``origins`` (``list[int] | None``)."""
    if typing.get_origin(annotation) in origins:
        return True
    if typing.get_origin(annotation) in (list, tuple, dict):
        return False
    return any(_holds(arg, origins) for arg in _args(annotation))


def _holds_path(annotation: Any) -> bool:
    if isinstance(annotation, BeforeValidator):
        return annotation.func is expand_field
    return any(_holds_path(arg) for arg in _args(annotation))


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in _args(annotation) for model in _models_in(arg)]


def _args(annotation: Any) -> tuple[Any, ...]:
    """The parts of a type: a union's members, a generic's parameters, an ``Annotated`` type's type and metadata."""
    if typing.get_origin(annotation) is typing.Annotated:
        return (annotation.__origin__, *annotation.__metadata__)
    return typing.get_args(annotation)
