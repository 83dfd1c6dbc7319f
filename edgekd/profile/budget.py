"""Judging a profile against a device budget: p90 latency (a causal LM's per token), model size and peak memory."""

from __future__ import annotations

from edgekd.config.device import Budget, DeviceProfile
from edgekd.profile.runner import ProfileResult
from edgekd.profile.verdict_record import BudgetCheck, BudgetVerdict

#: The model whose figures are judged against the device budget.
JUDGED_ROLE = "student"


def judged_role(roles: list[str]) -> str:
    """The model judged against the budget (the final model of a run): the student, else the last one."""
    return JUDGED_ROLE if JUDGED_ROLE in roles else roles[-1]


def judge(result: ProfileResult, budget: Budget) -> BudgetVerdict:
    """Compare ``result`` with ``budget``; a value equal to its limit passes."""
    return verdict_of([
        ("p90_latency", result.p90_ms, budget.p90_ms, "ms"),
        ("model_size", result.size_mb, budget.size_mb, "MB"),
        ("peak_memory", result.peak_memory_mb, budget.peak_memory_mb, "MB"),
    ], budget, estimate=result.estimate)


def verdict_of(measured: list[tuple[str, float, float, str]], budget: Budget, *, estimate: bool) -> BudgetVerdict:
    """The verdict on ``(check name, value, limit, unit)`` figures: ``pass`` when each is within its limit."""
    checks = [BudgetCheck(name=name, value=round(value, 4), limit=limit, unit=unit, passed=value <= limit)
              for name, value, limit, unit in measured]
    return BudgetVerdict(verdict="pass" if all(c.passed for c in checks) else "fail", checks=checks, limits=budget,
                         estimate=estimate)


def judge_generation(figures: dict[str, float], device: DeviceProfile) -> BudgetVerdict:
    """The budget verdict of a causal LM: per-token p90 latency (against ``ms_per_token``, else ``p90_ms``),
    model size and peak memory."""
    budget = device.budget
    limit = budget.ms_per_token if budget.ms_per_token is not None else budget.p90_ms
    return verdict_of([("per_token_p90_latency", figures["per_token_p90_ms"], limit, "ms"),
                       ("model_size", figures["size_mb"], budget.size_mb, "MB"),
                       ("peak_memory", figures["peak_memory_mb"], budget.peak_memory_mb, "MB")],
                      budget, estimate=device.reference is not None)
