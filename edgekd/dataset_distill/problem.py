"""What every method learns from (the real training set, the family, the settings) and what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from edgekd.data.class_coverage import class_text, classes_without_training_examples
from edgekd.data.config import DataConfig
from edgekd.data.datasets import DatasetSplits
from edgekd.dataset_distill.config import DatasetDistillStage
from edgekd.dataset_distill.network import Family
from edgekd.errors import DataError


@dataclass
class SyntheticSet:
    """Learnt examples ordered by class, their hard labels, optional soft labels (probabilities) and notes."""

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def targets(self, num_classes: int) -> torch.Tensor:
        """Training targets as probabilities: the soft labels, else one-hot hard labels."""
        if self.soft_labels is not None:
            return self.soft_labels
        return torch.nn.functional.one_hot(self.labels, num_classes).float()


def check_images_per_class(splits: DatasetSplits, data: DataConfig, images_per_class: int, where: str) -> None:
    """Refuse, in one line naming classes as the data does, a class of no training examples (a synthetic image
    stands for each class: :func:`~edgekd.data.class_coverage.classes_without_training_examples` says why and what
    to do) or more synthetic images per class than the smallest class has real ones."""
    missing = classes_without_training_examples(splits, data)
    if missing:
        raise DataError(f"{where}: dataset distillation learns images of every class, but {missing}")
    counts = torch.bincount(splits.y_train, minlength=splits.num_classes)
    smallest = int(counts.min())
    if images_per_class > smallest:
        examples = "example" if smallest == 1 else "examples"
        raise DataError(f"{where}.images_per_class: {images_per_class} is more than the smallest class of the "
                        f"training set holds (class {class_text(splits.class_names, [int(counts.argmin())])}: "
                        f"{smallest} {examples}); expected at most {smallest}")


@dataclass
class Problem:
    """A real labelled training set, the family to distil for and the stage's settings.

    Every class has at least ``images_per_class`` examples (:func:`check_images_per_class`, which names the
    classes as the data does, checks it before a problem is made of a recipe's data).
    """

    images: torch.Tensor
    labels: torch.Tensor
    family: Family
    config: DatasetDistillStage
    seed: int

    def __post_init__(self) -> None:
        self._by_class = [torch.nonzero(self.labels == c).flatten() for c in range(self.num_classes)]
        self.low, self.high = float(self.images.min()), float(self.images.max())

    @property
    def num_classes(self) -> int:
        return self.family.num_classes

    def class_batch(self, cls: int, count: int, generator: torch.Generator) -> torch.Tensor:
        """Up to ``count`` real images of class ``cls``, drawn without replacement."""
        pool = self._by_class[cls]
        return self.images[pool[torch.randperm(len(pool), generator=generator)[:count]]]

    def start(self) -> tuple[torch.Generator, torch.Tensor]:
        """Seed torch with the problem's seed; return the method's generator and the learnable initial images."""
        generator = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        return generator, self.initial_images(generator).requires_grad_(True)

    def initial_images(self, generator: torch.Generator) -> torch.Tensor:
        """The starting synthetic images: random real ones per class, or uniform noise in the data's range."""
        per_class = self.config.images_per_class
        if self.config.init == "real":
            return torch.cat([self.class_batch(c, per_class, generator) for c in range(self.num_classes)]).clone()
        shape = (self.num_classes * per_class, *self.images.shape[1:])
        return self.low + (self.high - self.low) * torch.rand(shape, generator=generator)

    def synthetic_labels(self) -> torch.Tensor:
        """Hard labels of the synthetic images: class ``c`` repeated ``images_per_class`` times, in order."""
        return torch.arange(self.num_classes).repeat_interleave(self.config.images_per_class)

    def clamp_(self, images: torch.Tensor) -> None:
        """Keep synthetic pixels in the range the real data lives in (in place)."""
        with torch.no_grad():
            images.clamp_(self.low, self.high)
