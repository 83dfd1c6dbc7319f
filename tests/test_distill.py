"""The training loop learns, schedules, stops early and resumes exactly where it stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from edgekd.config.training import TrainingConfig
from edgekd.data.config import SklearnData
from edgekd.data.task_data import prepare_task_data
from edgekd.distill import trainer
from edgekd.distill.trainer import CHECKPOINT, _warmup_then_linear_decay, accuracy, fit
from edgekd.models.architectures import build_model
from edgekd.models.specs import CNNSpec

DIGITS = SklearnData(source="sklearn", name="digits", limit=600)


def _cross_entropy(model, inputs, labels, _idx):
    return F.cross_entropy(model(*inputs.values()), labels)


def _train(checkpoint_dir: Path, **settings) -> tuple[torch.nn.Module, object]:
    data = prepare_task_data(DIGITS, seed=0)
    torch.manual_seed(0)
    model = build_model(CNNSpec(arch="cnn", channels=[8, 16], hidden=32, dropout=0.1), data.signature.image_shape, 10)
    config = TrainingConfig(**{"epochs": 5, "batch_size": 32, "lr": 3e-3, **settings})
    history = fit(model, data.train, data.val, config, _cross_entropy, seed=0, checkpoint_dir=checkpoint_dir,
                  show_progress=False)
    return model, history


def test_training_learns_digits(tmp_path: Path) -> None:
    model, history = _train(tmp_path, epochs=6, lr=1e-2, warmup_ratio=0.1, max_grad_norm=1.0)
    assert accuracy(model, prepare_task_data(DIGITS, seed=0).test) > 0.8
    assert history.epochs_run == 6 and 1 <= history.best_epoch <= 6


def test_resumed_training_equals_uninterrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight, _ = _train(tmp_path / "straight", warmup_ratio=0.2)
    original = trainer._save_checkpoint

    def killed_after_epoch_3(directory, modules, optimizer, scheduler, best_state, history):
        original(directory, modules, optimizer, scheduler, best_state, history)
        if history.epochs_run == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", killed_after_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "resumed", warmup_ratio=0.2)
    monkeypatch.undo()
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed, history = _train(tmp_path / "resumed", warmup_ratio=0.2)
    assert history.resumed_from_epoch == 3
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("damage", ["truncated", "garbage", "same-size"])
def test_a_damaged_checkpoint_is_trained_over_from_the_first_epoch(damage: str, tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint truncated or overwritten after it was written failed every re-run of the stage with 'internal
    error: SafetensorError: Error while deserializing header' (only --fresh got past it); one whose tensor bytes
    were overwritten in place (same size: it still parses) was resumed from, and its NaN weights failed every
    re-run. Training starts over, saying why, and ends as an uninterrupted run does."""
    straight, _ = _train(tmp_path / "straight", epochs=3)
    (tmp_path / "damaged").mkdir()
    checkpoint = tmp_path / "damaged" / CHECKPOINT
    _train(tmp_path / "damaged", epochs=3)
    data = checkpoint.read_bytes()
    damaged = {"truncated": data[:1000], "garbage": b"\x00" * 64, "same-size": data[:-64] + b"\xff" * 64}
    checkpoint.write_bytes(damaged[damage])
    again, history = _train(tmp_path / "damaged", epochs=3)
    assert history.resumed_from_epoch == 0 and history.epochs_run == 3
    assert f"{checkpoint}: cannot resume from it" in caplog.text and "training from the first epoch" in caplog.text
    for (name, a), (_, b) in zip(straight.state_dict().items(), again.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    # lr 0 never improves on epoch 1, so patience 2 stops after epoch 3.
    _, history = _train(tmp_path, epochs=10, lr=1e-12, patience=2)
    assert history.stopped_early and history.epochs_run == 3 and history.best_epoch == 1


def test_warmup_then_linear_decay_schedule() -> None:
    factor = _warmup_then_linear_decay(0.25, 8)
    assert [round(factor(step), 3) for step in range(9)] == [0.5, 1.0, 1.0, 0.833, 0.667, 0.5, 0.333, 0.167, 0.0]
