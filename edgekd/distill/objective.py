"""The distillation training objective, shared by the ``distill`` stage and pruning's recovery."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from edgekd.distill.losses.combined import CombinedLoss
from edgekd.distill.losses.registry import LossConfig, build_loss
from edgekd.distill.outputs import ModelInfo, forward_outputs
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.distill.trainer import Objective
from edgekd.models.call import parameter_device


def combined_loss(specs: Sequence[LossConfig], student: nn.Module, teacher: nn.Module) -> CombinedLoss:
    """The recipe's weighted losses, built for these two models' sizes (seed torch first: projections)."""
    return CombinedLoss([(spec.weight, build_loss(spec, ModelInfo.of(student), ModelInfo.of(teacher)))
                         for spec in specs])


def distillation_objective(
    loss: CombinedLoss,
    teacher: nn.Module,
    cache: TeacherOutputCache | None = None,
) -> Objective:
    """``objective(model, inputs, labels, idx)`` for :func:`edgekd.distill.trainer.fit`.

    With a ``cache`` (built for this loss's :meth:`~CombinedLoss.teacher_layers`) the teacher's
    outputs for the batch's examples are read from it; otherwise the teacher runs on the batch
    (without gradients), moved to the batch's device first. Pass ``loss`` to ``fit`` as ``extra``
    so its projections are trained.
    """

    def objective(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                  idx: np.ndarray) -> torch.Tensor:
        student_out = forward_outputs(model, inputs, loss.needs)
        mask = inputs.get("attention_mask")
        if cache is not None:
            teacher_out = cache.lookup(idx, mask)
        else:
            if parameter_device(teacher) != labels.device:
                teacher.to(labels.device)
            with torch.no_grad():
                teacher_out = forward_outputs(teacher.eval(), inputs, loss.needs)
        return loss(student_out, teacher_out, labels, mask)

    return objective
