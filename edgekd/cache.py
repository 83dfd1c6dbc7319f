"""Where edgekd keeps what it measures once per machine: ``$EDGEKD_CACHE``, else ``~/.cache/edgekd``.

Reference-model timings and empty-graph floors live under ``reference/``
(:mod:`edgekd.profile.speed_ratio`, :mod:`edgekd.profile.floor`), a budget search's latency tables
under ``latency-tables/`` (:mod:`edgekd.search.table`).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """edgekd's cache directory (it may not exist yet)."""
    return Path(os.environ.get("EDGEKD_CACHE") or "~/.cache/edgekd").expanduser()
