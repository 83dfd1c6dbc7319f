"""Where edgekd keeps what it measures once per machine: ``$EDGEKD_CACHE``, else ``~/.cache/edgekd``.

Reference-model timings and empty-graph floors live under ``reference/``
(:mod:`edgekd.profile.speed_ratio`, :mod:`edgekd.profile.floor`), a budget search's latency tables
under ``latency-tables/`` (:mod:`edgekd.search.table`).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekd.errors import ConfigError


def cache_root() -> Path:
    """edgekd's cache directory (it may not exist yet)."""
    return env_path("EDGEKD_CACHE", "~/.cache/edgekd")


def env_path(variable: str, default: str) -> Path:
    """The path the environment ``variable`` names (``default`` when unset or empty), ``~`` expanded; a ConfigError
    naming the variable and its value when ``~`` cannot be (``~nosuchuser/x``, or no home directory)."""
    value = os.environ.get(variable) or default
    try:
        return Path(value).expanduser()
    except RuntimeError as exc:  # pathlib: "Could not determine home directory."
        given = f"{variable}={value!r}" if os.environ.get(variable) else f"{variable} unset, so {value!r}"
        raise ConfigError(f"{given}: cannot expand '~' ({exc}); set {variable} to an absolute path") from None
