"""Choosing among trained candidates by their real exports: measure, pick the most accurate within budget, confirm.

Every trained variant's ONNX file is timed under the device profile in one interleaved run (the
table's timing settings) and judged against the whole budget (p90, size, peak memory, without the
table's margin). The passing variant with the best validation figure of the task's primary metric
(:data:`edgekd.task_heads.PRIMARY_METRIC`: accuracy, micro-F1, MSE (lowest best), token accuracy; the test
split is only reported; ties go to the faster one) is profiled once more on its own (``confirm_runs``); if that
re-measurement misses the budget, the next one is tried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.profile.bench import benchmark
from edgekd.profile.budget import BudgetVerdict, judge
from edgekd.profile.runner import ProfileResult, profile_onnx
from edgekd.search.config import SearchStage
from edgekd.search.train import Variant
from edgekd.task_heads import LOWER_IS_BETTER


@dataclass(frozen=True)
class Measured:
    """A trained variant with its real export's figures and budget verdict."""

    variant: Variant
    result: ProfileResult
    verdict: BudgetVerdict

    @property
    def metric(self) -> str:
        """The task's primary metric the choice is made on (``accuracy`` for single-label classifiers)."""
        return self.variant.model.metrics.primary_metric or "accuracy"

    @property
    def val_score(self) -> float | None:
        """The primary metric on the validation split (what the choice is made on)."""
        value = self.variant.model.metrics.get(f"val_{self.metric}")
        return None if value is None else float(value)

    @property
    def rank(self) -> float:
        """:attr:`val_score` as a higher-is-better figure (negated for MSE; a missing one ranks last)."""
        if self.val_score is None:
            return float("-inf")
        return -self.val_score if self.metric in LOWER_IS_BETTER else self.val_score

    def to_json(self) -> dict[str, Any]:
        """The variant's label, files, accuracies, measured figures and verdict."""
        metrics = self.variant.model.metrics
        return {
            "structure": self.variant.choice.structure.key, "label": self.variant.label,
            "precision": self.variant.precision, "onnx": self.variant.model.onnx,
            "metric": self.metric, "score": metrics.get(self.metric), "val_score": self.val_score,
            "accuracy": metrics.accuracy, "val_accuracy": metrics.val_accuracy,
            "params": metrics.params, "p50_ms": self.result.p50_ms, "p90_ms": self.result.p90_ms,
            "table_p90_ms": self.variant.table_p90_ms, "size_mb": self.result.size_mb,
            "peak_memory_mb": self.result.peak_memory_mb, "estimate": self.result.estimate,
            "verdict": self.verdict.verdict,
        }


@dataclass(frozen=True)
class Confirmation:
    """The re-profile of a variant picked as the most accurate within budget."""

    measured: Measured
    result: ProfileResult
    verdict: BudgetVerdict

    def to_json(self) -> dict[str, Any]:
        """Which variant, its re-measured figures and whether they are within budget."""
        return {"label": self.measured.variant.label, "p50_ms": self.result.p50_ms, "p90_ms": self.result.p90_ms,
                "size_mb": self.result.size_mb, "peak_memory_mb": self.result.peak_memory_mb,
                "runs": self.result.runs, "verdict": self.verdict.verdict}


def measure(variants: Sequence[Variant], device: DeviceProfile, stage: SearchStage,
            path: Callable[[str], Path]) -> list[Measured]:
    """Time every variant's ONNX file (``path`` turns its reference into a file) and judge it against the budget."""
    timing = stage.table
    results = benchmark([path(str(v.model.onnx)) for v in variants], device, warmup=timing.warmup, runs=timing.runs,
                        rounds=timing.rounds)
    return [Measured(v, r, judge(r, device.budget)) for v, r in zip(variants, results, strict=True)]


def choose(measured: Sequence[Measured], device: DeviceProfile, stage: SearchStage,
           path: Callable[[str], Path]) -> tuple[Confirmation | None, list[Confirmation]]:
    """The confirmed best variant within budget by the task's metric (or None) and every confirmation attempted."""
    passing = sorted((m for m in measured if m.verdict.passed), key=lambda m: (-m.rank, m.result.p90_ms))
    attempts = []
    for candidate in passing:
        result = profile_onnx(path(str(candidate.variant.model.onnx)), device, warmup=stage.table.warmup,
                              runs=stage.confirm_runs)
        attempt = Confirmation(candidate, result, judge(result, device.budget))
        attempts.append(attempt)
        if attempt.verdict.passed:
            return attempt, attempts
    return None, attempts
