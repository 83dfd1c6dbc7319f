"""The hybrid schedule's last step, sized to land on its parameter or MAC target rather than past it.

LadaBERT-style steps each prune a fixed share (``prune.ratio``) and factorize; the step that crosses a
``target_macs_ratio`` of 0.2 may end at 0.14, paying accuracy for compression nobody asked for. Before each
step, :func:`landing_ratio` tries the full share on a copy of the model (prune, factorize, count): when that
passes the size targets, it bisects the share on further copies for the least one that still meets them. No
training happens on the copies, so a trial costs a prune, the SVDs and a count of the MACs: a classifier's on its
ONNX graph, as its steps are counted (:func:`edgekd.prune.measure.count_macs`: an export, about 5 s for a
6-layer × 384 BERT at 128 tokens), a causal LM's by PyTorch's FLOP counter.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

from edgekd.log_level import raised_level
from edgekd.prune.config import HybridStage

#: Bisection rounds on the share: the last step's share is found within ``ratio / 2**LANDING_ROUNDS``.
LANDING_ROUNDS = 6


class Size(NamedTuple):
    """A model's parameters and MACs (one forward pass at the stage's measuring shape)."""

    params: int
    macs: int


class CompressionJob(Protocol):
    """What a compression stage's job offers the landing search (both the classifier's and the causal LM's)."""

    model: Any

    def prune(self, ratio: float) -> None: ...

    def factorize(self) -> object: ...

    def size(self) -> Size: ...


def landing_ratio(job: CompressionJob, config: HybridStage, base: Size) -> float:
    """The prune share of the next hybrid step: ``config.prune.ratio``, or, when a step with it would pass the
    parameter and MAC targets, the least share that still meets them (a latency target keeps the configured
    share: meeting it needs timing, not counting)."""
    full = config.prune.ratio
    if config.target_latency_ms is not None or not sizes_met(config, base, _trial(job, full)):
        return full
    low, high = 0.0, full
    for _ in range(LANDING_ROUNDS):
        middle = (low + high) / 2
        if sizes_met(config, base, _trial(job, middle)):
            high = middle
        else:
            low = middle
    return high


def sizes_met(config: HybridStage, base: Size, now: Size) -> bool:
    """Whether ``now`` meets every parameter and MAC target of ``config`` relative to ``base``."""
    checks = []
    if config.target_params_ratio is not None:
        checks.append(now.params <= config.target_params_ratio * base.params)
    if config.target_macs_ratio is not None:
        checks.append(now.macs <= config.target_macs_ratio * base.macs)
    return all(checks)


def _trial(job: CompressionJob, ratio: float) -> Size:
    """The size a step pruning ``ratio`` and factorizing would leave, found on a copy of the job's model; quiet up to
    its warnings, which the step itself gives again (once, not once a trial)."""
    with _on_copy(job), raised_level("edgekd.prune", logging.ERROR):
        job.prune(ratio)
        job.factorize()
        return job.size()


@contextmanager
def _on_copy(job: CompressionJob) -> Iterator[None]:
    """The job works on a deep copy of its model meanwhile; its own model is untouched."""
    kept = job.model
    job.model = copy.deepcopy(kept)
    try:
        yield
    finally:
        job.model = kept
