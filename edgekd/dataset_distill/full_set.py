"""The full training set, judged as the upper reference the small sets are compared with: trained until it stops
improving, not for a fixed number of epochs.

A fixed ``full_epochs`` is a few steps on a small user dataset (30 epochs of 240 images at batch 256 are 30 Adam
steps, where every small set trains 300): the "full" row then scored below the 50-image sets it should bound. So
the full set first trains :func:`~edgekd.dataset_distill.evaluate.full_set_steps` (never fewer than a small set's
steps), then twice as long, and so on (at most ``full_doublings`` times) while one model's validation accuracy
rises; its fresh inits train the steps of the best. The steps tried and their validation accuracies are recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.dataset_distill.evaluate import Score, accuracy, evaluate_set, evaluation_warp, full_set_steps, train_model
from edgekd.dataset_distill.problem import Problem

#: Seed offset of the full set's fresh inits (the synthetic set's is 1, the coreset's 2, random draws' 100 on).
SEED_OFFSET = 3


@dataclass(frozen=True)
class Reference:
    """One model trained on the whole training set for ``steps``, the steps tried with their validation accuracy."""

    model: nn.Module
    steps: int
    tried: dict[int, float]


@dataclass(frozen=True)
class FullSet:
    """The full training set's judgement: its :class:`Reference` (whose features choose the coreset too) and the
    test scores of fresh inits trained as long."""

    reference: Reference
    score: Score

    def to_json(self, examples: int) -> dict[str, Any]:
        """The record's ``full`` entry: the scores, the set's size, the steps and the steps tried."""
        tried = [{"steps": steps, "validation_accuracy": value} for steps, value in self.reference.tried.items()]
        return self.score.to_json() | {"examples": examples, "steps": self.reference.steps, "steps_tried": tried}


def converge(problem: Problem, validation: tuple[torch.Tensor, torch.Tensor]) -> Reference:
    """A model of the family trained on all of ``problem``'s training set until its accuracy on ``validation`` stops
    rising: from :func:`full_set_steps`, doubling at most ``full_doublings`` times, the last better model kept (a
    perfect score tries no more, nor does an empty validation split, whose accuracy is NaN)."""
    settings = problem.config.evaluation
    targets = F.one_hot(problem.labels, problem.num_classes).float()

    def trained(steps: int) -> tuple[nn.Module, float]:
        torch.manual_seed(problem.seed)
        model = train_model(problem.family, problem.images, targets, steps, settings, evaluation_warp(problem.config),
                            torch.Generator().manual_seed(problem.seed))
        return model, accuracy(model, *validation)

    steps = full_set_steps(len(problem.labels), settings)
    model, best = trained(steps)
    tried = {steps: best}
    for _ in range(settings.full_doublings):
        if not best < 1.0:  # perfect, or nothing to validate on (NaN)
            break
        longer, value = trained(2 * steps)
        tried[2 * steps] = value
        if value <= best:
            break
        model, steps, best = longer, 2 * steps, value
    return Reference(model, steps, tried)


def judge_full_set(problem: Problem, validation: tuple[torch.Tensor, torch.Tensor],
                   test: tuple[torch.Tensor, torch.Tensor]) -> FullSet:
    """The full training set's :class:`Reference` and the test scores of ``inits`` fresh models trained its steps
    (it does not depend on the synthetic set: made once, it serves every set learnt from the same data with
    the same settings)."""
    reference = converge(problem, validation)
    targets = F.one_hot(problem.labels, problem.num_classes).float()
    score = evaluate_set(problem.family, problem.images, targets, test, problem.config.evaluation,
                         evaluation_warp(problem.config), problem.seed + SEED_OFFSET, reference.steps)
    return FullSet(reference, score)
