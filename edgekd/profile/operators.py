"""Where the time goes inside a model: onnxruntime's own profiler, aggregated by operator type.

The session is set up like the timing worker's (the device profile's threads, one inter-op
thread, sequential execution, onnxruntime's default graph optimizations), so the operators are
the ones that were timed, after onnxruntime's fusions. ``SessionOptions.enable_profiling``
records every kernel's duration; the events of the warm-up runs are dropped.

The times are this machine's (never scaled by a speed ratio): their shares are what carries
over to a device.
"""

from __future__ import annotations

import bisect
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekd.config.device import DeviceProfile
from edgekd.errors import ModelError, first_line
from edgekd.model_file import load_as_ort_if_needed
from edgekd.ort_options import session_options
from edgekd.profile.cpu import host_threads, resolve_threads
from edgekd.profile.inputs import make_feeds, token_id_limits
from edgekd.stage_record import FullRecord

KERNEL_SUFFIX = "_kernel_time"


class OperatorTime(FullRecord):
    """One operator type's share of a run: median host milliseconds per run, nodes, share of kernel time (what
    a profile stage records per model and report.json repeats as ``operators``)."""

    op_type: str
    nodes: int
    ms_per_run: float
    share: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return self.model_dump()


def profile_operators(onnx_path: str | Path, device: DeviceProfile, *, warmup: int = 5,
                      runs: int = 50) -> list[OperatorTime]:
    """Kernel time per operator type of ``onnx_path`` under ``device``, largest first.

    Raises :class:`ModelError` (one line, naming the file) when onnxruntime cannot load or run it.
    """
    path = Path(onnx_path)
    with tempfile.TemporaryDirectory(prefix="edgekd-ort-profile-") as tmp:
        options = session_options(host_threads(resolve_threads(device)), sequential=True)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "ort")
        try:
            session = ort.InferenceSession(str(path), load_as_ort_if_needed(path, options),
                                           providers=["CPUExecutionProvider"])
            feeds = make_feeds(session, device.inputs, limits=token_id_limits(path))
            for _ in range(warmup + runs):
                session.run(None, feeds)
        except ModelError:
            raise
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ModelError(f"{path}: onnxruntime cannot profile it: {first_line(exc)}") from None
        events = json.loads(Path(session.end_profiling()).read_text())
    return aggregate_kernel_times(events, warmup=warmup)


def aggregate_kernel_times(events: list[dict[str, Any]], *, warmup: int) -> list[OperatorTime]:
    """Kernel time by operator type from an onnxruntime profile, skipping the first ``warmup`` runs.

    Each operator type's time is the median over the timed runs of its summed kernel time in a
    run, so that a run disturbed by the machine does not distort the breakdown.
    """
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    timed = len(starts) - warmup
    if timed <= 0:
        return []
    per_run: dict[str, np.ndarray] = {}
    nodes: dict[str, set[str]] = {}
    for event in events:
        run = bisect.bisect_right(starts, event["ts"]) - 1 - warmup
        if event.get("cat") != "Node" or not event["name"].endswith(KERNEL_SUFFIX) or run < 0:
            continue
        op_type = event.get("args", {}).get("op_name", "?")
        per_run.setdefault(op_type, np.zeros(timed))[run] += float(event["dur"])
        nodes.setdefault(op_type, set()).add(event["name"].removesuffix(KERNEL_SUFFIX))
    medians = {op: float(np.median(times)) for op, times in per_run.items()}
    overall = sum(medians.values()) or 1.0
    ranked = sorted(medians.items(), key=lambda item: (-item[1], item[0]))
    return [OperatorTime(op_type=op, nodes=len(nodes[op]), ms_per_run=median / 1000.0, share=median / overall)
            for op, median in ranked]
