"""Causal LM building blocks: text corpora split by characters, a character tokenizer saved with the
model, causal LMs of any transformers family built from sizes or a local directory, and the checks that
turn a mismatched tokenizer or an over-long prompt into one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from edgekd.data.corpus import build_char_tokenizer, encode, read_corpus
from edgekd.errors import ConfigError, DataError, ModelError
from edgekd.models.causal_lm import (
    build_causal_lm,
    check_prompt_fits,
    check_tokenizer_fits,
    context_length,
    load_causal_lm,
    validation_loss,
    windows,
)

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
TEXTS = ["to be or not to be\nthat is the question\n", "abc" * 50 + "é∑\tz\n", "First Citizen:\nBefore we proceed"]
FAMILIES = ["gpt2", "llama", "qwen2"]


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.75])
@pytest.mark.parametrize("text", TEXTS)
def test_split_by_characters_keeps_every_character(tmp_path, text, fraction):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    split = read_corpus(path, fraction)
    assert split.train + split.validation == text
    assert len(split.train) == int(len(text) * fraction)


def test_a_byte_order_mark_and_crlf_line_ends_are_not_text(tmp_path):
    """A corpus saved by Windows Notepad: the mark became a character of the vocabulary, and CRLF two."""
    path = tmp_path / "corpus.txt"
    path.write_bytes("\ufeff".encode() + b"to be,\r\nor not to be\r\n")
    split = read_corpus(path, 0.5)
    assert split.train + split.validation == "to be,\nor not to be\n"


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason="tinyshakespeare not present")
def test_tinyshakespeare_split_is_nanogpts():
    split = read_corpus(SHAKESPEARE)
    text = SHAKESPEARE.read_text(encoding="utf-8")
    assert len(split.train) == int(len(text) * 0.9)  # nanoGPT: n = len(data); train = data[:int(n*0.9)]
    tokenizer = build_char_tokenizer(text)
    assert len(tokenizer) == len(set(text)) + 1  # 65 characters plus end-of-text


@pytest.mark.parametrize("content, fraction, expected", [
    (None, 0.9, "no such text file"),
    (b"\xff\xfe\x00bad", 0.9, "not UTF-8 text"),
    (b"a", 0.9, "too few to split"),
    (b"abcdef", 1.0, "train_fraction must be between 0 and 1"),
])
def test_bad_corpus_is_one_line_naming_the_file(tmp_path, content, fraction, expected):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        read_corpus(path, fraction)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", TEXTS)
def test_char_tokenizer_round_trips_and_reloads_without_edgekd(tmp_path, text):
    from transformers import AutoTokenizer

    tokenizer = build_char_tokenizer(text)
    ids = encode(tokenizer, text, "corpus")
    assert ids.numel() == len(text)
    assert tokenizer.decode(ids.tolist()) == text
    tokenizer.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids.tolist()
    assert reloaded.decode(ids.tolist()) == text
    assert reloaded.eos_token_id == 0


def test_unknown_character_is_refused_naming_where():
    tokenizer = build_char_tokenizer("abc")
    with pytest.raises(DataError, match=r"validation split: 2 character\(s\).*'x', 'y'"):
        encode(tokenizer, "abxy", "validation split")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layers, width, heads, context", [(1, 32, 2, 16), (2, 48, 4, 24)])
def test_build_from_sizes_any_family(family, layers, width, heads, context):
    model = build_causal_lm(family, vocab_size=40, context=context, layers=layers, width=width, heads=heads)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (layers, width, heads)
    assert context_length(model) == context and model.get_input_embeddings().num_embeddings == 40
    logits = model(input_ids=torch.randint(40, (3, context))).logits
    assert logits.shape == (3, context, 40)
    # an untrained model predicts close to uniform: its loss is near log(vocab)
    loss = validation_loss(model, torch.randint(40, (5 * context + 3,)), context)
    assert abs(loss - math.log(40)) < 0.5


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_model_and_tokenizer_reload_with_same_logits(tmp_path, family):
    tokenizer = build_char_tokenizer(TEXTS[0])
    model = build_causal_lm(family, vocab_size=len(tokenizer), context=16, layers=1, width=32, heads=2, seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = load_causal_lm(tmp_path)
    ids = encode(tokenizer, TEXTS[0][:16], "prompt").unsqueeze(0)
    model.eval()
    torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    check_tokenizer_fits(again, tokenizer, "teacher.pretrained")


def test_same_seed_same_weights_different_seed_different():
    def weights(seed):
        return build_causal_lm("llama", vocab_size=30, context=8, layers=1, width=16, heads=2,
                               seed=seed).get_input_embeddings().weight

    assert torch.equal(weights(1), weights(1)) and not torch.equal(weights(1), weights(2))


@pytest.mark.parametrize("family, kwargs, expected", [
    ("no_such_family", {}, "family 'no_such_family'"),
    ("gpt2", {"width": 30, "heads": 4}, "width 30 is not divisible by heads 4"),
])
def test_bad_sizes_or_family_are_one_line(family, kwargs, expected):
    sizes = {"vocab_size": 20, "context": 8, "layers": 1, "width": 16, "heads": 2} | kwargs
    with pytest.raises(ConfigError, match=expected) as info:
        build_causal_lm(family, **sizes)
    assert "\n" not in str(info.value)


def test_missing_pretrained_directory_is_one_line(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_causal_lm(tmp_path / "absent")


@pytest.mark.parametrize("delta", [-3, -1])
def test_a_tokenizer_with_more_tokens_than_the_model_names_the_key(delta):
    tokenizer = build_char_tokenizer("hello world")
    model = build_causal_lm("gpt2", vocab_size=len(tokenizer) + delta, context=8, layers=1, width=16, heads=2)
    with pytest.raises(ConfigError, match=rf"^student.tokenizer: the tokenizer has {len(tokenizer)} tokens"):
        check_tokenizer_fits(model, tokenizer, "student.tokenizer")


@pytest.mark.parametrize("delta", [0, 1, 7])
def test_a_model_whose_vocabulary_is_padded_beyond_the_tokenizer_is_accepted(delta):
    tokenizer = build_char_tokenizer("hello world")
    model = build_causal_lm("gpt2", vocab_size=len(tokenizer) + delta, context=8, layers=1, width=16, heads=2)
    check_tokenizer_fits(model, tokenizer, "student.tokenizer")


@pytest.mark.parametrize("prompt, new, fits", [(8, 0, True), (5, 3, True), (9, 0, False), (6, 3, False)])
def test_prompt_longer_than_context_names_the_key(prompt, new, fits):
    model = build_causal_lm("llama", vocab_size=20, context=8, layers=1, width=16, heads=2)
    if fits:
        check_prompt_fits(model, prompt, new, "profile.prompt_length")
    else:
        with pytest.raises(ConfigError, match=r"^profile.prompt_length: .*context of 8 tokens"):
            check_prompt_fits(model, prompt, new, "profile.prompt_length")


def test_windows_are_next_token_shifted():
    ids = torch.arange(100)
    inputs, targets = windows(ids, 10, 6, torch.Generator().manual_seed(0))
    assert inputs.shape == targets.shape == (6, 10)
    assert torch.equal(targets, inputs + 1)
    with pytest.raises(ConfigError, match="context 100 is not shorter"):
        windows(ids, 100, 1, torch.Generator())


def test_training_goes_below_the_unigram_baseline():
    text = ("the quick brown fox jumps over the lazy dog. " * 40)
    tokenizer = build_char_tokenizer(text)
    ids = encode(tokenizer, text, "corpus")
    counts = torch.bincount(ids, minlength=len(tokenizer)).float()
    probs = counts[counts > 0] / counts.sum()
    unigram = float(-(probs * probs.log()).sum())
    torch.manual_seed(0)
    model = build_causal_lm("gpt2", vocab_size=len(tokenizer), context=32, layers=1, width=32, heads=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        model.train()
        inputs, targets = windows(ids, 32, 8, generator)
        loss = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert validation_loss(model, ids, 32) < 0.5 * unigram
