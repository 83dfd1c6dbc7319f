"""Transfer-set augmentation of Tang et al. (2019), "Distilling Task-Specific Knowledge from BERT
into Simple Neural Networks", section 3.3, at the word level.

A small student learns more from a teacher when it sees more sentences than the labelled set
holds; the teacher labels the new ones (their hard labels are unknown). Each new sentence is a
training sentence with some words masked and, sometimes, only an n-gram of it kept.

Left out: the paper's third rule, POS-guided word replacement (a word swapped for another word of
the same part of speech), which needs a part-of-speech tagger edgekd does not have.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekd.distill.config import AugmentConfig
from edgekd.errors import ConfigError


def mask_token_of(tokenizer: Any, config: AugmentConfig) -> str:
    """The token words are masked with: the tokenizer's mask token, else its unknown token (a byte-level BPE such
    as GPT-2's has no mask token); a tokenizer with neither is refused in one line unless nothing is masked
    (``p_mask: 0``)."""
    token = tokenizer.mask_token or tokenizer.unk_token
    if token is None and config.p_mask > 0:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ConfigError(f"distill augment: the tokenizer '{name}' has no mask token and no unknown token to mask "
                          "words with; set augment.p_mask: 0 (n-gram sampling only) or use a tokenizer with a "
                          "mask token")
    return token or ""


def augment_texts(texts: Sequence[str], config: AugmentConfig, *, seed: int, mask_token: str = "[MASK]") -> list[str]:
    """Up to ``config.copies`` new sentences for each of ``texts``, grouped by input in input order.

    Words are the whitespace-separated parts of a text. Each copy: every word is independently
    replaced by ``mask_token`` with probability ``config.p_mask``; then, with probability
    ``config.p_ngram``, the sentence is replaced by a random n-gram of it, ``n`` drawn uniformly
    from ``1 … config.max_ngram`` (capped at the sentence's length) and its start uniformly from
    the positions where it fits. As in the paper, duplicates are discarded: a copy equal to the
    original or to an earlier copy of the same input is dropped, so an input may give fewer than
    ``copies`` sentences (a one-word one gives at most one: the mask). The same ``seed`` and texts give the
    same output.
    """
    rng = np.random.default_rng(seed)
    augmented: list[str] = []
    for text in texts:
        words = text.split()
        if not words:
            continue
        masked = rng.random((config.copies, len(words))) < config.p_mask
        take_ngram = rng.random(config.copies) < config.p_ngram
        ngram_lengths = np.minimum(rng.integers(1, config.max_ngram + 1, config.copies), len(words))
        ngram_starts = (rng.random(config.copies) * (len(words) - ngram_lengths + 1)).astype(np.int64)
        seen = {" ".join(words)}
        for copy in range(config.copies):
            sample = [mask_token if hide else word for word, hide in zip(words, masked[copy], strict=True)]
            if take_ngram[copy]:
                sample = sample[ngram_starts[copy] : ngram_starts[copy] + ngram_lengths[copy]]
            sentence = " ".join(sample)
            if sentence not in seen:
                seen.add(sentence)
                augmented.append(sentence)
    return augmented
