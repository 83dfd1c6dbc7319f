"""Speculative decoding over onnxruntime: greedy output identical to the target's, acceptance as expected for
identical, similar and unrelated drafts, caches rolled back exactly, rejection sampling that follows the
target's distribution, the interleaved measurement record, and one-line errors for bad input."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from edgekd.errors import ConfigError
from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.profile import speculative
from edgekd.profile.generate import CachedGenerator, cache_length, crop_cache, probabilities
from edgekd.profile.speculative import SpeculativeDecoder
from edgekd.profile.speculative_bench import measure_speculative
from tests.causal_lms import spread_causal_lm

VOCAB, CONTEXT = 23, 48
FAMILIES = [("gpt2", 2, 32, 2), ("llama", 2, 32, 4), ("qwen2", 1, 48, 4)]
PROMPTS = [[1, 2, 3], [7], [9, 4, 4, 17, 2, 0, 8]]


def _perturbed(model: torch.nn.Module, scale: float, seed: int) -> torch.nn.Module:
    """A copy of ``model`` with Gaussian noise on its weight matrices: a draft that agrees with it only partly."""
    draft = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in draft.parameters():
            if parameter.dim() > 1:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * scale)
    return draft


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def models(request, tmp_path_factory):
    """The target and four drafts of one family: the target itself, a slightly and a more perturbed copy (a
    similar and a distant draft) and an unrelated model."""
    family, layers, width, heads = request.param
    folder = tmp_path_factory.mktemp(family)
    target = spread_causal_lm(family, layers, width, heads, seed=0, vocab=VOCAB, context=CONTEXT)
    drafts = {"similar": _perturbed(target, 0.02, seed=5), "distant": _perturbed(target, 0.1, seed=5),
              "unrelated": spread_causal_lm(family, 1, width, heads, seed=11, vocab=VOCAB, context=CONTEXT)}
    target_generator = CachedGenerator(export_causal_lm(target, folder / "target.onnx"))
    generators = {name: CachedGenerator(export_causal_lm(model, folder / f"{name}.onnx"))
                  for name, model in drafts.items()}
    return target_generator, {"same": target_generator, **generators}


@pytest.mark.parametrize("draft", ["same", "similar", "unrelated"])
@pytest.mark.parametrize("gamma", [1, 2, 4, 7])
def test_greedy_output_is_the_targets_greedy_output(models, draft, gamma):
    target, drafts = models
    decoder = SpeculativeDecoder(drafts[draft], target, CONTEXT)
    for prompt, new_tokens in zip(PROMPTS, (17, 9, 24), strict=True):
        expected = target.generate(prompt, new_tokens).tokens
        result = decoder.generate(prompt, new_tokens, gamma)
        assert result.tokens == expected
        assert len(set(expected)) > 1  # not a comparison of two constant sequences
        assert len(result.tokens) == result.rounds + result.accepted  # each round: accepted drafts + one target token
        assert result.accepted <= result.drafted <= gamma * result.rounds


@pytest.mark.parametrize("family, seed", [("gpt2", 1), ("llama", 2), ("qwen2", 3), ("llama", 4)])
def test_lossless_for_other_seeds_and_every_gamma(tmp_path, family, seed):
    sizes = {"gpt2": (1, 32, 2), "llama": (2, 32, 4), "qwen2": (1, 48, 4)}[family]
    target_model = spread_causal_lm(family, *sizes, seed=seed, vocab=VOCAB, context=CONTEXT)
    target = CachedGenerator(export_causal_lm(target_model, tmp_path / "target.onnx"))
    draft = CachedGenerator(export_causal_lm(_perturbed(target_model, 0.03, seed), tmp_path / "draft.onnx"))
    decoder = SpeculativeDecoder(draft, target, CONTEXT)
    prompts = [np.random.default_rng(seed + k).integers(VOCAB, size=1 + 4 * k).tolist() for k in range(3)]
    accepted = drafted = 0
    for prompt in prompts:
        expected = target.generate(prompt, 16).tokens
        for gamma in range(1, 9):
            result = decoder.generate(prompt, 16, gamma)
            assert result.tokens == expected, (prompt, gamma)
            accepted, drafted = accepted + result.accepted, drafted + result.drafted
    assert 0 < accepted < drafted


@pytest.mark.parametrize("gamma, new_tokens", [(1, 10), (3, 12), (4, 13), (8, 20), (5, 1)])
def test_draft_equal_to_target_accepts_everything(models, gamma, new_tokens):
    target, drafts = models
    result = SpeculativeDecoder(drafts["same"], target, CONTEXT).generate(PROMPTS[0], new_tokens, gamma)
    assert result.rounds == math.ceil(new_tokens / (gamma + 1))
    assert result.drafted == result.accepted == new_tokens - result.rounds
    assert result.acceptance_rate == (1.0 if new_tokens > 1 else None)
    assert result.target_seconds > 0 and (result.draft_seconds > 0) == (new_tokens > 1)  # one session, two roles
    assert result.tokens == target.generate(PROMPTS[0], new_tokens).tokens


@pytest.mark.parametrize("draft", ["similar", "unrelated"])
def test_a_different_draft_is_partly_rejected_and_still_lossless(models, draft):
    target, drafts = models
    decoder = SpeculativeDecoder(drafts[draft], target, CONTEXT)
    results = [decoder.generate(prompt, 20, 4) for prompt in PROMPTS]
    assert [r.tokens for r in results] == [target.generate(prompt, 20).tokens for prompt in PROMPTS]
    accepted, drafted = sum(r.accepted for r in results), sum(r.drafted for r in results)
    assert accepted < drafted
    if draft == "similar":  # agrees often but not always
        assert 0.2 < accepted / drafted < 1
    rounds = sum(r.rounds for r in results)
    assert rounds > math.ceil(60 / 5)  # more rounds than a perfect draft needs
    assert all(r.seconds >= r.draft_seconds + r.target_seconds > 0 for r in results)
    assert all(r.tokens_per_second == pytest.approx(20 / r.seconds) for r in results)


@pytest.mark.parametrize("length, keep", [(9, 4), (6, 0), (5, 5), (12, 11)])
def test_crop_cache_equals_the_cache_of_the_shorter_sequence(models, length, keep):
    target, _ = models
    ids = np.random.default_rng(length).integers(VOCAB, size=(1, length + 3))
    _, full = target.step(ids[:, :length], target.empty_cache(1))
    cropped = crop_cache(full, keep)
    _, short = target.step(ids[:, :keep], target.empty_cache(1)) if keep else (None, target.empty_cache(1))
    assert cache_length(cropped) == keep and cropped.keys() == full.keys()
    for name in full:
        np.testing.assert_allclose(cropped[name], short[name], atol=1e-5)
    after_crop, _ = target.step(ids[:, keep:], cropped)
    after_full, _ = target.step(ids, target.empty_cache(1))
    np.testing.assert_allclose(after_crop, after_full[:, keep:], atol=1e-4)
    with pytest.raises(ValueError, match=f"cannot crop a {length}-position cache to {length + 1}"):
        crop_cache(full, length + 1)


def test_sampling_is_seeded_and_a_draft_equal_to_the_target_is_always_accepted(models):
    target, drafts = models
    similar = SpeculativeDecoder(drafts["similar"], target, CONTEXT)
    runs = [similar.generate(PROMPTS[0], 20, 3, temperature=1.0, seed=s) for s in (0, 0, 1)]
    assert runs[0].tokens == runs[1].tokens and runs[0].accepted == runs[1].accepted
    assert runs[0].tokens != runs[2].tokens
    same = SpeculativeDecoder(drafts["same"], target, CONTEXT)
    for seed in range(3):
        result = same.generate(PROMPTS[2], 18, 5, temperature=0.8, seed=seed)
        assert result.acceptance_rate == 1.0 and result.rounds == 3 and len(result.tokens) == 18


def test_sampled_tokens_follow_the_targets_distribution(models):
    """The first two tokens' frequencies over many seeds match the target's exact marginals, from a draft whose
    own distribution is far from the target's: keeping draft samples, or resampling a rejection from the
    target's distribution instead of the residual max(0, p - q), puts them 0.09 to 0.24 away (threshold 0.07;
    sampling noise puts the correct rule 0.01 to 0.05 away)."""
    target, drafts = models
    prompt, samples, temperature = [3, 1], 1500, 0.8
    decoder = SpeculativeDecoder(drafts["distant"], target, CONTEXT)
    tokens = np.array([decoder.generate(prompt, 3, 2, temperature=temperature, seed=s).tokens[:2]
                       for s in range(samples)])
    logits, cache = target.step(np.array([prompt]), target.empty_cache(1))
    first = probabilities(logits[0, -1], temperature)
    following = np.stack([probabilities(target.step(np.array([[t]]), cache)[0][0, -1], temperature)
                          for t in range(VOCAB)])
    second = first @ following
    distant = drafts["distant"]
    draft_first = probabilities(distant.step(np.array([prompt]), distant.empty_cache(1))[0][0, -1], temperature)
    assert _distance(draft_first, first) > 0.25
    assert _distance(np.bincount(tokens[:, 0], minlength=VOCAB) / samples, first) < 0.07
    assert _distance(np.bincount(tokens[:, 1], minlength=VOCAB) / samples, second) < 0.07


def _distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance between two distributions over the vocabulary."""
    return float(np.abs(p - q).sum() / 2)


def test_measurement_record_per_gamma(models, monkeypatch):
    target, drafts = models
    record = measure_speculative(drafts["same"], target, PROMPTS[:2], 12, CONTEXT, gammas=[1, 3], repeats=2)
    json.dumps(record)
    assert record["lossless"] and record["new_tokens"] == 12 and record["prompt_tokens"] == [3, 1]
    assert [entry["gamma"] for entry in record["gammas"]] == [1, 3] and record["threads"] == 1
    for entry, rounds_per_prompt in zip(record["gammas"], (6, 3), strict=True):
        assert entry["acceptance_rate"] == 1.0 and entry["mismatched_prompts"] == []
        assert entry["rounds"] == rounds_per_prompt * 2 * 2 and entry["tokens_per_round"] == 12 / rounds_per_prompt
        assert entry["speedup"] == pytest.approx(entry["speculative_tokens_per_second"] /
                                                 entry["target_tokens_per_second"])
        assert entry["target_tokens_per_second"] > 0 and entry["speculative_tokens_per_second"] > 0
    # a decoder that keeps every draft token is not lossless, and the record says so
    monkeypatch.setattr(speculative, "_accept_greedy", lambda proposals, rows: (len(proposals), int(rows[-1].argmax())))
    broken = measure_speculative(drafts["unrelated"], target, PROMPTS, 12, CONTEXT, gammas=[2])
    assert not broken["lossless"] and broken["gammas"][0]["mismatched_prompts"]
    assert broken["gammas"][0]["acceptance_rate"] == 1.0


@pytest.mark.parametrize("call, message", [
    (lambda d: d.generate([1, 2], 5, 0), "gamma (draft tokens per round) must be an integer >= 1, got 0"),
    (lambda d: d.generate([1, 2], 5, -2), "gamma (draft tokens per round) must be an integer >= 1, got -2"),
    (lambda d: d.generate([1, 2], 5, 2.5), "gamma (draft tokens per round) must be an integer >= 1, got 2.5"),
    (lambda d: d.generate([1, 2], 0, 2), "new_tokens must be an integer >= 1, got 0"),
    (lambda d: d.generate([], 5, 2), "the prompt is empty"),
    (lambda d: d.generate([1, VOCAB], 5, 2), f"prompt token {VOCAB} is outside the vocabulary (0..{VOCAB - 1})"),
    (lambda d: d.generate([1, -1], 5, 2), "prompt token -1 is outside the vocabulary"),
    (lambda d: d.generate([1] * 40, 9, 2), f"a 40-token prompt plus 9 new tokens exceeds the context of {CONTEXT}"),
    (lambda d: d.generate([1, 2], 5, 2, temperature=-0.5), "temperature must be >= 0, got -0.5"),
])
def test_bad_arguments_are_one_line_config_errors(models, call, message):
    target, drafts = models
    with pytest.raises(ConfigError) as error:
        call(SpeculativeDecoder(drafts["similar"], target, CONTEXT))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_prompt_and_new_tokens_filling_the_context_exactly_is_accepted(models):
    target, drafts = models
    prompt = PROMPTS[2]
    result = SpeculativeDecoder(drafts["similar"], target, CONTEXT).generate(prompt, CONTEXT - len(prompt), 8)
    assert result.tokens == target.generate(prompt, CONTEXT - len(prompt)).tokens


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=[]), "no prompts given"),
    (dict(gammas=[]), "no draft lengths (gammas) given"),
    (dict(gammas=[2, 0]), "gamma (draft tokens per round) must be an integer >= 1, got 0"),
    (dict(repeats=0), "repeats must be an integer >= 1, got 0"),
    (dict(prompts=[[1], [2] * 45]), "a 45-token prompt plus 6 new tokens exceeds the context of 48"),
])
def test_measurement_checks_everything_before_timing(models, kwargs, message, monkeypatch):
    target, drafts = models
    monkeypatch.setattr(CachedGenerator, "generate", lambda *a, **k: pytest.fail("timed before checking"))
    arguments = dict(prompts=PROMPTS, new_tokens=6, context=CONTEXT, gammas=[1, 2]) | kwargs
    with pytest.raises(ConfigError, match="^speculative decoding: ") as error:
        measure_speculative(drafts["same"], target, **arguments)
    assert message in str(error.value)


def test_draft_with_another_vocabulary_is_refused(tmp_path):
    target = CachedGenerator(export_causal_lm(spread_causal_lm("gpt2", 1, 32, 2, vocab=VOCAB), tmp_path / "t.onnx"))
    draft = CachedGenerator(export_causal_lm(spread_causal_lm("llama", 1, 32, 4, vocab=VOCAB + 6), tmp_path / "d.onnx"))
    with pytest.raises(ConfigError, match=f"the draft's vocabulary has {VOCAB + 6} tokens but the target's has "
                                          f"{VOCAB}; the draft must use the target's tokenizer"):
        SpeculativeDecoder(draft, target, CONTEXT)
    with pytest.raises(ConfigError, match="vocabulary"):
        measure_speculative(draft, target, PROMPTS, 4, CONTEXT)
