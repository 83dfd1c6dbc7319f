"""Token-level KD for causal LMs: per-position Hinton KD over next-token distributions, padding excluded."""

from __future__ import annotations

import pytest
import torch

from edgekd.distill.losses.hinton import HintonDistillationLoss
from edgekd.distill.losses.token_kl import TokenKLLoss
from edgekd.distill.outputs import ModelOutputs

CASES = [(2, 5, 7, 1.0, 0.5), (3, 4, 11, 2.0, 1.0), (1, 9, 3, 4.0, 0.0), (4, 2, 5, 0.5, 0.3)]


def _batch(b, t, v, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, v, generator=g), torch.randn(b, t, v, generator=g), torch.randint(v, (b, t), generator=g)


@pytest.mark.parametrize("b, t, v, temperature, alpha", CASES)
def test_equals_hinton_applied_to_every_position(b, t, v, temperature, alpha):
    student, teacher, targets = _batch(b, t, v, seed=b * t)
    token = TokenKLLoss(temperature, alpha)(ModelOutputs(student), ModelOutputs(teacher), targets)
    hinton = HintonDistillationLoss(temperature, alpha).forward_logits(
        student.flatten(0, 1), teacher.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(token, hinton)


@pytest.mark.parametrize("b, t, v, temperature, alpha", CASES)
def test_padded_positions_do_not_count(b, t, v, temperature, alpha):
    student, teacher, targets = _batch(b, t, v, seed=7)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, t // 2:] = 0
    garbage = student.clone()
    garbage[0, t // 2:] = 1e3 * torch.randn_like(garbage[0, t // 2:])
    loss = TokenKLLoss(temperature, alpha)
    torch.testing.assert_close(loss(ModelOutputs(student), ModelOutputs(teacher), targets, mask),
                               loss(ModelOutputs(garbage), ModelOutputs(teacher), targets, mask))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_pure_kd_is_zero_at_the_teacher_and_training_moves_towards_it(temperature):
    student, teacher, targets = _batch(2, 6, 9, seed=1)
    loss = TokenKLLoss(temperature, alpha=1.0)
    assert loss(ModelOutputs(teacher), ModelOutputs(teacher), targets).item() == pytest.approx(0.0, abs=1e-6)
    student.requires_grad_(True)
    optimizer = torch.optim.Adam([student], lr=0.1)
    first = loss(ModelOutputs(student), ModelOutputs(teacher), targets).item()
    for _ in range(100):
        value = loss(ModelOutputs(student), ModelOutputs(teacher), targets)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    assert value.item() < 0.2 * first


@pytest.mark.parametrize("temperature, alpha", [(0.0, 0.5), (-1.0, 0.5), (1.0, 1.5), (1.0, -0.1)])
def test_bad_parameters_are_refused(temperature, alpha):
    with pytest.raises(ValueError):
        TokenKLLoss(temperature, alpha)
