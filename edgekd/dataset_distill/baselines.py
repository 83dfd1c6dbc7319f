"""Real subsets of the synthetic set's size that it must beat: random draws and a class-balanced coreset."""

from __future__ import annotations

import torch

from edgekd.dataset_distill.network import embedder


def random_subset(labels: torch.Tensor, per_class: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Indices of ``per_class`` random examples of every class, class by class."""
    chosen = []
    for cls in range(num_classes):
        pool = torch.nonzero(labels == cls).flatten()
        chosen.append(pool[torch.randperm(len(pool), generator=generator)[:per_class]])
    return torch.cat(chosen)


def features(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Penultimate features of ``images`` under ``model`` (eval mode, no gradient)."""
    with torch.no_grad():
        return embedder(model.eval())(images)


def herding(points: torch.Tensor, count: int) -> list[int]:
    """Welling (2009) herding: greedily pick points whose running mean stays closest to the set's mean."""
    mean = points.mean(0)
    chosen: list[int] = []
    total = torch.zeros_like(mean)
    for step in range(1, count + 1):
        distances = ((mean - (total[None] + points) / step) ** 2).sum(1)
        distances[chosen] = float("inf")
        index = int(distances.argmin())
        chosen.append(index)
        total += points[index]
    return chosen


def k_center(points: torch.Tensor, count: int) -> list[int]:
    """Greedy k-center (Sener & Savarese 2018): start at the point nearest the mean, then the farthest point."""
    chosen = [int(((points - points.mean(0)) ** 2).sum(1).argmin())]
    nearest = ((points - points[chosen[0]]) ** 2).sum(1)
    while len(chosen) < count:
        index = int(nearest.argmax())
        chosen.append(index)
        nearest = torch.minimum(nearest, ((points - points[index]) ** 2).sum(1))
    return chosen


SELECTORS = {"herding": herding, "k_center": k_center}


def coreset(labels: torch.Tensor, points: torch.Tensor, per_class: int, num_classes: int, kind: str) -> torch.Tensor:
    """Indices of a class-balanced coreset: ``kind`` selection within each class over ``points`` (features)."""
    chosen = []
    for cls in range(num_classes):
        pool = torch.nonzero(labels == cls).flatten()
        chosen.append(pool[torch.tensor(SELECTORS[kind](points[pool], per_class))])
    return torch.cat(chosen)
