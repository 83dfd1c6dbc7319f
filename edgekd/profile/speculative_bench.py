"""Speculative decoding against the target alone: acceptance, speed-up and losslessness per draft length.

For each draft length ``gamma`` every prompt is generated greedily by the target alone and speculatively,
the two back to back in alternating order (interleaved in one run, so a slower stretch of the machine
costs both alike), ``repeats`` times. Tokens per second are end to end (prompt included, the wall clock
around each whole call) over every prompt and repeat; the speed-up is their ratio. Lossless means every
speculative output equals the target's plain greedy output for the same prompt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from edgekd.errors import ConfigError
from edgekd.profile.cpu import detect_cpu
from edgekd.profile.generate import CachedGenerator
from edgekd.profile.speculative import SpeculativeDecoder, SpeculativeResult

log = logging.getLogger(__name__)

DEFAULT_GAMMAS: tuple[int, ...] = tuple(range(1, 9))
"""Draft lengths measured by default (γ = 1…8)."""


def measure_speculative(draft: CachedGenerator, target: CachedGenerator, prompts: Sequence[Sequence[int]],
                        new_tokens: int, context: int, gammas: Sequence[int] = DEFAULT_GAMMAS,
                        repeats: int = 1) -> dict[str, Any]:
    """Acceptance rate, tokens per second vs the target alone and losslessness for each of ``gammas``.

    ``context`` is the smaller of the two models' contexts. Every argument is checked before anything
    is timed (:class:`ConfigError` naming the first bad one). Returns a JSON-ready record: the CPU,
    threads and sizes, one entry per gamma, and ``lossless`` over all of them.
    """
    decoder = SpeculativeDecoder(draft, target, context)
    if not prompts:
        raise ConfigError("speculative decoding: no prompts given; give at least one")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"speculative decoding: repeats must be an integer >= 1, got {repeats!r}")
    if not gammas:
        raise ConfigError("speculative decoding: no draft lengths (gammas) given")
    for gamma in gammas:
        for prompt in prompts:
            decoder.check(prompt, new_tokens, gamma)
    reference = [target.generate(list(prompt), new_tokens).tokens for prompt in prompts]  # also warms the target
    decoder.generate(prompts[0], new_tokens, gammas[0])  # warms the draft
    entries = [_measure_gamma(decoder, prompts, reference, new_tokens, gamma, repeats) for gamma in gammas]
    return {
        "cpu": detect_cpu().to_json(),
        "threads": target.session.get_session_options().intra_op_num_threads,
        "prompts": len(prompts),
        "prompt_tokens": [len(prompt) for prompt in prompts],
        "new_tokens": new_tokens,
        "repeats": repeats,
        "gammas": entries,
        "lossless": all(entry["lossless"] for entry in entries),
    }


def _measure_gamma(decoder: SpeculativeDecoder, prompts: Sequence[Sequence[int]], reference: list[list[int]],
                   new_tokens: int, gamma: int, repeats: int) -> dict[str, Any]:
    """One gamma's entry: the target alone and speculative decoding interleaved prompt by prompt."""
    seconds = {"alone": 0.0, "speculative": 0.0}
    runs: list[SpeculativeResult] = []
    mismatched: set[int] = set()
    for repeat in range(repeats):
        for index, prompt in enumerate(prompts):
            order = ("alone", "speculative") if (repeat + index) % 2 == 0 else ("speculative", "alone")
            for name in order:
                start = time.perf_counter()
                if name == "alone":
                    decoder.target.generate(list(prompt), new_tokens)
                else:
                    runs.append(decoder.generate(prompt, new_tokens, gamma))
                seconds[name] += time.perf_counter() - start
            if runs[-1].tokens != reference[index]:
                mismatched.add(index)
    drafted, accepted = sum(r.drafted for r in runs), sum(r.accepted for r in runs)
    rounds, tokens = sum(r.rounds for r in runs), sum(len(r.tokens) for r in runs)
    speculative_tps, alone_tps = tokens / seconds["speculative"], tokens / seconds["alone"]
    entry = {
        "gamma": gamma,
        "acceptance_rate": accepted / drafted if drafted else None,
        "drafted": drafted,
        "accepted": accepted,
        "rounds": rounds,
        "tokens_per_round": tokens / rounds,
        "speculative_tokens_per_second": speculative_tps,
        "target_tokens_per_second": alone_tps,
        "speedup": speculative_tps / alone_tps,
        "draft_seconds": sum(r.draft_seconds for r in runs),
        "target_seconds": sum(r.target_seconds for r in runs),
        "lossless": not mismatched,
        "mismatched_prompts": sorted(mismatched),
    }
    log.info("gamma %d: acceptance %s, %.1f tokens/s vs %.1f alone (%.2fx), %s", gamma,
             "n/a" if entry["acceptance_rate"] is None else f"{entry['acceptance_rate']:.1%}", speculative_tps,
             alone_tps, entry["speedup"], "lossless" if not mismatched else f"MISMATCH on prompts {sorted(mismatched)}")
    return entry
