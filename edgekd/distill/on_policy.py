"""On-policy distillation for causal LMs: the student learns on its own samples (GKD, Agarwal et al. 2024).

Word- and sequence-level KD train the student on text it did not write, while at inference it
conditions on its own earlier tokens: errors compound on prefixes it never saw in training
(exposure bias). Generalized knowledge distillation samples continuations from the *student*, has
the teacher score every position of them, and pulls the student's next-token distribution towards
the teacher's there. With probability ``λ`` a batch is such student samples, otherwise fixed corpus
windows (``λ = 0`` is supervised KD, ``λ = 1`` fully on-policy). The loss itself is
:class:`edgekd.distill.losses.sequence_level.OnPolicyLoss`, which the distill stage weights with the others.

The divergence is the generalized Jensen-Shannon divergence of GKD (as in TRL's ``GKDTrainer``), with
``M = β·p_teacher + (1 − β)·p_student``:

- ``β = 0``: forward KL(teacher ‖ student) (mode covering, word-level KD's divergence);
- ``β = 1``: reverse KL(student ‖ teacher) (mode seeking, MiniLLM's objective);
- ``0 < β < 1``: ``JSD_β = β·KL(teacher ‖ M) + (1 − β)·KL(student ‖ M)``.

``JSD_β`` tends to 0 at both ends (``JSD_β / β → KL(teacher ‖ student)`` as ``β → 0``, and
``JSD_β / (1 − β) → KL(student ‖ teacher)`` as ``β → 1``), which is why the two ends are the KLs
themselves, as in GKD. Both distributions are softened by ``temperature``; the value is not rescaled
by T² (GKD's and TRL's convention). Gradients reach the student only, and only the positions whose
target was generated (or, for corpus windows, every position) count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.distill.losses.base import masked_mean, real_tokens
from edgekd.distill.sequence_kd import (
    TokenBatch,
    check_prompts,
    generated_tokens,
    pad_id,
    stop_ids,
)
from edgekd.errors import ConfigError
from edgekd.models.call import eval_mode, forward_parameters, parameter_device
from edgekd.models.causal_lm import windows


def check_beta(beta: float, where: str = "on_policy") -> None:
    """Refuse a ``beta`` outside [0, 1] with a one-line :class:`ConfigError` naming ``where``."""
    if not 0.0 <= beta <= 1.0:
        raise ConfigError(f"{where}.beta: must be in [0, 1] (0 forward KL, 1 reverse KL), got {beta}")


def check_temperature(temperature: float, where: str) -> None:
    """Refuse a temperature that is not a finite number > 0 with a one-line :class:`ConfigError` naming ``where``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"{where}: must be a finite number > 0, got {temperature}")


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) over the last axis, from log probabilities."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def generalized_jsd(student_logits: Tensor, teacher_logits: Tensor, *, beta: float, temperature: float = 1.0,
                    mask: Tensor | None = None) -> Tensor:
    """GKD's generalized JSD between student and teacher next-token distributions (see the module docstring).

    ``student_logits`` and ``teacher_logits`` are ``[B, T, V]`` (the teacher's are detached); ``mask``
    ``[B, T]`` marks the positions that count (``None``: all). The mean over counted positions of the
    divergence summed over the vocabulary.
    """
    check_beta(beta)
    check_temperature(temperature, "on_policy.temperature")
    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    if beta == 0.0:
        divergence = _kl(log_t, log_s)
    elif beta == 1.0:
        divergence = _kl(log_s, log_t)
    else:
        log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0)
        divergence = beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)
    return masked_mean(divergence, real_tokens(mask, student_logits))


def cache_keyword(model: nn.Module) -> str:
    """The name of a Hugging Face causal LM's KV-cache argument and output: ``cache`` from transformers 5 on,
    ``past_key_values`` before (still accepted by 5.x, with a deprecation warning)."""
    return "cache" if "cache" in forward_parameters(model) else "past_key_values"


@torch.no_grad()
def sample_continuations(student: nn.Module, prompts: Tensor, new_tokens: int, *, temperature: float = 1.0,
                         generator: torch.Generator, where: str = "on_policy", vocab: int | None = None) -> Tensor:
    """``new_tokens`` tokens sampled from ``student`` after each prompt, reusing its KV cache: ``[N, P + new_tokens]``.

    Each token is drawn from the softmax of the last logits divided by ``temperature``, with
    ``generator`` (so a seeded generator gives the same samples). After a row draws an end-of-text
    token (:func:`~edgekd.distill.sequence_kd.stop_ids`) the rest of it is padding. No gradients; the
    student runs in eval mode (its own mode is restored after). Tokens are drawn on the CPU (where
    ``generator`` lives), so a seed gives the same samples on any device; the sequences are returned on the CPU.
    ``vocab``: the tokenizer's size; only its ids are drawn or padded with (a checkpoint may have more rows).
    """
    check_prompts(student, prompts, new_tokens, where)
    check_temperature(temperature, f"{where}.sample_temperature")
    pad, device = pad_id(student, vocab), parameter_device(student)
    stops = torch.tensor(stop_ids(student), dtype=torch.long)
    sequence = prompts.long().cpu()
    finished = torch.zeros(sequence.shape[0], dtype=torch.bool)
    step_input, past = sequence, None
    keyword = cache_keyword(student)
    with eval_mode(student):
        for _ in range(new_tokens):
            out = student(input_ids=step_input.to(device), use_cache=True, **{keyword: past})
            probabilities = F.softmax(out.logits[:, -1, :vocab].float().cpu() / temperature, dim=-1)
            token = torch.multinomial(probabilities, 1, generator=generator).squeeze(1)
            token = torch.where(finished, pad, token)
            finished |= torch.isin(token, stops)
            sequence = torch.cat([sequence, token.unsqueeze(1)], dim=1)
            step_input, past = token.unsqueeze(1), getattr(out, keyword)
    return sequence


@dataclass(frozen=True)
class OnPolicyDistillation:
    """GKD's settings and its per-batch steps: whether a batch is student samples, and drawing it.

    ``beta`` picks the divergence (:func:`generalized_jsd`), ``temperature`` softens it,
    ``sample_temperature`` is the student's sampling temperature, ``student_fraction`` is GKD's ``λ``
    (the probability that a batch is drawn from the student; else corpus windows), and each student
    batch continues ``prompt_tokens``-token corpus prompts by ``new_tokens`` sampled tokens. ``where``
    names the recipe key in error messages. Call :meth:`check_fits` once before training: sampling checks
    the student's context, but only it checks the teacher's.
    """

    beta: float = 0.5
    temperature: float = 1.0
    sample_temperature: float = 1.0
    student_fraction: float = 0.5
    prompt_tokens: int = 8
    new_tokens: int = 24
    where: str = "on_policy"
    vocab: int | None = None
    """The tokenizer's size: samples are drawn among its ids only."""

    def __post_init__(self) -> None:
        check_beta(self.beta, self.where)
        check_temperature(self.temperature, f"{self.where}.temperature")
        check_temperature(self.sample_temperature, f"{self.where}.sample_temperature")
        if not 0.0 <= self.student_fraction <= 1.0:
            raise ConfigError(f"{self.where}.student_fraction: must be in [0, 1] (the fraction of batches sampled "
                              f"from the student), got {self.student_fraction}")
        if self.prompt_tokens < 1:
            raise ConfigError(f"{self.where}.prompt_tokens: a prompt needs at least 1 token, got {self.prompt_tokens}")
        if self.new_tokens < 1:
            raise ConfigError(f"{self.where}.new_tokens: must be at least 1, got {self.new_tokens}")

    def check_fits(self, student: nn.Module, teacher: nn.Module) -> None:
        """Refuse prompts plus new tokens longer than either model's context (one-line :class:`ConfigError`)."""
        prompts = torch.zeros(1, self.prompt_tokens, dtype=torch.long)
        for model in (student, teacher):
            check_prompts(model, prompts, self.new_tokens, self.where)

    def uses_student_samples(self, generator: torch.Generator) -> bool:
        """Whether the next batch is drawn from the student: with probability ``λ``, drawn from ``generator``
        (GKD's per-batch choice; a generator seeded per batch makes a resumed run choose as an uninterrupted one)."""
        return bool(torch.rand((), generator=generator).item() < self.student_fraction)

    def student_batch(self, student: nn.Module, ids: Tensor, batch: int, generator: torch.Generator) -> TokenBatch:
        """``batch`` random corpus prompts continued by the student's samples; the mask keeps generated targets."""
        prompts, _ = windows(ids, self.prompt_tokens, batch, generator)
        sequences = sample_continuations(student, prompts, self.new_tokens, temperature=self.sample_temperature,
                                         generator=generator, where=self.where, vocab=self.vocab)
        keep = generated_tokens(sequences, self.prompt_tokens, stop_ids(student))
        return TokenBatch(inputs=sequences[:, :-1], targets=sequences[:, 1:], mask=keep[:, 1:])

    def batch(self, student: nn.Module, ids: Tensor, batch: int, generator: torch.Generator) -> TokenBatch:
        """Student samples (:meth:`student_batch`) with probability ``λ``, else corpus windows of the same length
        with every position counted."""
        if self.uses_student_samples(generator):
            return self.student_batch(student, ids, batch, generator)
        inputs, targets = windows(ids, self.prompt_tokens + self.new_tokens - 1, batch, generator)
        return TokenBatch(inputs=inputs, targets=targets, mask=torch.ones_like(inputs, dtype=torch.bool))
