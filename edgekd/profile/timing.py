"""Timing an ONNX model on this machine in a fresh worker process: raw latencies, peak memory, size.

Every measurement runs in a child process (:mod:`edgekd.profile.worker`) so that the memory figure
belongs to the model alone and nothing the parent process has loaded (torch, a previous session, the
Python heap of a training run) disturbs the timings. :mod:`edgekd.profile.runner` turns these host
timings into a device's figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config.device import InputShape
from edgekd.console import printable
from edgekd.errors import ModelError
from edgekd.model_file import external_data_locations, read_model
from edgekd.profile.inputs import token_id_limits

MIB = 1024 * 1024
#: How the worker's message begins when onnxruntime loaded the graph but failed to run it on the feeds.
RUN_FAILED = "onnxruntime failed to run it"


@dataclass(frozen=True)
class HostTiming:
    """Raw timings of one model on this machine, as the worker measured them."""

    times_ms: tuple[float, ...]
    input_shapes: dict[str, list[int]]
    peak_memory_mb: float
    size_mb: float
    threads: int
    onnxruntime: str
    sequence_length: int | None = None
    """The tokens per row a text graph was fed (:func:`edgekd.profile.inputs.fed_length`); None without token ids."""

    @property
    def p50_ms(self) -> float:
        """Median latency of the timed runs."""
        return float(np.percentile(self.times_ms, 50))


def time_onnx(
    onnx_path: str | Path,
    shape: InputShape,
    *,
    threads: int,
    warmup: int,
    runs: int,
    show_progress: bool = False,
    seed: int = 0,
) -> HostTiming:
    """Time ``onnx_path`` in a fresh worker process with ``threads`` intra-op threads.

    The file is checked and sized first (see :func:`model_size_mb`); errors from onnxruntime in the
    worker come back as a one-line :class:`ModelError` naming the path.
    """
    path = Path(onnx_path)
    size_mb = model_size_mb(path)
    request = {
        "model": str(path.resolve()), "threads": threads, "warmup": warmup, "runs": runs,
        "seed": seed, "progress": show_progress, "shape": shape.model_dump(),
        "token_id_limits": token_id_limits(path),
    }
    result = _run_worker(request, label=path.name, show_progress=show_progress)
    if result.get("event") == "error":
        raise ModelError(f"{path}: {_diagnosed(path, shape, result['message'])}")
    return HostTiming(
        times_ms=tuple(result["times_ms"]),
        input_shapes={k: list(v) for k, v in result["input_shapes"].items()},
        peak_memory_mb=float(result["peak_memory_mb"]),
        size_mb=size_mb,
        threads=threads,
        onnxruntime=str(result["onnxruntime"]),
        sequence_length=result.get("sequence_length"),
    )


def _diagnosed(path: Path, shape: Any, message: str) -> str:
    """The worker's failure, or what caused it when the graph runs on shorter rows than the device's
    ``sequence_length`` (onnxruntime's own message names a kernel's broadcast or gather, not the length)."""
    from edgekd.profile.positions import longest_run, too_long_message

    length = getattr(shape, "sequence_length", None)
    if not message.startswith(RUN_FAILED) or not length:
        return message
    longest = longest_run(path, length)
    return too_long_message(longest, length) if longest is not None else message


def model_size_mb(path: Path) -> float:
    """Size of an ONNX or ORT format model in MiB (the file plus any external-data files), after checking it.

    The format is told by extension and content (:func:`edgekd.model_file.read_model`); an ONNX
    file is read without its external weights, so this is cheap. A missing file, a ``.ort`` file
    without the ORT identifier, a file protobuf cannot parse or one without a graph is a
    :class:`ModelError`.
    """
    model = read_model(path)
    if model is None:  # ORT format: one flatbuffer, weights inside
        return path.stat().st_size / MIB
    total = path.stat().st_size
    for location in external_data_locations(model):  # read_model: each file is there
        total += (path.parent / location).stat().st_size
    return total / MIB


def _run_worker(request: dict[str, Any], *, label: str, show_progress: bool) -> dict[str, Any]:
    """Start the worker, feed it ``request``, follow its progress lines, return its last event."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[2])  # the directory holding edgekd/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edgekd.profile.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request))
            proc.stdin.close()
            last = _follow(proc.stdout, label, request["warmup"] + request["runs"], show_progress)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): the worker must not outlive its parent
            proc.kill()
            proc.wait()
            raise
        code = proc.wait()
        if last is None or last.get("event") == "progress":
            stderr.seek(0)
            lines = [line for line in stderr.read().splitlines() if line.strip()]
            tail = lines[-1].strip() if lines else "no output"
            raise ModelError(f"{request['model']}: profiling worker exited with code {code} ({tail})")
    return last


def _follow(stdout: Any, label: str, total: int, show_progress: bool) -> dict[str, Any] | None:
    """Read the worker's JSON lines, updating a rich progress bar; return the last event."""
    last: dict[str, Any] | None = None
    if not show_progress:
        for line in stdout:
            last = json.loads(line)
        return last
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("profiling {task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(printable(label), total=total)
        for line in stdout:
            last = json.loads(line)
            if last.get("event") == "progress":
                progress.update(task, completed=last["done"])
    return last
