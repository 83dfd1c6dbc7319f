"""A report as plain blocks (paragraphs, tables, figures, ...), rendered to Markdown and HTML alike.

Builders turn a ``report.json``-style record into a :class:`Document` once; each renderer only
decides how a block looks, so the Markdown and HTML reports always say the same thing. Every
text is plain (renderers escape it); numbers are formatted by the builders with :func:`fmt`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NUMBER = re.compile(r"^[−+-]?[\d,]*\.?\d+(e[+-]?\d+)?\s*(%|ms|MB|×|[KMG])?$", re.IGNORECASE)
MISSING = "–"


def si(value: float | None) -> str:
    """A count with an SI suffix: ``23.9 K``, ``2.46 M``, ``1.2 G``; ``–`` for None."""
    if value is None:
        return MISSING
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {suffix}"
    return f"{value:g}"


def fmt(value: Any, pattern: str = "{}") -> str:
    """``value`` formatted with ``pattern``; ``–`` for None, yes/no for booleans."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


@dataclass(frozen=True)
class Paragraph:
    """A paragraph of plain text."""

    text: str


@dataclass(frozen=True)
class Bullets:
    """A bulleted list; ``tone`` ``warning`` marks every item as a warning."""

    items: tuple[str, ...]
    tone: str = "plain"


@dataclass(frozen=True)
class Table:
    """A table of formatted cells; columns of mostly numbers are right-aligned."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def numeric(self, column: int) -> bool:
        """Whether most filled cells of ``column`` are numbers (so it is aligned right)."""
        cells = [row[column] for row in self.rows if row[column] not in (MISSING, "")]
        return 2 * sum(bool(_NUMBER.match(cell)) for cell in cells) > len(cells)


@dataclass(frozen=True)
class Figure:
    """An image file (relative to the report's directory) with its caption."""

    file: str
    caption: str


@dataclass(frozen=True)
class Verdict:
    """A pass/fail verdict with a label (``Verdict``) and a note after it."""

    label: str
    verdict: str
    note: str = ""


@dataclass(frozen=True)
class Code:
    """Preformatted text (a recipe, a device profile) under a title; HTML folds it away."""

    title: str
    text: str
    language: str = ""


Block = Paragraph | Bullets | Table | Figure | Verdict | Code


@dataclass(frozen=True)
class Section:
    """A titled part of a report."""

    title: str
    blocks: tuple[Block, ...]

    @property
    def anchor(self) -> str:
        """A link target made from the title (``Top operators`` → ``top-operators``)."""
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


@dataclass(frozen=True)
class Document:
    """A whole report: title, opening blocks and sections."""

    title: str
    intro: tuple[Block, ...] = ()
    sections: tuple[Section, ...] = field(default_factory=tuple)
