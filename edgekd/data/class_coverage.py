"""Classes of a dataset that its training split lacks, said in the data's own class names (folder names, CSV
labels, an npz's ``class_names``; numbers only where the labels are numbers) with their cause and what to change.

A class can lack training examples because the splits :func:`edgekd.data.datasets.load_dataset` holds out of the
training data (``val_fraction`` or ``val_examples`` for validation, ``test_fraction`` for testing) took all of
them, because a text source's ``limit_train`` kept none of them, or because the training data has none: labels
given as numbers with gaps (0, 2, 5 make six classes, three of them empty), or a named class without examples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekd.data.config import DataConfig, MemoryData, NpzData, SklearnData
from edgekd.data.datasets import DatasetSplits
from edgekd.data.memory import held
from edgekd.data.text import TextSplits

#: What each split held out of the training data is held out for, as messages say it.
PURPOSE = {"val": "validation", "test": "testing"}
#: Classes named in one message at most.
SHOWN = 10


def held_out_of_train(config: DataConfig) -> dict[str, tuple[str, object]]:
    """The splits ``load_dataset`` carves out of ``config``'s training data (``val``, ``test``), each with the key
    and value of the setting that sizes it; a split given as data of its own (an image folder's ``val``, an npz's
    ``eval_data``, a ``val`` set given in Python) is not one."""
    if isinstance(config, NpzData) and config.eval_data is not None:
        return {}
    if isinstance(config, SklearnData | NpzData):
        return {"val": ("data.val_fraction", config.val_fraction), "test": ("data.test_fraction", config.test_fraction)}
    if isinstance(config, MemoryData):
        return {} if "val" in held(config).splits else {"val": ("data.val_fraction", config.val_fraction)}
    if getattr(config, "val", None) is None:  # image folders and CSVs without a val set, text and hf_disk sources
        for key in ("val_fraction", "val_examples"):
            if hasattr(config, key):
                return {"val": (f"data.{key}", getattr(config, key))}
    return {}


def numbered(class_names: Sequence[str]) -> bool:
    """Whether the classes are the label numbers themselves (``0``, ``1``, …): an npz's or Python sets' labels
    without names, scikit-learn's digits."""
    return tuple(class_names) == tuple(map(str, range(len(class_names))))


def class_text(class_names: Sequence[str], classes: Sequence[int]) -> str:
    """``classes`` as a message names them: ``'rare', 'cat dog'`` by name, ``1, 3`` where the names are the
    numbers, at most :data:`SHOWN` of them then how many more."""
    if numbered(class_names):
        shown = ", ".join(str(c) for c in classes[:SHOWN])
    else:
        shown = ", ".join(repr(class_names[c]) for c in classes[:SHOWN])
    return shown + (f" and {len(classes) - SHOWN} more" if len(classes) > SHOWN else "")


def classes_without_training_examples(splits: DatasetSplits | TextSplits, config: DataConfig) -> str | None:
    """The classes of ``splits`` (loaded from ``config``; single-label) with no training example, why and what to
    do, as one clause (clauses joined by ``;`` when their causes differ); None when every class has one."""
    labels = {split: split_labels(splits, split) for split in ("train", "val", "test")}
    counts = np.bincount(labels["train"], minlength=len(splits.class_names))
    missing = np.flatnonzero(counts == 0).tolist()
    if not missing:
        return None
    carved = held_out_of_train(config)
    by_cause: dict[tuple[str, ...], list[int]] = {}
    for cls in missing:
        holding = tuple(split for split in carved if bool((labels[split] == cls).any()))
        by_cause.setdefault(holding, []).append(cls)
    return "; ".join(_held_out_clause(splits.class_names, labels, classes, {split: carved[split] for split in holding})
                     if holding else _absent_clause(splits.class_names, classes, getattr(config, "limit_train", None))
                     for holding, classes in by_cause.items())


def split_labels(splits: DatasetSplits | TextSplits, split: str) -> np.ndarray:
    """The class labels of ``split`` (``train``, ``val`` or ``test``) of array or text data."""
    if isinstance(splits, TextSplits):
        return np.asarray(getattr(splits, split).labels)
    return getattr(splits, f"y_{split}").numpy()


def _held_out_clause(class_names: Sequence[str], labels: dict[str, np.ndarray], classes: list[int],
                     holding: dict[str, tuple[str, object]]) -> str:
    """``classes``, whose examples all went to the ``holding`` splits, named with the settings that took them."""
    names = class_text(class_names, classes)
    purposes = " and ".join(PURPOSE[split] for split in holding)
    settings = " and ".join(f"{key} ({value})" for key, value in holding.values())
    keys = " or ".join(key for key, _ in holding.values())
    if len(classes) > 1:
        return (f"classes {names} have no training examples: their examples were all held out for {purposes} by "
                f"{settings}; lower {keys} or add training examples of them")
    count = sum(int((labels[split] == classes[0]).sum()) for split in holding)
    examples = "its only example was" if count == 1 else f"all {count} of its examples were"
    return (f"class {names} has no training example: {examples} held out for {purposes} by {settings}; lower "
            f"{keys} or add training examples of it")


def _absent_clause(class_names: Sequence[str], classes: list[int], limit_train: int | None) -> str:
    """``classes``, of which the training data holds nothing: gaps in numbered labels, named classes left empty,
    or none among the first ``limit_train`` training examples."""
    names = class_text(class_names, classes)
    if limit_train is not None:
        return (f"the {limit_train} training examples data.limit_train keeps hold none of class {names}; raise "
                "data.limit_train or unset it")
    if numbered(class_names):
        return (f"the training set has no examples of class {names} (its labels run from 0 to {len(class_names) - 1})"
                f"; number the classes 0 to {len(class_names) - len(classes) - 1} without gaps")
    return f"the training set has no examples of class {names}; add training examples of each class"
