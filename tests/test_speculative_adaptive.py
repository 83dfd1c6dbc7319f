"""Adaptive drafting in speculative decoding: a round ends after the draft's first unsure proposal (its top
probability below a threshold), the per-round maximum follows acceptance, greedy output stays the target's,
sampled tokens still follow the target's distribution, the measurement records every policy side by side, and
bad settings are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekd.errors import ConfigError
from edgekd.profile.generate import probabilities
from edgekd.profile.speculative import DraftLength, DraftPolicy, SpeculativeDecoder, top_probability
from edgekd.profile.speculative_bench import draft_policies, measure_speculative
from tests.test_speculative import CONTEXT, PROMPTS, VOCAB, _distance, models  # noqa: F401 (a fixture)

POLICIES = [DraftPolicy(4, 0.5), DraftPolicy(4, 0.8), DraftPolicy(5, adapt=True), DraftPolicy(6, 0.6, adapt=True),
            DraftPolicy(8, 0.99)]


@pytest.mark.parametrize("draft", ["similar", "distant", "unrelated"])
def test_adaptive_greedy_output_is_the_targets_greedy_output(models, draft):  # noqa: F811
    target, drafts = models
    decoder = SpeculativeDecoder(drafts[draft], target, CONTEXT)
    for prompt, new_tokens in zip(PROMPTS, (17, 9, 24), strict=True):
        expected = target.generate(prompt, new_tokens).tokens
        for policy in POLICIES:
            result = decoder.generate(prompt, new_tokens, policy)
            assert result.tokens == expected, policy
            assert len(result.tokens) == result.rounds + result.accepted
            assert result.accepted <= result.drafted <= policy.gamma * result.rounds
            assert result.stopped <= result.rounds and (result.stopped == 0 or not policy.fixed)


def _greedy_confidences(generator, prompt: list[int], tokens: list[int]) -> list[float]:
    """The model's top probability at each generated token (the confidence with which it chose it)."""
    logits, _ = generator.step(np.array([prompt + tokens]), generator.empty_cache(1))
    return [top_probability(row) for row in logits[0, len(prompt) - 1:-1]]


@pytest.mark.parametrize("gamma, stop", [(4, 0.5), (6, 0.3), (3, 0.9), (5, 0.0)])
def test_a_round_ends_after_the_first_unsure_proposal(models, gamma, stop):  # noqa: F811
    """With the target as its own draft every proposal is kept, so the rounds are known in advance from the
    model's confidence along its greedy output: proposals up to and including the first below ``stop``
    (at most ``gamma``, fewer in the last round), then the target's bonus token."""
    target, drafts = models
    prompt, new_tokens = PROMPTS[2], 30
    tokens = target.generate(prompt, new_tokens).tokens
    confidence = _greedy_confidences(target, prompt, tokens)
    rounds = drafted = stopped = position = 0
    while position < new_tokens:
        limit, count = min(gamma, new_tokens - position - 1), 0
        while count < limit:
            count += 1
            if confidence[position + count - 1] < stop:
                stopped += count < limit
                break
        rounds, drafted, position = rounds + 1, drafted + count, position + count + 1
    result = SpeculativeDecoder(drafts["same"], target, CONTEXT).generate(prompt, new_tokens, DraftPolicy(gamma, stop))
    assert result.tokens == tokens
    assert (result.rounds, result.drafted, result.stopped) == (rounds, drafted, stopped)
    assert result.acceptance_rate == 1.0
    assert result.proposals_per_round == pytest.approx(drafted / rounds)
    if stop:
        assert 0 < stopped < rounds  # the threshold cut some rounds short and not others


def test_top_probability_is_the_softmax_maximum():
    row = np.array([2.0, -1.0, 0.5, 2.0, -30.0], np.float32)
    assert top_probability(row) == pytest.approx(probabilities(row, 1.0).max()) == top_probability(row, 0)
    assert top_probability(np.zeros(8, np.float32)) == pytest.approx(1 / 8)
    assert top_probability(np.array([400.0, 0.0], np.float32)) == pytest.approx(1.0)


def test_draft_length_grows_after_full_accepts_and_shrinks_after_rejections():
    length = DraftLength(DraftPolicy(4, adapt=True))
    seen = []
    for proposed, accepted in [(4, 2), (3, 0), (2, 2), (3, 3), (4, 4), (4, 1), (3, 1), (2, 0), (1, 0), (1, 1),
                               (1, 1)]:
        length.update(proposed, accepted)
        seen.append(length.current)
    assert seen == [3, 2, 3, 4, 4, 3, 2, 1, 1, 2, 2]  # the last: a full accept of a round the stop cut short
    length.update(0, 0)  # the last round of a generation may draft nothing: no signal
    assert length.current == 2
    fixed = DraftLength(DraftPolicy(4, 0.5))
    fixed.update(4, 0)
    assert fixed.current == 4  # without ``adapt`` the maximum stays gamma


@pytest.mark.parametrize("draft", ["same", "unrelated"])
def test_acceptance_driven_length_drafts_less_for_a_poor_draft_only(models, draft):  # noqa: F811
    target, drafts = models
    decoder = SpeculativeDecoder(drafts[draft], target, CONTEXT)
    fixed, adaptive = (decoder.generate(PROMPTS[0], 30, policy) for policy in (DraftPolicy(6),
                                                                               DraftPolicy(6, adapt=True)))
    assert adaptive.tokens == fixed.tokens
    if draft == "same":  # every round fully accepted: the length never shrinks
        assert (adaptive.rounds, adaptive.drafted) == (fixed.rounds, fixed.drafted)
    else:
        assert fixed.acceptance_rate < 0.3
        assert adaptive.proposals_per_round < fixed.proposals_per_round / 2


@pytest.mark.parametrize("adapt", [False, True])
def test_stopped_rounds_still_sample_the_targets_distribution(models, adapt):  # noqa: F811
    """The stop threshold just above the draft's top probability after the prompt: every round-one draft stops
    after its first proposal, so the second token is the target's bonus sample (first proposal kept) or the
    start of the next round (rejected). Both tokens' frequencies match the target's exact marginals."""
    target, drafts = models
    prompt, samples, temperature = [3, 1], 1500, 0.8
    distant = drafts["distant"]
    draft_first = probabilities(distant.step(np.array([prompt]), distant.empty_cache(1))[0][0, -1], temperature)
    policy = DraftPolicy(3, min(float(draft_first.max()) + 1e-3, 0.999), adapt)
    decoder = SpeculativeDecoder(distant, target, CONTEXT)
    results = [decoder.generate(prompt, 3, policy, temperature=temperature, seed=s) for s in range(samples)]
    assert all(result.drafted <= 2 * result.rounds for result in results)
    assert sum(result.stopped for result in results) >= samples  # round one always stopped early
    tokens = np.array([result.tokens[:2] for result in results])
    logits, cache = target.step(np.array([prompt]), target.empty_cache(1))
    first = probabilities(logits[0, -1], temperature)
    following = np.stack([probabilities(target.step(np.array([[t]]), cache)[0][0, -1], temperature)
                          for t in range(VOCAB)])
    assert _distance(draft_first, first) > 0.25
    assert _distance(np.bincount(tokens[:, 0], minlength=VOCAB) / samples, first) < 0.07
    assert _distance(np.bincount(tokens[:, 1], minlength=VOCAB) / samples, first @ following) < 0.07


def test_measurement_records_every_policy_against_one_interleaved_target(models):  # noqa: F811
    target, drafts = models
    record = measure_speculative(drafts["similar"], target, PROMPTS[:2], 12, CONTEXT, gammas=[1, 4], repeats=2,
                                 draft_stops=[0.5, 0.9], adaptive=True, clock="thread")
    json.dumps(record)
    assert record["clock"] == "thread" and record["lossless"]
    assert [entry["policy"] for entry in record["gammas"]] == [
        "gamma 1", "gamma 4", "gamma 4, stop 0.5", "gamma 4, stop 0.9", "gamma 4, adaptive",
        "gamma 4, stop 0.5, adaptive", "gamma 4, stop 0.9, adaptive"]
    assert len({entry["target_tokens_per_second"] for entry in record["gammas"]}) == 1  # one interleaved target
    by_policy = {entry["policy"]: entry for entry in record["gammas"]}
    for entry in record["gammas"]:
        assert 0 < entry["proposals_per_round"] <= entry["gamma"]
        assert entry["proposals_per_round"] == pytest.approx(entry["drafted"] / entry["rounds"])
        assert entry["speedup"] == pytest.approx(entry["speculative_tokens_per_second"] /
                                                 entry["target_tokens_per_second"])
        assert (entry["stopped_rounds"] > 0) == (entry["draft_stop"] > 0)
    proposals = [by_policy[name]["proposals_per_round"]
                 for name in ("gamma 4, stop 0.9", "gamma 4, stop 0.5", "gamma 4")]
    assert proposals[0] <= proposals[1] < proposals[2]


def test_draft_policies_of_gamma_one_are_only_fixed():
    assert draft_policies([1, 3], [0.4]) == [DraftPolicy(1), DraftPolicy(3), DraftPolicy(3, 0.4)]
    assert draft_policies([2], [], adaptive=True) == [DraftPolicy(2), DraftPolicy(2, adapt=True)]
    assert DraftPolicy(3).fixed and not DraftPolicy(3, 0.2).fixed and not DraftPolicy(3, adapt=True).fixed


@pytest.mark.parametrize("policy, message", [
    (DraftPolicy(4, 1.0), "the draft stop threshold (its top-token probability) must be a number in [0, 1), got 1.0"),
    (DraftPolicy(4, -0.2), "must be a number in [0, 1), got -0.2"),
    (DraftPolicy(4, "0.5"), "must be a number in [0, 1), got '0.5'"),
    (DraftPolicy(4, True), "must be a number in [0, 1), got True"),
    (DraftPolicy(4, adapt="yes"), "adapt (acceptance-driven draft length) must be true or false, got 'yes'"),
    (DraftPolicy(0, 0.5), "gamma (draft tokens per round) must be an integer >= 1, got 0"),
])
def test_bad_policies_are_one_line_config_errors(models, policy, message):  # noqa: F811
    target, drafts = models
    with pytest.raises(ConfigError) as error:
        SpeculativeDecoder(drafts["similar"], target, CONTEXT).generate([1, 2], 5, policy)
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("kwargs, message", [
    (dict(draft_stops=[0.5, 1.5]), "must be a number in [0, 1), got 1.5"),
    (dict(gammas=[1], draft_stops=[-1]), "must be a number in [0, 1), got -1"),
    (dict(clock="cpu"), "clock must be one of ['thread', 'wall'], got 'cpu'"),
])
def test_measurement_checks_policies_before_timing(models, kwargs, message):  # noqa: F811
    target, drafts = models
    with pytest.raises(ConfigError, match="^speculative decoding: ") as error:
        measure_speculative(drafts["same"], target, PROMPTS, 6, CONTEXT, **({"gammas": [2]} | kwargs))
    assert message in str(error.value)
