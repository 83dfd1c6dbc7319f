"""The issue's comparison: the synthetic set against a random real subset, a coreset and the full training set."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from edgekd.dataset_distill.baselines import coreset, features, random_subset
from edgekd.dataset_distill.evaluate import Score, evaluate_set, full_set_steps, train_model
from edgekd.dataset_distill.problem import Problem, SyntheticSet

log = logging.getLogger(__name__)


def compare(problem: Problem, synthetic: SyntheticSet, test: tuple[torch.Tensor, torch.Tensor],
            *, full_score: Score | None = None) -> dict[str, Any]:
    """Mean ± std test accuracy of fresh models trained on each set, keyed by set.

    ``full_score`` reuses a full-training-set evaluation made earlier (it does not depend on the synthetic set).
    """
    config, settings, family = problem.config, problem.config.evaluation, problem.family
    warp = config.augment.model_copy(update={"enabled": config.augment.enabled and settings.augment})
    num_classes, per_class = problem.num_classes, config.images_per_class

    def score(images: torch.Tensor, targets: torch.Tensor, offset: int, steps: int | None = None) -> Score:
        return evaluate_set(family, images, targets, test, settings, warp, problem.seed + offset, steps)

    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, num_classes).float()

    results: dict[str, Any] = {"synthetic": score(synthetic.images, synthetic.targets(num_classes), 1).to_json()}
    log.info("synthetic set: %.2f%%", 100 * results["synthetic"]["mean"])
    if not settings.baselines:
        return results
    generator = torch.Generator().manual_seed(problem.seed)
    draws = []
    for draw in range(settings.random_draws):
        index = random_subset(problem.labels, per_class, num_classes, generator)
        draws.extend(score(problem.images[index], one_hot(problem.labels[index]), 100 + draw).accuracies)
    results["random_real"] = Score(tuple(draws)).to_json() | {"draws": settings.random_draws}
    full_steps = full_set_steps(len(problem.labels), settings)
    torch.manual_seed(problem.seed)
    reference = train_model(family, problem.images, one_hot(problem.labels), full_steps, settings, warp,
                            torch.Generator().manual_seed(problem.seed))
    index = coreset(problem.labels, features(reference, problem.images), per_class, num_classes, config.coreset)
    results["coreset"] = score(problem.images[index], one_hot(problem.labels[index]), 2).to_json() | {
        "kind": config.coreset}
    full = full_score or score(problem.images, one_hot(problem.labels), 3, full_steps)
    results["full"] = full.to_json() | {"examples": len(problem.labels)}
    return results
