"""A kept classification head's outputs put in the data's class order, matched by the checkpoint's label names.

A fine-tuned checkpoint names its outputs (``config.id2label``); the data's classes are its label names,
sorted. A data class is named by a checkpoint label when both are equal compared without case or
surrounding spaces, else when one is the start of the other (``neg`` and ``NEGATIVE``) and no other label
is. When every class is named by its own label in another order (``{0: "positive", 1: "negative"}``
against the data's ``neg, pos``), the head's rows are permuted so that output ``i`` is the data's class
``i`` and the checkpoint's predictions keep their meaning, said in one log line; when the checkpoint has
more outputs than the data has classes and names each class (an image classifier of 1000 classes on a
folder of a few), the head keeps those classes' rows (:func:`subset_rows`, :func:`keep_head_rows`).
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
    saved = _saved_names(checkpoint_labels)
    wanted = [_norm(name) for name in class_names]
    if [_norm(name) for name in saved] == wanted or all(_PLACEHOLDER.match(_norm(name)) for name in saved):
        return
    order = label_order(saved, class_names)
    if order is None:
        pairs = ", ".join(f"{name!r} ← {label!r}" for name, label in zip(class_names, saved, strict=True))
        log.info("%s labels its outputs %s, not the data's classes: taken in order (%s)", pretrained, saved, pairs)
        return
    if order == sorted(order):
        pairs = ", ".join(f"{name!r} ← {saved[row]!r}" for name, row in zip(class_names, order, strict=True))
        log.info("%s labels its outputs %s: matched to the data's classes by name (%s)", pretrained, saved, pairs)
        return
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


def label_order(saved: list[str], class_names: tuple[str, ...]) -> list[int] | None:
    """For each of ``class_names``, the index of the checkpoint label in ``saved`` naming it (see the module
    docstring), or None unless every class is named by a label of its own."""
    names = [_norm(name) for name in saved]
    order = []
    for wanted in (_norm(name) for name in class_names):
        rows = [row for row, name in enumerate(names) if name == wanted] or \
            [row for row, name in enumerate(names) if name and wanted and (name.startswith(wanted)
                                                                           or wanted.startswith(name))]
        if len(rows) != 1:
            return None
        order.append(rows[0])
    return order if len(set(order)) == len(order) else None


def subset_rows(checkpoint_labels: dict[Any, str] | None, class_names: tuple[str, ...]) -> list[int] | None:
    """The checkpoint outputs naming the data's classes, in the data's order, when the checkpoint's head has more
    outputs than the data has classes and real names (not placeholders) name every class; else None."""
    if not checkpoint_labels or len(checkpoint_labels) <= len(class_names):
        return None
    saved = _saved_names(checkpoint_labels)
    if all(_PLACEHOLDER.match(_norm(name)) for name in saved):
        return None
    return label_order(saved, class_names)


def keep_head_rows(module: nn.Module, rows: list[int], class_names: tuple[str, ...], pretrained: str) -> bool:
    """Cut ``module``'s head down to the checkpoint outputs ``rows`` (one per class, in ``class_names``' order),
    its config labelled with ``class_names``; False (nothing changed) when the head layer is not found."""
    config = module.config
    head = _head(module, config.num_labels)
    if head is None:
        return False
    saved = _saved_names(config.id2label)
    with torch.no_grad():
        head.weight = nn.Parameter(head.weight[rows].clone())
        if head.bias is not None:
            head.bias = nn.Parameter(head.bias[rows].clone())
    head.out_features = len(rows)
    if hasattr(module, "num_labels"):
        module.num_labels = len(rows)
    config.num_labels = len(rows)
    config.id2label = dict(enumerate(class_names))
    config.label2id = {name: index for index, name in enumerate(class_names)}
    log.info("classifier kept for the data's %d classes of the checkpoint's %d (%s): %s", len(rows), len(saved),
             pretrained, ", ".join(f"{name!r} ← {saved[row]!r}" for name, row in zip(class_names, rows, strict=True)))
    return True


def fresh_head(module: nn.Module, outputs: int) -> None:
    """Draw the head layer (``outputs`` rows) afresh, as transformers initialises a new layer.

    A checkpoint with a head of another kind (a sentence classifier used per token, or the reverse) has that
    head's weights loaded into the new one, which has the same name and shape: rows that meant other classes.
    """
    head = _head(module, outputs)
    if head is None:
        return
    std = float(getattr(module.config, "initializer_range", None) or 0.02)
    with torch.no_grad():
        nn.init.normal_(head.weight, std=std)
        if head.bias is not None:
            nn.init.zeros_(head.bias)


def _saved_names(checkpoint_labels: dict[Any, str]) -> list[str]:
    return [str(checkpoint_labels[key]) for key in sorted(checkpoint_labels, key=int)]


def _norm(name: str) -> str:
    return name.strip().casefold()


def _head(module: nn.Module, outputs: int) -> nn.Linear | None:
    """The layer producing the logits: the last ``Linear`` with one output per class (BERT's ``classifier``,
    RoBERTa's ``classifier.out_proj``, GPT-2's ``score``, ResNet's ``classifier.1``, ...)."""
    heads = [layer for layer in module.modules() if isinstance(layer, nn.Linear) and layer.out_features == outputs]
    return heads[-1] if heads else None
