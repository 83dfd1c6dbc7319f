"""Muting a chatty logger for the length of a block, and warnings given once a process."""

from __future__ import annotations

import contextlib
import functools
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


@functools.cache
def warn_once(logger: logging.Logger, message: str) -> None:
    """Log ``message`` as a warning of ``logger`` the first time it is given in this process: what every stage of a
    run meets again (its data, its model) is said once, not once a stage."""
    logger.warning("%s", message)
