"""One importance score per prunable unit (a head or KV group, an MLP channel) over every weight coupled to it.

A unit owns an equal, contiguous span along one dimension of each coupled parameter (a channel: one
row of the MLP's input projection, its bias entry and one column of the output projection). Its score
follows the criteria of the rest of the pruning code: L1 or L2 magnitude (Li et al., 2017), first-order
Taylor ``Σ |w · ∂L/∂w|`` (Molchanov et al., 2019; the parameters' ``.grad`` must be filled), or random
as a control.
"""

from __future__ import annotations

from typing import Literal

import torch

from edgekd.errors import ModelError

Importance = Literal["l1", "l2", "taylor", "random"]


#: A parameter coupled to the units: ``(parameter, dimension)``, or ``(parameter, dimension, start, length)`` when
#: only that span of the dimension is (one of the query, key and value parts of a fused projection).
Coupled = tuple[torch.Tensor, int] | tuple[torch.Tensor, int, int, int]


def unit_importance(coupled: list[Coupled], units: int, kind: Importance) -> torch.Tensor:
    """``units`` scores (higher: more important) from ``coupled`` parameters, each parameter's ``dimension`` (or its
    span) split into ``units`` equal spans in order."""
    if kind == "random":
        return torch.rand(units)
    total = torch.zeros(units, dtype=torch.float64)
    for param, dim, *span in coupled:
        weight = param.detach().double()
        if kind == "taylor":
            if param.grad is None:
                raise ModelError("Taylor importance needs gradients of the pruned layers")
            weight = weight * param.grad.double()
        if span:
            weight = weight.narrow(dim, *span)
        per_unit = weight.movedim(dim, 0).reshape(units, -1)
        total += per_unit.abs().sum(1) if kind in ("l1", "taylor") else per_unit.pow(2).sum(1)
    return total
