"""Timing an ONNX model with onnxruntime under a device profile: percentiles, peak memory, size.

Every measurement runs in a fresh child process (:mod:`edgekd.profile.worker`) so that the
memory figure belongs to the model alone and nothing the parent process has loaded (torch, a
previous session, the Python heap of a training run) disturbs the timings.

For a device edgekd cannot run on (one with a ``reference`` figure), the model is timed on this
machine and the latencies are multiplied by the host→device speed ratio measured on the
reference model (:mod:`edgekd.profile.speed_ratio`); the result is then marked as an estimate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config.device import DeviceProfile, InputShape
from edgekd.console import printable
from edgekd.errors import ModelError
from edgekd.profile.cpu import detect_cpu, host_threads, resolve_threads
from edgekd.profile.inputs import first_line

MIB = 1024 * 1024


@dataclass(frozen=True)
class HostTiming:
    """Raw timings of one model on this machine, as the worker measured them."""

    times_ms: tuple[float, ...]
    input_shapes: dict[str, list[int]]
    peak_memory_mb: float
    size_mb: float
    threads: int
    onnxruntime: str

    @property
    def p50_ms(self) -> float:
        """Median latency of the timed runs."""
        return float(np.percentile(self.times_ms, 50))


@dataclass(frozen=True)
class ProfileResult:
    """Latency, memory and size of one model on one device.

    ``p50_ms`` … ``min_ms`` are on the device: measured here for a host profile, or the host
    figures × ``speed_ratio`` when ``estimate`` is true (the host figures stay in ``host_*``).
    ``peak_memory_mb`` is the peak resident memory the model adds to a fresh process (MiB);
    ``size_mb`` is the model file plus any external-data files (MiB).
    """

    model: str
    device: str
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    min_ms: float
    peak_memory_mb: float
    size_mb: float
    threads: int
    estimate: bool
    speed_ratio: float | None
    reference: str | None
    reference_source: str | None
    host_p50_ms: float
    host_p90_ms: float
    input_shapes: dict[str, list[int]]
    cpu: dict[str, Any]
    runs: int
    warmup: int
    onnxruntime: str
    times_ms: tuple[float, ...] = ()
    """Every timed run's latency on the device (host time × ``speed_ratio`` for an estimate), in run order."""
    session_p50_ms: tuple[float, ...] = ()
    """The median latency on the device of each timing session, in order (one per interleaved round)."""
    speed_ratio_range: tuple[float, float] | None = None
    """For an estimate: the speed ratio from the slowest and the fastest round of its reference timing."""
    speed_ratio_spread: float | None = None
    """For an estimate: how much the reference's rounds varied, (slowest − fastest) ÷ median."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


def profile_onnx(
    onnx_path: str | Path,
    device: DeviceProfile,
    *,
    warmup: int = 20,
    runs: int = 200,
    show_progress: bool = False,
) -> ProfileResult:
    """Profile ``onnx_path`` under ``device``: its threads, input shapes and speed ratio.

    The session uses the CPU execution provider with ``intra_op_num_threads`` = the profile's
    threads (``auto`` = physical cores; capped at this machine's cores), one inter-op thread and
    sequential execution. Each ``session.run`` is timed with ``time.perf_counter`` after
    ``warmup`` untimed runs.

    Peak memory is measured in the worker process: the kernel's peak resident set size
    (``VmHWM``) at the end of the timed runs minus the resident set size just before the
    session was created (after numpy and onnxruntime were imported). It therefore counts the
    loaded weights, onnxruntime's arenas and the activations of the largest run, and nothing
    the caller's process holds.

    Raises :class:`ModelError` (one line, naming the path) for a missing, corrupt or
    non-ONNX file or one onnxruntime cannot run.
    """
    path = Path(onnx_path)
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    threads = host_threads(resolve_threads(device))
    timing = time_onnx(path, device.inputs, threads=threads, warmup=warmup, runs=runs,
                       show_progress=show_progress)
    return summarize_timings(path, device, [timing], warmup=warmup)


def summarize_timings(path: Path, device: DeviceProfile, timings: list[HostTiming], *, warmup: int) -> ProfileResult:
    """The device figures of one model from one or more timing sessions of it on this machine.

    The runs of every session are pooled (sessions interleaved with other models' make a fair
    comparison on a noisy machine); peak memory is the largest of the sessions'.
    """
    timing = timings[0]
    host = np.concatenate([np.asarray(t.times_ms) for t in timings])
    measured = None
    if device.reference is not None:
        from edgekd.profile.speed_ratio import speed_ratio

        measured = speed_ratio(device.reference)
    ratio = measured.ratio if measured is not None else None
    factor = ratio if ratio is not None else 1.0
    return ProfileResult(
        model=str(path),
        device=device.name,
        p50_ms=float(np.percentile(host, 50)) * factor,
        p90_ms=float(np.percentile(host, 90)) * factor,
        p99_ms=float(np.percentile(host, 99)) * factor,
        mean_ms=float(host.mean()) * factor,
        min_ms=float(host.min()) * factor,
        peak_memory_mb=max(t.peak_memory_mb for t in timings),
        size_mb=timing.size_mb,
        threads=timing.threads,
        estimate=ratio is not None,
        speed_ratio=ratio,
        reference=device.reference.model if device.reference else None,
        reference_source=device.reference.source if device.reference else None,
        host_p50_ms=float(np.percentile(host, 50)),
        host_p90_ms=float(np.percentile(host, 90)),
        input_shapes=timing.input_shapes,
        cpu=detect_cpu().to_json(),
        runs=len(host),
        warmup=warmup,
        onnxruntime=timing.onnxruntime,
        times_ms=tuple(float(t) * factor for t in host),
        session_p50_ms=tuple(t.p50_ms * factor for t in timings),
        speed_ratio_range=(measured.ratio_low, measured.ratio_high) if measured is not None else None,
        speed_ratio_spread=measured.spread if measured is not None else None,
    )


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
    }
    result = _run_worker(request, label=path.name, show_progress=show_progress)
    if result.get("event") == "error":
        raise ModelError(f"{path}: {result['message']}")
    return HostTiming(
        times_ms=tuple(result["times_ms"]),
        input_shapes={k: list(v) for k, v in result["input_shapes"].items()},
        peak_memory_mb=float(result["peak_memory_mb"]),
        size_mb=size_mb,
        threads=threads,
        onnxruntime=str(result["onnxruntime"]),
    )


def model_size_mb(path: Path) -> float:
    """Size of an ONNX model in MiB (the file plus its external-data files), after checking it.

    Reads only the protobuf structure (no external weights), so it is cheap; a missing file,
    a file protobuf cannot parse or one without a graph is a :class:`ModelError`.
    """
    import onnx

    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    external = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    total = path.stat().st_size
    for location in sorted(external):
        data = path.parent / location
        if not data.is_file():
            raise ModelError(f"{path}: external data file '{location}' not found")
        total += data.stat().st_size
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

