"""Hinton loss on known values; the training loop resumes exactly where it stopped."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgekd.config import CNNSpec, SklearnData, TrainingConfig
from edgekd.data import load_dataset
from edgekd.distill.losses import HintonDistillationLoss
from edgekd.distill.trainer import CHECKPOINT, accuracy, fit
from edgekd.models import build_model


def test_hinton_alpha_zero_is_cross_entropy() -> None:
    student = torch.tensor([[2.0, 0.5, -1.0]])
    teacher = torch.tensor([[0.0, 3.0, 0.0]])
    labels = torch.tensor([0])
    loss = HintonDistillationLoss(temperature=4.0, alpha=0.0)(student, teacher, labels)
    assert loss.item() == pytest.approx(F.cross_entropy(student, labels).item())


def test_hinton_identical_logits_have_zero_soft_loss() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    loss = HintonDistillationLoss(temperature=3.0, alpha=1.0)(logits, logits.clone(), torch.tensor([2, 2]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_hinton_soft_term_matches_hand_computation() -> None:
    # Two classes, T = 2: p_teacher = softmax([2, 0] / 2), p_student = softmax([0, 0] / 2) = [0.5, 0.5]
    t = 2.0
    p_t1 = 1 / (1 + math.exp(-1.0))
    p_t = [p_t1, 1 - p_t1]
    kl = sum(p * math.log(p / 0.5) for p in p_t)
    expected = 0.5 * t * t * kl + 0.5 * math.log(2)  # alpha 0.5; CE of uniform logits is log 2
    loss = HintonDistillationLoss(temperature=t, alpha=0.5)(
        torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5)])
def test_hinton_rejects_bad_settings(temperature: float, alpha: float) -> None:
    with pytest.raises(ValueError):
        HintonDistillationLoss(temperature, alpha)


def _train(epochs: int, checkpoint_dir: Path) -> torch.nn.Module:
    data = load_dataset(SklearnData(source="sklearn", name="digits", limit=600), seed=0)
    torch.manual_seed(0)
    model = build_model(CNNSpec(arch="cnn", channels=[8, 16], hidden=32, dropout=0.1), data.input_shape, 10)
    fit(model, (data.x_train, data.y_train), (data.x_val, data.y_val),
        TrainingConfig(epochs=epochs, batch_size=32, lr=3e-3),
        lambda logits, labels, _idx: F.cross_entropy(logits, labels),
        seed=0, checkpoint_dir=checkpoint_dir, show_progress=False)
    return model


def test_training_learns_digits(tmp_path: Path) -> None:
    data = load_dataset(SklearnData(source="sklearn", name="digits", limit=600), seed=0)
    model = _train(6, tmp_path)
    assert accuracy(model, data.x_test, data.y_test) > 0.8


def test_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    straight = _train(5, tmp_path / "straight")
    # An "interrupted" run: 3 epochs leave a checkpoint; asking for 5 resumes at epoch 4.
    _train(3, tmp_path / "resumed")
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed = _train(5, tmp_path / "resumed")
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
