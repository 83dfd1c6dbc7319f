"""On-policy distillation (GKD / MiniLLM's reverse KL): the student's own seeded samples, the generalized JSD
between student and teacher next-token distributions on them (forward KL at β = 0, reverse KL at β = 1),
GKD's λ mix of student-sample and corpus batches, and a short run that brings the student to the teacher."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from edgekd.distill.losses.sequence_level import OnPolicyLoss
from edgekd.distill.on_policy import OnPolicyDistillation, generalized_jsd, sample_continuations
from edgekd.distill.outputs import ModelOutputs
from edgekd.distill.sequence_kd import choose_prompts, generated_tokens, stop_ids
from edgekd.errors import ConfigError
from edgekd.models.call import eval_mode
from tests.char_lm import IDS, VOCAB, char_lm, stepwise_greedy, trained_char_lm

MASKS = ["none", "ragged", "one"]


def _logits(b, t, v, seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(b, t, v, generator=g), scale * torch.randn(b, t, v, generator=g)


def _mask(kind, b, t):
    if kind == "none":
        return None
    mask = torch.ones(b, t, dtype=torch.bool)
    if kind == "ragged":
        for row in range(b):
            mask[row, : row % t] = False  # an on-policy mask: the prompt's positions do not count
    else:
        mask[:] = False
        mask[0, -1] = True
    return mask


def _direct_kl(p_logits, q_logits, temperature):
    """KL(p ‖ q) per position, written out from probabilities."""
    p = (p_logits / temperature).softmax(-1)
    return (p * (p.log() - (q_logits / temperature).softmax(-1).log())).sum(-1)


def _mean_over(values, mask):
    return values.mean() if mask is None else values[mask].mean()


SHAPES = [(2, 5, 7, 1.0), (3, 4, 11, 2.0), (1, 9, 3, 0.5), (4, 3, 36, 1.5)]


@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("b, t, v, temperature", SHAPES)
def test_beta_zero_is_forward_and_beta_one_reverse_kl(b, t, v, temperature, mask_kind):
    student, teacher = _logits(b, t, v, seed=b * t * v)
    mask = _mask(mask_kind, b, t)
    forward = _mean_over(_direct_kl(teacher, student, temperature), mask)
    reverse = _mean_over(_direct_kl(student, teacher, temperature), mask)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=0.0, temperature=temperature, mask=mask),
                               forward)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=1.0, temperature=temperature, mask=mask),
                               reverse)
    assert not torch.isclose(forward, reverse)  # the two directions really differ on these logits


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("b, t, v, temperature", SHAPES)
def test_between_the_ends_it_is_jsd_beta_against_the_mixture(b, t, v, temperature, beta):
    student, teacher = _logits(b, t, v, seed=v + t)
    p_s, p_t = (student / temperature).softmax(-1), (teacher / temperature).softmax(-1)
    mixture = beta * p_t + (1 - beta) * p_s
    direct = (beta * (p_t * (p_t / mixture).log()).sum(-1) + (1 - beta) * (p_s * (p_s / mixture).log()).sum(-1))
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=beta, temperature=temperature), direct.mean())
    # JSD_beta(student, teacher) = JSD_(1 - beta)(teacher, student): the roles of the two weights
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=beta, temperature=temperature),
                               generalized_jsd(teacher, student, beta=1 - beta, temperature=temperature))


@pytest.mark.parametrize("b, t, v, temperature", SHAPES)
def test_near_each_end_jsd_beta_scales_to_that_ends_kl(b, t, v, temperature):
    student, teacher = _logits(b, t, v, seed=3, scale=1.0)
    student, teacher = student.double(), teacher.double()
    forward = generalized_jsd(student, teacher, beta=0.0, temperature=temperature)
    reverse = generalized_jsd(student, teacher, beta=1.0, temperature=temperature)
    eps = 1e-5
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=eps, temperature=temperature) / eps, forward,
                               rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(generalized_jsd(student, teacher, beta=1 - eps, temperature=temperature) / eps,
                               reverse, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0])
def test_identical_distributions_give_zero_and_no_gradient(beta, temperature):
    teacher, _ = _logits(3, 4, 9, seed=11)
    student = (teacher + 5.0).requires_grad_(True)  # a constant shift: the same distributions
    value = generalized_jsd(student, teacher, beta=beta, temperature=temperature)
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    value.backward()
    assert student.grad.abs().max().item() < 1e-6


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_gradient_reaches_the_student_only(beta):
    student, teacher = _logits(2, 6, 8, seed=5)
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    mask = _mask("ragged", 2, 6)
    generalized_jsd(student, teacher, beta=beta, mask=mask).backward()
    assert teacher.grad is None
    assert student.grad[mask].abs().sum() > 0 and student.grad[~mask].abs().sum() == 0
    # the gradient is the divergence's own: compare with autograd through the direct formula
    reference = student.detach().clone().requires_grad_(True)
    p_s, p_t = reference.softmax(-1), teacher.detach().softmax(-1)
    mixture = beta * p_t + (1 - beta) * p_s
    kl_t = (p_t * (p_t / mixture).log()).sum(-1) if beta > 0 else (p_t * (p_t / p_s).log()).sum(-1)
    kl_s = (p_s * (p_s / mixture).log()).sum(-1) if beta < 1 else (p_s * (p_s / p_t).log()).sum(-1)
    direct = kl_t if beta == 0 else kl_s if beta == 1 else beta * kl_t + (1 - beta) * kl_s
    direct[mask].mean().backward()
    torch.testing.assert_close(student.grad, reference.grad)


@pytest.mark.parametrize("beta", [0.0, 0.4, 1.0])
def test_masked_positions_do_not_count(beta):
    student, teacher = _logits(3, 7, 10, seed=9)
    mask = _mask("ragged", 3, 7)
    noisy_s, noisy_t = student.clone(), teacher.clone()
    noisy_s[~mask] = 1e3 * torch.randn_like(noisy_s[~mask])
    noisy_t[~mask] = 1e3 * torch.randn_like(noisy_t[~mask])
    torch.testing.assert_close(generalized_jsd(noisy_s, noisy_t, beta=beta, mask=mask),
                               generalized_jsd(student, teacher, beta=beta, mask=mask))


@pytest.mark.parametrize("kwargs, expected", [
    ({"beta": -0.1}, r"^on_policy.beta: must be in \[0, 1\] \(0 forward KL, 1 reverse KL\), got -0.1$"),
    ({"beta": 1.5}, r"^on_policy.beta: must be in \[0, 1\]"),
    ({"beta": math.nan}, r"^on_policy.beta: must be in \[0, 1\]"),
    ({"temperature": 0.0}, r"^on_policy.temperature: must be a finite number > 0, got 0.0$"),
    ({"temperature": math.inf}, r"^on_policy.temperature: must be a finite number > 0"),
])
def test_bad_divergence_settings_are_one_line_config_errors(kwargs, expected):
    student, teacher = _logits(1, 2, 3, seed=0)
    with pytest.raises(ConfigError, match=expected):
        generalized_jsd(student, teacher, **({"beta": 0.5} | kwargs))
    with pytest.raises(ConfigError, match=expected):
        OnPolicyDistillation(**kwargs)


@pytest.mark.parametrize("kwargs, expected", [
    ({"student_fraction": 1.2}, r"^on_policy.student_fraction: must be in \[0, 1\]"),
    ({"student_fraction": -0.5}, r"^on_policy.student_fraction: must be in \[0, 1\]"),
    ({"sample_temperature": -1.0}, r"^on_policy.sample_temperature: must be a finite number > 0"),
    ({"prompt_tokens": 0}, r"^on_policy.prompt_tokens: a prompt needs at least 1 token, got 0$"),
    ({"new_tokens": 0}, r"^on_policy.new_tokens: must be at least 1, got 0$"),
    ({"beta": 2.0, "where": "distill.losses[1]"}, r"^distill.losses\[1\].beta: must be in \[0, 1\]"),
])
def test_bad_on_policy_settings_are_one_line_config_errors(kwargs, expected):
    with pytest.raises(ConfigError, match=expected) as info:
        OnPolicyDistillation(**kwargs)
    assert "\n" not in str(info.value)


@pytest.fixture(scope="module")
def student():
    return char_lm("llama", seed=4)


def test_samples_are_seeded_and_continue_the_prompts(student):
    prompts = choose_prompts(IDS, 6, 5, seed=1)
    first = sample_continuations(student, prompts, 12, generator=torch.Generator().manual_seed(3))
    assert first.shape == (6, 17) and torch.equal(first[:, :5], prompts)
    assert torch.equal(first, sample_continuations(student, prompts, 12, generator=torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sample_continuations(student, prompts, 12,
                                                       generator=torch.Generator().manual_seed(4)))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_cold_sampler_is_the_greedy_decoder(family):
    """Near temperature 0 the cached sampling loop must pick the argmax of a full forward pass at every step."""
    model = trained_char_lm(family, steps=15, seed=2)
    prompts = choose_prompts(IDS, 5, 7, seed=2)
    cold = sample_continuations(model, prompts, 15, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, stepwise_greedy(model, prompts, 15, stop_ids(model), 0))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_samples_follow_the_softmax_at_the_temperature(student, temperature):
    prompt = choose_prompts(IDS, 1, 6, seed=5)
    draws = sample_continuations(student, prompt.expand(20000, -1), 1, temperature=temperature,
                                 generator=torch.Generator().manual_seed(1))[:, -1]
    empirical = torch.bincount(draws, minlength=VOCAB).double() / draws.numel()
    with torch.no_grad():
        logits = student(input_ids=prompt).logits[0, -1].double()
    tv = {t: 0.5 * (empirical - (logits / t).softmax(-1)).abs().sum().item() for t in (0.5, 1.0, 2.0)}
    assert tv[temperature] < 0.03, tv
    assert tv[temperature] == min(tv.values()), tv


def test_sampling_stops_at_end_of_text_and_leaves_the_student_as_it_was(student):
    model = copy.deepcopy(student)
    prompts = choose_prompts(IDS, 16, 4, seed=6)
    free = sample_continuations(model, prompts, 12, generator=torch.Generator().manual_seed(2))
    token = int(free[:, 5:].flatten().mode().values)
    model.generation_config.eos_token_id = token
    model.train()
    stopped = sample_continuations(model, prompts, 12, generator=torch.Generator().manual_seed(2))
    assert model.training and not stopped.requires_grad
    keep = generated_tokens(stopped, 4, (token,))
    assert (stopped[:, 4:][~keep[:, 4:]] == 0).all() and (~keep[:, 4:]).any()
    # up to its stop every row is the same draw as without the stop token (same generator stream)
    assert torch.equal(stopped[keep], free[keep])


@pytest.mark.parametrize("prompt, new, expected", [
    (40, 9, r"^on_policy.prompt_tokens: a 40-token prompt plus 9 new tokens exceeds the model's context of 48"),
    (48, 1, r"^on_policy.prompt_tokens: a 48-token prompt plus 1 new tokens exceeds"),
    (0, 4, r"^on_policy.prompts: expected a \[prompts >= 1, tokens >= 1\] tensor"),
])
def test_prompts_beyond_the_context_are_refused(student, prompt, new, expected):
    with pytest.raises(ConfigError, match=expected):
        sample_continuations(student, torch.zeros(3, prompt, dtype=torch.long), new, generator=torch.Generator())
    if prompt:
        with pytest.raises(ConfigError, match=expected):
            OnPolicyDistillation(prompt_tokens=prompt, new_tokens=new).check_fits(student, char_lm("gpt2"))
        with pytest.raises(ConfigError, match=expected):
            OnPolicyDistillation(prompt_tokens=prompt, new_tokens=new).check_fits(char_lm("gpt2", context=64), student)
    with pytest.raises(ConfigError, match=r"^on_policy.new_tokens: must be at least 1"):
        sample_continuations(student, torch.zeros(3, 4, dtype=torch.long), 0, generator=torch.Generator())
    with pytest.raises(ConfigError, match=r"^on_policy.sample_temperature: must be a finite number > 0"):
        sample_continuations(student, torch.zeros(3, 4, dtype=torch.long), 2, temperature=0.0,
                             generator=torch.Generator())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 0.9, 1.0])
def test_lambda_is_the_probability_of_a_student_batch_and_each_batch_seed_decides_it(fraction):
    settings = OnPolicyDistillation(student_fraction=fraction)
    uses = [settings.uses_student_samples(torch.Generator().manual_seed(seed)) for seed in range(2000)]
    assert abs(sum(uses) / len(uses) - fraction) < 0.04
    if fraction in (0.0, 1.0):
        assert set(uses) == {bool(fraction)}
    again = [settings.uses_student_samples(torch.Generator().manual_seed(seed)) for seed in range(2000)]
    assert again == uses  # a batch's seed alone decides: a resumed run chooses as an uninterrupted one


def _is_slice(row, ids):
    return bool((ids.unfold(0, row.numel(), 1) == row).all(1).any())


def test_student_batches_mask_the_samples_and_corpus_batches_every_position(student):
    settings = OnPolicyDistillation(prompt_tokens=6, new_tokens=10, student_fraction=0.5)
    kinds = []
    for seed in range(8):
        student_batch = settings.uses_student_samples(torch.Generator().manual_seed(seed))
        batch = settings.batch(student, IDS, 5, torch.Generator().manual_seed(seed))
        assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (5, 15)
        assert torch.equal(batch.inputs[:, 1:], batch.targets[:, :-1])
        if student_batch:
            kinds.append("student")
            assert all(_is_slice(row, IDS) for row in batch.inputs[:, :6])
            sequences = torch.cat([batch.inputs[:, :1], batch.targets], 1)
            assert torch.equal(batch.mask, generated_tokens(sequences, 6, (0,))[:, 1:])
            assert not batch.mask[:, :5].any() and batch.mask[:, 5].all()  # from the first sampled token on
        else:
            kinds.append("corpus")
            assert all(_is_slice(row, IDS) for row in torch.cat([batch.inputs, batch.targets[:, -1:]], 1))
            assert batch.mask.all()
    assert set(kinds) == {"corpus", "student"}


def _loss(settings, learner, teacher, batch):
    """The pipeline's on-policy loss (OnPolicyLoss) on ``batch``: the teacher in eval mode without gradients."""
    with torch.no_grad(), eval_mode(teacher):
        teacher_out = ModelOutputs(logits=teacher(input_ids=batch.inputs).logits)
    loss = OnPolicyLoss(settings.beta, settings.temperature)
    return loss(ModelOutputs(logits=learner(input_ids=batch.inputs).logits), teacher_out, batch.targets, batch.mask)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_loss_is_the_divergence_of_the_two_models_with_gradients_in_the_student_only(student, beta):
    learner, teacher = copy.deepcopy(student), trained_char_lm("gpt2", steps=5)
    settings = OnPolicyDistillation(beta=beta, temperature=2.0, prompt_tokens=4, new_tokens=8)
    batch = settings.student_batch(learner, IDS, 3, torch.Generator().manual_seed(1))
    teacher.train()
    value = _loss(settings, learner, teacher, batch)
    value.backward()
    assert teacher.training and all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in learner.parameters() if p.requires_grad)
    with torch.no_grad():
        teacher_logits = teacher.eval()(input_ids=batch.inputs).logits
        expected = generalized_jsd(learner(input_ids=batch.inputs).logits, teacher_logits, beta=beta, temperature=2.0,
                                   mask=batch.mask)
    torch.testing.assert_close(value.detach(), expected)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_a_short_on_policy_run_brings_the_student_to_the_teacher_on_its_own_samples(beta):
    teacher = trained_char_lm("gpt2", steps=40, seed=1)
    learner = char_lm("llama", seed=3)
    settings = OnPolicyDistillation(beta=beta, prompt_tokens=6, new_tokens=16, student_fraction=1.0)

    def divergence():  # fresh samples of the current student, the same prompts and draws each time
        batch = settings.student_batch(learner, IDS, 16, torch.Generator().manual_seed(99))
        with torch.no_grad():
            return _loss(settings, learner, teacher, batch).item()

    before = divergence()
    optimizer = torch.optim.AdamW(learner.parameters(), lr=1e-2)
    for step in range(30):
        batch = settings.batch(learner, IDS, 8, torch.Generator().manual_seed(step))
        learner.train()
        loss = _loss(settings, learner, teacher, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = divergence()
    assert after < 0.5 * before, (before, after)
