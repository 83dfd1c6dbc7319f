"""Validation and test sets carved out of the training data are stratified where they can be, and never take a
class's last example where there is room to keep it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from edgekd.data.config import NpzData
from edgekd.data.datasets import load_dataset
from edgekd.data.hold_out import hold_out


def test_a_split_every_class_can_stratify_is_scikit_learns() -> None:
    labels = np.repeat(np.arange(4), [10, 6, 5, 9])
    indices = np.arange(100, 130)
    for size in (8, 0.25):
        keep, out = hold_out(indices, labels, size, seed=3)
        expected = train_test_split(indices, test_size=size, random_state=3, stratify=labels)
        assert np.array_equal(keep, expected[0]) and np.array_equal(out, expected[1])


@pytest.mark.parametrize("seed", range(20))
def test_a_class_of_one_example_keeps_it_where_the_hold_out_leaves_room(seed: int) -> None:
    labels = np.array([0] * 6 + [1] * 6 + [2])
    keep, out = hold_out(np.arange(13), labels, 0.5, seed)  # 7 held out, 6 kept: room for each of 3 classes
    assert sorted(np.concatenate([keep, out]).tolist()) == list(range(13)) and len(out) == 7
    assert set(labels[keep].tolist()) == {0, 1, 2}


def test_a_hold_out_too_large_for_every_class_draws_from_all_and_without_labels_at_random() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    outs = [hold_out(np.arange(5), labels, 3, seed)[1] for seed in range(30)]  # 2 kept: one class has to go
    assert all(len(out) == 3 for out in outs)
    assert {int(labels[np.setdiff1d(np.arange(5), out)].tolist().count(2)) for out in outs} == {0, 1}
    keep, out = hold_out(np.arange(10), None, 0.3, seed=1)
    assert len(out) == 3 and sorted(np.concatenate([keep, out]).tolist()) == list(range(10))


def test_npz_data_with_a_class_of_one_example_is_split_not_refused_by_scikit_learn(tmp_path: Path) -> None:
    """scikit-learn's stratified split raised "The least populated classes in y have only 1 member", which edgekd
    validate and run printed as an internal error."""
    path = tmp_path / "one.npz"
    np.savez(path, inputs=np.random.default_rng(0).random((41, 1, 4, 4), dtype=np.float32),
             labels=np.array([0] * 20 + [1] * 20 + [2]))
    splits = load_dataset(NpzData(source="npz", path=str(path)), 0)
    assert splits.y_train.tolist().count(2) == 1
    assert len(splits.y_train) + len(splits.y_val) + len(splits.y_test) == 41
