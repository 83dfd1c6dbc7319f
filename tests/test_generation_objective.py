"""The causal-LM distill objective runs the teacher only for losses that read its logits: the corpus-only
baseline (``token_kl`` at ``alpha: 0``) and sequence-level KD cost no teacher forward pass per step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.data.lm_data import LMData
from edgekd.distill.causal_lm_stage import GenerationObjective
from edgekd.distill.losses.sequence_level import SequenceKD
from edgekd.distill.losses.token_kl import TokenKL
from tests.char_lm import IDS, TOKENIZER, char_lm


def _counting(model: nn.Module) -> list[int]:
    """A one-item counter of ``model``'s forward passes."""
    calls = [0]
    model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("losses, teacher_calls", [
    ([TokenKL(kind="token_kl", alpha=0.0)], 0),
    ([TokenKL(kind="token_kl", alpha=0.5)], 1),
    ([TokenKL(kind="token_kl", alpha=1.0, temperature=2.0)], 1),
    ([TokenKL(kind="token_kl", alpha=0.0), SequenceKD(kind="sequence_kd", prompts=4, prompt_tokens=6,
                                                      new_tokens=8)], 0),
])
def test_the_teacher_runs_once_per_loss_that_reads_its_logits(losses, teacher_calls, tmp_path: Path) -> None:
    student, teacher = char_lm("gpt2", seed=1), char_lm("gpt2", width=48, seed=2).eval()
    data = LMData(tokenizer=TOKENIZER, train=IDS, validation=IDS[:64], context=32)
    objective = GenerationObjective(losses, student, teacher, data, tmp_path, seed=0, where="stages[1]")
    calls = _counting(teacher)  # counted from here: sequence-level KD generated its continuations above
    idx, inputs, targets = next(data.windows().batches(4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    loss = objective(student, inputs, targets, idx)
    loss.backward()
    assert calls[0] == teacher_calls
    assert torch.isfinite(loss) and any(p.grad is not None for p in student.parameters())
