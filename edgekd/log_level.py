"""Muting a chatty logger for the length of a block."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator


@contextlib.contextmanager
def raised_level(logger: str | None, level: int) -> Iterator[None]:
    """Drop ``logger``'s records (``None``: the root logger's) below ``level`` while the block runs."""
    target = logging.getLogger(logger)
    saved = target.level
    target.setLevel(level)
    try:
        yield
    finally:
        target.setLevel(saved)
