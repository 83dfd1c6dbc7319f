"""Whether a latency measurement can be trusted: timings whose shape says other work got in the way.

A model's runs on a quiet CPU cluster tightly around their median. A few runs far slower than the rest
(another process took the core, the machine swapped) pull the mean above the median and stretch the tail;
such figures are flagged rather than silently reported. Thresholds: the mean more than
:data:`MEAN_OVER_MEDIAN` × the median, or p99 more than :data:`P99_OVER_P50` × p50.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MEAN_OVER_MEDIAN = 2.0
P99_OVER_P50 = 5.0


def unstable_reasons(figures: Mapping[str, Any]) -> list[str]:
    """Why the latencies in ``figures`` (``p50_ms``, ``mean_ms``, ``p99_ms``) look disturbed; empty if they do not."""
    p50, mean, p99 = (figures.get(key) for key in ("p50_ms", "mean_ms", "p99_ms"))
    if not isinstance(p50, (int, float)) or p50 <= 0:
        return []
    reasons = []
    if isinstance(mean, (int, float)) and mean > MEAN_OVER_MEDIAN * p50:
        reasons.append(f"mean {mean:.4g} ms is {mean / p50:.1f}× the median {p50:.4g} ms")
    if isinstance(p99, (int, float)) and p99 > P99_OVER_P50 * p50:
        reasons.append(f"p99 is {p99 / p50:.1f}× p50")
    return reasons


def stability_warning(name: str, figures: Mapping[str, Any]) -> str | None:
    """One sentence flagging ``name``'s unstable timing, or None when it looks steady."""
    reasons = unstable_reasons(figures)
    if not reasons:
        return None
    return (f"Unstable timing of {name}: {'; '.join(reasons)}. A few runs were much slower than the rest, "
            "probably because other processes used the CPU; measure again on a quieter machine or with more "
            "runs/rounds before trusting its mean, p90 or p99.")
