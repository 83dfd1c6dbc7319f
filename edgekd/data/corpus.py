"""Text corpora for causal language models: any text file, split by characters, and a character tokenizer.

The split is nanoGPT's: the first ``train_fraction`` of the file's characters train, the rest is held
out for validation. The character tokenizer is a Hugging Face ``PreTrainedTokenizerFast`` (one token
per character plus an end-of-text token), so ``save_pretrained`` writes it beside the model and
``AutoTokenizer.from_pretrained`` reloads it without edgekd.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from edgekd.errors import DataError

#: The end-of-text token (GPT-2's spelling); id 0 of every character vocabulary.
END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class CorpusSplit:
    """A corpus's training and validation text."""

    train: str
    validation: str


def training_tokens_needed(context: int) -> int:
    """The fewest training tokens a causal LM of ``context`` trains on: two windows and their next tokens."""
    return 2 * context + 2


def read_corpus(path: Path, train_fraction: float = 0.9) -> CorpusSplit:
    """Read a UTF-8 text file (a byte-order mark is not text) and split it by characters: the first
    ``train_fraction`` trains.

    Raises :class:`DataError` naming the file when it is missing, not UTF-8 text, or too short to
    leave characters on both sides of the split.
    """
    return split_text(read_text(Path(path)), train_fraction, Path(path))


def read_text_folder(folder: Path, train_fraction: float = 0.9) -> CorpusSplit:
    """The ``.txt`` files under ``folder`` (in path order, each ending with a newline) as one text, split like
    :func:`read_corpus`."""
    texts = [read_text(path) for path in text_files(folder)]
    return split_text("".join(text if text.endswith("\n") or not text else text + "\n" for text in texts),
                      train_fraction, folder)


def text_files(folder: Path) -> list[Path]:
    """The ``.txt`` files under ``folder``, sorted by path; none when it is a saved ``datasets`` directory."""
    if any((folder / marker).is_file() for marker in ("dataset_dict.json", "dataset_info.json", "state.json")):
        return []
    return sorted(path for path in folder.rglob("*.txt") if path.is_file())


def read_text(path: Path) -> str:
    """A UTF-8 text file's text (a byte-order mark is not text); :class:`DataError` naming it when it is missing,
    a directory or not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: no such text file") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a text file") from None


def split_text(text: str, train_fraction: float, path: Path) -> CorpusSplit:
    """``text`` split by characters, the first ``train_fraction`` training; :class:`DataError` naming ``path``
    when a side would be empty."""
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"{path}: train_fraction must be between 0 and 1, got {train_fraction}")
    cut = int(len(text) * train_fraction)
    if cut == 0 or cut == len(text):
        raise DataError(f"{path}: {len(text)} characters are too few to split {train_fraction:g} / "
                        f"{1 - train_fraction:g} into training and validation text")
    return CorpusSplit(train=text[:cut], validation=text[cut:])


def build_char_tokenizer(text: str):  # -> transformers.PreTrainedTokenizerFast
    """A character-level tokenizer over the characters of ``text`` (sorted), end-of-text first.

    Characters outside ``text`` are refused by :func:`encode` rather than mapped to an unknown token.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if not text:
        raise DataError("a character tokenizer needs some text; the corpus is empty")
    vocab = {END_OF_TEXT: 0} | {char: i + 1 for i, char in enumerate(sorted(set(text)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=END_OF_TEXT))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT,
                                   pad_token=END_OF_TEXT, unk_token=END_OF_TEXT, clean_up_tokenization_spaces=False)


def encode(tokenizer, text: str, where: str) -> Tensor:
    """``text`` as a 1-D tensor of token ids; :class:`DataError` naming ``where`` for a character a
    character-level tokenizer does not know (byte-level and subword tokenizers encode any text)."""
    unknown = unknown_characters(tokenizer, text)
    if unknown:
        shown = ", ".join(repr(char) for char in unknown[:5])
        raise DataError(f"{where}: {len(unknown)} character(s) the tokenizer does not know ({shown}); "
                        f"build the tokenizer from this text or one containing it")
    return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def per_character(tokenizer) -> bool:
    """True for a tokenizer with one token per known character (:func:`build_char_tokenizer`'s kind): a
    character outside its vocabulary encodes as its unknown token instead of failing or splitting into bytes."""
    from tokenizers import models

    backend = getattr(tokenizer, "backend_tokenizer", None)
    return backend is not None and isinstance(backend.model, models.WordLevel)


def unknown_characters(tokenizer, text: str) -> list[str]:
    """The characters of ``text`` a per-character tokenizer does not know, sorted (none for other tokenizers)."""
    return sorted(set(text) - set(tokenizer.get_vocab())) if per_character(tokenizer) else []
