"""The speculative loop's cache bookkeeping on a trained draft/teacher pair: after every round both caches hold
exactly the kept tokens (rolled back by cropping, equal to a fresh run over them), a cache with nothing to
drop is kept without a copy, and greedy output equals the teacher's greedy output while the draft is only
partly accepted."""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.profile.generate import CachedGenerator, DecodeState, TokenBuffer, cache_length
from edgekd.profile.speculative import SpeculativeDecoder, SpeculativeResult
from tests.char_lm import IDS, trained_char_lm

CONTEXT = 48
PROMPTS = [IDS[start:start + length].tolist() for start, length in ((0, 6), (45, 12), (130, 3), (200, 9))]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A teacher trained on the text and a smaller draft trained less: they agree often but not always."""
    folder = tmp_path_factory.mktemp("pair")
    teacher = trained_char_lm("gpt2", 100, seed=0, layers=1, width=32, heads=2, context=CONTEXT)
    draft = trained_char_lm("gpt2", 40, seed=1, layers=1, width=16, heads=2, context=CONTEXT)
    return (CachedGenerator(export_causal_lm(draft, folder / "draft.onnx")),
            CachedGenerator(export_causal_lm(teacher, folder / "teacher.onnx")))


def _fresh_cache(generator: CachedGenerator, tokens: TokenBuffer, length: int) -> dict[str, np.ndarray]:
    return generator.step(tokens.ids[:, :length], generator.empty_cache(1))[1]


def _assert_cache_is_of(state: DecodeState, tokens: TokenBuffer) -> None:
    """``state``'s cache has ``state.length`` positions, equal to a run over those tokens alone."""
    assert cache_length(state.cache) == state.length
    for name, tensor in _fresh_cache(state.generator, tokens, state.length).items():
        np.testing.assert_allclose(state.cache[name], tensor, atol=1e-5)


@pytest.mark.parametrize("gamma", [2, 4, 6])
def test_every_round_leaves_both_caches_holding_exactly_the_kept_tokens(pair, gamma):
    draft_model, teacher = pair
    decoder = SpeculativeDecoder(draft_model, teacher, CONTEXT)
    prompt, new_tokens = PROMPTS[1], 30
    tokens, end = TokenBuffer(prompt, new_tokens), len(prompt) + new_tokens
    draft, target, result = DecodeState(draft_model), DecodeState(teacher), SpeculativeResult([])
    outcomes = set()
    while tokens.length < end:
        before, drafts, drafted = tokens.length, min(gamma, end - tokens.length - 1), draft.length
        accepted = decoder.round(tokens, draft, target, drafts, 0.0, np.random.default_rng(0), result)
        assert tokens.length == before + accepted + 1
        assert target.length == tokens.length - 1
        # the draft never fed its last proposal: after a full accept it holds one token fewer than the target;
        # a round without proposals (the last token) leaves it alone
        assert draft.length == (drafted if drafts == 0 else before + accepted if accepted < drafts
                                else before + drafts - 1)
        _assert_cache_is_of(target, tokens)
        _assert_cache_is_of(draft, tokens)
        outcomes.add("full" if accepted == drafts else "partial" if accepted else "none")
    assert tokens.new() == teacher.generate(prompt, new_tokens).tokens
    assert {"full", "partial"} <= outcomes or {"full", "none"} <= outcomes  # both rollbacks and no-ops happened


def test_trained_pair_is_lossless_for_every_gamma_with_a_partly_accepted_draft(pair):
    draft, teacher = pair
    decoder = SpeculativeDecoder(draft, teacher, CONTEXT)
    accepted = drafted = 0
    for prompt in PROMPTS:
        expected = teacher.generate(prompt, 24).tokens
        assert len(set(expected)) > 2  # text-like output, not one or two repeated characters
        for gamma in range(1, 8):
            result = decoder.generate(prompt, 24, gamma)
            assert result.tokens == expected, (prompt, gamma)
            accepted, drafted = accepted + result.accepted, drafted + result.drafted
    assert 0.05 < accepted / drafted < 0.9


def test_rollback_crops_only_when_there_is_something_to_drop(pair):
    _, teacher = pair
    tokens, state = TokenBuffer(PROMPTS[3], 4), DecodeState(teacher)
    full_logits = state.advance(tokens)
    kept = state.cache
    state.rollback(state.length)
    state.rollback(state.length + 3)
    assert state.cache is kept and state.length == len(PROMPTS[3])  # nothing dropped: no copy
    state.rollback(4)
    _assert_cache_is_of(state, tokens)
    np.testing.assert_allclose(state.advance(tokens), full_logits[:, 4:], atol=1e-4)  # re-fed from position 4 on
    assert state.length == tokens.length == len(PROMPTS[3])


def test_token_buffer_hands_the_model_views_of_one_array():
    tokens = TokenBuffer([4, 5, 6], 5)
    tokens.extend([7, 8])
    tokens.append(9)
    window = tokens.ids[:, 2:tokens.length]
    assert window.tolist() == [[6, 7, 8, 9]] and window.dtype == np.int64
    assert window.flags.c_contiguous and np.shares_memory(window, tokens.ids)
    tokens.truncate(4)
    tokens.append(1)
    assert tokens.new() == [7, 1]
