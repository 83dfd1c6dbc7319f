"""Token-id ceilings of a graph whose embedding tables cannot be read: found by running it.

:func:`edgekd.profile.inputs.token_id_limits` reads each table's row count from an ONNX file. An ORT-format file
(``.ort``, what a bundle ships and what app developers bring) is a flatbuffer that onnx cannot parse and whose
initializers onnxruntime does not expose, so its tables are unknown and its ids would be drawn below
:data:`~edgekd.profile.inputs.TOKEN_ID_HIGH`. A graph of a smaller vocabulary (a DNA model of 8 symbols, a
character model of 30) then fails on ids its table lacks, which read as a failure of the file itself or of its
length. :func:`probed_id_limits` runs one short row of every id equal to a candidate ceiling, bisected, and
returns the highest that runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

#: The row length the probe runs (static dims of the graph take precedence).
PROBE_LENGTH = 8


def probed_id_limits(path: str | Path) -> dict[str, int]:
    """For each token-id input of the graph at ``path``: one more than the highest id it runs on, when that is
    below :data:`~edgekd.profile.inputs.TOKEN_ID_HIGH` (``{}`` when every id below it runs, when the file cannot
    be loaded, or when it fails on ids of 0 too: its own checks then say why). All id inputs share the ceiling."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return {}
    return dict(_probed(str(path.resolve()), stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=32)
def _probed(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, int], ...]:
    """:func:`probed_id_limits` of the file at ``path`` as it was at ``mtime_ns`` and ``size`` (a changed file is
    probed again)."""
    import onnxruntime as ort

    from edgekd.config.device import InputShape
    from edgekd.ort_options import QUIET, session_options
    from edgekd.profile.inputs import TOKEN_ID_HIGH, input_specs, spec_feeds, spec_role

    try:
        session = ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
        specs = input_specs(session)
        ids = [spec.name for spec in specs if spec_role(spec) == "ids"]
        base = spec_feeds(specs, InputShape(batch=1, sequence_length=PROBE_LENGTH)) if ids else {}
    except Exception:  # noqa: BLE001 - a file onnxruntime cannot load or feed: the caller's own checks say why
        return ()
    quiet = ort.RunOptions()
    quiet.log_severity_level = QUIET  # a failure is the answer here, not an error to log

    def runs(highest: int) -> bool:
        feeds: dict[str, Any] = {**base, **{name: np.full_like(base[name], highest) for name in ids}}
        try:
            session.run(None, feeds, quiet)
        except Exception:  # noqa: BLE001 - onnxruntime raises its own types for ids its tables lack
            return False
        return True

    if not ids or runs(TOKEN_ID_HIGH - 1) or not runs(0):
        return ()
    good, bad = 0, TOKEN_ID_HIGH - 1
    while bad - good > 1:
        middle = (good + bad) // 2
        good, bad = (middle, bad) if runs(middle) else (good, middle)
    return tuple((name, good + 1) for name in ids)
