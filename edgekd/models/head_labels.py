"""A kept classification head's outputs put in the data's class order, matched by the checkpoint's label names.

A fine-tuned checkpoint names its outputs (``config.id2label``); the data's classes are its label names,
sorted. When both name the same classes in another order (``{0: "pos", 1: "neg"}`` against the data's
``neg, pos``; compared without case or surrounding spaces), the head's rows are permuted so that output
``i`` is the data's class ``i`` and the checkpoint's predictions keep their meaning, said in one log line.
When the checkpoint's names are real names (not transformers' placeholders ``LABEL_0``, ...) of other
classes, the outputs are taken in order, and one log line says which checkpoint label each class gets.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"^label_\d+$")


def match_head_labels(module: nn.Module, checkpoint_labels: dict[Any, str] | None, class_names: tuple[str, ...],
                      pretrained: str) -> None:
    """Permute ``module``'s head rows into ``class_names``' order when ``checkpoint_labels`` (the checkpoint's
    ``id2label``, same count) names the same classes in another order; log one line either way they differ."""
    if not checkpoint_labels or len(checkpoint_labels) != len(class_names):
        return
    saved = [str(checkpoint_labels[key]) for key in sorted(checkpoint_labels, key=int)]
    wanted = [_norm(name) for name in class_names]
    if [_norm(name) for name in saved] == wanted or all(_PLACEHOLDER.match(_norm(name)) for name in saved):
        return
    if sorted(_norm(name) for name in saved) != sorted(wanted) or len(set(wanted)) != len(wanted):
        pairs = ", ".join(f"{name!r} ← {label!r}" for name, label in zip(class_names, saved, strict=True))
        log.info("%s labels its outputs %s, not the data's classes: taken in order (%s)", pretrained, saved, pairs)
        return
    order = [[_norm(name) for name in saved].index(name) for name in wanted]
    head = _head(module, len(class_names))
    if head is None:
        log.info("%s labels its outputs %s in another order than the data's %s, and its head layer was not "
                 "found: taken in order", pretrained, saved, list(class_names))
        return
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        if head.bias is not None:
            head.bias.copy_(head.bias[order])
    log.info("classifier rows reordered to the data's classes %s (%s had %s)", list(class_names), pretrained, saved)


def _norm(name: str) -> str:
    return name.strip().casefold()


def _head(module: nn.Module, outputs: int) -> nn.Linear | None:
    """The layer producing the logits: the last ``Linear`` with one output per class (BERT's ``classifier``,
    RoBERTa's ``classifier.out_proj``, GPT-2's ``score``, ResNet's ``classifier.1``, ...)."""
    heads = [layer for layer in module.modules() if isinstance(layer, nn.Linear) and layer.out_features == outputs]
    return heads[-1] if heads else None
