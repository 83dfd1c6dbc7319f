"""Tiny random causal LMs whose greedy choices vary, for the KV-cache export and generation tests."""

from __future__ import annotations

import torch
from torch import nn

from edgekd.models.causal_lm import build_causal_lm


def spread_causal_lm(family: str, layers: int, width: int, heads: int, seed: int = 0, vocab: int = 23,
                     context: int = 48) -> nn.Module:
    """A ``family`` causal LM in eval mode, its weight matrices drawn from N(0, 0.4²) with ``seed``.

    Untrained models at the default initialisation repeat one token; the wider spread makes greedy
    choices vary, so comparing two generated sequences is not comparing two constants.
    """
    model = build_causal_lm(family, vocab_size=vocab, context=context, layers=layers, width=width, heads=heads,
                            seed=seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.4, generator=torch.Generator().manual_seed(seed))
    return model.eval()
