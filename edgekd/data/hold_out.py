"""Holding examples out of a set (for validation or testing) without taking a class's last example.

Data sources that carve their validation and test sets out of the training data (image folders, ``.npz`` files,
scikit-learn's sets) split with :func:`hold_out`: stratified by class where every class can give an example to
both sides, as scikit-learn's ``train_test_split`` does. A class of one example cannot be stratified (scikit-learn
refuses); then the held-out examples are drawn from all but one example of each class, so that every class keeps
one where the hold-out leaves room for it.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.model_selection import train_test_split


def hold_out(indices: np.ndarray, labels: np.ndarray | None, size: int | float,
             seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``indices`` split into those kept and those held out, each in a random order seeded by ``seed``.

    ``size`` is how many to hold out, or which share (rounded up, as scikit-learn does). ``labels`` are the classes
    of the examples ``indices`` point at (one per index); None (multi-label or regression targets) holds out at
    random.
    """
    count = len(indices)
    held = size if isinstance(size, int) else math.ceil(size * count)
    if labels is None:
        return tuple(train_test_split(indices, test_size=held, random_state=seed))
    classes, per_class = np.unique(labels, return_counts=True)
    if per_class.min() >= 2 and len(classes) <= held <= count - len(classes):
        return tuple(train_test_split(indices, test_size=held, random_state=seed, stratify=labels))
    order = np.random.default_rng(seed).permutation(count)
    out = np.zeros(count, dtype=bool)
    if held <= count - len(classes):
        reserved = np.zeros(count, dtype=bool)
        reserved[order[np.unique(labels[order], return_index=True)[1]]] = True  # one example of each class
        out[order[~reserved[order]][:held]] = True
    else:
        out[order[:held]] = True
    return indices[order[~out[order]]], indices[order[out[order]]]
