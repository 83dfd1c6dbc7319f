"""Tiny character-level causal LMs for the generation-distillation tests: a short text, its character
tokenizer, and models built from sizes (optionally trained a few steps so their outputs look like the text)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from edgekd.data.corpus import build_char_tokenizer, encode
from edgekd.models.causal_lm import build_causal_lm, windows

TEXT = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
        "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n") * 3
TOKENIZER = build_char_tokenizer(TEXT)
IDS: Tensor = encode(TOKENIZER, TEXT, "corpus")
VOCAB = len(TOKENIZER)


def char_lm(family: str, *, context: int = 48, layers: int = 1, width: int = 32, heads: int = 2,
            seed: int = 0) -> nn.Module:
    """A fresh causal LM of ``family`` over the text's characters."""
    return build_causal_lm(family, vocab_size=VOCAB, context=context, layers=layers, width=width, heads=heads,
                           seed=seed)


def trained_char_lm(family: str, steps: int, *, seed: int = 0, **sizes: int) -> nn.Module:
    """:func:`char_lm` trained ``steps`` AdamW steps on the text's windows, returned in eval mode."""
    model = char_lm(family, seed=seed, **sizes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        inputs, targets = windows(IDS, 32, 16, generator)
        loss = nn.functional.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@torch.no_grad()
def stepwise_greedy(model: nn.Module, prompts: Tensor, new_tokens: int, stops: tuple[int, ...], pad: int) -> Tensor:
    """The reference greedy decoder: a full forward pass per token (no cache), argmax, padding after a stop token."""
    rows = []
    for prompt in prompts:
        sequence, stopped = prompt.tolist(), False
        for _ in range(new_tokens):
            if stopped:
                sequence.append(pad)
                continue
            token = int(model(input_ids=torch.tensor([sequence])).logits[0, -1].argmax())
            sequence.append(token)
            stopped = token in stops
        rows.append(sequence)
    return torch.tensor(rows)
