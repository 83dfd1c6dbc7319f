"""The profiling worker: times one ONNX model in a fresh process and reports JSON lines on stdout.

Run as ``python -m edgekd.profile.worker`` with a JSON request on stdin::

    {"model": "m.onnx", "threads": 2, "warmup": 20, "runs": 200, "seed": 0, "progress": false,
     "shape": {"batch": 1, "sequence_length": 128, "image_size": null}, "token_id_limits": {"input_ids": 20}}

It prints ``{"event": "progress", "done": k, "total": n}`` lines when asked to, then exactly one
``{"event": "result", ...}`` or ``{"event": "error", "message": ...}`` line. ``token_id_limits``
(optional) keeps each token-id input below its embedding table's rows (the caller reads them from
the graph, :func:`edgekd.profile.inputs.token_id_limits`, so the worker never parses it). It needs only
numpy, onnxruntime and :mod:`edgekd.profile.inputs` (no torch); its memory baseline is taken
after every import, just before the session is created, so imports are never counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort

from edgekd.errors import ModelError, first_line
from edgekd.model_file import load_as_ort_if_needed
from edgekd.ort_options import QUIET, session_options
from edgekd.profile.inputs import fed_length, input_specs, make_feeds
from edgekd.profile.timing import RUN_FAILED


def memory_kb() -> tuple[int, int]:
    """(current resident set size, peak resident set size) of this process, in KiB."""
    status = Path("/proc/self/status")
    if status.is_file():
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])
    import resource

    import psutil

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = peak // 1024 if sys.platform == "darwin" else peak  # macOS reports bytes, Linux KiB
    return psutil.Process().memory_info().rss // 1024, peak


def reset_peak() -> None:
    """Reset the kernel's peak-RSS mark (Linux ≥ 4.0); elsewhere the peak keeps the import peak."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def profile(request: dict[str, Any], emit: Any) -> dict[str, Any]:
    """Create the session, warm up, time every run; return timings (ms) and memory (MiB)."""
    model = request["model"]
    reset_peak()
    baseline_kb, _ = memory_kb()
    options = session_options(int(request["threads"]), sequential=True)
    ort.set_default_logger_severity(QUIET)
    try:
        session = ort.InferenceSession(model, load_as_ort_if_needed(model, options), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        raise ModelError(f"onnxruntime cannot load it: {first_line(exc)}") from None
    limits = request.get("token_id_limits", {})
    feeds = make_feeds(session, SimpleNamespace(**request["shape"]), seed=int(request["seed"]), limits=limits)
    warmup, runs = int(request["warmup"]), int(request["runs"])
    total, every = warmup + runs, max(1, (warmup + runs) // 100)
    times: list[float] = []
    try:
        for i in range(total):
            start = time.perf_counter()
            session.run(None, feeds)
            elapsed = time.perf_counter() - start
            if i >= warmup:
                times.append(elapsed * 1000.0)
            if request.get("progress") and ((i + 1) % every == 0 or i + 1 == total):
                emit({"event": "progress", "done": i + 1, "total": total})
    except Exception as exc:
        raise ModelError(f"{RUN_FAILED}: {first_line(exc)}") from None
    _, peak_kb = memory_kb()
    return {
        "event": "result",
        "times_ms": times,
        "input_shapes": {name: list(array.shape) for name, array in feeds.items()},
        "sequence_length": fed_length(input_specs(session), feeds, limits),
        "peak_memory_mb": max(0, peak_kb - baseline_kb) / 1024.0,
        "baseline_memory_mb": baseline_kb / 1024.0,
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
    }


def main() -> int:
    """Read the request from stdin, profile, print the JSON lines; exit code 0 even on ModelError.

    The JSON lines go to the original stdout alone: file descriptor 1 is pointed at stderr first, so
    whatever a library prints (onnxruntime prints an "EP Error" banner for some broken models) never
    lands between them.
    """
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def emit(obj: dict[str, Any]) -> None:
        protocol.write(json.dumps(obj) + "\n")
        protocol.flush()

    request = json.loads(sys.stdin.read())
    try:
        emit(profile(request, emit))
    except ModelError as exc:
        emit({"event": "error", "message": str(exc)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
