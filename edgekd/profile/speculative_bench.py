"""Speculative decoding against the target alone: acceptance, speed-up and losslessness per drafting policy.

For each draft length ``gamma`` (fixed-length drafting, and optionally the adaptive policies of
:class:`~edgekd.profile.speculative.DraftPolicy` with that maximum: a confidence stop threshold, an
acceptance-driven length) every prompt is generated greedily by the target alone and speculatively with every
policy, back to back in an order rotated from prompt to prompt (interleaved in one run, so a slower stretch of
the machine costs all of them alike), ``repeats`` times. Tokens per second are end to end (prompt included,
the clock around each whole call) over every prompt and repeat; a policy's speed-up is its tokens per second
over the target's alone. The clock is the wall clock, or the calling thread's CPU time (``clock="thread"``: on
a shared machine the time other processes hold the core is not counted; onnxruntime with one intra-op thread
runs on the calling thread). Lossless means every speculative output equals the target's plain greedy output
for the same prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from edgekd.errors import ConfigError
from edgekd.profile.cpu import detect_cpu
from edgekd.profile.generate import CachedGenerator
from edgekd.profile.speculative import DraftPolicy, SpeculativeDecoder, SpeculativeResult

log = logging.getLogger(__name__)

DEFAULT_GAMMAS: tuple[int, ...] = tuple(range(1, 9))
"""Draft lengths measured by default (γ = 1…8)."""

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "thread": time.thread_time}
"""The clocks a measurement can time with: wall-clock time, or the calling thread's CPU time."""


def draft_policies(gammas: Sequence[int], stops: Sequence[float] = (), adaptive: bool = False) -> list[DraftPolicy]:
    """Per draft length: fixed-length drafting, then each stop threshold of ``stops``, then (``adaptive``) the
    acceptance-driven length alone and with each threshold. A draft length of 1 has only the fixed policy (one
    proposal a round whatever the policy)."""
    variants = [(0.0, False), *((stop, False) for stop in stops)]
    if adaptive:
        variants += [(0.0, True), *((stop, True) for stop in stops)]
    return [DraftPolicy(gamma, stop, adapt) for gamma in gammas for stop, adapt in (variants if gamma > 1
                                                                                     else variants[:1])]


def measure_speculative(draft: CachedGenerator, target: CachedGenerator, prompts: Sequence[Sequence[int]],
                        new_tokens: int, context: int, gammas: Sequence[int] = DEFAULT_GAMMAS,
                        repeats: int = 1, draft_stops: Sequence[float] = (), adaptive: bool = False,
                        clock: str = "wall") -> dict[str, Any]:
    """Acceptance rate, mean proposals per round, tokens per second vs the target alone and losslessness for
    each policy of :func:`draft_policies` (``gammas``, ``draft_stops``, ``adaptive``), timed with ``clock``
    (a key of :data:`CLOCKS`).

    ``context`` is the smaller of the two models' contexts. Every argument is checked before anything
    is timed (:class:`ConfigError` naming the first bad one). Returns a JSON-ready record: the CPU,
    threads, clock and sizes, one entry per policy (``gammas``: fixed-length ones have ``draft_stop`` 0 and
    ``adaptive`` false), and ``lossless`` over all of them.
    """
    decoder = SpeculativeDecoder(draft, target, context)
    if not prompts:
        raise ConfigError("speculative decoding: no prompts given; give at least one")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"speculative decoding: repeats must be an integer >= 1, got {repeats!r}")
    if not gammas:
        raise ConfigError("speculative decoding: no draft lengths (gammas) given")
    if clock not in CLOCKS:
        raise ConfigError(f"speculative decoding: clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    for stop in draft_stops:
        DraftPolicy(1, stop).check()
    policies = draft_policies(gammas, draft_stops, adaptive)
    for policy in policies:
        for prompt in prompts:
            decoder.check(prompt, new_tokens, policy)
    reference = [target.generate(list(prompt), new_tokens).tokens for prompt in prompts]  # also warms the target
    decoder.generate(prompts[0], new_tokens, policies[0])  # warms the draft
    entries = _measure_policies(decoder, prompts, reference, new_tokens, policies, repeats, CLOCKS[clock])
    return {
        "cpu": detect_cpu().to_json(),
        "threads": target.session.get_session_options().intra_op_num_threads,
        "clock": clock,
        "prompts": len(prompts),
        "prompt_tokens": [len(prompt) for prompt in prompts],
        "new_tokens": new_tokens,
        "repeats": repeats,
        "gammas": entries,
        "lossless": all(entry["lossless"] for entry in entries),
    }


def _measure_policies(decoder: SpeculativeDecoder, prompts: Sequence[Sequence[int]], reference: list[list[int]],
                      new_tokens: int, policies: list[DraftPolicy], repeats: int,
                      clock: Callable[[], float]) -> list[dict[str, Any]]:
    """Every policy's entry: the target alone and each policy interleaved prompt by prompt, the order rotated."""
    names: list[DraftPolicy | None] = [None, *policies]  # None: the target alone
    seconds = dict.fromkeys(names, 0.0)
    runs: dict[DraftPolicy, list[SpeculativeResult]] = {policy: [] for policy in policies}
    mismatched: dict[DraftPolicy, set[int]] = {policy: set() for policy in policies}
    for repeat in range(repeats):
        for index, prompt in enumerate(prompts):
            shift = (repeat * len(prompts) + index) % len(names)
            for name in names[shift:] + names[:shift]:
                start = clock()
                if name is None:
                    decoder.target.generate(list(prompt), new_tokens)
                else:
                    runs[name].append(decoder.generate(prompt, new_tokens, name))
                seconds[name] += clock() - start
                if name is not None and runs[name][-1].tokens != reference[index]:
                    mismatched[name].add(index)
    alone_tps = repeats * len(prompts) * new_tokens / seconds[None]
    return [_entry(policy, runs[policy], seconds[policy], alone_tps, mismatched[policy]) for policy in policies]


def _entry(policy: DraftPolicy, runs: list[SpeculativeResult], seconds: float, alone_tps: float,
           mismatched: set[int]) -> dict[str, Any]:
    """One policy's record from its runs and the time they took."""
    drafted, accepted = sum(r.drafted for r in runs), sum(r.accepted for r in runs)
    rounds, tokens = sum(r.rounds for r in runs), sum(len(r.tokens) for r in runs)
    speculative_tps = tokens / seconds
    entry = {
        "gamma": policy.gamma,
        "draft_stop": policy.stop,
        "adaptive": policy.adapt,
        "policy": policy.label(),
        "acceptance_rate": accepted / drafted if drafted else None,
        "drafted": drafted,
        "accepted": accepted,
        "rounds": rounds,
        "stopped_rounds": sum(r.stopped for r in runs),
        "proposals_per_round": drafted / rounds,
        "tokens_per_round": tokens / rounds,
        "speculative_tokens_per_second": speculative_tps,
        "target_tokens_per_second": alone_tps,
        "speedup": speculative_tps / alone_tps,
        "draft_seconds": sum(r.draft_seconds for r in runs),
        "target_seconds": sum(r.target_seconds for r in runs),
        "lossless": not mismatched,
        "mismatched_prompts": sorted(mismatched),
    }
    log.info("%s: acceptance %s, %.2f proposals a round, %.1f tokens/s vs %.1f alone (%.2fx), %s", policy.label(),
             "n/a" if entry["acceptance_rate"] is None else f"{entry['acceptance_rate']:.1%}",
             entry["proposals_per_round"], speculative_tps, alone_tps, entry["speedup"],
             "lossless" if not mismatched else f"MISMATCH on prompts {sorted(mismatched)}")
    return entry
