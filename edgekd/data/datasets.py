"""Load a recipe's dataset, split into train/validation/test.

scikit-learn's bundled sets (no download; they ship inside the scikit-learn wheel) and ``.npz`` image
files (:mod:`edgekd.data.npz`) become tensors
(:class:`DatasetSplits`); text sources become sentences and labels (:class:`~edgekd.data.text.TextSplits`,
see :mod:`edgekd.data.text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch

from edgekd.data.config import DataConfig, MemoryData, NpzData, SklearnData
from edgekd.data.hold_out import hold_out
from edgekd.data.image_data import load_image_splits
from edgekd.data.image_files import ImageDataConfig, is_image_data
from edgekd.data.memory import held
from edgekd.data.npz import load_npz
from edgekd.data.text import TextDataConfig, TextSplits, load_text_dataset
from edgekd.errors import DataError, listing


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
    soft_train: torch.Tensor | None = None
    """Class probabilities to train on, a row per training example (a ``.npz`` set's ``soft_labels``)."""
    preprocessing: dict[str, Any] | None = None
    """How image files became these inputs (:mod:`edgekd.data.image_prep`); None for other sources."""

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
def load_dataset(config: SklearnData | NpzData | MemoryData | ImageDataConfig, seed: int) -> DatasetSplits: ...


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
    if isinstance(config, MemoryData):
        return _memory_splits(config, seed)
    if is_image_data(config):
        return _image_file_splits(config, seed)  # type: ignore[arg-type]
    return load_text_dataset(config, seed)


def _image_file_splits(config: ImageDataConfig, seed: int) -> DatasetSplits:
    """Image folders, CSVs of image paths and ``hf_disk`` image columns (:mod:`edgekd.data.image_data`)."""
    sets = load_image_splits(config, seed)
    return DatasetSplits(x_train=sets.inputs["train"], y_train=sets.labels["train"], x_val=sets.inputs["val"],
                         y_val=sets.labels["val"], x_test=sets.inputs["test"], y_test=sets.labels["test"],
                         class_names=sets.class_names, preprocessing=sets.preprocessing)


def _memory_splits(config: MemoryData, seed: int) -> DatasetSplits:
    """Image sets given in Python (:mod:`edgekd.data.memory`); validation split from train when not given."""
    sets = held(config)
    if sets.kind != "image":
        raise DataError("data: the sets given in Python hold token ids; this needs image (float tensor) data")
    train, val = sets.train_val(config.val_fraction, seed)
    test = sets.splits["test"]
    return DatasetSplits(x_train=train.inputs, y_train=train.labels, x_val=val.inputs, y_val=val.labels,
                         x_test=test.inputs, y_test=test.labels,
                         class_names=tuple(map(str, range(sets.num_classes))))


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
    soft = loaded.soft_labels if config.soft_labels and loaded.labels.dtype == np.int64 else None
    if config.eval_data is None:
        return _split(loaded.inputs, loaded.labels, loaded.class_names, config.val_fraction, config.test_fraction,
                      seed, stratify=loaded.labels.dtype == np.int64, soft=soft)
    eval_seed = config.eval_data.split_seed if config.eval_data.split_seed is not None else seed
    check_held_out_split(config, loaded.metadata, eval_seed)
    if isinstance(config.eval_data, SklearnData):
        held_out = _load_sklearn_splits(config.eval_data, eval_seed)
    else:
        held_out = _image_file_splits(config.eval_data, eval_seed)
        _check_preprocessing(config, loaded.metadata, held_out.preprocessing)
    if held_out.input_shape != loaded.inputs.shape[1:]:
        raise DataError(f"{config.path}: inputs of shape {loaded.inputs.shape[1:]} do not fit data.eval_data's "
                        f"{held_out.input_shape}")
    labels, soft = _in_classes_of(config.path, loaded.class_names, held_out.class_names, loaded.labels, soft)
    return replace(held_out, x_train=torch.from_numpy(loaded.inputs), y_train=torch.from_numpy(labels),
                   soft_train=torch.from_numpy(soft) if soft is not None else None)


def _in_classes_of(path: Path, names: tuple[str, ...], held_out: tuple[str, ...], labels: np.ndarray,
                   soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A training set's class indices (and soft-label columns) of its class ``names`` as the indices of the same
    names among ``held_out``'s (eval_data's, which the model's outputs follow): a set whose classes come in
    another order was trained and tested index against index, silently wrong. A name eval_data lacks is refused."""
    missing = [name for name in names if name not in held_out]
    if missing:
        raise DataError(f"{path}: class_names {listing(missing, 6)} are not classes of data.eval_data "
                        f"({listing(held_out, 6)}); expected the set's classes by eval_data's names")
    index = np.asarray([held_out.index(name) for name in names], dtype=np.int64)
    if soft is not None:
        columns = np.zeros((len(soft), len(held_out)), dtype=soft.dtype)
        columns[:, index] = soft
        soft = columns
    return index[labels], soft


def check_held_out_split(config: NpzData, metadata: dict[str, Any] | None, eval_seed: int) -> None:
    """Refuse validation and test splits of the data a synthetic set was learnt from, split another way.

    ``metadata["learned_from"]`` (written by :mod:`edgekd.dataset_distill`) names that data and the
    split seed of the training split it used; any other seed puts some of those training images in
    ``eval_data``'s test split, and the accuracy measured there would be inflated.
    """
    source = (metadata or {}).get("learned_from")
    if not isinstance(source, dict):
        return
    if not isinstance(config.eval_data, SklearnData):
        _check_image_validation(config, source, eval_seed)
        return
    if source.get("data") == config.eval_data.model_dump(mode="json", exclude={"split_seed"}):
        if source.get("split_seed") != eval_seed:
            raise DataError(f"{config.path}: its examples were learnt from the training split of this data split with "
                            f"seed {source.get('split_seed')}; data.eval_data splits it with seed {eval_seed}, so its "
                            f"test examples include images the set was learnt from: set data.eval_data.split_seed: "
                            f"{source.get('split_seed')}")
        return
    learnt = _learnt_sklearn(source, config.eval_data.name)
    if learnt is None:  # learnt from other data: nothing of eval_data's was seen
        return
    learnt_train, _, _ = _split_indices(_sklearn_labels(learnt), learnt.val_fraction, learnt.test_fraction,
                                        source["split_seed"])
    _, val, test = _split_indices(_sklearn_labels(config.eval_data), config.eval_data.val_fraction,
                                  config.eval_data.test_fraction, eval_seed)
    seen = {name: len(np.intersect1d(held, learnt_train)) for name, held in (("test", test), ("validation", val))}
    if any(seen.values()):
        written = learnt.model_dump(mode="json", include={"limit", "val_fraction", "test_fraction"},
                                    exclude_none=True)
        raise DataError(f"{config.path}: its examples were learnt from a training split of {learnt.name} that holds "
                        f"{seen['test']} of the {len(test)} test and {seen['validation']} of the {len(val)} validation "
                        f"examples data.eval_data splits off, so the accuracy measured there would be inflated: split "
                        f"data.eval_data as the set was learnt ({', '.join(f'{k}: {v}' for k, v in written.items())}, "
                        f"split_seed: {source['split_seed']})")


def _check_image_validation(config: NpzData, source: dict[str, Any], eval_seed: int) -> None:
    """Refuse image ``eval_data`` whose validation split, held out of its training images, would hold images the set
    was learnt from: the same training images split another way (another ``val_fraction`` or split seed), or all of
    them learnt from (their data had a ``val`` set). Its test set is files of their own, never learnt from."""
    eval_data, learnt = config.eval_data, source.get("data")
    if eval_data.val is not None or not isinstance(learnt, dict) or learnt.get("source") != eval_data.source \
            or not isinstance(learnt.get("train"), str) or Path(learnt["train"]).resolve() != eval_data.train.resolve():
        return
    if learnt.get("val") is not None:
        raise DataError(f"{config.path}: its examples were learnt from all the training images of {eval_data.train} "
                        "(their data had a val set); data.eval_data holds validation images out of them, so "
                        "validation would score images the set was learnt from: give data.eval_data that val set")
    learnt_split = (learnt.get("val_fraction"), source.get("split_seed"))
    if learnt_split != (eval_data.val_fraction, eval_seed):
        raise DataError(f"{config.path}: its examples were learnt from the training images of {eval_data.train} left "
                        f"after a validation split of val_fraction {learnt_split[0]} with split seed {learnt_split[1]};"
                        f" data.eval_data holds out val_fraction {eval_data.val_fraction} with split seed {eval_seed}, "
                        f"so validation would score images the set was learnt from: set data.eval_data.val_fraction: "
                        f"{learnt_split[0]} and data.eval_data.split_seed: {learnt_split[1]}")


def _check_preprocessing(config: NpzData, metadata: dict[str, Any] | None, made: dict[str, Any] | None) -> None:
    """Refuse image ``eval_data`` that prepares its images otherwise than the set's inputs were made (its metadata's
    ``preprocessing``, which :mod:`edgekd.dataset_distill` writes): a model trained on the one and tested on the
    other would be scored on inputs of another scale, size or colour."""
    recorded = (metadata or {}).get("preprocessing")
    if not isinstance(recorded, dict) or made is None:
        return
    expected = json.loads(json.dumps({"source": config.eval_data.source, **made}))
    differing = [key for key in sorted(set(recorded) | set(expected)) if recorded.get(key) != expected.get(key)]
    if differing:
        said = "; ".join(f"{key} {recorded.get(key)} (eval_data: {expected.get(key)})" for key in differing[:4])
        raise DataError(f"{config.path}: its inputs were prepared otherwise than data.eval_data prepares its images: "
                        f"{said}; give data.eval_data the image settings of the data the set was learnt from")


def _learnt_sklearn(source: dict[str, Any], name: str) -> SklearnData | None:
    """The scikit-learn data named ``name`` a synthetic set's ``learned_from`` record says it was learnt from, or
    None (other data, or a record this version cannot read)."""
    data = source.get("data")
    if not isinstance(data, dict) or data.get("source") != "sklearn" or data.get("name") != name \
            or not isinstance(source.get("split_seed"), int):
        return None
    try:
        return SklearnData.model_validate(data)
    except ValueError:
        return None


def _sklearn_labels(config: SklearnData) -> np.ndarray:
    """The labels of ``config``'s examples (its ``limit`` first ones), in the order its split indexes them."""
    labels = _load_sklearn(config)[1]
    return labels[: config.limit] if config.limit is not None else labels


def _split_indices(labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int, *,
                   stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training, validation and test indices of :func:`_split` (they depend on the count, the seed and, when
    ``stratify``, the labels only)."""
    by_class = labels if stratify else None
    rest, test = hold_out(np.arange(len(labels)), by_class, test_fraction, seed)
    val_share = val_fraction / (1.0 - test_fraction)
    train, val = hold_out(rest, labels[rest] if stratify else None, val_share, seed)
    return train, val, test


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
    test_fraction: float, seed: int, *, stratify: bool = True, soft: np.ndarray | None = None
) -> DatasetSplits:
    """Split three ways, seeded; by class unless ``stratify`` is false (multi-label, regression): see
    :func:`~edgekd.data.hold_out.hold_out`.

    The split is of example indices (the permutation depends on the count, the seed and the labels only),
    so ``soft`` training targets follow their examples.
    """
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
    train, val, test = _split_indices(labels, val_fraction, test_fraction, seed, stratify=stratify)
    return DatasetSplits(
        x_train=torch.from_numpy(features[train]), y_train=torch.from_numpy(labels[train]),
        x_val=torch.from_numpy(features[val]), y_val=torch.from_numpy(labels[val]),
        x_test=torch.from_numpy(features[test]), y_test=torch.from_numpy(labels[test]),
        class_names=class_names, soft_train=torch.from_numpy(soft[train]) if soft is not None else None,
    )
