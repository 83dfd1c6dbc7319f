"""A kept classification head's outputs put in the data's class order, matched by the checkpoint's label names.

A fine-tuned checkpoint names its outputs (``config.id2label``); the data's classes are its label names,
sorted. A data class is named by a checkpoint label when both are equal compared without case, surrounding
spaces or the difference of ``_`` and a space, or when the label lists it among comma-separated synonyms
(ImageNet's ``tabby, tabby cat`` names a folder ``tabby_cat``). When the checkpoint has as many outputs as the
data has classes, a class no label equals is also named by the one label left (not equal to another class)
that it starts or that starts it (``neg`` and ``NEGATIVE``; ``pos`` is ``positive`` when ``postal`` is a class
of its own), unless a digit continues the shorter name: ``1`` is not ``10``, ``v`` is not ``v2``. When every
class is named by its own label in another order (``{0: "positive", 1: "negative"}`` against the data's ``neg,
pos``), the head's rows are permuted so that output ``i`` is the data's class ``i`` and the checkpoint's
predictions keep their meaning, said in one log line. When the checkpoint has more outputs than the data has
classes and a label equal to each class (an image classifier of 1000 classes on a folder of a few), the head
keeps those classes' rows (:func:`subset_rows`, :func:`keep_head_rows`), else it is replaced and the line
saying so names the classes its labels name and those they do not (:func:`unmatched_note`); starts of names
are not matched there, as among many labels another word starts the same way (``cat`` starts ``catamaran``).
When the checkpoint's names are real names (not transformers' placeholders ``LABEL_0``, ...) of other classes,
the outputs are taken in order, and one log line says which checkpoint label each class gets; a warning when
some class is named by another output than the one it gets, saying which.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"^label[ _]\d+$")  # transformers' LABEL_0, ... (compared as "label 0")


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
    named = name_matches(saved, class_names)
    if None in named:
        pairs = ", ".join(f"{name!r} ← {label!r}" for name, label in zip(class_names, saved, strict=True))
        elsewhere = [f"{name!r} is its output {row} {saved[row]!r}"
                     for index, (name, row) in enumerate(zip(class_names, named, strict=True))
                     if row is not None and row != index]
        if elsewhere:
            log.warning("%s labels its outputs %s, naming only some of the data's classes: taken in order (%s), "
                        "though by name %s", pretrained, saved, pairs, "; ".join(elsewhere))
        else:
            log.info("%s labels its outputs %s, not the data's classes: taken in order (%s)", pretrained, saved,
                     pairs)
        return
    order: list[int] = named  # type: ignore[assignment]  # every class named
    if order == sorted(order):
        pairs = ", ".join(f"{name!r} ← {saved[row]!r}" for name, row in zip(class_names, order, strict=True))
        log.info("%s labels its outputs %s: matched to the data's classes by name (%s)", pretrained, saved, pairs)
        return
    head = head_layer(module, len(class_names))
    if head is None:
        log.warning("%s labels its outputs %s in another order than the data's %s, and its head layer was not "
                    "found: taken in order, so its outputs start mapped to the wrong classes until trained",
                    pretrained, saved, list(class_names))
        return
    with torch.no_grad():
        head.weight.copy_(head.weight[order])
        if head.bias is not None:
            head.bias.copy_(head.bias[order])
    log.info("classifier rows reordered to the data's classes %s (%s had %s)", list(class_names), pretrained, saved)


def label_order(saved: list[str], class_names: tuple[str, ...], *, prefixes: bool = True) -> list[int] | None:
    """For each of ``class_names``, the index of the checkpoint label in ``saved`` naming it (see the module
    docstring; starts of names only with ``prefixes``), or None unless every class is named by a label of its
    own."""
    order = name_matches(saved, class_names, prefixes=prefixes)
    return None if None in order else order  # type: ignore[return-value]


def name_matches(saved: list[str], class_names: tuple[str, ...], *, prefixes: bool = True) -> list[int | None]:
    """For each of ``class_names``, the index of the one checkpoint label in ``saved`` naming it, or None: an equal
    label first (or one listing it among comma-separated synonyms, as ImageNet's ``tabby, tabby cat``); else, with
    ``prefixes``, the one label no class equals that the class starts or that starts it (a digit continuing the
    shorter name makes another name). A label that would name two classes names neither.
    """
    names = [_norm(name) for name in saved]
    wanted = [_norm(name) for name in class_names]
    synonyms = [{name, *(_norm(part) for part in name.split(","))} for name in names]
    equal = [[row for row, alternatives in enumerate(synonyms) if cls in alternatives] for cls in wanted]
    order: list[int | None] = [rows[0] if len(rows) == 1 else None for rows in equal]
    claimed = {row for rows in equal for row in rows}
    for index, cls in enumerate(wanted):
        if order[index] is None and not equal[index] and prefixes:
            rows = [row for row, name in enumerate(names) if row not in claimed and _abbreviates(name, cls)]
            order[index] = rows[0] if len(rows) == 1 else None
    taken = [row for row in order if row is not None]
    return [row if row is not None and taken.count(row) == 1 else None for row in order]


def _abbreviates(name: str, other: str) -> bool:
    """Whether one of two different names is the start of the other, not continued by a digit."""
    short, long = sorted((name, other), key=len)
    return bool(short) and short != long and long.startswith(short) and not long[len(short)].isdigit()


def subset_rows(checkpoint_labels: dict[Any, str] | None, class_names: tuple[str, ...]) -> list[int] | None:
    """The checkpoint outputs naming the data's classes, in the data's order, when the checkpoint's head has more
    outputs than the data has classes and a real name (not a placeholder) equals each class; else None."""
    if not checkpoint_labels or len(checkpoint_labels) <= len(class_names):
        return None
    saved = _saved_names(checkpoint_labels)
    if all(_PLACEHOLDER.match(_norm(name)) for name in saved):
        return None
    return label_order(saved, class_names, prefixes=False)


def unmatched_note(checkpoint_labels: dict[Any, str] | None, class_names: tuple[str, ...]) -> str:
    """For a head replaced because its label count differs: `` (its labels name 'neg' but not 'neutral')`` when
    its real labels equal some of the data's classes but not all (so the user sees why the rows were not kept),
    else ``""``."""
    if not checkpoint_labels:
        return ""
    saved = _saved_names(checkpoint_labels)
    if all(_PLACEHOLDER.match(_norm(name)) for name in saved):
        return ""
    named = name_matches(saved, class_names, prefixes=False)
    found = [repr(name) for name, row in zip(class_names, named, strict=True) if row is not None]
    missing = [repr(name) for name, row in zip(class_names, named, strict=True) if row is None]
    return f" (its labels name {', '.join(found)} but not {', '.join(missing)})" if found and missing else ""


def keep_head_rows(module: nn.Module, rows: list[int], class_names: tuple[str, ...], pretrained: str) -> bool:
    """Cut ``module``'s head down to the checkpoint outputs ``rows`` (one per class, in ``class_names``' order),
    its config labelled with ``class_names``; False (nothing changed) when the head layer is not found."""
    config = module.config
    head = head_layer(module, config.num_labels)
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
    head = head_layer(module, outputs)
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
    """A name as compared: without case, surrounding spaces, and with ``_`` as a space (a folder ``tabby_cat``)."""
    return " ".join(name.replace("_", " ").split()).casefold()


def head_layer(module: nn.Module, outputs: int) -> nn.Linear | None:
    """The layer producing the logits: the last ``Linear`` with one output per class (BERT's ``classifier``,
    RoBERTa's ``classifier.out_proj``, GPT-2's ``score``, ResNet's ``classifier.1``, ...)."""
    heads = [layer for layer in module.modules() if isinstance(layer, nn.Linear) and layer.out_features == outputs]
    return heads[-1] if heads else None
