"""Which candidate to keep, from measurements taken in one run, and one sentence saying why.

A candidate other than ``fp32`` is *eligible* when it passes the gates on the validation split: the
tolerance on the task's primary metric and the agreement with FP32 (:mod:`edgekd.quantize.quality`).
The fastest eligible candidate whose speed-up over FP32
(paired over the interleaved timing rounds) is at least ``min_speedup`` over its whole confidence
interval is kept: a point estimate above it whose interval is not says the rounds could not tell.
Failing that, when FP32 exceeds the device's size budget, the fastest eligible candidate that fits
is kept. Otherwise FP32 is kept, and the reason names the fastest lower-precision candidate and
what it lacked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgekd.profile.bench import Speedup
from edgekd.quantize.quality import agreement_text, change_text, loss_text, worse_by
from edgekd.quantize.variants import Variant


@dataclass(frozen=True)
class Decision:
    """The kept candidate's name and why it was kept."""

    kept: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field."""
        return asdict(self)


def decide(variants: Sequence[Variant], *, eligible: Callable[[Variant], bool], min_speedup: float,
           size_budget_mb: float, cpu_label: str, tolerance: float, agreement: float | None = None) -> Decision:
    """Choose among timed ``variants`` (one named ``fp32``); see the module docstring. ``agreement`` is the
    agreement gate, named when a variant falls short of it."""
    fp32 = next(v for v in variants if v.name == "fp32")
    others = sorted((v for v in variants if v.name != "fp32"), key=lambda v: _p50(v))
    ok = [v for v in others if eligible(v)]
    on_cpu = f"on this CPU ({cpu_label})"

    def quality_change(v: Variant) -> str:
        return change_text(v.metric, fp32.val_score, v.val_score)

    fast = [v for v in ok if _speedup(v).clears(min_speedup)]
    if fast:
        kept = fast[0]
        return Decision(kept.name, f"{kept.name} kept: {_speedup(kept).text()} faster than fp32 {on_cpu}, "
                                   f"{quality_change(kept)}")
    fits = [v for v in ok if _size(v) <= size_budget_mb]
    if _size(fp32) > size_budget_mb and fits:
        kept = fits[0]
        return Decision(kept.name, f"{kept.name} kept: {_size(kept):.3g} MB fits the {size_budget_mb:g} MB size "
                                   f"budget, which fp32 ({_size(fp32):.3g} MB) exceeds; "
                                   f"{_speedup(kept).ratio:.2f}× fp32 speed {on_cpu}, {quality_change(kept)}")
    if not others:
        return Decision("fp32", "fp32 kept: no other variant was tried")
    reduced = [v for v in others if v.precision != "fp32"]
    best = (reduced or others)[0]  # the fastest lower-precision variant: what the reader asks about
    speed = _speedup(best).ratio
    if eligible(best):
        if speed >= min_speedup:
            why = (f"{best.name} is {_speedup(best).text()} faster {on_cpu}, but its interval does not clear the "
                   f"{min_speedup:g}× needed: the timing rounds cannot tell it apart (more rounds narrow it)")
        else:
            pace = f"only {speed:.2f}× faster" if speed >= 1 else f"slower ({speed:.2f}× fp32's speed)"
            why = f"{best.name} is {pace} {on_cpu}; keeping it needs {min_speedup:g}×"
    elif not worse_by(best.metric, fp32.val_score, best.val_score) <= tolerance:
        excluded = f" with {len(best.excluded_nodes)} node(s) excluded" if best.excluded_nodes else ""
        why = (f"{best.name} ({speed:.2f}× fp32's speed) "
               f"{loss_text(best.metric, fp32.val_score, best.val_score, tolerance)}{excluded}")
    else:
        why = f"{best.name} ({speed:.2f}× fp32's speed) {agreement_text(best.metric, best.val_agreement, agreement)}"
    return Decision("fp32", f"fp32 kept: {why}")


def _p50(variant: Variant) -> float:
    if variant.p50_ms is None:
        raise ValueError(f"variant {variant.name} has not been timed")
    return variant.p50_ms


def _size(variant: Variant) -> float:
    return variant.size_mb if variant.size_mb is not None else float("inf")


def _speedup(variant: Variant) -> Speedup:
    if variant.speedup is None:
        raise ValueError(f"variant {variant.name} has not been timed")
    return variant.speedup
