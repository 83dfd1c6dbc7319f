"""Sequence-level knowledge distillation for causal LMs (Kim & Rush 2016, §3.2): train on the teacher's outputs.

Word-level KD pulls the student's next-token distribution towards the teacher's on corpus text.
Sequence-level KD instead approximates the teacher's distribution over whole sequences by its mode:
for prompts taken from the training text, the teacher's own greedy (or beam-search) continuation is
generated once, and the student then learns those continuations by ordinary next-token
cross-entropy. Kim & Rush found this the stronger of the two for small students, and the two combine
(word-level KD on the sequence-level data): the windows below carry a mask that
:class:`~edgekd.distill.losses.token_kl.TokenKLLoss` accepts as well.

The pieces, in the order a distill stage uses them:

1. :func:`choose_prompts` — ``N`` prompts of ``P`` tokens at seeded random or evenly spaced
   positions of the training token ids.
2. :func:`teacher_continuations` — the teacher's ``L`` new tokens after each prompt through
   ``transformers``' ``generate`` (``do_sample=False``; ``num_beams=1`` is greedy, more is beam
   search), batched, in eval mode without gradients: an ``[N, P + L]`` long tensor. A continuation
   that ends early (an end-of-text token of the teacher's generation config) is padded after it.
3. :func:`cached_continuations` — the same, generated once: the tensor is written atomically to
   ``<directory>/continuations-<key>.safetensors`` with the settings in its metadata, and a later call
   with the same key reloads it instead of generating. A file whose settings, prompts or shape do
   not match the call (or that cannot be read) is regenerated. :func:`continuation_cache_key` makes
   the key from the teacher's ``state_dict`` and the caller's settings.
4. :func:`generated_tokens` and :class:`ContinuationWindows` — ``(inputs, targets, mask)`` training
   windows over the sequences, the mask true exactly at targets the teacher generated (its first
   end-of-text token included, as the teacher chose to stop there; prompt tokens and padding never
   count), so the student is trained on the teacher's outputs only; :func:`continuation_loss`
   measures a model's loss on them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.atomic import write_with
from edgekd.digest import update_with_tensor
from edgekd.distill.losses.base import masked_mean
from edgekd.errors import ConfigError
from edgekd.models.call import eval_mode, parameter_device
from edgekd.models.causal_lm import check_prompt_fits, context_length

log = logging.getLogger(__name__)

#: Where prompts sit in the training ids: seeded uniform random starts, or evenly spaced over the text.
#: Bumped when the cache file's layout changes, so older files are regenerated.
_CACHE_FORMAT = "1"


@dataclass(frozen=True)
class TokenBatch:
    """A training batch for a causal LM: ``inputs`` and next-token ``targets`` ``[B, T]``, and the boolean
    ``mask`` ``[B, T]`` of the positions whose target a loss counts."""

    inputs: Tensor
    targets: Tensor
    mask: Tensor


def choose_prompts(ids: Tensor, count: int, length: int, *, seed: int = 0, where: str = "sequence_kd") -> Tensor:
    """``count`` prompts of ``length`` tokens cut from the 1-D training ``ids`` at starts drawn uniformly with a
    generator seeded by ``seed``: ``[count, length]``.

    :class:`ConfigError` naming ``where`` for zero prompts, an empty prompt or one the text cannot hold.
    """
    if count < 1:
        raise ConfigError(f"{where}.prompts: need at least 1 prompt, got {count}")
    if length < 1:
        raise ConfigError(f"{where}.prompt_tokens: a prompt needs at least 1 token, got {length}")
    if length > ids.numel():
        raise ConfigError(f"{where}.prompt_tokens: a {length}-token prompt is longer than the {ids.numel()}-token "
                          "training text")
    starts = torch.randint(ids.numel() - length + 1, (count,), generator=torch.Generator().manual_seed(seed))
    return ids[starts.unsqueeze(1) + torch.arange(length)].long()


def stop_ids(model: nn.Module) -> tuple[int, ...]:
    """The end-of-text token ids that end ``model``'s generation (its generation config's ``eos_token_id``)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(i) for i in (eos if isinstance(eos, Sequence) else [eos]))


def pad_id(model: nn.Module, vocab: int | None = None) -> int:
    """The id generation pads finished sequences with: the model's pad token, else its first stop token, else 0;
    with ``vocab`` (the tokenizer's size), the first of them below it (a checkpoint's config may name ids of
    another tokenizer, which the student's embeddings would not have)."""
    pad = getattr(model.generation_config, "pad_token_id", None)
    candidates = [int(pad)] if pad is not None else []
    return next((i for i in [*candidates, *stop_ids(model)] if vocab is None or 0 <= i < vocab), 0)


def suppressed_ids(model: nn.Module, vocab: int | None) -> list[int] | None:
    """The output rows beyond the tokenizer's ``vocab`` ids (checkpoints pad their embedding tables): never
    generated, since no tokenizer id stands for them; None when there are none."""
    rows = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is None or not isinstance(rows, int) or rows <= vocab:
        return None
    return list(range(vocab, rows))


def check_prompts(model: nn.Module, prompts: Tensor, new_tokens: int, where: str) -> None:
    """Refuse a prompt tensor that is not ``[N >= 1, P >= 1]``, fewer than 1 new token, or ``P + new_tokens``
    beyond ``model``'s context, with a one-line :class:`ConfigError` naming ``where``."""
    if prompts.dim() != 2 or prompts.shape[0] == 0 or prompts.shape[1] == 0:
        raise ConfigError(f"{where}.prompts: expected a [prompts >= 1, tokens >= 1] tensor of token ids, "
                          f"got shape {list(prompts.shape)}")
    if new_tokens < 1:
        raise ConfigError(f"{where}.new_tokens: must be at least 1, got {new_tokens}")
    check_prompt_fits(model, prompts.shape[1], new_tokens, f"{where}.prompt_tokens")


@torch.no_grad()
def teacher_continuations(teacher: nn.Module, prompts: Tensor, new_tokens: int, *, num_beams: int = 1,
                          batch: int = 32, where: str = "sequence_kd", vocab: int | None = None) -> Tensor:
    """The teacher's own ``new_tokens`` continuation of each prompt, after the prompt: ``[N, P + new_tokens]``.

    Greedy for ``num_beams=1``, else beam search with that many beams (the best beam); ``batch``
    prompts per ``generate`` call. The teacher runs in eval mode (its own mode is restored after).
    A continuation that emits an end-of-text token (:func:`stop_ids`) stops there and is padded.
    ``vocab``: the tokenizer's size; only its ids are generated or padded with (:func:`suppressed_ids`).
    """
    check_prompts(teacher, prompts, new_tokens, where)
    if num_beams < 1:
        raise ConfigError(f"{where}.num_beams: must be at least 1, got {num_beams}")
    total = prompts.shape[1] + new_tokens
    pad = pad_id(teacher, vocab)
    stops = list(stop_ids(teacher)) or None
    suppressed = suppressed_ids(teacher, vocab)
    pieces, device = [], parameter_device(teacher)
    with eval_mode(teacher):
        for chunk in prompts.long().split(batch):
            chunk = chunk.to(device)
            out = teacher.generate(input_ids=chunk, attention_mask=torch.ones_like(chunk), max_new_tokens=new_tokens,
                                   do_sample=False, num_beams=num_beams, pad_token_id=pad, eos_token_id=stops,
                                   suppress_tokens=suppressed)
            pieces.append(F.pad(out.cpu(), (0, total - out.shape[1]), value=pad))
    return torch.cat(pieces)


def continuation_cache_key(state_dict: Mapping[str, Tensor], settings: Mapping[str, Any]) -> str:
    """A hex digest of a teacher's weights (every tensor's name, dtype, shape and bytes) and the ``settings``
    (JSON-serialisable: prompt choice, new tokens, beams...) — the ``key`` for :func:`cached_continuations`."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state_dict.items()):
        update_with_tensor(digest, name, tensor)
    digest.update(json.dumps(dict(settings), sort_keys=True, default=str).encode())
    return digest.hexdigest()


def cache_file(directory: Path, key: str) -> Path:
    """Where :func:`cached_continuations` keeps the sequences for ``key``."""
    if not key or not all(c.isalnum() or c in "-_." for c in key):
        raise ConfigError(f"sequence-KD cache key {key!r}: expected letters, digits, '-', '_' or '.' (a digest)")
    return Path(directory) / f"continuations-{key}.safetensors"


def cached_continuations(directory: Path, key: str, teacher: nn.Module, prompts: Tensor, new_tokens: int, *,
                         num_beams: int = 1, batch: int = 32, where: str = "sequence_kd",
                         vocab: int | None = None) -> Tensor:
    """:func:`teacher_continuations`, generated once per ``key`` and reloaded from ``directory`` afterwards.

    ``key`` identifies the teacher and settings (see :func:`continuation_cache_key`). The file also
    records the prompts' digest, ``new_tokens``, ``num_beams`` and the stop tokens; a file that
    disagrees with this call in any of them, or in shape, or cannot be read, is regenerated and
    replaced (atomically).
    """
    check_prompts(teacher, prompts, new_tokens, where)
    path = cache_file(directory, key)
    expected = _cache_metadata(key, teacher, prompts, new_tokens, num_beams, vocab)
    shape = (prompts.shape[0], prompts.shape[1] + new_tokens)
    cached, reason = _read_cache(path, expected, shape)
    if cached is not None:
        log.info("sequence-level KD: reusing the teacher's %d continuations in %s", shape[0], path)
        return cached
    if path.exists():
        log.warning("sequence-level KD: regenerating %s: %s", path, reason)
    sequences = teacher_continuations(teacher, prompts, new_tokens, num_beams=num_beams, batch=batch, where=where,
                                      vocab=vocab)
    from safetensors.torch import save_file

    write_with(path, lambda tmp: save_file({"sequences": sequences.contiguous()}, str(tmp), metadata=expected))
    return sequences


def _cache_metadata(key: str, teacher: nn.Module, prompts: Tensor, new_tokens: int, num_beams: int,
                    vocab: int | None = None) -> dict[str, str]:
    digest = hashlib.sha256()
    update_with_tensor(digest, "prompts", prompts.long())
    return {"format": _CACHE_FORMAT, "key": key, "prompts": digest.hexdigest(), "new_tokens": str(new_tokens),
            "num_beams": str(num_beams), "stop_ids": json.dumps(stop_ids(teacher)),
            "pad_id": str(pad_id(teacher, vocab))}


def _read_cache(path: Path, expected: dict[str, str], shape: tuple[int, int]) -> tuple[Tensor | None, str]:
    """The cached sequences if ``path`` holds them for exactly ``expected`` and ``shape``; else None and why not."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        return None, "no cache file"
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            sequences = handle.get_tensor("sequences")
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        return None, f"unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    differing = sorted(name for name, value in expected.items() if metadata.get(name) != value)
    if differing:
        return None, f"made with different {', '.join(differing)}"
    if tuple(sequences.shape) != shape or sequences.dtype != torch.long:
        return None, f"holds {sequences.dtype} {list(sequences.shape)}, expected torch.int64 {list(shape)}"
    return sequences, ""


def generated_tokens(sequences: Tensor, prompt_tokens: int, stops: Sequence[int] = ()) -> Tensor:
    """Boolean ``[N, P + L]``: true at the generated tokens of each ``prompt + continuation`` row, up to and
    including the first of the ``stops`` (end-of-text) tokens; false at the prompt and at the padding after."""
    generated = (torch.arange(sequences.shape[1], device=sequences.device) >= prompt_tokens).expand_as(sequences)
    stopped = torch.isin(sequences, torch.tensor(list(stops), dtype=sequences.dtype, device=sequences.device))
    stopped &= generated
    after_stop = (stopped.long().cumsum(1) - stopped.long()) > 0
    return generated & ~after_stop


class ContinuationWindows:
    """Random ``(inputs, targets, mask)`` training windows over ``prompt + continuation`` sequences.

    A window is at most ``context`` inputs long; over a row longer than ``context + 1`` tokens its
    start is drawn so that it holds at least one generated target and ends no later than the row's
    last generated token. ``mask`` is true exactly where the target is a generated token (see
    :func:`generated_tokens`), so a loss averaged over it trains on the teacher's outputs only.
    """

    def __init__(self, sequences: Tensor, prompt_tokens: int, context: int, stops: Sequence[int] = ()) -> None:
        if sequences.dim() != 2 or sequences.shape[0] == 0 or sequences.shape[1] <= prompt_tokens:
            raise ConfigError(f"sequence-level KD: expected [sequences >= 1, tokens > {prompt_tokens}] prompt + "
                              f"continuation ids, got shape {list(sequences.shape)}")
        if context < 1:
            raise ConfigError(f"sequence-level KD: the training context must be at least 1 token, got {context}")
        self.sequences = sequences.long()
        self.keep = generated_tokens(self.sequences, prompt_tokens, stops)
        positions = torch.arange(self.sequences.shape[1])
        ends = torch.where(self.keep, positions, 0).amax(1) + 1  # one past each row's last generated token
        self.width = min(context, self.sequences.shape[1] - 1)
        self.lowest = max(0, prompt_tokens - self.width)
        self.highest = (ends - self.width - 1).clamp_min(self.lowest)

    def __len__(self) -> int:
        return self.sequences.shape[0]

    def sample(self, batch: int, generator: torch.Generator) -> TokenBatch:
        """``batch`` windows of random rows at random admissible starts, drawn with ``generator``."""
        rows = torch.randint(len(self), (batch,), generator=generator)
        spans = self.highest[rows] - self.lowest + 1
        starts = self.lowest + (torch.rand(batch, generator=generator) * spans).long().clamp_max(spans - 1)
        index = starts.unsqueeze(1) + torch.arange(self.width)
        picked, keep = self.sequences[rows], self.keep[rows]
        return TokenBatch(inputs=picked.gather(1, index), targets=picked.gather(1, index + 1),
                          mask=keep.gather(1, index + 1))


def whole_sequences(sequences: Tensor, prompt_tokens: int, stops: Sequence[int] = ()) -> TokenBatch:
    """Each full sequence as one window: inputs ``[:, :-1]``, targets ``[:, 1:]``, mask on generated targets."""
    keep = generated_tokens(sequences, prompt_tokens, stops)
    return TokenBatch(inputs=sequences[:, :-1], targets=sequences[:, 1:], mask=keep[:, 1:])


def masked_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Next-token cross-entropy of ``logits`` ``[B, T, V]`` against ``targets`` ``[B, T]``, averaged over the
    boolean ``mask`` (sequence-level KD's training loss on the teacher's outputs)."""
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    return masked_mean(ce, mask)


@torch.no_grad()
def continuation_loss(model: nn.Module, sequences: Tensor, prompt_tokens: int, stops: Sequence[int] = (),
                      batch: int = 32) -> float:
    """``model``'s mean next-token cross-entropy (nats) over the generated tokens of ``sequences``."""
    if sequences.shape[1] - 1 > context_length(model):
        raise ConfigError(f"sequence-level KD: {sequences.shape[1]}-token sequences do not fit the model's context of "
                          f"{context_length(model)} tokens")
    total, count, device = 0.0, 0, parameter_device(model)
    with eval_mode(model):
        for rows in sequences.split(batch):
            window = whole_sequences(rows.to(device), prompt_tokens, stops)
            kept = int(window.mask.sum())
            logits = model(input_ids=window.inputs).logits
            total += float(masked_cross_entropy(logits, window.targets, window.mask)) * kept
            count += kept
    return total / max(count, 1)
