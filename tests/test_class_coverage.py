"""A class without training examples is said in the data's own names, with the split setting that took its examples
(or the labels' gaps, or the training data's lack) and what to change, for every data source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import TypeAdapter

from edgekd.data.class_coverage import class_text, classes_without_training_examples, held_out_of_train
from edgekd.data.config import DataConfig, MemoryData, NpzData, SklearnData
from edgekd.data.datasets import DatasetSplits
from edgekd.data.memory import register_data
from edgekd.log_level import warn_once

DIGITS = {"source": "sklearn", "name": "digits"}


def data(**fields: object) -> DataConfig:
    """A recipe's ``data`` section, validated as a recipe's is."""
    return TypeAdapter(DataConfig).validate_python(fields)


def splits(names: tuple[str, ...], train: list[int], val: list[int], test: list[int]) -> DatasetSplits:
    """Splits of the labels given (inputs of one pixel: only the labels matter here)."""
    def tensors(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(len(labels), 1, 1, 1), torch.tensor(labels, dtype=torch.int64)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = map(tensors, (train, val, test))
    return DatasetSplits(x_train, y_train, x_val, y_val, x_test, y_test, names)


@pytest.mark.parametrize(("config", "expected"), [
    (DIGITS, {"val": ("data.val_fraction", 0.15), "test": ("data.test_fraction", 0.2)}),
    ({"source": "npz", "path": "set.npz", "val_fraction": 0.1},
     {"val": ("data.val_fraction", 0.1), "test": ("data.test_fraction", 0.2)}),
    ({"source": "npz", "path": "set.npz", "eval_data": DIGITS}, {}),  # validation and test are the other data's
    ({"source": "imagefolder", "train": "a/train", "test": "a/test"}, {"val": ("data.val_fraction", 0.15)}),
    ({"source": "imagefolder", "train": "a/train", "test": "a/test", "val": "a/val"}, {}),
    ({"source": "image_csv", "train": "train.csv", "test": "test.csv", "val_fraction": 0.3},
     {"val": ("data.val_fraction", 0.3)}),
    ({"source": "hf_disk", "path": "saved", "image_column": "image", "val_examples": 50},
     {"val": ("data.val_examples", 50)}),
    ({"source": "tsv", "train": "train.tsv", "test": "dev.tsv"}, {"val": ("data.val_examples", 1000)}),
    ({"source": "corpus", "path": "text.txt"}, {}),
])
def test_the_splits_held_out_of_the_training_data_are_named_with_their_setting(
        config: dict, expected: dict) -> None:
    assert held_out_of_train(data(**config)) == expected


def test_sets_given_in_python_hold_out_validation_only_without_a_val_set() -> None:
    from torch.utils.data import TensorDataset

    images, labels = torch.rand(20, 1, 2, 2), torch.arange(20) % 2
    sets = {name: TensorDataset(images, labels) for name in ("train", "val", "test")}
    without = register_data({"train": sets["train"], "test": sets["test"]}, "test")
    given = register_data(sets, "test")
    assert held_out_of_train(MemoryData(**without)) == {"val": ("data.val_fraction", 0.15)}
    assert held_out_of_train(MemoryData(**given)) == {}


FOLDER = data(source="imagefolder", train="a/train", test="a/test", val_fraction=0.2)
NAMES = ("cat dog", "Ünïcode", "42", "rare")


@pytest.mark.parametrize(("config", "names", "labels", "expected"), [
    (FOLDER, NAMES, ([0, 1, 2], [3], []),
     "class 'rare' has no training example: its only example was held out for validation by data.val_fraction "
     "(0.2); lower data.val_fraction or add training examples of it"),
    (FOLDER, NAMES, ([0, 1], [2, 2, 3], []),
     "classes '42', 'rare' have no training examples: their examples were all held out for validation by "
     "data.val_fraction (0.2); lower data.val_fraction or add training examples of them"),
    (data(**DIGITS), tuple("0123"), ([0, 1, 3], [2], [2]),
     "class 2 has no training example: all 2 of its examples were held out for validation and testing by "
     "data.val_fraction (0.15) and data.test_fraction (0.2); lower data.val_fraction or data.test_fraction or add "
     "training examples of it"),
    (data(source="npz", path="set.npz"), tuple("012345"), ([0, 2, 5], [0], [5]),
     "the training set has no examples of class 1, 3, 4 (its labels run from 0 to 5); number the classes 0 to 2 "
     "without gaps"),
    (data(source="npz", path="set.npz", eval_data=DIGITS), ("a", "b", "c"), ([0, 2], [1], [1]),
     "the training set has no examples of class 'b'; add training examples of each class"),
    (FOLDER, NAMES, ([0, 1], [3], []),  # two causes: one clause each, in class order
     "the training set has no examples of class '42'; add training examples of each class; class 'rare' has no "
     "training example: its only example was held out for validation by data.val_fraction (0.2); lower "
     "data.val_fraction or add training examples of it"),
])
def test_classes_without_training_examples_are_named_with_their_cause(
        config: DataConfig, names: tuple[str, ...], labels: tuple[list[int], ...], expected: str) -> None:
    assert classes_without_training_examples(splits(names, *labels), config) == expected


def test_every_class_with_a_training_example_is_no_finding() -> None:
    assert classes_without_training_examples(splits(NAMES, [0, 1, 2, 3], [], []), FOLDER) is None


def test_class_text_names_at_most_ten_classes_by_name_or_number() -> None:
    assert class_text(NAMES, [3, 0]) == "'rare', 'cat dog'"
    assert class_text(tuple(map(str, range(20))), list(range(12))) == "0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 2 more"
    assert isinstance(data(**DIGITS), SklearnData) and isinstance(data(source="npz", path="x.npz"), NpzData)


def _warnings_of(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and repr(name) in r.getMessage()]


def test_an_image_folder_keeps_the_only_training_image_of_a_class_out_of_its_validation_set(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """val_fraction held 'rare''s only image out for validation (seed 7): the run trained without the class, and
    scored each of its test images as wrong. The hold-out now draws from all but one image of each class."""
    from edgekd.data import task_data

    warn_once.cache_clear()  # once a process: forget what earlier tests' data warned of
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 4)):
        for index, name in enumerate(NAMES):
            for i in range(1 if name == "rare" and split == "train" else count):
                path = tmp_path / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = np.array([60 * index, 200 - 40 * index, 90]) + rng.normal(0, 30, (8, 8, 3))
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    config = data(source="imagefolder", train=str(tmp_path / "train"), test=str(tmp_path / "test"), val_fraction=0.2)
    for seed in range(8):
        prepared = task_data.prepare_task_data(config, seed)
        train, val = prepared.train.labels.tolist(), prepared.val.labels.tolist()
        assert train.count(prepared.class_names.index("rare")) == 1 and len(val) == round(37 * 0.2)
        assert {train.count(c) for c, name in enumerate(prepared.class_names) if name != "rare"} <= set(range(8, 12))
    assert _warnings_of(caplog, "rare") == []


def test_a_run_reading_text_without_a_class_in_training_warns_once_naming_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from edgekd.data import task_data
    from edgekd.data.config import TokenizerConfig

    warn_once.cache_clear()
    rows = [(f"good film number {i}", "pos") if i % 2 else (f"bad film number {i}", "neg") for i in range(40)]
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{c}\n" for t, c in rows)
                                        + "a rare film\trare\n")
    (tmp_path / "test.tsv").write_text("sentence\tlabel\ngood\tpos\nbad\tneg\nrare\trare\n")
    files = {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "test.tsv")}
    tokenizer = TokenizerConfig(vocab_size=100, max_length=8)
    held_out, limited = data(**files, val_examples=10), data(**files, val_examples=1, limit_train=5)

    def classes(config: DataConfig, seed: int, split: str) -> set[str]:
        texts = task_data.load_dataset(config, seed)
        return {texts.class_names[label] for label in getattr(texts, split).labels}

    seed = next(s for s in range(50) if "rare" in classes(held_out, s, "val"))  # 'rare''s only example held out
    for _ in range(2):  # as every stage of a run reads its data
        task_data.prepare_task_data(held_out, seed, tokenizer_config=tokenizer)
    assert _warnings_of(caplog, "rare") == [
        "data: class 'rare' has no training example: its only example was held out for validation by "
        "data.val_examples (10); lower data.val_examples or add training examples of it; no model learns it, and "
        "each of its test examples counts as wrong"]
    caplog.clear()
    seed = next(s for s in range(50) if classes(limited, s, "train") == {"pos", "neg"}
                and "rare" not in classes(limited, s, "val"))
    task_data.prepare_task_data(limited, seed, tokenizer_config=tokenizer)
    assert _warnings_of(caplog, "rare") == [
        "data: the 5 training examples data.limit_train keeps hold none of class 'rare'; raise data.limit_train or "
        "unset it; no model learns it, and each of its test examples counts as wrong"]
