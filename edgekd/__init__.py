"""edgekd: turn a big, accurate model into a small, fast one that fits an edge device's budget, and prove it.

The API (:func:`run`, :func:`compress`, :func:`profile`, :func:`validate`) is imported on first use, so that light
entry points (the profiling worker, ``edgekd devices list``) do not pay for the whole pipeline.
"""

from typing import Any

from edgekd.version import __version__

__all__ = ["__version__", "compress", "plan", "profile", "run", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("compress", "plan", "profile", "run", "validate"):
        from edgekd import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
