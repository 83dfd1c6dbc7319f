"""Tang et al.'s augmentation with a tokenizer that has no mask token (a byte-level BPE, GPT-2's): words are masked
with its unknown token; with neither token the recipe stops with one line unless nothing is masked. It crashed
('sequence item 2: expected str instance, NoneType found', an internal error) after training the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.data.augment import augment_texts, mask_token_of
from edgekd.distill.config import AugmentConfig
from edgekd.errors import ConfigError
from tests.test_byo_text_inputs import TEXTS, _byte_level_tokenizer
from tests.test_text_pipeline import _write_tsv


def _tokenizer(tmp_path: Path, **special: str):  # noqa: ANN202 - a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_byte_level_tokenizer(tmp_path / "bpe", TEXTS, **special))


def test_words_are_masked_with_the_unknown_token_when_there_is_no_mask_token(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path, eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    assert tokenizer.mask_token is None
    config = AugmentConfig(copies=4, p_mask=0.5, p_ngram=0.0)
    token = mask_token_of(tokenizer, config)
    assert token == "<|endoftext|>"
    masked = augment_texts(TEXTS, config, seed=0, mask_token=token)
    assert masked and any(token in sentence for sentence in masked)


def test_a_tokenizer_with_neither_token_is_one_line_unless_nothing_is_masked(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path, eos_token="<|endoftext|>")
    with pytest.raises(ConfigError, match="has no mask token and no unknown token to mask words with; set "
                                          "augment.p_mask: 0"):
        mask_token_of(tokenizer, AugmentConfig(copies=2))
    ngrams_only = AugmentConfig(copies=2, p_mask=0.0, p_ngram=1.0)
    sentences = augment_texts(TEXTS, ngrams_only, seed=0, mask_token=mask_token_of(tokenizer, ngrams_only))
    assert sentences and all(set(s.split()) <= set(" ".join(TEXTS).split()) for s in sentences)


def test_a_bpe_recipe_distils_with_augmentation(tmp_path: Path) -> None:
    """A GPT-2 teacher on its byte-level BPE, a TextCNN student, augmented sentences labelled by the teacher."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    _write_tsv(tmp_path / "train.tsv", 60, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 20, seed=2)
    texts = [line.split("\t")[0] for line in (tmp_path / "train.tsv").read_text().splitlines()[1:]]
    directory = _byte_level_tokenizer(tmp_path / "gpt2", texts, eos_token="<|endoftext|>",
                                      unk_token="<|endoftext|>")
    GPT2ForSequenceClassification(GPT2Config(vocab_size=300, n_embd=16, n_layer=1, n_head=2, n_positions=64,
                                             pad_token_id=0)).save_pretrained(directory)
    recipe = {"name": "bpe-augment", "threads": 1,
              "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 10},
              "tokenizer": {"pretrained": "gpt2", "max_length": 32},
              "teacher": {"model": {"arch": "hf", "pretrained": "gpt2"}},
              "student": {"model": {"arch": "textcnn", "embedding_dim": 8, "filters": 8, "kernel_sizes": [1, 2]}},
              "stages": [{"stage": "teacher", "epochs": 1},
                         {"stage": "distill", "epochs": 1, "augment": {"copies": 2, "p_mask": 0.3}}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    edgekd.run(path, out=tmp_path / "run")
    stage = json.loads((tmp_path / "run" / "02-distill" / "stage.json").read_text())
    student = stage["metrics"]["student"]
    assert student["labelled_examples"] == 50 and student["transfer_set_size"] > 50  # augmented sentences added
