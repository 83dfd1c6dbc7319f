"""A causal-LM recipe's data: the corpus read, tokenized, and cut into training windows.

The corpus is a ``source: corpus`` recipe's text (:mod:`edgekd.data.corpus` reads and splits it).
The tokenizer is the teacher's own (saved beside its weights), a ``tokenizer.pretrained`` one, or one
trained on the corpus: a character vocabulary (``kind: char``, the default; built from the whole
text's characters, as nanoGPT does, so the validation text has no unknown character) or byte-level
BPE (``kind: bpe``, ``vocab_size`` tokens, trained on the training text; any text encodes).

Training batches are :class:`TokenWindows`: each epoch cuts the training ids into consecutive
``context``-long windows from a seeded random offset and shuffles them, so an epoch sees (almost)
every token once and different epochs see different window boundaries.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from edgekd.data.config import CorpusData, TokenizerConfig
from edgekd.data.corpus import (
    END_OF_TEXT,
    CorpusSplit,
    build_char_tokenizer,
    encode,
    read_corpus,
    read_text_folder,
    text_files,
    training_tokens_needed,
)
from edgekd.data.saved_dataset import load_saved_dataset
from edgekd.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMData:
    """A corpus as token ids: the tokenizer, the training and validation ids and the window length."""

    tokenizer: Any
    train: Tensor
    validation: Tensor
    context: int

    def windows(self) -> TokenWindows:
        """The training ids as batches of next-token windows."""
        return TokenWindows(self.train, self.context)


class TokenWindows:
    """Consecutive ``context``-long windows of a 1-D id tensor with their next-token targets.

    Batches are ``(indices, {"input_ids": [B, T]}, targets [B, T])`` like every other example set
    (:class:`edgekd.data.examples.Examples`), so the shared training loop runs on them.
    """

    def __init__(self, ids: Tensor, context: int) -> None:
        if ids.numel() < training_tokens_needed(context):
            raise DataError(f"the training text has {ids.numel()} tokens, too few for two windows of "
                            f"data.context {context}; lower data.context or give more text")
        self.ids = ids
        self.context = context

    def __len__(self) -> int:
        return (self.ids.numel() - 1 - self.context) // self.context

    def batches(self, batch_size: int, *, shuffle: bool,
                generator: torch.Generator | None = None) -> Iterator[tuple[np.ndarray, dict[str, Tensor], Tensor]]:
        """Batches of windows; shuffled, they start at a random offset in ``[0, context)``."""
        offset = int(torch.randint(self.context, (1,), generator=generator)) if shuffle else 0
        order = torch.randperm(len(self), generator=generator) if shuffle else torch.arange(len(self))
        span = torch.arange(self.context + 1)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size]
            rows = self.ids[(offset + idx * self.context).unsqueeze(1) + span]
            yield idx.numpy(), {"input_ids": rows[:, :-1]}, rows[:, 1:]


def prepare_lm_data(data: CorpusData, tokenizer_config: TokenizerConfig | None, tokenizer: Any = None) -> LMData:
    """Read ``data``'s corpus and tokenize it with ``tokenizer`` (a model's own), else as ``tokenizer_config`` says."""
    split = load_corpus(data)
    if tokenizer is None:
        tokenizer = corpus_tokenizer(tokenizer_config, split)
    where = f"{data.path} (data.path)"
    validation = encode(tokenizer, split.validation, where)
    if validation.numel() < 2:
        raise DataError(f"{where}: the validation text is {validation.numel()} token(s); at least 2 are needed to "
                        "measure a next-token loss (lower data.train_fraction or give a longer validation split)")
    return LMData(tokenizer=tokenizer, train=encode(tokenizer, split.train, where), validation=validation,
                  context=data.context)


def device_prompt(validation: Tensor, prompt_tokens: int) -> list[int]:
    """The prompt every generation timing starts from: the validation text's first ``prompt_tokens`` ids
    (:class:`ConfigError` naming the device's setting when the text is shorter)."""
    if validation.numel() < prompt_tokens:
        raise ConfigError(f"device generation.prompt_tokens: {prompt_tokens} tokens of prompt, but the "
                          f"validation text the prompt comes from has {validation.numel()}; lower prompt_tokens")
    return validation[:prompt_tokens].tolist()


def load_corpus(data: CorpusData) -> CorpusSplit:
    """The training and validation text of a ``source: corpus`` recipe: a text file, a folder of ``.txt`` files
    (:func:`~edgekd.data.corpus.read_text_folder`) or a datasets directory."""
    path = Path(data.path)
    if not path.is_dir():
        return read_corpus(path, data.train_fraction)
    if text_files(path):
        return read_text_folder(path, data.train_fraction)
    import datasets

    loaded = load_saved_dataset(path, "a text file or a dataset saved with save_to_disk")
    splits = loaded if isinstance(loaded, datasets.DatasetDict) else {data.train_split: loaded}
    if data.train_split not in splits:
        raise DataError(f"{path}: no split '{data.train_split}' (data.train_split); it has {', '.join(splits)}")
    train = _column_text(splits[data.train_split], data, f"{path} split '{data.train_split}'")
    if data.validation_split in splits:
        return CorpusSplit(train=train, validation=_column_text(
            splits[data.validation_split], data, f"{path} split '{data.validation_split}'"))
    others = [name for name in splits if name != data.train_split]
    if others:
        log.warning("%s: no split '%s' (data.validation_split), so the training text is split by "
                    "data.train_fraction and split %s is not read; set data.validation_split to validate on it",
                    path, data.validation_split, ", ".join(repr(name) for name in others))
    cut = int(len(train) * data.train_fraction)
    if cut in (0, len(train)):
        raise DataError(f"{path}: {len(train)} characters are too few to split into training and validation text")
    return CorpusSplit(train=train[:cut], validation=train[cut:])


def _column_text(split: Any, data: CorpusData, where: str) -> str:
    """A split's text column, rows joined by newlines."""
    if data.text_column not in split.column_names:
        raise DataError(f"{where}: no column '{data.text_column}' (data.text_column); it has "
                        f"{', '.join(split.column_names)}")
    rows = split[data.text_column]
    if not all(isinstance(row, str) for row in rows):
        raise DataError(f"{where}: column '{data.text_column}' must hold text")
    return "\n".join(rows)


def corpus_tokenizer(config: TokenizerConfig | None, split: CorpusSplit) -> Any:
    """The tokenizer ``config`` asks for, for this corpus (see the module docstring)."""
    from edgekd.data.tokenizer import load_pretrained_tokenizer

    config = config or TokenizerConfig()
    if config.pretrained is not None:
        tokenizer = load_pretrained_tokenizer(config.pretrained, trust_remote_code=False, padded=False)
    elif config.kind in (None, "char"):
        tokenizer = build_char_tokenizer(split.train + split.validation)
    elif config.kind == "bpe":
        tokenizer = _train_byte_bpe(split.train, config.vocab_size)
    else:
        raise ConfigError(f"tokenizer.kind: '{config.kind}' cannot reproduce a corpus's text; expected char or bpe")
    return tokenizer


def _train_byte_bpe(text: str, vocab_size: int) -> Any:
    """Byte-level BPE (GPT-2's scheme) of ``vocab_size`` tokens trained on ``text``, end-of-text id 0."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    lines = text.splitlines(keepends=True)
    core.train_from_iterator((lines[i:i + 1000] for i in range(0, len(lines), 1000)) if lines else [text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, unk_token=END_OF_TEXT, clean_up_tokenization_spaces=False)
