"""edgekd: turn a big, accurate model into a small, fast one that fits an edge device's budget, and prove it.

The API (:func:`run`, :func:`compress`, :func:`profile`, :func:`validate`) is imported on first use, so that light
entry points (the profiling worker, ``edgekd devices list``) do not pay for the whole pipeline.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "compress", "profile", "run", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("compress", "profile", "run", "validate"):
        from edgekd import api

        return getattr(api, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
