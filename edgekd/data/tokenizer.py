"""Tokenizers for text data: a pretrained Hugging Face one, or a BERT-style WordPiece trained offline.

The trained tokenizer is a ``transformers.PreTrainedTokenizerFast`` like BERT's: the BERT
normalizer (optionally lower-casing and stripping accents), the BERT pre-tokenizer (whitespace and
punctuation), a WordPiece vocabulary with ``##`` continuation pieces, ``[CLS] … [SEP]`` around each
sentence and the special tokens ``[PAD]`` (id 0), ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from edgekd.atomic import atomic_dir
from edgekd.data.config import TokenizerConfig
from edgekd.data.saved_tokenizer import read_tokenizer, write_tokenizer
from edgekd.errors import ConfigError, DataError
from edgekd.models.checkpoint_files import check_tokenizer_files
from edgekd.models.packaged import resolve_pretrained

log = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
                  "mask_token": "[MASK]"}


TRAINED_END_ID = list(SPECIAL_TOKENS).index("sep_token")
"""The id of ``[SEP]``, which ends every example a trained WordPiece encodes (its special tokens come first, in
:data:`SPECIAL_TOKENS` order)."""


def end_token_id(tokenizer: Any) -> int | None:
    """The special token ``tokenizer`` ends every example with (BERT's ``[SEP]``, T5's and BART's ``</s>``), or None
    when it ends them with none (GPT-2's): read off an encoded word, not assumed from the token's name."""
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return int(ids[-1]) if ids and ids[-1] in set(tokenizer.all_special_ids) else None


def load_or_train_tokenizer(
    config: TokenizerConfig | None, train_texts: Sequence[str], *, trust_remote_code: bool = False
) -> PreTrainedTokenizerFast:
    """The tokenizer a recipe asks for, with ``model_max_length`` set to ``config.max_length``.

    ``config.pretrained`` set: loaded from a local directory or a hub id by :func:`read_tokenizer` (a directory
    edgekd saved exactly as saved, others with ``AutoTokenizer.from_pretrained``; ``vocab_size`` and ``lowercase``
    are then the pretrained tokenizer's own); code shipped with a hub tokenizer runs only when
    ``trust_remote_code`` is true. Unset (or ``config`` None, meaning the defaults): a WordPiece vocabulary of
    ``config.vocab_size`` pieces is trained on ``train_texts``; the same texts give the same vocabulary and ids.
    """
    config = config or TokenizerConfig()
    if config.pretrained is None:
        tokenizer = _train_wordpiece(train_texts, config.vocab_size, lowercase=config.lowercase)
    else:
        tokenizer = load_pretrained_tokenizer(config.pretrained, trust_remote_code=trust_remote_code)
    tokenizer.model_max_length = config.max_length
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, directory: Path) -> Path:
    """Write ``tokenizer`` to ``directory`` (replacing it), read back as it was saved by :func:`read_tokenizer` (and
    by ``AutoTokenizer.from_pretrained``, there being no model config beside it; see :func:`write_tokenizer`).

    The files are written into a temporary directory beside ``directory`` and renamed into place,
    so a crash leaves the old directory or none, never a half-written one.
    """
    directory = Path(directory)
    with atomic_dir(directory) as tmp:
        write_tokenizer(tokenizer, tmp)
    return directory


def load_pretrained_tokenizer(name: str, *, padded: bool = True, trust_remote_code: bool) -> PreTrainedTokenizerFast:
    """The fast tokenizer of ``name`` (a hub id, a local directory or a packaged checkpoint); one line
    (``ConfigError``) when it cannot load or is not a fast tokenizer. ``padded``: one without a padding token pads
    with its end-of-text token (said in one log line), and one with neither is refused."""
    try:
        check_tokenizer_files(resolve_pretrained(name))
        tokenizer = read_tokenizer(resolve_pretrained(name), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        tokenizer = _byte_level_bpe_files(Path(resolve_pretrained(name)))
        if tokenizer is None:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"tokenizer.pretrained: cannot load '{name}': {detail}") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ConfigError(f"tokenizer.pretrained: '{name}' has no fast (tokenizers-backed) tokenizer")
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):  # transformers makes one up from a model's config
        raise ConfigError(f"tokenizer.pretrained: '{name}' has no vocabulary beyond its {len(tokenizer)} special "
                          "tokens (no tokenizer files there? expected tokenizer.json, or vocab.txt / vocab.json and "
                          "merges.txt, as save_pretrained writes them)")
    if padded and tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"tokenizer.pretrained: '{name}' has no padding token and no end-of-text token to "
                              "pad with; batches need one")
        # GPT-2 and Llama tokenizers have none: padding is masked by the attention mask, so any id will do, and
        # decoder classifiers find the last real token by the padding id, which a sentence does not contain.
        tokenizer.pad_token = tokenizer.eos_token
        log.info("tokenizer.pretrained: '%s' has no padding token; padding with its end-of-text token %r",
                 name, tokenizer.eos_token)
    return tokenizer


#: GPT-2's end-of-text token, the end-of-text token of byte-level BPE files that name no tokenizer class.
_GPT2_END = "<|endoftext|>"


def _byte_level_bpe_files(directory: Path) -> PreTrainedTokenizerFast | None:
    """GPT-2's own tokenizer layout, ``vocab.json`` and ``merges.txt`` with no ``tokenizer.json`` nor config naming a
    class (which transformers cannot read: it has no class to convert them with), as a byte-level BPE tokenizer
    (GPT-2's ``<|endoftext|>`` as its end-of-text token when the vocabulary has it); None for any other directory."""
    vocab, merges = directory / "vocab.json", directory / "merges.txt"
    if not (vocab.is_file() and merges.is_file()) or (directory / "tokenizer.json").is_file() \
            or (directory / "tokenizer_config.json").is_file():
        return None
    try:
        core = Tokenizer(models.BPE.from_file(str(vocab), str(merges)))
    except Exception:  # noqa: BLE001 - tokenizers raises its own exception types for unreadable files
        return None
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    end = _GPT2_END if _GPT2_END in core.get_vocab() else None
    log.info("tokenizer.pretrained: '%s' has GPT-2's vocab.json and merges.txt only; read as byte-level BPE", directory)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=end, bos_token=end, unk_token=end,
                                   clean_up_tokenization_spaces=False)


def _train_wordpiece(texts: Sequence[str], vocab_size: int, *, lowercase: bool) -> PreTrainedTokenizerFast:
    if not texts:
        raise DataError("cannot train a tokenizer: the training split has no texts")
    normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    trainer_tokenizer = Tokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk_token"]))
    trainer_tokenizer.normalizer = normalizer
    trainer_tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # The trainer numbers the '##x' continuation pieces of single characters in the order of a
    # randomly seeded hash map, and merges that tie in frequency are chosen by those numbers: the
    # vocabulary would differ from run to run. Listing the pieces up front fixes their numbers (the
    # normalizer acts on one character at a time, so normalizing the distinct characters suffices;
    # punctuation gets a '##' piece it never uses).
    characters = sorted({c for raw in set().union(*texts) for c in normalizer.normalize_str(raw) if not c.isspace()})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *(f"##{c}" for c in characters)],
        show_progress=False,
    )
    trainer_tokenizer.train_from_iterator(texts, trainer)

    # A fresh tokenizer over the learned vocabulary, so that only the real special tokens are special.
    tokenizer = Tokenizer(models.WordPiece(trainer_tokenizer.get_vocab(with_added_tokens=False),
                                           unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = SPECIAL_TOKENS["cls_token"], SPECIAL_TOKENS["sep_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, tokenizer.token_to_id(cls)), (sep, tokenizer.token_to_id(sep))],
    )
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
