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

Adaptive drafting (:class:`DraftPolicy`): ``gamma`` is then a maximum. With ``stop`` the draft ends a round
after a proposal whose top probability (the softmax maximum of its logits at the sampling temperature, at
temperature 1 when greedy; no extra call) is below ``stop`` — an unsure draft is likely to be rejected there, and every
further proposal would be a wasted draft call (the confidence stopping of DISCO, Mamou et al. 2024, and
SpecDec++, Huang et al. 2024, with the draft's own probability as the predictor). With ``adapt`` the round's
maximum itself follows the acceptance: one more after a round whose every proposal was kept, one fewer after
a rejection, between 1 and ``gamma`` (the schedule of Hugging Face's assisted generation). Both decide from
the draft's side only (its probabilities and the past rounds' outcomes), never from the target's verdict on
the round being drafted, so greedy output stays the target's and every sampled token still follows the
target's distribution: a round that stops early simply ends with a target sample one position sooner.

Both caches are then rolled back to the accepted tokens by cropping them along the sequence axis (neither
model runs again; a cache with nothing to drop, e.g. the target's after a full accept, is kept as it is). A
model's cache never holds the last token of the sequence: each call feeds the sequence from the model's
cache length on, which is the whole prompt in the first round, one token after a correction and two after a
bonus (the draft never fed its last proposal). The tokens live in one preallocated buffer
(:class:`~edgekd.profile.generate.TokenBuffer`) and each model call takes a view of it, the loop the plain
generation loop shares (:class:`~edgekd.profile.generate.DecodeState`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekd.errors import ConfigError
from edgekd.profile.generate import CachedGenerator, DecodeState, TokenBuffer, check_request, probabilities


@dataclass
class SpeculativeResult:
    """What one speculative generation produced and what it cost.

    ``drafted`` counts the draft's proposals, ``accepted`` those the target kept, ``stopped`` the rounds the
    draft ended early because it was unsure (:attr:`DraftPolicy.stop`); ``seconds`` is the wall-clock time of
    the whole generation, ``draft_seconds`` / ``target_seconds`` the time spent in each model's onnxruntime
    calls.
    """

    tokens: list[int]
    rounds: int = 0
    drafted: int = 0
    accepted: int = 0
    seconds: float = 0.0
    draft_seconds: float = 0.0
    target_seconds: float = 0.0
    stopped: int = 0

    @property
    def proposals_per_round(self) -> float | None:
        """The draft's mean proposals per round (``drafted / rounds``); None before any round."""
        return self.drafted / self.rounds if self.rounds else None

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
        return {**asdict(self), "acceptance_rate": self.acceptance_rate, "tokens_per_second": self.tokens_per_second,
                "proposals_per_round": self.proposals_per_round}


@dataclass(frozen=True)
class DraftPolicy:
    """How many tokens the draft proposes per round.

    ``gamma``: the most per round (every round when ``stop`` is 0 and ``adapt`` off: fixed-length drafting).
    ``stop``: end a round after a proposal whose top draft probability is below it (0: never; in [0, 1)).
    ``adapt``: the round's maximum grows by one after a full accept and shrinks by one after a rejection,
    between 1 and ``gamma``, starting at ``gamma``.
    """

    gamma: int
    stop: float = 0.0
    adapt: bool = False

    @property
    def fixed(self) -> bool:
        """True for plain fixed-length drafting (no stop threshold, no adaptation)."""
        return self.stop == 0 and not self.adapt

    def label(self) -> str:
        """A short name, e.g. ``gamma 4``, ``gamma 4, stop 0.6``, ``gamma 6, adaptive``."""
        return ", ".join([f"gamma {self.gamma}"] + ([f"stop {self.stop:g}"] if self.stop else [])
                         + (["adaptive"] if self.adapt else []))

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int) or self.gamma < 1:
            raise ConfigError(f"speculative decoding: gamma (draft tokens per round) must be an integer >= 1, "
                              f"got {self.gamma!r}")
        if isinstance(self.stop, bool) or not isinstance(self.stop, int | float) or not 0 <= self.stop < 1:
            raise ConfigError(f"speculative decoding: the draft stop threshold (its top-token probability) must be "
                              f"a number in [0, 1), got {self.stop!r}")
        if not isinstance(self.adapt, bool):
            raise ConfigError(f"speculative decoding: adapt (acceptance-driven draft length) must be true or false, "
                              f"got {self.adapt!r}")


class DraftLength:
    """The per-round draft maximum of one generation under a :class:`DraftPolicy` (see there)."""

    def __init__(self, policy: DraftPolicy) -> None:
        self.policy, self.current = policy, policy.gamma

    def update(self, proposed: int, accepted: int) -> None:
        """Follow one round's outcome: ``proposed`` drafts of which ``accepted`` were kept."""
        if not self.policy.adapt or proposed == 0:
            return
        if accepted < proposed:
            self.current = max(1, self.current - 1)
        elif proposed >= self.current:  # a full accept of a full-length round (not of one the stop cut short)
            self.current = min(self.policy.gamma, self.current + 1)


class SpeculativeDecoder:
    """Generates with ``target``'s output, drafting tokens with ``draft`` (both over onnxruntime).

    ``context`` is the number of positions both models take (the smaller of the two); a graph that states a
    shorter context of its own (edgekd's exports do) lowers it to that. Raises :class:`ConfigError` when the two
    vocabularies differ.
    """

    def __init__(self, draft: CachedGenerator, target: CachedGenerator, context: int) -> None:
        if None not in (draft.vocab, target.vocab) and draft.vocab != target.vocab:
            raise ConfigError(f"speculative decoding: the draft's vocabulary has {draft.vocab} tokens but the "
                              f"target's has {target.vocab}; the draft must use the target's tokenizer")
        self.draft, self.target = draft, target
        self.context = min([context] + [model.context for model in (draft, target) if model.context is not None])
        self.vocab = target.vocab

    def check(self, prompt: Sequence[int], new_tokens: int, gamma: int | DraftPolicy,
              temperature: float = 0.0, stop: int | None = None, seed: int = 0) -> None:
        """Raise :class:`ConfigError` naming the first bad argument of :meth:`generate`."""
        as_policy(gamma).check()
        check_request(prompt, new_tokens, temperature, vocab=self.vocab, context=self.context, least=1,
                      who="speculative decoding", stop=stop, seed=seed)

    def generate(self, prompt: Sequence[int], new_tokens: int, gamma: int | DraftPolicy, temperature: float = 0.0,
                 seed: int = 0, stop: int | None = None) -> SpeculativeResult:
        """``new_tokens`` tokens after ``prompt``, drafting ``gamma`` tokens per round (an int: fixed-length
        drafting), or as a :class:`DraftPolicy` says.

        Greedy when ``temperature`` is 0 (then identical to the target's greedy output), else sampled at
        ``temperature`` from a generator seeded with ``seed``. The last round drafts fewer tokens so that
        exactly ``new_tokens`` come out; with ``stop`` (e.g. the end-of-text id) fewer when the kept tokens reach
        it (the tokens after it in its round are dropped, as the target alone would not have generated them).
        """
        self.check(prompt, new_tokens, gamma, temperature, stop, seed)
        policy = as_policy(gamma)
        rng = np.random.default_rng(seed)
        tokens, end = TokenBuffer(prompt, new_tokens), len(prompt) + new_tokens
        draft, target = DecodeState(self.draft), DecodeState(self.target)
        result, length = SpeculativeResult([]), DraftLength(policy)
        start = time.perf_counter()
        while tokens.length < end:
            drafted, before = result.drafted, tokens.length
            accepted = self.round(tokens, draft, target, min(length.current, end - tokens.length - 1), temperature,
                                  rng, result, policy.stop)
            length.update(result.drafted - drafted, accepted)
            if tokens.cut_after(stop, before):
                break
        result.seconds = time.perf_counter() - start
        result.tokens = tokens.new()
        return result

    def round(self, tokens: TokenBuffer, draft: DecodeState, target: DecodeState, drafts: int, temperature: float,
              rng: np.random.Generator, result: SpeculativeResult, stop: float = 0.0) -> int:
        """One round: up to ``drafts`` proposals (fewer when one's top draft probability is below ``stop``), one
        target call, the kept tokens appended to ``tokens``; returns how many proposals were kept and adds the
        round to ``result``.

        Afterwards the target's cache holds every token but the last and the draft's at most that many
        (both rolled back past rejected proposals, by cropping, without running either model again).
        """
        before = tokens.length
        draft_probs = self._propose(tokens, draft, drafts, temperature, rng, result, stop)
        drafts = tokens.length - before
        called = time.perf_counter()
        logits = target.advance(tokens)
        result.target_seconds += time.perf_counter() - called
        rows = logits[0, -(drafts + 1):]  # the target's predictions for each proposal and the token after
        proposals = tokens.ids[0, before:tokens.length]
        if temperature == 0:
            accepted, last = _accept_greedy(proposals, rows)
        else:
            accepted, last = _accept_sampled(proposals, draft_probs, probabilities(rows, temperature), rng)
        result.rounds, result.drafted, result.accepted = (result.rounds + 1, result.drafted + drafts,
                                                          result.accepted + accepted)
        tokens.truncate(before + accepted)
        tokens.append(last)
        draft.rollback(before + accepted)
        target.rollback(tokens.length - 1)
        return accepted

    def _propose(self, tokens: TokenBuffer, draft: DecodeState, count: int, temperature: float,
                 rng: np.random.Generator, result: SpeculativeResult, stop: float = 0.0) -> list[np.ndarray]:
        """Append up to ``count`` draft tokens to ``tokens``, ending after the first whose top draft probability
        is below ``stop``; when sampling, return the distribution each was drawn from.

        The draft's cache then holds every token but the last proposal (it never needs its logits).
        """
        draft_probs: list[np.ndarray] = []
        clock = time.perf_counter
        for index in range(count):
            called = clock()
            row = draft.advance(tokens)[0, -1]
            result.draft_seconds += clock() - called
            if temperature == 0:
                top = int(row.argmax())
                tokens.append(top)
                unsure = stop > 0 and top_probability(row, top) < stop
            else:
                draft_probs.append(probabilities(row, temperature))
                tokens.append(_draw(draft_probs[-1], rng))
                unsure = stop > 0 and draft_probs[-1].max() < stop
            if unsure and index + 1 < count:
                result.stopped += 1
                break
        return draft_probs


def as_policy(gamma: int | DraftPolicy) -> DraftPolicy:
    """``gamma`` as a :class:`DraftPolicy` (an int: fixed-length drafting of that many tokens)."""
    return gamma if isinstance(gamma, DraftPolicy) else DraftPolicy(gamma)


def top_probability(logits: np.ndarray, top: int | None = None) -> float:
    """The softmax maximum of one row of ``logits``: the model's confidence in its greedy choice (``top``, its
    index, when already known: one reduction fewer; a few µs a call matter beside a ~0.1 ms draft call)."""
    top = int(logits.argmax()) if top is None else top
    return float(1.0 / np.exp(logits - logits[top]).sum())


def _accept_greedy(proposals: np.ndarray, rows: np.ndarray) -> tuple[int, int]:
    """How many of ``proposals`` (a prefix) the target's argmax agrees with, and the target's own next token."""
    choices = rows.argmax(axis=-1)
    disagree = np.flatnonzero(choices[:len(proposals)] != proposals)
    kept = int(disagree[0]) if disagree.size else len(proposals)
    return kept, int(choices[kept])


def _accept_sampled(proposals: np.ndarray, draft_probs: list[np.ndarray], target_probs: np.ndarray,
                    rng: np.random.Generator) -> tuple[int, int]:
    """Rejection sampling: keep proposal ``x`` with probability ``min(1, p(x)/q(x))``; at the first rejection
    draw from ``norm(max(0, p - q))`` instead and stop; after a full accept draw a bonus token from ``p``.
    How many proposals were kept, and the token drawn after them."""
    for i, (token, q) in enumerate(zip(proposals, draft_probs, strict=True)):
        p = target_probs[i]
        if rng.random() < p[token] / q[token]:
            continue
        residual = np.maximum(p - q, 0.0)
        mass = residual.sum()
        # p == q to rounding leaves no residual mass; a rejection is then (almost) impossible and p is exact
        return i, _draw(residual / mass if mass > 0 else p, rng)
    return len(proposals), _draw(target_probs[len(proposals)], rng)


def _draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    return int(rng.choice(probs.size, p=probs))

