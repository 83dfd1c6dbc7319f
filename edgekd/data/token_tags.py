"""Token classification data: a tag per word, read from a table, and carried over to the tokenizer's sub-tokens.

A token-classification row has two columns (``data.tokens_column``, ``data.tags_column``; default
``tokens`` and ``tags``): word *i* has tag *i* (``B-PER I-PER O``). In TSV/CSV both are space-separated
and of equal length; in a ``datasets`` table both are sequences, the tags names or ClassLabel indices (as
CoNLL-2003 on the hub). The model's classes are the ClassLabel's names, else the training split's tags
sorted; a test tag the training split lacks is refused.

Words become sub-tokens with the model's tokenizer run on the words joined by single spaces, exactly as an
app tokenizes a sentence. Each sub-token's character offsets locate its word (offsets work with every fast
tokenizer, WordPiece and byte-level BPE alike, where ``is_split_into_words`` needs ``add_prefix_space``
for byte-level tokenizers). A word's tag goes on its first sub-token (the first holding one of its characters:
a lone space piece of a byte-level BPE belongs to no word); its other sub-tokens, the special tokens
(``[CLS]``, ``<s>``…), padding and words cut off by ``max_length`` get :data:`IGNORE`, which no loss and no
metric counts; how many words were cut off is logged as a warning.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekd.data.config import TextSplitsConfig
from edgekd.data.examples import Batch, TextExamples
from edgekd.errors import DataError

log = logging.getLogger(__name__)

#: The label of a position that has no tag (PyTorch's cross-entropy ``ignore_index``).
IGNORE = -100


def table_columns(config: TextSplitsConfig, header: Sequence[str]) -> tuple[tuple[str, str], tuple[str, str], bool]:
    """The (column, recipe key) pairs of a table's texts and labels, and whether its rows are tagged tokens.

    Tagged tokens when ``data.task`` is ``token_classification``, or when it is unset and the header has the
    tokens and tags columns but no text column (the task is then read off the columns).
    """
    tagged = config.task == "token_classification" or (
        config.task is None and config.text_column not in header
        and config.tokens_column in header and config.tags_column in header)
    if tagged:
        return (config.tokens_column, "tokens_column"), (config.tags_column, "tags_column"), True
    return (config.text_column, "text_column"), (config.label_column, "label_column"), False


def tagged_row(where: str, tokens: str, tags: str) -> tuple[str, str]:
    """One row's tokens and tags, each re-joined by single spaces; :class:`DataError` unless equally many."""
    words, labels = tokens.split(), tags.split()
    if len(words) != len(labels):
        raise DataError(f"{where}: {len(words)} tokens but {len(labels)} tags; expected one tag per token "
                        "(data.tokens_column, data.tags_column)")
    if not words:
        raise DataError(f"{where}: no tokens; expected space-separated tokens and as many tags")
    return " ".join(words), " ".join(labels)


def hf_tagged_rows(name: str, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[Any]],
                   names: tuple[str, ...] | None) -> tuple[list[str], list[str]]:
    """Texts and space-separated tag names of a ``datasets`` split's token and tag sequences (tags as ClassLabel
    indices into ``names``, or as names); a token that is empty or holds whitespace is a :class:`DataError`."""
    texts, labels = [], []
    for row, (words, row_tags) in enumerate(zip(tokens, tags, strict=True)):
        bad = next((word for word in words if not word or word.split() != [word]), None)
        if bad is not None:
            raise DataError(f"{name} row {row}: token {bad!r} is empty or holds whitespace; expected words")
        if names is not None and any(not 0 <= tag < len(names) for tag in row_tags):
            raise DataError(f"{name} row {row}: tag indices {list(row_tags)} outside the {len(names)} tag names")
        text, label = tagged_row(f"{name} row {row}", " ".join(words),
                                 " ".join(names[tag] if names is not None else str(tag) for tag in row_tags))
        texts.append(text)
        labels.append(label)
    return texts, labels


def tag_names(tag_rows: Sequence[str]) -> tuple[str, ...]:
    """The distinct tags of the rows (space-separated), sorted: the model's classes."""
    return tuple(sorted({tag for row in tag_rows for tag in row.split()}))


def tag_ids(name: str, tag_rows: Sequence[str], lines: Sequence[int], unit: str,
            class_names: tuple[str, ...]) -> np.ndarray:
    """Each row's tag indices, int64 ``[N, most words]`` padded with :data:`IGNORE`; a tag outside
    ``class_names`` is a :class:`DataError` naming its row."""
    index = {tag: i for i, tag in enumerate(class_names)}
    rows = [row.split() for row in tag_rows]
    out = np.full((len(rows), max(map(len, rows), default=0)), IGNORE, dtype=np.int64)
    for number, tags in enumerate(rows):
        for position, tag in enumerate(tags):
            if tag not in index:
                shown = ", ".join(repr(n) for n in class_names[:10])
                raise DataError(f"{name} {unit} {lines[number]}: tag '{tag}' is not one of the training split's "
                                f"tags ({shown})")
            out[number, position] = index[tag]
    return out


def align_tags(tokenizer: Any, texts: Sequence[str], word_tags: np.ndarray,
               max_length: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Token ids of each text (as :func:`edgekd.data.batching.encode`) and its tags per sub-token, int64
    ``[N, longest]`` (see the module docstring for which sub-token gets a word's tag)."""
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length, return_offsets_mapping=True,
                        return_special_tokens_mask=True, return_attention_mask=False, return_token_type_ids=False)
    ids = [np.asarray(row, dtype=np.int64) for row in encoded["input_ids"]]
    labels = np.full((len(ids), max(map(len, ids), default=0)), IGNORE, dtype=np.int64)
    for row, (text, offsets, special) in enumerate(zip(texts, encoded["offset_mapping"],
                                                       encoded["special_tokens_mask"], strict=True)):
        starts = _word_starts(text)
        previous = -1
        for position, ((begin, end), is_special) in enumerate(zip(offsets, special, strict=True)):
            if is_special or end <= begin:
                continue
            word = bisect_right(starts, end - 1) - 1  # the last character: offsets may include a leading space
            if word != previous and word_tags[row, word] != IGNORE:
                labels[row, position] = word_tags[row, word]
            previous = word
    return ids, labels


def _word_starts(text: str) -> list[int]:
    """Character offsets of the words of ``text`` (words joined by single spaces)."""
    starts, at = [], 0
    for word in text.split(" "):
        starts.append(at)
        at += len(word) + 1
    return starts


@dataclass(frozen=True)
class TokenExamples(TextExamples):
    """Tagged texts: ``labels`` are int64 ``[N, longest]`` tag ids per sub-token (:data:`IGNORE` where none),
    cut to each batch's padded width."""

    def batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[Batch]:
        for idx, inputs, labels in super().batches(batch_size, shuffle=shuffle, generator=generator):
            yield idx, inputs, labels[:, : inputs["input_ids"].shape[1]]


def token_examples(tokenizer: Any, texts: Sequence[str], word_tags: np.ndarray, max_length: int) -> TokenExamples:
    """Tokenize tagged ``texts`` (word tags ``[N, words]``) into a :class:`TokenExamples` set."""
    ids, labels = align_tags(tokenizer, texts, word_tags, max_length)
    tagged, kept = int((word_tags != IGNORE).sum()), int((labels != IGNORE).sum())
    if kept < tagged:
        log.warning("%d of %d tagged words (%.1f%%) lie beyond max_length %d tokens: they are neither trained on "
                    "nor scored; raise tokenizer.max_length to keep them", tagged - kept, tagged,
                    100 * (tagged - kept) / tagged, max_length)
    return TokenExamples(encoded=tuple(ids), labels=torch.from_numpy(labels), pad_id=int(tokenizer.pad_token_id))
