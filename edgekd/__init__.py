"""edgekd: turn a big, accurate model into a small, fast one that fits an edge device's budget, and prove it."""

__version__ = "0.1.0"

from edgekd.api import profile, run, validate  # noqa: E402

__all__ = ["__version__", "profile", "run", "validate"]
