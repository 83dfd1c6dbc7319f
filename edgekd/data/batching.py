"""Token ids, length-bucketed batches and dynamic padding for text models.

SST-2 sentences average ~13 tokens, so padding every batch to the tokenizer's maximum (128) would
make ~90% of the work padding. Batches here are padded to their longest sentence only, and
:func:`bucket_batches` groups sentences of similar length so that even that padding is small.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

#: :func:`bucket_batches` sorts by length within chunks of this many batches: large enough that
#: batches are nearly uniform in length, small enough that batch contents stay random.
CHUNK_BATCHES = 50


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids of each text (int64, with the special tokens), truncated to ``max_length``."""
    if not texts:
        return []
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    return [np.asarray(row, dtype=np.int64) for row in ids]


def bucket_batches(
    lengths: Sequence[int] | np.ndarray, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None
) -> list[np.ndarray]:
    """Split the indices ``0 … len(lengths) - 1`` into batches of at most ``batch_size``, each index once.

    ``shuffle=True`` (training): the indices are shuffled, cut into chunks of
    :data:`CHUNK_BATCHES` batches, each chunk is sorted by length and cut into batches, and the
    batch order is shuffled; so batches hold sentences of similar length yet differ every epoch.
    ``shuffle=False`` (evaluation): all indices sorted by length (ties in index order), then cut.
    Randomness comes from ``generator`` (torch's global generator when None): the same generator
    state gives the same batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    lengths = np.asarray(lengths)
    if not shuffle:
        return _cut(np.argsort(lengths, kind="stable"), batch_size)
    order = torch.randperm(len(lengths), generator=generator).numpy()
    chunk = batch_size * CHUNK_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        batches += _cut(part[np.argsort(lengths[part], kind="stable")], batch_size)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def collate(encoded: Sequence[np.ndarray], indices: Sequence[int] | np.ndarray, pad_id: int) -> dict[str, torch.Tensor]:
    """One batch of the texts at ``indices``, right-padded with ``pad_id`` to the batch's longest text.

    Returns int64 tensors ``input_ids``, ``attention_mask`` (1 for real tokens) and
    ``token_type_ids`` (zeros: single sentences), each of shape ``[len(indices), longest]``.
    """
    rows = [encoded[i] for i in indices]
    width = max(len(row) for row in rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    ids = torch.from_numpy(input_ids)
    mask = torch.from_numpy(attention_mask)
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def padding_ratio(lengths: Sequence[int] | np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Real tokens over padded token slots when ``batches`` are padded to their longest text (1.0: no padding)."""
    lengths = np.asarray(lengths)
    real = sum(int(lengths[batch].sum()) for batch in batches)
    padded = sum(len(batch) * int(lengths[batch].max()) for batch in batches)
    return real / padded


def _cut(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
