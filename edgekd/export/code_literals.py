"""String literals for the code examples of a bundle README: names taken from a user's graph or labels file (a
quote, a backslash, a ``$`` or a control character in them) must not break or change the example's code."""

from __future__ import annotations

import json

#: Kotlin's escapes beyond ``\uXXXX`` (a ``$`` would start a string template).
_KOTLIN_ESCAPES = {'"': '\\"', "\\": "\\\\", "$": "\\$", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b"}


def python_string(text: str) -> str:
    """``text`` as a Python string literal (JSON's escapes are Python's)."""
    return json.dumps(text, ensure_ascii=False)


def kotlin_string(text: str) -> str:
    """``text`` as a Kotlin string literal."""
    def escaped(char: str) -> str:
        if char in _KOTLIN_ESCAPES:
            return _KOTLIN_ESCAPES[char]
        return f"\\u{ord(char):04x}" if ord(char) < 0x20 or 0x7F <= ord(char) < 0xA0 else char

    return '"' + "".join(escaped(char) for char in text) + '"'
