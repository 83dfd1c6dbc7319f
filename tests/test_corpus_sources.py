"""Corpora as users bring them: a folder of .txt files (read in path order as one text, fingerprinted by its
files), a datasets directory whose held-out split is named otherwise (said, not silently ignored) and a file in
another encoding (one line saying what to do)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.data.config import CorpusData
from edgekd.data.content_digest import data_content_digest
from edgekd.data.lm_data import load_corpus, prepare_lm_data
from edgekd.errors import DataError


def test_a_folder_of_text_files_is_one_corpus_in_path_order(tmp_path: Path) -> None:
    folder = tmp_path / "texts"
    (folder / "c").mkdir(parents=True)
    (folder / "a.txt").write_text("first file, no newline at its end", encoding="utf-8")
    (folder / "c" / "d.txt").write_text("\ufeffthird file\n", encoding="utf-8")  # a byte-order mark is not text
    (folder / "b.txt").write_text("second file 😀\n", encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file\n")
    data = CorpusData(source="corpus", path=folder, train_fraction=0.5, context=8)
    split = load_corpus(data)
    assert split.train + split.validation == "first file, no newline at its end\nsecond file 😀\nthird file\n"
    lm = prepare_lm_data(data, None)
    assert lm.tokenizer.decode(lm.train.tolist() + lm.validation.tolist()) == split.train + split.validation
    before = data_content_digest(data)
    (folder / "c" / "d.txt").write_text("third file, edited\n", encoding="utf-8")
    assert data_content_digest(data) != before  # an edited file re-runs the stages that read the data


def test_a_text_file_in_another_encoding_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "latin1.txt").write_bytes("Café naïve façade\n".encode("latin-1") * 20)
    with pytest.raises(DataError, match=r"latin1.txt: not UTF-8 text \(byte 3\); save it as UTF-8$"):
        load_corpus(CorpusData(source="corpus", path=tmp_path / "latin1.txt", context=8))


def test_a_held_out_split_named_otherwise_is_said(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import datasets

    lines = [f"line {i} of the text" for i in range(40)]
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": lines[:30]}),
                          "test": datasets.Dataset.from_dict({"text": lines[30:]})}).save_to_disk(str(tmp_path / "ds"))
    data = CorpusData(source="corpus", path=tmp_path / "ds", context=8)
    with caplog.at_level("WARNING", logger="edgekd.data.lm_data"):
        split = load_corpus(data)
    assert "line 35" not in split.train + split.validation  # the training text split by train_fraction
    assert "no split 'validation' (data.validation_split)" in caplog.text and "split 'test' is not read" in caplog.text
    named = load_corpus(data.model_copy(update={"validation_split": "test"}))
    assert named.validation == "\n".join(lines[30:])


def test_gpt2s_own_vocab_and_merges_files_are_a_byte_level_tokenizer(tmp_path: Path) -> None:
    """GPT-2's tokenizer layout (vocab.json and merges.txt, no tokenizer.json nor config naming a class) was 'cannot
    load': transformers has no class to read them with."""
    from tokenizers import ByteLevelBPETokenizer

    from edgekd.data.config import TokenizerConfig
    from edgekd.data.tokenizer import load_pretrained_tokenizer

    text = "".join(f"line {i}: the cat sat on the mat, naïvely 😀\n" for i in range(60))
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator([text], vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False)
    (tmp_path / "gpt2-files").mkdir()
    trained.save_model(str(tmp_path / "gpt2-files"))
    tokenizer = load_pretrained_tokenizer(str(tmp_path / "gpt2-files"), trust_remote_code=False, padded=False)
    assert len(tokenizer) == trained.get_vocab_size() and tokenizer.eos_token == "<|endoftext|>"
    ids = tokenizer(text[:80], add_special_tokens=False)["input_ids"]
    assert ids == trained.encode(text[:80]).ids and tokenizer.decode(ids) == text[:80]
    data = CorpusData(source="corpus", path=tmp_path / "corpus.txt", context=8)
    lm = prepare_lm_data(data, TokenizerConfig(pretrained=str(tmp_path / "gpt2-files")))
    assert tokenizer.decode(lm.train.tolist() + lm.validation.tolist()) == text
