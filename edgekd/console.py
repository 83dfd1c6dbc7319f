"""Printing text that came from user files (paths, YAML values, ONNX names) to a terminal, safely.

Such text may hold control characters (an escape sequence in an ONNX input name can rewrite the terminal)
and rich markup (``[/bold]`` in a path would be parsed, or raise). :func:`shown` makes any value printable
and inert; every CLI print path and the CLI's log handler pass user-supplied text through it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

# C0 controls except tab and newline, DEL, C1 controls, and the Unicode line/paragraph separators and
# bidirectional overrides (which reorder what a terminal shows).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")

out = Console(highlight=False)
"""Results (tables, lines) go to stdout. Print lines holding paths with ``soft_wrap=True`` (copyable)."""
err = Console(stderr=True, highlight=False)
"""Errors, warnings and progress go to stderr."""


def printable(value: Any, *, newlines: bool = True) -> str:
    """``str(value)`` with every control character written as a visible escape (``\\x1b``, ``\\u202e``).

    ``newlines=False`` escapes newlines and tabs too (for values that must stay on one line).
    """
    text = str(value)
    if not newlines:
        text = text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return _CONTROL.sub(lambda m: _escape_code(m.group()), text)


def shown(value: Any) -> str:
    """``value`` for a rich print: control characters escaped (see :func:`printable`), markup escaped, one line."""
    return escape(printable(value, newlines=False))


def _escape_code(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def print_json(data: Any) -> None:
    """One JSON document on stdout (``--json`` output; json escapes control characters itself)."""
    sys.stdout.write(json.dumps(data, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


class SafeRichHandler(RichHandler):
    """A rich log handler whose messages (which quote paths and names from user files) are made printable."""

    def format(self, record: logging.LogRecord) -> str:
        return printable(super().format(record))
