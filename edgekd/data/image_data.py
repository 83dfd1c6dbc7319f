"""Image-file sources (``imagefolder``, ``image_csv``, ``hf_disk`` with ``image_column``) loaded and split.

Class names are the training split's labels, sorted; a validation or test label the training split lacks,
or fewer than two classes, is a one-line error naming the folder or file. Validation is the ``val`` set
when given, else a stratified share of train held out with a permutation seeded by the recipe's seed (or
``split_seed``): ``val_fraction`` of it (folders, CSV) or ``val_examples`` (``hf_disk``, as for text).
Pixels become tensors as :mod:`edgekd.data.image_prep` says; the result carries that record.

Loaded sets are cached per (config, seed, content digest): the stages of a run decode the images once,
and a changed image is read anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from edgekd.data.config import HFDiskData
from edgekd.data.content_digest import image_data_digest
from edgekd.data.hold_out import hold_out
from edgekd.data.image_files import ImageDataConfig, LabelledImages, check_image, list_splits, open_image
from edgekd.data.image_prep import make_preparer
from edgekd.errors import DataError


@dataclass(frozen=True)
class ImageSets:
    """Inputs (float32 N × C × H × W) and class indices of ``train``, ``val`` and ``test``, and how they were made."""

    inputs: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    class_names: tuple[str, ...]
    preprocessing: dict[str, Any]


def load_image_splits(config: ImageDataConfig, seed: int) -> ImageSets:
    """The train/validation/test sets of ``config`` (see the module docstring)."""
    return _load(config, seed, image_data_digest(config))


def checked_splits(config: ImageDataConfig) -> tuple[dict[str, LabelledImages], tuple[str, ...]]:
    """The splits ``config`` names, listed without reading a pixel, and the training classes: at least two,
    and every other split's classes among them (a :class:`DataError` naming the place otherwise)."""
    splits = list_splits(config)
    train = splits["train"]
    class_names = tuple(sorted(set(train.labels)))
    if len(class_names) < 2:
        raise DataError(f"{train.location}: {len(class_names)} class ({', '.join(class_names)}) in {train.key}; "
                        "expected at least 2 classes")
    for split in splits.values():
        _check_classes(split, class_names)
    return splits, class_names


def check_images(config: ImageDataConfig) -> None:
    """What ``edgekd validate`` checks of image data: :func:`checked_splits`, and every image's header readable
    (:func:`~edgekd.data.image_files.check_image`: an empty or corrupt file is refused before training, not at
    the run's first decode)."""
    splits, _ = checked_splits(config)
    for split in splits.values():
        for ref in split.images:
            check_image(ref)


@lru_cache(maxsize=2)
def _load(config: ImageDataConfig, seed: int, _digest: str) -> ImageSets:
    splits, class_names = checked_splits(config)
    images = {name: [open_image(ref) for ref in split.images] for name, split in splits.items()}
    labels = {name: np.array([class_names.index(label) for label in split.labels], dtype=np.int64)
              for name, split in splits.items()}
    if "val" not in splits:
        keep, held = _hold_out(config, labels["train"], seed)
        images["val"] = [images["train"][i] for i in held]
        images["train"] = [images["train"][i] for i in keep]
        labels["val"], labels["train"] = labels["train"][held], labels["train"][keep]
    prepare = make_preparer(config, images["train"])
    return ImageSets({name: torch.from_numpy(prepare(found)) for name, found in images.items()},
                     {name: torch.from_numpy(values) for name, values in labels.items()}, class_names, prepare.record)


def _check_classes(split: LabelledImages, class_names: tuple[str, ...]) -> None:
    unknown = sorted(set(split.labels) - set(class_names))
    if unknown:
        raise DataError(f"{split.location}: class {', '.join(repr(u) for u in unknown)} ({split.key}) is not "
                        f"among the training classes ({', '.join(class_names)})")


def _hold_out(config: ImageDataConfig, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices kept for training and held out for validation (:func:`~edgekd.data.hold_out.hold_out`: stratified
    where it can be, never taking a class's last image where there is room for it)."""
    count = len(labels)
    if isinstance(config, HFDiskData):
        held, key = config.val_examples, "data.val_examples"
    else:
        held, key = round(count * config.val_fraction), "data.val_fraction"
    if held < 1 or held >= count:
        raise DataError(f"{key}: holds out {held} of {count} training images; expected at least 1 and fewer "
                        "than all (or give a 'val' set)")
    keep, val = hold_out(np.arange(count), labels, held, seed)
    return np.sort(keep), np.sort(val)
