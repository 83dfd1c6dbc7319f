"""Regression targets far from unit scale, learnt at unit scale.

A model's output layer starts near zero and AdamW moves each weight by about the learning rate per step, so
targets around 100,000 (prices, counts) are out of reach in any run: a regression teacher on them ended with a
Pearson correlation of 0. While a regression model trains, its output layer computes with weights stored divided
by the targets' standard deviation (``torch.nn.utils.parametrize``), having started where the model's average output
on a training batch is their mean: the outputs, the losses and every metric stay in the targets' units, while the
parameters the optimiser moves are at unit scale. After training, the scale is folded back into a plain layer, so
what is saved, exported and reloaded is the model as it was (the same layers and config), with its trained weights.

The output layer is the last ``nn.Linear`` of one unit run whose outputs the model's output is, or averages, or
picks from: a classifier's on pooled features (BERT, ViT), or a decoder's ``score``, run at every position and read
at each sentence's last token (GPT-2, Llama, Qwen2, ...). It is found by moving the layer's outputs and seeing the
model's output move alike. The mean starts in its bias or, for a layer without one (a decoder's ``score``: a bias
added would be dropped by ``from_pretrained``), in its weight, along the average of the inputs the model's output
reads it at. A model without such a layer trains at the targets' scale, with a warning naming it and why. Targets
already near unit scale (standard deviation and mean within :data:`UNIT_SCALE`) are left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import parametrize

from edgekd.data.examples import Examples
from edgekd.log_level import warn_once
from edgekd.models.call import call_logits, eval_mode, layers_called, parameter_device
from edgekd.task_heads import task_of

log = logging.getLogger(__name__)

#: Targets whose standard deviation lies within [1 / UNIT_SCALE, UNIT_SCALE] and whose mean is at most UNIT_SCALE
#: standard deviations (and UNIT_SCALE) from zero train as they are.
UNIT_SCALE = 10.0

#: The training examples the output layer is found and started at the targets' mean with.
BATCH = 32


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
    layer starts where the model's average output on a training batch is the targets' mean, and its weight (and bias)
    are stored divided by their standard deviation. The block must create the optimiser (the stored parameters are
    new ones); on leaving, the layer is plain again, holding the trained weights. A model without such a layer trains
    as it is, with a warning (once a process for each kind of model and reason)."""
    scale = _target_scale(train)
    if scale is None:
        yield
        return
    mean, std = scale
    _, batch, _ = next(iter(train.batches(min(BATCH, len(train)), shuffle=False)))
    device = parameter_device(model)
    inputs = {name: value.to(device) for name, value in batch.items()}
    layer = _output_layer(model, inputs)
    if isinstance(layer, str):
        warn_once(log, f"regression targets of mean {mean:.4g} and standard deviation {std:.4g} are far from unit "
                  f"scale, but {type(model).__name__} trains at their scale ({layer}): it may learn no more than a "
                  "constant")
        yield
        return
    where = next(name for name, module in model.named_modules() if module is layer)
    carried = "" if layer.bias is not None else ", without a bias: its weight carries the mean"
    log.info("regression targets of mean %.4g and standard deviation %.4g: the output layer (%s%s) is trained at "
             "unit scale", mean, std, where, carried)
    spread = _start_at_mean(model, layer, inputs, mean)
    if layer.bias is None and spread > std:
        warn_once(log, f"{type(model).__name__}'s output layer ({where}) has no bias: carried by its weight, the "
                  f"regression targets' mean {mean:.4g} leaves its outputs {spread:.4g} apart (standard deviation), "
                  f"more than the targets' {std:.4g}; it may learn little more than their mean (targets with their "
                  "mean subtracted train better)")
    parametrize.register_parametrization(layer, "weight", _Affine(std))
    if layer.bias is not None:
        parametrize.register_parametrization(layer, "bias", _Affine(std, mean))
    try:
        yield
    finally:
        for name in ("weight", "bias"):
            if parametrize.is_parametrized(layer, name):
                parametrize.remove_parametrizations(layer, name, leave_parametrized=True)


def _start_at_mean(model: nn.Module, layer: nn.Linear, inputs: dict[str, torch.Tensor], mean: float) -> float:
    """Shift ``layer`` so that ``model``'s average output on ``inputs`` is ``mean``; the outputs' standard deviation
    then. A layer with a bias is shifted by its bias (a model already answering about ``mean`` stays as it is); one
    without (a decoder's ``score``) by its weight, along the average of the inputs the model's output reads it at: the
    gradient of the average output with respect to the weight, as the output is linear in it."""
    if layer.bias is not None:
        with torch.no_grad(), eval_mode(model):
            outputs = call_logits(model, inputs)
            layer.bias.add_(mean - float(outputs.mean()))
        return _spread(outputs)  # a bias moves every output alike
    trainable = {parameter: parameter.requires_grad for parameter in model.parameters()}
    try:  # only the weight asks for a gradient: no activation before the layer is kept for the backward pass
        for parameter in trainable:
            parameter.requires_grad_(parameter is layer.weight)
        with torch.enable_grad(), eval_mode(model):
            outputs = call_logits(model, inputs)
            (pooled,) = torch.autograd.grad(outputs.mean(), layer.weight)
    finally:
        for parameter, wanted in trainable.items():
            parameter.requires_grad_(wanted)
    with torch.no_grad(), eval_mode(model):
        if pooled.any():
            layer.weight.add_(pooled * ((mean - float(outputs.mean())) / pooled.square().sum()))
        return _spread(call_logits(model, inputs))


def _spread(outputs: torch.Tensor) -> float:
    return float(outputs.float().std()) if outputs.numel() > 1 else 0.0


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


def _output_layer(model: nn.Module, inputs: dict[str, torch.Tensor]) -> nn.Linear | str:
    """The model's output layer on a batch of ``inputs`` (module docstring), or why it has none."""
    linears = [module for module in model.modules() if type(module) is nn.Linear and module.out_features == 1]
    if not linears:
        return "it has no nn.Linear of one unit"

    def forward() -> torch.Tensor:
        return call_logits(model, inputs)

    with torch.no_grad(), eval_mode(model):
        logits, called = layers_called(linears, forward)
        ran = list(dict.fromkeys(layer for layer, _ in reversed(called)))  # the last run first
        for layer in ran:
            if _moves_output(layer, forward, logits):
                return layer
    if not ran:
        return "none of its nn.Linear layers of one unit ran"
    names = {module: name for name, module in model.named_modules()}
    return (f"its output is neither the output of its last nn.Linear of one unit ({names[ran[0]]}) nor an average "
            "or a choice of its outputs: more layers follow it")


#: The change :func:`_moves_output` makes to a layer's output: ``SHIFT - output``, which no ReLU or sigmoid after the
#: layer passes through unchanged.
_SHIFT = 3.0


def _moves_output(layer: nn.Module, forward: Callable[[], torch.Tensor], logits: torch.Tensor) -> bool:
    """Whether the model's output moves with ``layer``'s as an affine map that keeps constants (the layer's outputs,
    pooled as the model pools them: the one output of each example, or a decoder's ``score`` at its last token): an
    output layer scaled and shifted scales and shifts the model's output alike."""
    handle = layer.register_forward_hook(lambda _, __, out: _SHIFT - out)
    try:
        moved = forward()
    finally:
        handle.remove()
    return moved.shape == logits.shape and torch.allclose(moved, _SHIFT - logits, rtol=1e-4, atol=1e-4)
