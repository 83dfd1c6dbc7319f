"""How many tokens a text graph takes: one row of each length run through onnxruntime, bisected.

A graph whose inputs leave the sequence axis dynamic may still take only so many tokens: a position table of
64 rows, or a length fixed when it was traced. onnxruntime then fails with a broadcasting or gather message
from its kernels. :func:`longest_run` finds the longest row the graph runs on, so that an ONNX teacher is
refused at validate, and a profile that failed says the length, in terms of the device's
``inputs.sequence_length``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.config.device import InputShape
from edgekd.profile.inputs import make_feeds, token_id_limits


def longest_run(path: str | Path, length: int, session: Any = None) -> int | None:
    """None when the graph at ``path`` runs on a row of ``length`` tokens (or cannot be loaded: its own checks say
    why), else the longest row it runs on, bisected below ``length`` (None when none does). ``session``: an
    onnxruntime session on ``path`` already open."""
    import onnxruntime as ort

    from edgekd.ort_options import session_options

    if session is None:
        try:
            session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types for a graph it cannot load
            return None
    limits = token_id_limits(path)
    if _runs(session, length, limits):
        return None
    runs, fails = 0, length
    while fails - runs > 1:
        middle = (runs + fails) // 2
        runs, fails = (middle, fails) if _runs(session, middle, limits) else (runs, middle)
    return runs or None


def too_long_message(longest: int, length: int) -> str:
    """What a graph taking at most ``longest`` tokens is told when the device feeds rows of ``length``."""
    return (f"it takes at most {longest} tokens (a position table or a length fixed when it was traced), but the "
            f"device profile feeds inputs.sequence_length {length}; time it under a device profile of at most "
            f"{longest} tokens, or export it with a longer position table")


def _runs(session: Any, length: int, limits: dict[str, int]) -> bool:
    """Whether ``session`` runs on one row of ``length`` tokens, fed as the profiler feeds it (token ids below
    ``limits``)."""
    import onnxruntime as ort

    from edgekd.ort_options import QUIET

    quiet = ort.RunOptions()
    quiet.log_severity_level = QUIET  # a failure is the answer here, not an error to log
    try:
        session.run(None, make_feeds(session, InputShape(batch=1, sequence_length=length), limits=limits), quiet)
    except Exception:  # noqa: BLE001 - onnxruntime raises its own types for inputs a graph cannot take
        return False
    return True
