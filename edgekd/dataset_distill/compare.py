"""The issue's comparison: the synthetic set against a random real subset, a coreset and the full training set."""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from edgekd.dataset_distill.baselines import coreset, features, random_subset
from edgekd.dataset_distill.evaluate import Score, evaluate_set, evaluation_warp
from edgekd.dataset_distill.full_set import FullSet, judge_full_set
from edgekd.dataset_distill.problem import Problem, SyntheticSet

log = logging.getLogger(__name__)


def compare(problem: Problem, synthetic: SyntheticSet, test: tuple[torch.Tensor, torch.Tensor],
            validation: tuple[torch.Tensor, torch.Tensor], *, full: FullSet | None = None) -> dict[str, Any]:
    """Mean ± std test accuracy of fresh models trained on each set, keyed by set, with the steps they trained.

    The full training set is trained until its ``validation`` accuracy stops rising
    (:func:`~edgekd.dataset_distill.full_set.judge_full_set`); ``full`` reuses a judgement made earlier (it does not
    depend on the synthetic set).
    """
    config, settings = problem.config, problem.config.evaluation
    num_classes, per_class = problem.num_classes, config.images_per_class
    small = {"steps": settings.steps}

    def score(images: torch.Tensor, targets: torch.Tensor, offset: int) -> Score:
        return evaluate_set(problem.family, images, targets, test, settings, evaluation_warp(config),
                            problem.seed + offset)

    def one_hot(labels: torch.Tensor) -> torch.Tensor:
        return F.one_hot(labels, num_classes).float()

    results: dict[str, Any] = {"synthetic": score(synthetic.images, synthetic.targets(num_classes), 1).to_json()
                               | small}
    log.info("synthetic set: %.2f%%", 100 * results["synthetic"]["mean"])
    if not settings.baselines:
        return results
    generator = torch.Generator().manual_seed(problem.seed)
    draws = []
    for draw in range(settings.random_draws):
        index = random_subset(problem.labels, per_class, num_classes, generator)
        draws.extend(score(problem.images[index], one_hot(problem.labels[index]), 100 + draw).accuracies)
    results["random_real"] = Score(tuple(draws)).to_json() | {"draws": settings.random_draws} | small
    full = full or judge_full_set(problem, validation, test)
    index = coreset(problem.labels, features(full.reference.model, problem.images), per_class, num_classes,
                    config.coreset)
    results["coreset"] = score(problem.images[index], one_hot(problem.labels[index]), 2).to_json() | {
        "kind": config.coreset} | small
    results["full"] = full.to_json(len(problem.labels))
    log.info("full training set (%d steps): %.2f%%", full.reference.steps, 100 * full.score.mean)
    return results
