"""Tokenizers written beside a model and read back exactly as the model was trained with them.

A fast tokenizer's ``tokenizer.json`` is its whole pipeline: normaliser, pre-tokenizer, vocabulary and the special
tokens put around a sentence. ``AutoTokenizer`` does not always read it as such: beside a model's ``config.json`` it
picks the class of the model's family, and some families' classes rebuild the pipeline from the vocabulary alone
(transformers 5 reads a WordPiece vocabulary saved beside a Qwen2 model as Qwen2's byte-level BPE, which spells
every word out in characters). So:

- :func:`write_tokenizer` saves a fast tokenizer with ``tokenizer_config.json`` naming the generic class (read the
  pipeline as ``tokenizer.json`` holds it), and checks that the files read back encode as the tokenizer does;
- :func:`read_tokenizer` reads a directory naming that class as that class, never the family's, and checks that it
  encodes as the ``tokenizers`` library reads ``tokenizer.json`` (what an app reads); any other directory (a user's
  checkpoint) is ``AutoTokenizer``'s, as transformers itself would read it.

Each check encodes a few probe texts (:func:`probe_texts`) both ways; different ids are a :class:`ModelError`.

The written ``tokenizer.json`` truncates at the tokenizer's ``model_max_length`` (edgekd sets it to the recipe's
``max_length``: what the model was trained and exported for, and what a bundle's manifest says to truncate at), or
nowhere when it has none, and pads nothing, whatever the tokenizer's last call left in its state: transformers sets
the backend's truncation at each call (``tokenizer(..., max_length=16)``) and ``save_pretrained`` writes it as set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from edgekd.errors import ModelError

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
#: What transformers names the class that reads ``tokenizer.json`` as it is (4.x: ``PreTrainedTokenizerFast``;
#: 5.x: ``TokenizersBackend``, the former being its alias).
GENERIC_CLASSES = frozenset({"PreTrainedTokenizerFast", "TokenizersBackend"})
#: Words every probe encodes: lower and upper case, an accent, an apostrophe, digits, punctuation.
PROBE_WORDS = ("the", "film", "is", "great", "Story", "héllo", "don't", "42", "!")
#: How many of the vocabulary's tokens, spread over its ids, a probe encodes besides :data:`PROBE_WORDS`.
PROBE_TOKENS = 8


def write_tokenizer(tokenizer: Any, directory: Path) -> None:
    """Save ``tokenizer``'s files into the existing ``directory`` so that they read back exactly as it encodes.

    A fast tokenizer's ``tokenizer.json`` truncates at :func:`saved_truncation` and pads nothing (its backend is
    left so); its ``tokenizer_config.json`` names the generic class; :class:`ModelError` when :func:`read_tokenizer`
    reads the files back encoding a probe text otherwise. A slow tokenizer (no ``tokenizer.json``) is saved as it
    is."""
    directory = Path(directory)
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        tokenizer.save_pretrained(directory)
        return
    _set_saved_limits(tokenizer)
    tokenizer.save_pretrained(directory)
    _name_generic_class(directory / TOKENIZER_CONFIG)
    texts = probe_texts(Tokenizer.from_file(str(directory / TOKENIZER_JSON)))
    _check_same_ids(texts, _encoded(tokenizer, texts), read_tokenizer(directory), directory,
                    "the tokenizer it was saved from")


def read_tokenizer(source: str | Path, *, trust_remote_code: bool = False, local_files_only: bool = False) -> Any:
    """The tokenizer saved in ``source`` (a directory or a hub id).

    A directory whose ``tokenizer_config.json`` names the generic class (:func:`write_tokenizer` wrote it, or a
    user saved a tokenizer of that class) is read from its ``tokenizer.json`` as that class, whatever model family
    its ``config.json`` names, and :class:`ModelError` when it then encodes a probe text otherwise than the
    ``tokenizers`` library reads that file. Anything else through ``AutoTokenizer`` (code shipped with a hub
    tokenizer runs only when ``trust_remote_code``). transformers' own ``OSError`` and ``ValueError`` pass through.
    """
    directory = Path(source)
    if not _names_generic_class(directory):
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code,
                                             local_files_only=local_files_only)
    loaded = PreTrainedTokenizerFast.from_pretrained(directory, local_files_only=local_files_only)
    core = Tokenizer.from_file(str(directory / TOKENIZER_JSON))
    core.no_truncation()
    core.no_padding()
    texts = probe_texts(core)
    _check_same_ids(texts, [encoding.ids for encoding in core.encode_batch(texts)], loaded, directory,
                    f"its {TOKENIZER_JSON}")
    return loaded


def saved_truncation(tokenizer: Any) -> int | None:
    """Where a saved ``tokenizer.json`` truncates: the tokenizer's ``model_max_length``, None when it has none
    (transformers' stand-in for no limit is a huge number)."""
    limit = tokenizer.model_max_length
    return int(limit) if isinstance(limit, int) and 0 < limit < VERY_LARGE_INTEGER else None


def _set_saved_limits(tokenizer: PreTrainedTokenizerFast) -> None:
    """Set the backend of ``tokenizer`` to truncate at :func:`saved_truncation` and pad nothing (transformers sets
    both anew at each call, so only what is saved changes)."""
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    limit = saved_truncation(tokenizer)
    if limit is None:
        backend.no_truncation()
    else:
        backend.enable_truncation(limit, direction=tokenizer.truncation_side)


def probe_texts(core: Tokenizer) -> list[str]:
    """Short texts two readings of one tokenizer must encode alike: :data:`PROBE_WORDS`, and :data:`PROBE_TOKENS`
    of its vocabulary's tokens spread over their ids, decoded (its special tokens decode to nothing and are left
    out). Each is a few tokens, well within any ``max_length``."""
    ids = sorted(core.get_vocab(with_added_tokens=False).values())
    spread = ids[::max(1, len(ids) // PROBE_TOKENS)][:PROBE_TOKENS]
    decoded = (core.decode([token_id]).strip() for token_id in spread)
    return [*PROBE_WORDS, *(text for text in decoded if text)]


def _encoded(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """The ids a transformers tokenizer gives each text, special tokens included (as training encodes)."""
    return [list(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]


def _check_same_ids(texts: Sequence[str], expected: Sequence[Sequence[int]], loaded: Any, directory: Path,
                    reference: str) -> None:
    """:class:`ModelError` naming the first of ``texts`` that ``loaded`` encodes otherwise than ``expected`` (the ids
    ``reference`` gives)."""
    for text, want, got in zip(texts, expected, _encoded(loaded, texts), strict=True):
        if list(want) != got:
            raise ModelError(f"{directory}: the saved tokenizer reads back as {type(loaded).__name__}, which encodes "
                             f"{text!r} as {got} where {reference} gives {list(want)}; its files do not hold the "
                             "tokenizer the model was trained with")


def _name_generic_class(path: Path) -> None:
    """Make the ``tokenizer_config.json`` at ``path`` name the generic class (and no remote code to load instead)."""
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = PreTrainedTokenizerFast.__name__
    config.pop("auto_map", None)
    path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _names_generic_class(directory: Path) -> bool:
    """Whether ``directory`` holds a ``tokenizer.json`` and a ``tokenizer_config.json`` naming the generic class."""
    try:
        config = json.loads((directory / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (directory / TOKENIZER_JSON).is_file() and isinstance(config, dict) \
        and config.get("tokenizer_class") in GENERIC_CLASSES
