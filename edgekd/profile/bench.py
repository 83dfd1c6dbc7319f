"""Side-by-side timing of several ONNX models, interleaved so that a noisy machine treats them alike.

The timed runs of each model are split over ``rounds`` sessions. Round by round every model gets
one session (a fresh worker process, see :mod:`edgekd.profile.runner`), in forward order in even
rounds and backward order in odd ones (A B, B A, A B, ...), so that a slow spell of the machine
(another process, thermal throttling, frequency scaling) falls on every model, not on whichever
was timed last. Each model's runs are then pooled into one :class:`ProfileResult`.

A speed-up of one model over another (:func:`paired_speedup`) is paired by round: round by round
the two sessions ran next to each other, so each round gives one ratio of median latencies; the
figure is their geometric mean and its confidence interval comes from their spread (a change of
machine load between rounds widens the interval instead of posing as a speed-up).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.config.device import DeviceProfile
from edgekd.errors import ModelError
from edgekd.profile.budget import judge
from edgekd.profile.cpu import host_threads, resolve_threads
from edgekd.profile.macs import graph_figures
from edgekd.profile.operators import profile_operators
from edgekd.profile.runner import ProfileResult, summarize_timings
from edgekd.profile.timing import HostTiming, time_onnx
from edgekd.stage_record import FullRecord


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


#: Confidence level of the interval :func:`paired_speedup` gives.
CONFIDENCE = 0.95


class Speedup(FullRecord):
    """How many times faster one model ran than another, with the interval the interleaved rounds allow.

    ``low``/``high`` bound the ratio at ``confidence`` (Student's t over the rounds' log ratios); they
    are None with one round, which gives no spread.
    """

    ratio: float
    low: float | None
    high: float | None
    rounds: int
    confidence: float = CONFIDENCE

    def clears(self, threshold: float) -> bool:
        """Whether the whole interval is at or above ``threshold`` (never, without an interval)."""
        return self.low is not None and self.low >= threshold

    def text(self) -> str:
        """``1.72× (95% interval 1.68–1.76×, 4 rounds)``."""
        if self.low is None or self.high is None:
            return f"{self.ratio:.2f}× (1 round: no interval)"
        return (f"{self.ratio:.2f}× ({100 * self.confidence:g}% interval {self.low:.2f}–{self.high:.2f}×, "
                f"{self.rounds} rounds)")


def paired_speedup(before: ProfileResult, after: ProfileResult, confidence: float = CONFIDENCE) -> Speedup:
    """How many times faster ``after`` ran than ``before``, both timed in one :func:`benchmark` call."""
    if len(before.session_p50_ms) != len(after.session_p50_ms) or not before.session_p50_ms:
        raise ValueError(f"{before.model} and {after.model} were not timed in the same interleaved rounds")
    return paired_ratio(before.session_p50_ms, after.session_p50_ms, confidence)


def paired_ratio(before_ms: Sequence[float], after_ms: Sequence[float], confidence: float = CONFIDENCE) -> Speedup:
    """How many times faster ``after`` ran than ``before`` from their times in the same interleaved rounds
    (one figure each per round): the geometric mean of the per-round ratios, with its t interval."""
    logs = np.log(np.asarray(before_ms, dtype=np.float64) / np.asarray(after_ms, dtype=np.float64))
    rounds = len(logs)
    centre = float(logs.mean())
    if rounds < 2:
        return Speedup(ratio=math.exp(centre), low=None, high=None, rounds=rounds, confidence=confidence)
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, rounds - 1) * logs.std(ddof=1) / math.sqrt(rounds))
    return Speedup(ratio=math.exp(centre), low=math.exp(centre - half), high=math.exp(centre + half), rounds=rounds,
                   confidence=confidence)


def bench_models(paths: list[Path], device: DeviceProfile, *, warmup: int = 20, runs: int = 200,
                 rounds: int = 4) -> list[dict[str, Any]]:
    """Per model of ``paths``: its :func:`benchmark` figures, budget verdict, MACs, parameters and operators."""
    results = benchmark(paths, device, warmup=warmup, runs=runs, rounds=rounds)
    return [{**result.to_json(), **graph_figures(path, device.inputs),
             "budget": judge(result, device.budget).to_json(),
             "operators": [op.to_json() for op in profile_operators(path, device)]}
            for path, result in zip(paths, results, strict=True)]
