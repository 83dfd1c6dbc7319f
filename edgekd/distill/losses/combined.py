"""A weighted sum of distillation losses, called like each of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from edgekd.distill.outputs import ModelOutputs


class CombinedLoss(nn.Module):
    """A weighted sum of distillation losses, called like each of them.

    ``needs`` is the union of the parts' needs. After each call ``last_parts`` holds every part's
    unweighted value by its kind (``hidden``, ``hidden_2`` for a second one, ...), for logging.
    ``parameters()`` includes the parts' learned projections: optimise them with the student.
    """

    def __init__(self, parts: Sequence[tuple[float, nn.Module]]) -> None:
        super().__init__()
        if not parts:
            raise ValueError("CombinedLoss needs at least one (weight, loss) part")
        self.weights = [float(weight) for weight, _ in parts]
        self.parts = nn.ModuleList(loss for _, loss in parts)
        self.needs: frozenset[str] = frozenset().union(*(loss.needs for _, loss in parts))
        self.names = _part_names([loss for _, loss in parts])
        self.last_parts: dict[str, float] = {}

    def teacher_layers(self) -> dict[str, set[int]]:
        """The union of the parts' :meth:`DistillationLoss.teacher_layers`."""
        merged: dict[str, set[int]] = {}
        for loss in self.parts:
            for kind, indices in loss.teacher_layers().items():
                merged.setdefault(kind, set()).update(indices)
        return merged

    def forward(
        self, student: ModelOutputs, teacher: ModelOutputs, labels: Tensor, mask: Tensor | None = None
    ) -> Tensor:
        values = [loss(student, teacher, labels, mask) for loss in self.parts]
        self.last_parts = {name: value.item() for name, value in zip(self.names, values, strict=True)}
        return torch.stack([weight * value for weight, value in zip(self.weights, values, strict=True)]).sum()


def _part_names(losses: list[nn.Module]) -> list[str]:
    seen: Counter[str] = Counter()
    names = []
    for loss in losses:
        base = getattr(loss, "kind", type(loss).__name__)
        seen[base] += 1
        names.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return names
