"""Load a recipe's dataset, split into train/validation/test.

scikit-learn's bundled sets (no download; they ship inside the scikit-learn wheel) and ``.npz`` image
files (:mod:`edgekd.data.npz`) become tensors
(:class:`DatasetSplits`); text sources become sentences and labels (:class:`~edgekd.data.text.TextSplits`,
see :mod:`edgekd.data.text`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import overload

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from edgekd.data.config import DataConfig, NpzData, SklearnData
from edgekd.data.npz import load_npz
from edgekd.data.text import TextDataConfig, TextSplits, load_text_dataset
from edgekd.errors import DataError


@dataclass(frozen=True)
class DatasetSplits:
    """A labelled dataset split three ways, as float/long tensors."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def sample_input(self, batch: int = 1) -> torch.Tensor:
        """The first ``batch`` test examples (for export and parity checks)."""
        return self.x_test[:batch]


@overload
def load_dataset(config: SklearnData | NpzData, seed: int) -> DatasetSplits: ...


@overload
def load_dataset(config: TextDataConfig, seed: int) -> TextSplits: ...


def load_dataset(config: DataConfig, seed: int) -> DatasetSplits | TextSplits:
    """Load and split the dataset a recipe names, seeded; by source, tensors or texts.

    Cached per (config, seed): stages of one run share the result, which nobody modifies.
    """
    if isinstance(config, SklearnData):
        return _load_sklearn_splits(config, seed)
    if isinstance(config, NpzData):
        return _load_npz_splits(config, seed)
    return load_text_dataset(config, seed)


@lru_cache(maxsize=4)
def _load_sklearn_splits(config: SklearnData, seed: int) -> DatasetSplits:
    """scikit-learn data, split stratified."""
    features, labels, class_names = _load_sklearn(config)
    if config.limit is not None:
        features, labels = features[: config.limit], labels[: config.limit]
    return _split(features, labels, class_names, config.val_fraction, config.test_fraction, seed)


def _load_npz_splits(config: NpzData, seed: int) -> DatasetSplits:
    """A ``.npz`` set: all of it for training when ``eval_data`` gives validation and test, else split."""
    loaded = load_npz(config.path, config.task)
    if config.eval_data is None:
        return _split(loaded.inputs, loaded.labels, loaded.class_names, config.val_fraction, config.test_fraction,
                      seed, stratify=loaded.labels.dtype == np.int64)
    held_out = _load_sklearn_splits(config.eval_data, seed)
    if held_out.input_shape != loaded.inputs.shape[1:] or len(loaded.class_names) > held_out.num_classes:
        raise DataError(f"{config.path}: inputs of shape {loaded.inputs.shape[1:]} in {len(loaded.class_names)} "
                        f"classes do not fit data.eval_data ({held_out.input_shape}, {held_out.num_classes} classes)")
    return replace(held_out, x_train=torch.from_numpy(loaded.inputs), y_train=torch.from_numpy(loaded.labels))


def _load_sklearn(config: SklearnData) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    from sklearn.datasets import load_digits

    loaders = {"digits": load_digits}
    bunch = loaders[config.name]()
    # digits: 8×8 grey images with values 0..16 → one channel in [0, 1]
    features = (bunch.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = bunch.target.astype(np.int64)
    class_names = tuple(str(name) for name in bunch.target_names)
    return features, labels, class_names


def _split(
    features: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], val_fraction: float,
    test_fraction: float, seed: int, *, stratify: bool = True
) -> DatasetSplits:
    """Split three ways, seeded; stratified by class unless ``stratify`` is false (multi-label, regression)."""
    if val_fraction + test_fraction >= 0.9:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction:.2f}; "
            "expected below 0.9 so that training data remains"
        )
    n_classes = len(np.unique(labels)) if stratify else 1
    min_split = int(min(val_fraction, test_fraction) * len(labels))
    if min_split < n_classes:
        raise DataError(
            f"data: {len(labels)} examples are too few to split into validation and test sets "
            f"holding each of the {n_classes} classes (raise data.limit or the fractions)"
        )
    x_rest, x_test, y_rest, y_test = train_test_split(
        features, labels, test_size=test_fraction, random_state=seed, stratify=labels if stratify else None
    )
    val_share = val_fraction / (1.0 - test_fraction)
    x_train, x_val, y_train, y_val = train_test_split(
        x_rest, y_rest, test_size=val_share, random_state=seed, stratify=y_rest if stratify else None
    )
    return DatasetSplits(
        x_train=torch.from_numpy(x_train), y_train=torch.from_numpy(y_train),
        x_val=torch.from_numpy(x_val), y_val=torch.from_numpy(y_val),
        x_test=torch.from_numpy(x_test), y_test=torch.from_numpy(y_test),
        class_names=class_names,
    )
