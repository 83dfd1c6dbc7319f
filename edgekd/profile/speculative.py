"""Speculative decoding over onnxruntime: a small draft proposes tokens, the target verifies them in one call.

Leviathan et al. 2023 ("Fast inference from transformers via speculative decoding") and Chen et al. 2023
("Accelerating large language model decoding with speculative sampling"). Each round the draft proposes
``gamma`` tokens one at a time, reusing its KV cache; the target then scores the pending token and all
proposals in ONE call after its own cache (the exported graph takes several new tokens after a non-empty
past). Greedy: the longest prefix of proposals equal to the target's argmax is accepted and the target's own
next token (a correction, or a bonus when every proposal was accepted) is appended, so the output is the
target's greedy output token for token. Sampling: proposal ``x`` is accepted with probability
``min(1, p(x) / q(x))``, a rejection is replaced by a sample from ``norm(max(0, p - q))`` and a full accept
earns a bonus sample from ``p``, so every token follows the target's distribution.

Both caches are then rolled back (cropped along the sequence axis) to the accepted tokens. A model's cache
never holds the last token of the sequence: each call feeds the sequence from the model's cache length on,
which is the whole prompt in the first round, one token after a correction and two after a bonus (the draft
never fed its last proposal).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.errors import ConfigError
from edgekd.profile.generate import CachedGenerator, cache_length, crop_cache, probabilities

Cache = dict[str, np.ndarray]


@dataclass
class SpeculativeResult:
    """What one speculative generation produced and what it cost.

    ``drafted`` counts the draft's proposals, ``accepted`` those the target kept; ``seconds`` is the
    wall-clock time of the whole generation, ``draft_seconds`` / ``target_seconds`` the time spent in
    each model's onnxruntime calls.
    """

    tokens: list[int]
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0

    @property
    def acceptance_rate(self) -> float | None:
        """``accepted / drafted``; None when nothing was drafted (a single new token)."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per wall-clock second, prompt processing included."""
        return len(self.tokens) / self.seconds

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of every field and the derived rates."""
        return {**asdict(self), "acceptance_rate": self.acceptance_rate, "tokens_per_second": self.tokens_per_second}


def vocabulary_size(generator: CachedGenerator) -> int | None:
    """The vocabulary size of ``generator``'s logits output, or None when the graph leaves it dynamic."""
    size = next(o for o in generator.session.get_outputs() if o.name == "logits").shape[-1]
    return size if isinstance(size, int) else None


class SpeculativeDecoder:
    """Generates with ``target``'s output, drafting tokens with ``draft`` (both over onnxruntime).

    ``context`` is the number of positions both models take (the smaller of the two). Raises
    :class:`ConfigError` when the two vocabularies differ.
    """

    def __init__(self, draft: CachedGenerator, target: CachedGenerator, context: int) -> None:
        draft_vocab, target_vocab = vocabulary_size(draft), vocabulary_size(target)
        if None not in (draft_vocab, target_vocab) and draft_vocab != target_vocab:
            raise ConfigError(f"speculative decoding: the draft's vocabulary has {draft_vocab} tokens but the "
                              f"target's has {target_vocab}; the draft must use the target's tokenizer")
        self.draft, self.target, self.context = draft, target, context
        self.vocab = target_vocab

    def check(self, prompt: Sequence[int], new_tokens: int, gamma: int, temperature: float = 0.0) -> None:
        """Raise :class:`ConfigError` naming the first bad argument of :meth:`generate`."""
        if not temperature >= 0:
            raise ConfigError(f"speculative decoding: temperature must be >= 0, got {temperature}")
        if isinstance(gamma, bool) or not isinstance(gamma, int) or gamma < 1:
            raise ConfigError(f"speculative decoding: gamma (draft tokens per round) must be an integer >= 1, "
                              f"got {gamma!r}")
        if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
            raise ConfigError(f"speculative decoding: new_tokens must be an integer >= 1, got {new_tokens!r}")
        if not prompt:
            raise ConfigError("speculative decoding: the prompt is empty; give at least one token")
        bad = [t for t in prompt if t < 0 or (self.vocab is not None and t >= self.vocab)]
        if bad:
            known = f" (0..{self.vocab - 1})" if self.vocab is not None else ""
            raise ConfigError(f"speculative decoding: prompt token {bad[0]} is outside the vocabulary{known}")
        if len(prompt) + new_tokens > self.context:
            raise ConfigError(f"speculative decoding: a {len(prompt)}-token prompt plus {new_tokens} new tokens "
                              f"exceeds the context of {self.context} tokens; shorten the prompt or generate fewer")

    def generate(self, prompt: Sequence[int], new_tokens: int, gamma: int, temperature: float = 0.0,
                 seed: int = 0) -> SpeculativeResult:
        """``new_tokens`` tokens after ``prompt``, drafting ``gamma`` tokens per round.

        Greedy when ``temperature`` is 0 (then identical to the target's greedy output), else sampled at
        ``temperature`` from a generator seeded with ``seed``. The last round drafts fewer tokens so that
        exactly ``new_tokens`` come out.
        """
        self.check(prompt, new_tokens, gamma, temperature)
        rng = np.random.default_rng(seed)
        sequence, end = [int(t) for t in prompt], len(prompt) + new_tokens
        draft_cache, target_cache = self.draft.empty_cache(1), self.target.empty_cache(1)
        result = SpeculativeResult([])
        start = time.perf_counter()
        while len(sequence) < end:
            drafts = min(gamma, end - len(sequence) - 1)
            proposals, draft_probs, draft_cache = self._propose(sequence, draft_cache, drafts, temperature, rng,
                                                                result)
            logits, target_cache, seconds = _call(self.target, sequence + proposals, target_cache)
            result.target_seconds += seconds
            rows = logits[0, -(drafts + 1):]  # the target's predictions for each proposal and the token after
            if temperature == 0:
                kept = _accept_greedy(proposals, rows)
            else:
                kept = _accept_sampled(proposals, draft_probs, probabilities(rows, temperature), rng)
            accepted = len(kept) - 1
            result.rounds, result.drafted, result.accepted = (result.rounds + 1, result.drafted + drafts,
                                                              result.accepted + accepted)
            draft_cache = crop_cache(draft_cache, min(cache_length(draft_cache), len(sequence) + accepted))
            sequence += kept
            target_cache = crop_cache(target_cache, len(sequence) - 1)
        result.seconds = time.perf_counter() - start
        result.tokens = sequence[len(prompt):]
        return result

    def _propose(self, sequence: list[int], cache: Cache, count: int, temperature: float, rng: np.random.Generator,
                 result: SpeculativeResult) -> tuple[list[int], list[np.ndarray], Cache]:
        """``count`` draft tokens after ``sequence`` (and, when sampling, the distribution each was drawn from)."""
        proposals: list[int] = []
        draft_probs: list[np.ndarray] = []
        for _ in range(count):
            logits, cache, seconds = _call(self.draft, sequence + proposals, cache)
            result.draft_seconds += seconds
            if temperature == 0:
                proposals.append(int(logits[0, -1].argmax()))
            else:
                draft_probs.append(probabilities(logits[0, -1], temperature))
                proposals.append(_draw(draft_probs[-1], rng))
        return proposals, draft_probs, cache


def _call(model: CachedGenerator, tokens: list[int], cache: Cache) -> tuple[np.ndarray, Cache, float]:
    """``model``'s logits for the ``tokens`` its cache does not hold yet, the extended cache and the seconds taken."""
    ids = np.array([tokens[cache_length(cache):]], np.int64)
    start = time.perf_counter()
    logits, cache = model.step(ids, cache)
    return logits, cache, time.perf_counter() - start


def _accept_greedy(proposals: list[int], rows: np.ndarray) -> list[int]:
    """The longest prefix of ``proposals`` the target's argmax agrees with, then the target's own next token."""
    choices = rows.argmax(axis=-1)
    kept = 0
    while kept < len(proposals) and proposals[kept] == choices[kept]:
        kept += 1
    return proposals[:kept] + [int(choices[kept])]


def _accept_sampled(proposals: list[int], draft_probs: list[np.ndarray], target_probs: np.ndarray,
                    rng: np.random.Generator) -> list[int]:
    """Rejection sampling: keep proposal ``x`` with probability ``min(1, p(x)/q(x))``; at the first rejection
    draw from ``norm(max(0, p - q))`` instead and stop; after a full accept draw a bonus token from ``p``."""
    for i, (token, q) in enumerate(zip(proposals, draft_probs, strict=True)):
        p = target_probs[i]
        if rng.random() < p[token] / q[token]:
            continue
        residual = np.maximum(p - q, 0.0)
        mass = residual.sum()
        # p == q to rounding leaves no residual mass; a rejection is then (almost) impossible and p is exact
        return proposals[:i] + [_draw(residual / mass if mass > 0 else p, rng)]
    return proposals + [_draw(target_probs[len(proposals)], rng)]


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(probs.size, p=probs))

