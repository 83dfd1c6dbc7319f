"""Regression targets far from unit scale, learnt at unit scale.

A model's output layer starts near zero and AdamW moves each weight by about the learning rate per step, so
targets around 100,000 (prices, counts) are out of reach in any run: a regression teacher on them ended with a
Pearson correlation of 0. While a regression model trains, its output layer computes with weights stored divided
by the targets' standard deviation and its bias shifted by their mean (``torch.nn.utils.parametrize``): the
outputs, the losses and every metric stay in the targets' units, while the parameters the optimiser moves are at
unit scale. After training, the scale is folded back into a plain layer, so what is saved, exported and reloaded
is the model as it was, with its trained weights.

Only an output layer whose result *is* the model's output (an ``nn.Linear`` of one unit, the last layer run) is
scaled; any other model trains as it is. Targets already near unit scale (standard deviation and mean within
:data:`UNIT_SCALE`) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgekd.data.examples import Examples
from edgekd.models.call import call_logits, eval_mode, layers_called, parameter_device
from edgekd.task_heads import task_of

log = logging.getLogger(__name__)

#: Targets whose standard deviation lies within [1 / UNIT_SCALE, UNIT_SCALE] and whose mean is at most UNIT_SCALE
#: standard deviations (and UNIT_SCALE) from zero train as they are.
UNIT_SCALE = 10.0


class _Affine(nn.Module):
    """``stored · scale + shift``: a parameter stored at unit scale, used at the targets' scale."""

    def __init__(self, scale: float, shift: float = 0.0) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, stored: torch.Tensor) -> torch.Tensor:
        return stored * self.scale + self.shift

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return (value - self.shift) / self.scale


@contextmanager
def unit_scale_targets(model: nn.Module, train: Examples) -> Iterator[None]:
    """Train ``model`` on ``train``'s regression targets at unit scale for the block (module docstring): its output
    layer's weight is stored divided by the targets' standard deviation and its bias starts at their mean. The
    block must create the optimiser (the stored parameters are new ones); on leaving, the layer is plain again,
    holding the trained weights."""
    scale = _target_scale(train)
    layer = _output_layer(model, train) if scale is not None else None
    if scale is None or layer is None:
        yield
        return
    mean, std = scale
    log.info("regression targets of mean %.4g and standard deviation %.4g: the output layer is trained at unit "
             "scale", mean, std)
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.add_(mean)  # the bias starts at the targets' mean: stored at unit scale as what it was
    parametrize.register_parametrization(layer, "weight", _Affine(std))
    if layer.bias is not None:
        parametrize.register_parametrization(layer, "bias", _Affine(std, mean))
    try:
        yield
    finally:
        for name in ("weight", "bias"):
            if parametrize.is_parametrized(layer, name):
                parametrize.remove_parametrizations(layer, name, leave_parametrized=True)


def _target_scale(train: Examples) -> tuple[float, float] | None:
    """The training targets' mean and standard deviation when they are regression targets far from unit scale."""
    labels = getattr(train, "labels", None)  # a causal LM's token windows have next-token targets, not labels
    if labels is None or len(labels) < 2 or task_of(labels) != "regression":
        return None
    values = labels.double()
    mean, std = float(values.mean()), float(values.std())
    if not std > 0 or (1 / UNIT_SCALE <= std <= UNIT_SCALE and abs(mean) <= UNIT_SCALE * max(std, 1.0)):
        return None
    return mean, std


def _output_layer(model: nn.Module, train: Examples) -> nn.Linear | None:
    """The ``nn.Linear`` of one unit whose output is the model's output on a training batch, or None."""
    linears = [module for module in model.modules() if type(module) is nn.Linear and module.out_features == 1]
    _, inputs, _ = next(iter(train.batches(min(8, len(train)), shuffle=False)))
    device = parameter_device(model)
    with torch.no_grad(), eval_mode(model):
        logits, called = layers_called(
            linears, lambda: call_logits(model, {name: value.to(device) for name, value in inputs.items()}))
    if not called:
        return None
    layer, out = called[-1]
    return layer if out.numel() == logits.numel() and torch.equal(out.reshape(-1), logits.reshape(-1)) else None
