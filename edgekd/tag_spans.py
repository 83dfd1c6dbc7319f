"""Entities of BIO (IOB2) tag sequences and their entity-level micro precision, recall and F1.

A tag is ``O`` (outside), ``B-TYPE`` (an entity of TYPE begins) or ``I-TYPE`` (inside one). Spans are read
as CoNLL's ``conlleval`` (and seqeval's default mode) reads them: an entity runs from a ``B-X`` (or an
``I-X`` that does not continue an ``X`` entity, as in IOB1 or an ill-formed prediction) over the ``I-X``
tags that follow it. An entity counts as found only when its type, start and end all match exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OUTSIDE = "O"
PREFIXES = ("B-", "I-")

Span = tuple[str, int, int]
"""(type, first position, position after the last)."""


def is_bio(tags: Iterable[str]) -> bool:
    """True when every tag is ``O``, ``B-TYPE`` or ``I-TYPE`` and at least one is not ``O``."""
    tags = list(tags)
    return any(tag != OUTSIDE for tag in tags) and all(
        tag == OUTSIDE or (tag[:2] in PREFIXES and len(tag) > 2) for tag in tags)


def entity_spans(tags: Sequence[str]) -> set[Span]:
    """The entities of one tag sequence (see the module docstring)."""
    spans: set[Span] = set()
    kind, start = None, 0
    for position, tag in enumerate([*tags, OUTSIDE]):
        prefix, tag_kind = (tag[:2], tag[2:]) if tag != OUTSIDE else ("", None)
        continues = prefix == "I-" and tag_kind == kind
        if kind is not None and not continues:
            spans.add((kind, start, position))
            kind = None
        if tag_kind is not None and not continues:
            kind, start = tag_kind, position
    return spans


def entity_scores(predicted: Iterable[Sequence[str]], truth: Iterable[Sequence[str]]) -> dict[str, float]:
    """Entity-level micro ``entity_precision``, ``entity_recall`` and ``entity_micro_f1`` over paired sequences.

    Precision is 1 when nothing was predicted, recall 1 when there was nothing to find.
    """
    found = predicted_count = true_count = 0
    for guess, answer in zip(predicted, truth, strict=True):
        guessed, expected = entity_spans(guess), entity_spans(answer)
        found += len(guessed & expected)
        predicted_count += len(guessed)
        true_count += len(expected)
    precision = found / predicted_count if predicted_count else 1.0
    recall = found / true_count if true_count else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"entity_micro_f1": f1, "entity_precision": precision, "entity_recall": recall}
