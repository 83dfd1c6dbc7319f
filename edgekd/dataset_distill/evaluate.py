"""Judge a training set the way dataset distillation is judged: fresh random models trained on it alone.

Every set (synthetic, random real subset, coreset, full training set) goes through the same
protocol: ``inits`` randomly initialised networks of the family, trained with Adam (cosine decay)
and the same differentiable augmentation, then scored on the test split.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch
from torch import nn

from edgekd.dataset_distill.augment import augment
from edgekd.dataset_distill.config import AugmentSettings, DatasetDistillStage, EvaluationSettings
from edgekd.dataset_distill.network import Family
from edgekd.task_heads import target_cross_entropy


@dataclass(frozen=True)
class Score:
    """Test accuracies of the models trained on one set, with their mean and standard deviation."""

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        return statistics.stdev(self.accuracies) if len(self.accuracies) > 1 else 0.0

    def to_json(self) -> dict[str, float | list[float]]:
        return {"mean": self.mean, "std": self.std, "accuracies": list(self.accuracies)}


def train_model(family: Family, images: torch.Tensor, targets: torch.Tensor, steps: int, settings: EvaluationSettings,
                augment_settings: AugmentSettings, generator: torch.Generator) -> nn.Module:
    """A fresh network of ``family`` trained ``steps`` steps on ``images`` with probability ``targets``."""
    model = family.build().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / steps)))
    batch = min(settings.batch_size, len(images))
    order = torch.randperm(len(images), generator=generator)
    position = 0
    for _ in range(steps):
        if position + batch > len(images):
            order, position = torch.randperm(len(images), generator=generator), 0
        index = order[position:position + batch]
        position += batch
        logits = model(augment(images[index], augment_settings, generator))
        loss = target_cross_entropy(logits, targets[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``images`` the model classifies as ``labels``."""
    with torch.no_grad():
        return float((model(images).argmax(1) == labels).float().mean())


def evaluate_set(family: Family, images: torch.Tensor, targets: torch.Tensor, test: tuple[torch.Tensor, torch.Tensor],
                 settings: EvaluationSettings, augment_settings: AugmentSettings, seed: int,
                 steps: int | None = None) -> Score:
    """Train ``settings.inits`` fresh models on the set (``steps``, default ``settings.steps``) and score each."""
    scores = []
    for init in range(settings.inits):
        torch.manual_seed(seed * 1000 + init)
        generator = torch.Generator().manual_seed(seed * 1000 + init)
        model = train_model(family, images, targets, steps or settings.steps, settings, augment_settings, generator)
        scores.append(accuracy(model, *test))
    return Score(tuple(scores))


def evaluation_warp(config: DatasetDistillStage) -> AugmentSettings:
    """The augmentation every judged set trains with: the stage's when ``evaluation.augment``, else none."""
    return config.augment.model_copy(update={"enabled": config.augment.enabled and config.evaluation.augment})


def full_set_steps(count: int, settings: EvaluationSettings) -> int:
    """The steps the full training set of ``count`` examples is first trained: ``settings.full_epochs`` epochs, and
    never fewer than a small set's ``settings.steps`` (30 epochs of 240 images are 30 steps, where a set of 50
    trains 300: the reference scored 6% to the small sets' 34%)."""
    return max(settings.steps, settings.full_epochs * math.ceil(count / settings.batch_size))
