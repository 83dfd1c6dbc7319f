"""What a generation request may ask of an exported causal LM, through the plain loop and speculative decoding.

The exported graph states its context and vocabulary; a request outside them (a prompt plus new tokens past the
context, which a rotary model would silently run on, a negative token id, which onnxruntime's Gather wraps
around, a negative temperature, which samples the least likely tokens) is one :class:`ConfigError` line before
any model call, the same for both loops.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgekd.errors import ConfigError
from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.profile.generate import CachedGenerator
from edgekd.profile.speculative import SpeculativeDecoder
from tests.causal_lms import spread_causal_lm

VOCAB, CONTEXT = 23, 16


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A rotary (Llama) target and a GPT-2 draft over one vocabulary, both taking CONTEXT positions."""
    folder = tmp_path_factory.mktemp("requests")
    target = spread_causal_lm("llama", 1, 32, 4, seed=0, vocab=VOCAB, context=CONTEXT)
    draft = spread_causal_lm("gpt2", 1, 32, 2, seed=3, vocab=VOCAB, context=CONTEXT)
    return (CachedGenerator(export_causal_lm(draft, folder / "draft.onnx")),
            CachedGenerator(export_causal_lm(target, folder / "target.onnx")))


def test_the_graph_states_its_context_and_vocabulary(pair):
    draft, target = pair
    assert (target.context, target.vocab) == (draft.context, draft.vocab) == (CONTEXT, VOCAB)


@pytest.mark.parametrize("prompt, new_tokens, temperature, message", [
    ([1, 2], 15, 0.0, f"a 2-token prompt plus 15 new tokens exceeds the context of {CONTEXT} tokens"),
    ([1] * CONTEXT, 1, 0.0, f"a {CONTEXT}-token prompt plus 1 new tokens exceeds the context of {CONTEXT}"),
    ([1, -1], 3, 0.0, f"prompt token -1 is outside the vocabulary (0..{VOCAB - 1})"),
    ([1, VOCAB], 3, 0.0, f"prompt token {VOCAB} is outside the vocabulary (0..{VOCAB - 1})"),
    ([1, 2.0], 3, 0.0, "prompt token 2.0 is outside the vocabulary"),
    ([], 3, 0.0, "the prompt is empty"),
    ([1, 2], -2, 0.0, "new_tokens must be an integer >= 0, got -2"),
    ([1, 2], 2.5, 0.0, "new_tokens must be an integer >= 0, got 2.5"),
    ([1, 2], 3, -1.0, "temperature must be >= 0, got -1.0 (0: greedy)"),
    ([1, 2], 3, float("nan"), "temperature must be >= 0, got nan (0: greedy)"),
    ([1, 2], 3, float("inf"), "temperature must be >= 0, got inf (0: greedy)"),
])
def test_a_bad_request_is_one_line_before_any_model_call(pair, prompt, new_tokens, temperature, message,
                                                         monkeypatch):
    draft, target = pair
    monkeypatch.setattr(CachedGenerator, "step", lambda *a: pytest.fail("the model ran on a bad request"))
    with pytest.raises(ConfigError) as plain:
        target.generate(prompt, new_tokens, temperature=temperature)
    assert str(plain.value).startswith("generation: ") and message in str(plain.value)
    assert "\n" not in str(plain.value)
    if new_tokens != 0:  # speculative decoding asks for one new token at least
        with pytest.raises(ConfigError) as speculative:
            SpeculativeDecoder(draft, target, CONTEXT).generate(prompt, new_tokens, 4, temperature=temperature)
        assert str(speculative.value).startswith("speculative decoding: ")
        assert message.replace("integer >= 0", "integer >= 1") in str(speculative.value)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_a_bad_seed_is_one_line(pair, seed) -> None:
    """seed=-1 was numpy's 'expected non-negative integer' from inside the sampler."""
    draft, target = pair
    with pytest.raises(ConfigError, match=rf"^generation: seed must be an integer >= 0, got {seed!r}$"):
        target.generate([1, 2], 3, temperature=1.0, seed=seed)
    with pytest.raises(ConfigError, match=rf"^speculative decoding: seed must be an integer >= 0, got {seed!r}$"):
        SpeculativeDecoder(draft, target, CONTEXT).generate([1, 2], 3, 2, temperature=1.0, seed=seed)


def test_a_context_larger_than_the_graphs_is_lowered_to_theirs(pair):
    draft, target = pair
    decoder = SpeculativeDecoder(draft, target, context=1000)
    assert decoder.context == CONTEXT
    with pytest.raises(ConfigError, match=f"exceeds the context of {CONTEXT} tokens"):
        decoder.generate([1, 2, 3], CONTEXT, 4)


def test_requests_at_the_edges_generate(pair):
    draft, target = pair
    prompt = [3, 1, 4, 1, 5]
    assert target.generate(prompt, 0).tokens == []
    filled = target.generate(prompt, CONTEXT - len(prompt)).tokens  # prompt and new tokens fill the context
    assert len(filled) == CONTEXT - len(prompt)
    assert SpeculativeDecoder(draft, target, CONTEXT).generate(prompt, CONTEXT - len(prompt), 8).tokens == filled
    numpy_prompt = np.array(prompt, np.int64)  # ids straight from a tokenizer's numpy output
    assert target.generate(numpy_prompt, 3).tokens == filled[:3]
    sampled = [target.generate(prompt, 8, temperature=1.0, seed=seed).tokens for seed in (7, 7, 8)]
    assert sampled[0] == sampled[1] and sampled[0] != sampled[2]  # a seed reproduces its sample, another differs


def test_generation_ends_at_the_stop_token_as_the_target_alone_would(pair):
    """``stop`` (an end-of-text id) ends both loops where it is generated: the tokens are the unstopped
    generation's up to and including its first ``stop``, greedy and sampled (the seed draws the same)."""
    draft, target = pair
    prompt, decoder = [3, 1, 4], SpeculativeDecoder(draft, target, CONTEXT)
    for temperature, seed in ((0.0, 0), (1.0, 5)):
        full = target.generate(prompt, 12, temperature=temperature, seed=seed).tokens
        stop = full[6]
        expected = full[:full.index(stop) + 1]
        assert len(expected) < len(full) or full.count(stop) == 1
        assert target.generate(prompt, 12, temperature=temperature, seed=seed, stop=stop).tokens == expected
        speculative = decoder.generate(prompt, 12, 4, temperature=temperature, seed=seed)
        stopped = decoder.generate(prompt, 12, 4, temperature=temperature, seed=seed, stop=stop).tokens
        assert stopped == speculative.tokens[:speculative.tokens.index(stop) + 1] if stop in speculative.tokens \
            else stopped == speculative.tokens
        if temperature == 0:  # greedy speculative output is the target's, stop included
            assert stopped == expected
    greedy = target.generate(prompt, 12).tokens
    absent = next(token for token in range(VOCAB) if token not in greedy)
    assert target.generate(prompt, 12, stop=absent).tokens == greedy
    with pytest.raises(ConfigError, match=f"generation: stop must be a token id of the vocabulary or None, got "
                                          f"{VOCAB}"):
        target.generate(prompt, 3, stop=VOCAB)
