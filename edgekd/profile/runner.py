"""Profiling an ONNX model under a device profile: percentiles, peak memory, size.

The model is timed on this machine in a fresh worker process (:mod:`edgekd.profile.timing`).

For a device edgekd cannot run on (one with a ``reference`` figure), the model is timed on this
machine and the latencies are multiplied by the host→device speed ratio measured on the
reference model (:mod:`edgekd.profile.speed_ratio`); the result is then marked as an estimate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from edgekd.config.device import DeviceProfile
from edgekd.profile.cpu import CpuInfo, detect_cpu, host_threads, resolve_threads
from edgekd.profile.speed_ratio import speed_ratio
from edgekd.profile.timing import HostTiming, time_onnx
from edgekd.stage_record import FullRecord


class ProfileResult(FullRecord):
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
    sequence_length: int | None = Field(
        default=None, description="The tokens per row a text model was timed at: the length of its token inputs "
        "(edgekd.profile.inputs.length_axes), the device's sequence_length unless its graph fixes another; null "
        "for a model without token ids, and in records written before it was recorded.")
    cpu: CpuInfo
    runs: int
    warmup: int
    onnxruntime: str
    times_ms: tuple[float, ...] = Field(
        default=(), description="Every timed run's latency on the device (host time × speed_ratio for an estimate), "
                                "in run order.")
    session_p50_ms: tuple[float, ...] = Field(
        default=(), description="The median latency on the device of each timing session, in order (one per "
                                "interleaved round).")
    speed_ratio_range: tuple[float, float] | None = Field(
        default=None, description="For an estimate: the speed ratio from the slowest and the fastest round of its "
                                  "reference timing.")
    speed_ratio_spread: float | None = Field(
        default=None, description="For an estimate: how much the reference's rounds varied, (slowest − fastest) ÷ "
                                  "median.")


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
        sequence_length=timing.sequence_length,
        cpu=detect_cpu(),
        runs=len(host),
        warmup=warmup,
        onnxruntime=timing.onnxruntime,
        times_ms=tuple(float(t) * factor for t in host),
        session_p50_ms=tuple(t.p50_ms * factor for t in timings),
        speed_ratio_range=(measured.ratio_low, measured.ratio_high) if measured is not None else None,
        speed_ratio_spread=measured.spread if measured is not None else None,
    )









