"""Side-by-side timing of several ONNX models, interleaved so that a noisy machine treats them alike.

The timed runs of each model are split over ``rounds`` sessions. Round by round every model gets
one session (a fresh worker process, see :mod:`edgekd.profile.runner`), in forward order in even
rounds and backward order in odd ones (A B, B A, A B, ...), so that a slow spell of the machine
(another process, thermal throttling, frequency scaling) falls on every model, not on whichever
was timed last. Each model's runs are then pooled into one :class:`ProfileResult`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.errors import ModelError
from edgekd.profile.budget import judge
from edgekd.profile.cpu import host_threads, resolve_threads
from edgekd.profile.macs import count_macs
from edgekd.profile.operators import profile_operators
from edgekd.profile.runner import HostTiming, ProfileResult, summarize_timings, time_onnx


def benchmark(
    paths: list[Path],
    device: DeviceProfile,
    *,
    warmup: int = 20,
    runs: int = 200,
    rounds: int = 4,
) -> list[ProfileResult]:
    """Profile every model of ``paths`` under ``device`` with interleaved sessions; results in input order.

    Each model gets ``rounds`` sessions of ``warmup`` untimed and ``ceil(runs / rounds)`` timed
    runs. Raises :class:`ModelError` (naming the file) for a model onnxruntime cannot run.
    """
    if runs < 1 or warmup < 0 or rounds < 1:
        raise ValueError(f"need runs >= 1, warmup >= 0 and rounds >= 1, got {runs}, {warmup}, {rounds}")
    repeated = next((path for path in paths if paths.count(path) > 1), None)
    if repeated is not None:
        raise ModelError(f"{repeated}: given more than once; list each model once")
    threads = host_threads(resolve_threads(device))
    per_round = math.ceil(runs / rounds)
    timings: dict[Path, list[HostTiming]] = {path: [] for path in paths}
    for round_index in range(rounds):
        order = paths if round_index % 2 == 0 else paths[::-1]
        for path in order:
            timings[path].append(time_onnx(path, device.inputs, threads=threads, warmup=warmup, runs=per_round))
    return [summarize_timings(path, device, timings[path], warmup=warmup) for path in paths]


def bench_models(paths: list[Path], device: DeviceProfile, *, warmup: int = 20, runs: int = 200,
                 rounds: int = 4) -> list[dict[str, Any]]:
    """Per model of ``paths``: its :func:`benchmark` figures, budget verdict, MACs, parameters and operators."""
    results = benchmark(paths, device, warmup=warmup, runs=runs, rounds=rounds)
    return [{**result.to_json(), **count_macs(path, device.inputs).to_json(),
             "budget": judge(result, device.budget).to_json(),
             "operators": [op.to_json() for op in profile_operators(path, device)]}
            for path, result in zip(paths, results, strict=True)]
