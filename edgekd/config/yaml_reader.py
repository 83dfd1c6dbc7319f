"""Reading YAML that a user (or an attacker) wrote, with bounds.

- Only YAML's safe subset is read (no Python tags), with libyaml's C parser when it is installed.
- A file larger than :data:`MAX_BYTES` is refused before it is parsed: recipes and profiles are small.
- Aliases are followed when sizing a document, so a "billion laughs" document (a few anchors, each
  repeating the previous one ten times) is refused after composing, before anything is built from it.
- A key given twice in one mapping is an error naming both lines (YAML parsers keep the last one
  silently, so a second ``stages:`` would replace the first without a word). Keys brought in by a
  merge (``<<: *defaults``) may be overridden, as YAML intends.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_BYTES = 1 << 20
"""The largest YAML file read (1 MiB)."""
MAX_NODES = 200_000
"""The most values a document may hold once every alias is expanded."""

_Base: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class YamlLimitError(ValueError):
    """A document over one of this module's bounds."""


class DuplicateKeyError(ValueError):
    """A mapping that gives the same key twice."""


class _BoundedLoader(_Base):  # type: ignore[misc,valid-type]
    """The safe loader, refusing duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if _hashable(key) and key in seen:
                raise DuplicateKeyError(f"key '{_short(key)}' appears twice in one mapping (lines {seen[key]} and "
                                        f"{line}); expected each key once")
            if _hashable(key):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_bounded(text: str) -> Any:
    """Parse ``text`` as YAML within the bounds above (raises :class:`YamlLimitError`,
    :class:`DuplicateKeyError` or ``yaml.YAMLError``)."""
    size = len(text.encode("utf-8"))
    if size > MAX_BYTES:
        raise YamlLimitError(f"{size:,} bytes; expected a YAML file under {MAX_BYTES:,} bytes")
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded = _expanded_size(node, {}, MAX_NODES)
        if expanded > MAX_NODES:
            raise YamlLimitError(f"it holds more than {MAX_NODES:,} values once aliases are expanded; expected a "
                                 "document of a recipe's size")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, memo: dict[int, int], limit: int) -> int:
    """How many values ``node`` stands for with every alias expanded (stops counting past ``limit``)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [part for pair in node.value for part in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, memo, limit)
        if total > limit:
            break
    memo[id(node)] = total
    return total


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
