"""Text data: loading TSV/CSV/saved datasets, tokenizer training, bucketed batching, augmentation."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from edgekd.data.augment import augment_texts
from edgekd.data.batching import bucket_batches, collate, encode, padding_ratio
from edgekd.data.config import HFDiskData, TextFileData, TokenizerConfig
from edgekd.data.datasets import load_dataset
from edgekd.data.text import load_text_dataset
from edgekd.data.tokenizer import load_or_train_tokenizer, save_tokenizer
from edgekd.distill.config import AugmentConfig
from edgekd.errors import DataError

SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"
needs_sst2 = pytest.mark.skipif(
    not (SST2 / "train.tsv").is_file(), reason=f"GLUE SST-2 is not at {SST2} (the shared data folder beside the repo)"
)

WORDS = ("the", "a", "film", "movie", "story", "good", "bad", "great", "dull", "charming", "awful", "funny", "boring",
         "smart", "slow")


def synthetic_rows(count: int, seed: int = 0) -> list[tuple[str, str]]:
    """(sentence, label) rows: lower-case words, lengths 1–30, label 1 when 'good' occurs."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(count):
        words = rng.choice(WORDS, size=int(rng.integers(1, 31)))
        rows.append((" ".join(words) + " ", str(int("good" in words))))
    return rows


def write_table(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def tsv_config(tmp_path: Path, train: list[str], test: list[str] | None = None, **fields) -> TextFileData:
    header = "sentence\tlabel"
    return TextFileData(
        source="tsv",
        train=write_table(tmp_path / "train.tsv", header, train),
        test=write_table(tmp_path / "dev.tsv", header, test if test is not None else train),
        **fields,
    )


# --------------------------------------------------------------------------- loading


def test_tsv_keeps_quotes_strips_spaces_and_holds_out_validation(tmp_path: Path) -> None:
    train = [f'a "quoted" sentence number {i} \t{i % 2}' for i in range(20)]
    config = tsv_config(tmp_path, train, ["it 's \"fine\" \t1", "no \t0"], val_examples=5)
    splits = load_text_dataset(config, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (15, 5, 2)
    assert splits.class_names == ("0", "1") and splits.num_classes == 2
    assert splits.test.texts == ("it 's \"fine\"", "no")
    assert splits.test.labels.tolist() == [1, 0] and splits.test.labels.dtype == np.int64
    assert set(splits.train.texts).isdisjoint(splits.val.texts)
    assert len(set(splits.train.texts) | set(splits.val.texts)) == 20
    assert list(splits.train.texts) == sorted(splits.train.texts, key=lambda t: int(t.split()[-1]))  # file order
    assert not splits.train.labels.flags.writeable  # cached and shared between stages
    assert load_text_dataset(config, seed=0) is splits
    assert load_text_dataset(config, seed=1).val.texts != splits.val.texts
    assert load_dataset(config, seed=0) is splits  # the generic loader dispatches text sources here


def test_limits_take_a_seeded_subset_of_train_and_the_head_of_test(tmp_path: Path) -> None:
    rows = [f"{text}\t{label}" for text, label in synthetic_rows(40)]
    full = load_text_dataset(tsv_config(tmp_path, rows, val_examples=10), seed=3)
    limited = load_text_dataset(tsv_config(tmp_path, rows, val_examples=10, limit_train=7, limit_test=4), seed=3)
    assert limited.val.texts == full.val.texts  # the validation set does not depend on the limit
    assert np.array_equal(limited.val.labels, full.val.labels)
    assert len(limited.train) == 7 and set(limited.train.texts) <= set(full.train.texts)
    assert limited.test.texts == full.test.texts[:4]


def test_csv_with_quoted_commas_and_string_labels(tmp_path: Path) -> None:
    lines = ['"great, really great",positive', "dull,negative", '"so-so, mostly",neutral', "fine,positive"]
    path = write_table(tmp_path / "reviews.csv", "review,sentiment", lines)
    config = TextFileData(source="csv", train=path, test=path, text_column="review", label_column="sentiment",
                          val_examples=1)
    splits = load_text_dataset(config, seed=0)
    assert splits.class_names == ("negative", "neutral", "positive")  # sorted label strings
    assert splits.test.texts[0] == "great, really great"
    assert splits.test.labels.tolist() == [2, 0, 1, 2]


def test_integer_labels_sort_numerically(tmp_path: Path) -> None:
    train = [f"sentence {i}\t{label}" for i, label in enumerate([10, 2, 1, 2, 10, 1])]
    splits = load_text_dataset(tsv_config(tmp_path, train, ["x\t10", "y\t1"], val_examples=1), seed=0)
    assert splits.class_names == ("1", "2", "10")
    assert splits.test.labels.tolist() == [2, 0]


def test_a_stray_word_among_number_labels_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A single 'pos' in a 0/1 column became a third class silently: read as one, with a warning naming it."""
    train = [f"sentence {i}\t{label}" for i, label in enumerate([0, 1, 0, 1, "pos", 1, 0])]
    splits = load_text_dataset(tsv_config(tmp_path, train, ["x\t0", "y\t1"], val_examples=1), seed=0)
    assert splits.class_names == ("0", "1", "pos")
    assert "train.tsv line 6: column 'label' holds the classes 0, 1, but also 'pos' (1 row(s))" in caplog.text
    caplog.clear()
    words = [f"sentence {i}\t{label}" for i, label in enumerate(["good", "bad", "good", "bad"])]
    (tmp_path / "words").mkdir()
    load_text_dataset(tsv_config(tmp_path / "words", words, ["x\tgood", "y\tbad"], val_examples=1), seed=0)
    assert "holds the classes" not in caplog.text


def test_load_from_disk_with_class_label(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    rows = synthetic_rows(30)
    data = {"text": [r[0] for r in rows], "label": [int(r[1]) for r in rows]}
    datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(data, features=features),
        "validation": datasets.Dataset.from_dict({k: v[:6] for k, v in data.items()}, features=features),
    }).save_to_disk(str(tmp_path / "saved"))
    config = HFDiskData(source="hf_disk", path=tmp_path / "saved", text_column="text", val_examples=5)
    splits = load_text_dataset(config, seed=0)
    assert splits.class_names == ("neg", "pos")
    assert (len(splits.train), len(splits.val), len(splits.test)) == (25, 5, 6)
    assert splits.test.texts == tuple(r[0].strip() for r in rows[:6])
    assert splits.test.labels.tolist() == data["label"][:6]
    with pytest.raises(DataError, match=r"saved: no split 'test' \(data.test_split\); the dataset has 'train', "):
        load_text_dataset(config.model_copy(update={"test_split": "test"}), seed=0)
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(tmp_path / "single"))
    with pytest.raises(DataError, match=r"single: holds a single Dataset; expected a DatasetDict with the splits"):
        load_text_dataset(config.model_copy(update={"path": tmp_path / "single"}), seed=0)


@pytest.mark.parametrize(
    ("train", "test", "fields", "message"),
    [
        (["a\t0", "b\t1"], None, {"val_examples": 2},
         r"data.val_examples \(2\) must be below the 2 examples of .*train.tsv"),
        (["a\t0", "b\t1"], ["c\t2"], {"val_examples": 1},
         r"dev.tsv line 2: label '2' is not one of the training split's labels \('0', '1'\)"),
        (["a\t0", "b\t0\textra", "c\t1"], None, {"val_examples": 1},
         r"train.tsv line 3: 3 fields, expected 2 like the header \('sentence', 'label'\)"),
        ([], None, {"val_examples": 1}, r"train.tsv: no data rows after the header line"),
        (["a\t0", "b\t1"], None, {"val_examples": 1, "text_column": "text"},
         r"train.tsv: no column 'text' \(data.text_column\); the columns are 'sentence', 'label'"),
        (["a\t0.25", "b\tpos", "c\t1.5"], None, {"val_examples": 1},
         r"train.tsv line 3: label 'pos' is not a number but line 2 holds '0.25', so the task is ambiguous; "
         r"set data.task to one of single_label, multi_label, regression"),
        (["a\t0.5", "b\tpos", "c\t1"], None, {"val_examples": 1, "task": "regression"},
         r"train.tsv line 3: label 'pos' is not a finite number \(data.task is regression\)"),
        (["a\tpos", "b\tpos,movie", "c\tneg"], ["d\tpos,film"], {"val_examples": 1},
         r"dev.tsv line 2: label 'film' is not one of the training split's labels \('movie', 'neg', 'pos'\)"),
        (["a\tpos", "b\tpos", "c\tpos"], None, {"val_examples": 1},
         r"train.tsv: every example has the same label in column 'label' \(pos\); expected at least 2 classes"),
        (["a\tpos", "b\t", "c\tneg"], None, {"val_examples": 1},
         r"train.tsv line 3: no label in column 'label' \(empty, null or -1\); expected a class name"),
        (["a\tpos", "c\tneg"], ["d\tpos", "e\t "], {"val_examples": 1},
         r"dev.tsv line 3: no label in column 'label'"),
        (["a\t0.25", "b\tnan", "c\t1.5"], None, {"val_examples": 1},
         r"train.tsv line 3: label 'nan' is not a finite number; expected a number for every example of a regression "
         r"\(line 2 holds '0.25'\)"),
        (["a\t0.25", "b\t-inf", "c\t1.5"], None, {"val_examples": 1, "task": "regression"},
         r"train.tsv line 3: label '-inf' is not a finite number \(data.task is regression\)"),
        (["a\t0.25", "b\t", "c\t1.5"], None, {"val_examples": 1},
         r"train.tsv line 3: no label \(empty\); expected a number for every example of a regression"),
    ],
    ids=["val-too-large", "unknown-test-label", "field-count", "empty-split", "missing-column", "ambiguous-task",
         "regression-not-a-number", "multi-label-unknown-name", "one-class", "empty-label", "empty-test-label",
         "regression-nan", "regression-inf", "regression-empty"],
)
def test_data_errors_name_file_line_and_expectation(
    tmp_path: Path, train: list[str], test: list[str] | None, fields: dict, message: str
) -> None:
    with pytest.raises(DataError, match=message) as caught:
        load_text_dataset(tsv_config(tmp_path, train, test, **fields), seed=0)
    assert "\n" not in str(caught.value)


def test_lines_of_spaces_are_blank_and_a_field_may_be_longer_than_csv_s_default_limit(tmp_path: Path) -> None:
    long_text = " ".join(["word"] * 60_000)  # 300,000 characters: csv refuses fields over 131,072 by default
    for source, sep in (("tsv", "\t"), ("csv", ",")):
        train = [f"a{sep}pos", "   ", f"b{sep}neg", "\t \t", f"{long_text}{sep}pos"]
        config = TextFileData(source=source, val_examples=1,
                              train=write_table(tmp_path / f"train.{source}", f"sentence{sep}label", train),
                              test=write_table(tmp_path / f"dev.{source}", f"sentence{sep}label", [f"c{sep}neg", " "]))
        splits = load_text_dataset(config, seed=0)
        assert sorted(splits.train.texts + splits.val.texts) == ["a", "b", long_text], source
        assert splits.test.texts == ("c",) and splits.class_names == ("neg", "pos")
    assert csv.field_size_limit() == 131_072  # the process-wide limit is left as it was


@pytest.mark.parametrize("kind", ["null", "class-label-minus-one"])
def test_saved_datasets_with_unlabelled_rows_or_an_empty_split_are_one_line(kind: str, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    label = datasets.ClassLabel(names=["neg", "pos"]) if kind != "null" else datasets.Value("string")
    features = datasets.Features({"sentence": datasets.Value("string"), "label": label})
    missing = None if kind == "null" else -1
    values = [0, 1, 0, missing, 1] if kind != "null" else ["neg", "pos", "neg", None, "pos"]
    rows = {"sentence": ["a", "b", "c", "d", "e"], "label": values}
    splits = {"train": datasets.Dataset.from_dict(rows, features=features)}
    datasets.DatasetDict({**splits, "test": splits["train"]}).save_to_disk(str(tmp_path / "ds"))
    config = HFDiskData(source="hf_disk", path=tmp_path / "ds", test_split="test", val_examples=1)
    with pytest.raises(DataError, match=r"ds split 'train' row 3: no label in column 'label'"):
        load_text_dataset(config, seed=0)
    empty = {"sentence": [], "label": []}
    datasets.DatasetDict({**splits, "test": datasets.Dataset.from_dict(empty, features=features)}).save_to_disk(
        str(tmp_path / "e"))
    with pytest.raises(DataError, match=r"e: not a dataset saved with save_to_disk \(data.path\): a split with no"):
        load_text_dataset(config.model_copy(update={"path": tmp_path / "e"}), seed=0)


def test_missing_and_empty_files(tmp_path: Path) -> None:
    present = write_table(tmp_path / "train.tsv", "sentence\tlabel", ["a\t0", "b\t1"])
    missing = TextFileData(source="tsv", train=present, test=tmp_path / "nope.tsv", val_examples=1)
    with pytest.raises(DataError, match=r"nope.tsv: file not found \(data.test\)"):
        load_text_dataset(missing, seed=0)
    (tmp_path / "folder.tsv").mkdir()  # a directory where a file is named: not 'file not found'
    with pytest.raises(DataError, match=r"folder.tsv: a directory, not a TSV file \(data.test\)"):
        load_text_dataset(missing.model_copy(update={"test": tmp_path / "folder.tsv"}), seed=0)
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(DataError, match=r"empty.tsv: empty file; expected a header line naming the columns"):
        load_text_dataset(missing.model_copy(update={"test": tmp_path / "empty.tsv"}), seed=0)


def test_edited_file_is_read_again(tmp_path: Path) -> None:
    config = tsv_config(tmp_path, ["a\t0", "b\t1", "c\t1"], val_examples=1)
    assert len(load_text_dataset(config, seed=0).test) == 3
    write_table(config.test, "sentence\tlabel", ["a\t0"])
    assert len(load_text_dataset(config, seed=0).test) == 1


@needs_sst2
def test_sst2_counts_and_label_balance() -> None:
    splits = load_text_dataset(TextFileData(source="tsv", train=SST2 / "train.tsv", test=SST2 / "dev.tsv"), seed=0)
    assert len(splits.train) + len(splits.val) == 67_349 and len(splits.val) == 1000
    assert len(splits.test) == 872
    train_labels = np.concatenate([splits.train.labels, splits.val.labels])
    assert np.bincount(train_labels).tolist() == [29_780, 37_569]
    assert np.bincount(splits.test.labels).tolist() == [428, 444]
    assert splits.test.texts[0] == "it 's a charming and often affecting journey ."


# --------------------------------------------------------------------------- tokenizer


def test_trained_tokenizer_is_deterministic_and_reloads(tmp_path: Path) -> None:
    texts = [text for text, _ in synthetic_rows(300)] + ["Naïve CAFÉ déjà-vu , unheard-of words !"]
    config = TokenizerConfig(vocab_size=120, max_length=16)
    first = load_or_train_tokenizer(config, texts)
    assert first.get_vocab() == load_or_train_tokenizer(config, texts).get_vocab()  # ids too, not just the set
    assert first.convert_ids_to_tokens(list(range(5))) == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert first.model_max_length == 16 and first.pad_token_id == 0
    ids = first("Naïve words")["input_ids"]
    assert first.convert_ids_to_tokens([ids[0], ids[-1]]) == ["[CLS]", "[SEP]"]
    assert first.decode(ids, skip_special_tokens=True) == "naive words"  # lower-cased, accents stripped

    target = tmp_path / "tokenizer"
    save_tokenizer(first, target)
    save_tokenizer(first, target)  # replacing an existing directory
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer"]  # no temporary directories left
    reloaded = AutoTokenizer.from_pretrained(target)
    assert reloaded.get_vocab() == first.get_vocab()
    assert reloaded(texts[:20])["input_ids"] == first(texts[:20])["input_ids"]
    assert reloaded.model_max_length == 16 and reloaded.all_special_tokens == first.all_special_tokens


def test_pretrained_tokenizer_from_a_local_directory(tmp_path: Path) -> None:
    save_tokenizer(load_or_train_tokenizer(TokenizerConfig(vocab_size=100), ["a b c d"]), tmp_path / "tok")
    loaded = load_or_train_tokenizer(TokenizerConfig(pretrained=str(tmp_path / "tok"), max_length=32), [])
    assert loaded.model_max_length == 32 and loaded.pad_token_id == 0


# --------------------------------------------------------------------------- batching


def test_encode_truncates_and_collate_pads_to_the_longest() -> None:
    tokenizer = load_or_train_tokenizer(TokenizerConfig(vocab_size=100), [t for t, _ in synthetic_rows(50)])
    encoded = encode(tokenizer, ["good film", "the " * 40, ""], max_length=10)
    assert [len(ids) for ids in encoded] == [4, 10, 2] and encoded[0].dtype == np.int64
    batch = collate(encoded, [0, 2], pad_id=tokenizer.pad_token_id)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
    assert batch["input_ids"].shape == (2, 4) and batch["input_ids"].dtype == torch.int64
    assert batch["input_ids"][1].tolist() == [*encoded[2].tolist(), 0, 0]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert not batch["token_type_ids"].any()


@pytest.mark.parametrize("shuffle", [True, False])
def test_bucket_batches_cover_every_index_once(shuffle: bool) -> None:
    lengths = np.random.default_rng(0).integers(3, 60, size=5_003)
    batches = bucket_batches(lengths, 32, shuffle=shuffle, generator=torch.Generator().manual_seed(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(lengths)))
    assert all(1 <= len(batch) <= 32 for batch in batches)
    if shuffle:
        again = bucket_batches(lengths, 32, shuffle=True, generator=torch.Generator().manual_seed(1))
        other = bucket_batches(lengths, 32, shuffle=True, generator=torch.Generator().manual_seed(2))
        assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(batches, other, strict=False))
    else:
        assert np.all(np.diff(lengths[np.concatenate(batches)]) >= 0)


def test_bucketing_pads_less_than_random_batches() -> None:
    """On SST-2's tokenized training set when present (else a long-tailed synthetic length mix)."""
    if (SST2 / "train.tsv").is_file():
        splits = load_text_dataset(TextFileData(source="tsv", train=SST2 / "train.tsv", test=SST2 / "dev.tsv"), 0)
        tokenizer = load_or_train_tokenizer(None, splits.train.texts)
        lengths = np.array([len(ids) for ids in encode(tokenizer, splits.train.texts, 128)])
    else:
        lengths = np.minimum(np.random.default_rng(0).lognormal(2.4, 0.6, size=60_000).astype(int) + 2, 128)
    generator = torch.Generator().manual_seed(0)
    bucketed = padding_ratio(lengths, bucket_batches(lengths, 32, shuffle=True, generator=generator))
    shuffled = torch.randperm(len(lengths), generator=generator).numpy()
    random = padding_ratio(lengths, [shuffled[i : i + 32] for i in range(0, len(shuffled), 32)])
    assert bucketed > 0.9 and random < 0.5, (bucketed, random)


# --------------------------------------------------------------------------- augmentation


def test_augmentation_counts_determinism_and_duplicates() -> None:
    texts = [text.strip() for text, _ in synthetic_rows(200)]
    config = AugmentConfig(copies=6, p_mask=0.2, p_ngram=0.3, max_ngram=4)
    augmented = augment_texts(texts, config, seed=5)
    assert augmented == augment_texts(texts, config, seed=5)
    assert augmented != augment_texts(texts, config, seed=6)
    assert 4 * len(texts) < len(augmented) <= 6 * len(texts)
    single = augment_texts(["a slow but charming and very funny film"], config, seed=0)
    assert 0 < len(single) <= 6 and len(set(single)) == len(single)  # no repeats among an input's copies
    assert "a slow but charming and very funny film" not in single  # nor the original
    assert augment_texts(["alone"], config.model_copy(update={"p_mask": 0.9}), seed=0) == ["[MASK]"]
    assert augment_texts(["", "   "], config, seed=0) == []


def test_mask_rate_and_ngram_lengths() -> None:
    rng = np.random.default_rng(0)
    texts = [" ".join(f"s{i}w{j}" for j in rng.permutation(40)) for i in range(1_500)]
    masked = augment_texts(texts, AugmentConfig(copies=1, p_mask=0.1, p_ngram=0.0), seed=0, mask_token="<m>")
    assert all(len(sentence.split()) == 40 for sentence in masked)
    tokens = Counter(word for sentence in masked for word in sentence.split())
    # copies equal to the original (no word masked: 0.9**40 ≈ 1.5%) are dropped, so the rate is ≈ 0.1 / 0.985
    assert tokens["<m>"] / tokens.total() == pytest.approx(0.1015, abs=0.005)

    ngrams = augment_texts(texts, AugmentConfig(copies=4, p_mask=0.0, p_ngram=1.0, max_ngram=3), seed=0)
    lengths = Counter(len(sentence.split()) for sentence in ngrams)
    assert sorted(lengths) == [1, 2, 3]
    assert all(count / len(ngrams) == pytest.approx(1 / 3, abs=0.03) for count in lengths.values())
    for sentence in ngrams:  # a contiguous run of words of the sentence it came from
        source = texts[int(sentence.split("w")[0].removeprefix("s"))]
        assert f" {sentence} " in f" {source} "


# --------------------------------------------------------------------------- files as users have them


def test_tsv_written_with_csv_quoting_is_unquoted(tmp_path: Path) -> None:
    """pandas' to_csv(sep='\\t') quotes a field holding a quote, a tab or a line break: such a field was read
    with its quotes doubled (a text the model never sees at inference) or refused for its field count."""
    pandas = pytest.importorskip("pandas")
    texts = ['he said "no"', "a tab\there", "two\nlines", 'a "quote" inside', "plain"] * 4
    frame = pandas.DataFrame({"sentence": texts, "label": [i % 2 for i in range(len(texts))]})
    frame.to_csv(tmp_path / "train.tsv", sep="\t", index=False)
    config = TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "train.tsv", val_examples=2)
    assert load_text_dataset(config, seed=0).test.texts == tuple(texts)


def test_sst2_style_quotes_in_tsv_stay_as_written(tmp_path: Path) -> None:
    rows = ['"a quoted" start\t1', 'ends "quoted"\t0', '"whole sentence quoted"\t1', 'it \'s "" odd\t0']
    splits = load_text_dataset(tsv_config(tmp_path, rows, val_examples=1), seed=0)
    assert splits.test.texts == ('"a quoted" start', 'ends "quoted"', '"whole sentence quoted"', 'it \'s "" odd')


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(tmp_path: Path, encoding: str) -> None:
    """Windows tools save 'Unicode' text as UTF-16 with a byte-order mark: it was refused as not UTF-8."""
    body = "sentence\tlabel\r\ncafé crème\tpos\r\nnaïve\tneg\r\nüber\tpos\r\n"
    mark = {"utf-16-be": "\ufeff"}.get(encoding, "")  # utf-16 and utf-32 write their mark themselves
    (tmp_path / "train.tsv").write_bytes((mark + body).encode(encoding))
    config = TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "train.tsv", val_examples=1)
    splits = load_text_dataset(config, seed=0)
    assert splits.test.texts == ("café crème", "naïve", "über") and splits.class_names == ("neg", "pos")


def test_latin1_file_is_one_line_naming_the_file_and_the_encoding(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_bytes("sentence\tlabel\ncafé\tpos\nthé\tneg\n".encode("latin-1"))
    config = TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "train.tsv", val_examples=1)
    with pytest.raises(DataError, match=r"train.tsv: not UTF-8 text \(.*\); save the file as UTF-8"):
        load_text_dataset(config, seed=0)


@pytest.mark.parametrize(("header", "message"), [
    ("sentence1\tsentence2\tlabel", "columns 'sentence1' and 'sentence2' hold sentence pairs"),
    ("idx\tquestion\tsentence\tlabel", "columns 'question' and 'sentence' hold sentence pairs"),
], ids=["mrpc-like", "qnli"])
def test_sentence_pairs_are_refused_unless_text_column_is_set(tmp_path: Path, header: str, message: str) -> None:
    """QNLI's question and sentence columns: the default text_column read the sentence alone and trained without
    the question, exit 0."""
    width = header.count("\t")
    rows = ["\t".join([f"first {i}", f"second {i}", str(i % 2)][-width - 1:] if width == 2 else
                      [str(i), f"first {i}", f"second {i}", str(i % 2)]) for i in range(6)]
    with pytest.raises(DataError, match=r"train.tsv: " + message + r", which edgekd does not encode") as caught:
        load_text_dataset(TextFileData(source="tsv", val_examples=1, train=write_table(tmp_path / "train.tsv",
                                                                                      header, rows),
                                       test=tmp_path / "train.tsv"), seed=0)
    assert "\n" not in str(caught.value)
    column = header.split("\t")[-2]
    chosen = TextFileData(source="tsv", val_examples=1, train=tmp_path / "train.tsv", test=tmp_path / "train.tsv",
                          text_column=column)
    assert load_text_dataset(chosen, seed=0).test.texts[0] == "second 0"


def test_saved_dataset_sentence_pairs_are_refused(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = {"question": ["q a", "q b", "q c"], "sentence": ["s a", "s b", "s c"], "label": [0, 1, 0]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
                         ).save_to_disk(str(tmp_path / "qnli"))
    with pytest.raises(DataError, match=r"qnli split 'train': columns 'question' and 'sentence' hold sentence pairs"):
        load_text_dataset(HFDiskData(source="hf_disk", path=tmp_path / "qnli", val_examples=1), seed=0)


@pytest.mark.parametrize("source", ["tsv", "csv"])
def test_an_example_without_text_is_refused_naming_its_line(tmp_path: Path, source: str) -> None:
    """An empty text trained as an input of special tokens only."""
    sep = "\t" if source == "tsv" else ","
    train = write_table(tmp_path / f"train.{source}", f"sentence{sep}label", [f"a{sep}pos", f"{sep}neg", f"c{sep}pos"])
    with pytest.raises(DataError, match=rf"train.{source} line 3: no text in column 'sentence' \(empty\)"):
        load_text_dataset(TextFileData(source=source, train=train, test=train, val_examples=1), seed=0)


def test_header_names_are_stripped_and_a_wrong_delimiter_is_named(tmp_path: Path) -> None:
    train = write_table(tmp_path / "train.tsv", "sentence \t label", ["a\tpos", "b\tneg", "c\tpos"])
    assert load_text_dataset(TextFileData(source="tsv", train=train, test=train, val_examples=1),
                             seed=0).class_names == ("neg", "pos")
    comma = write_table(tmp_path / "train.csv", "sentence,label", ["a,pos", "b,neg"])
    with pytest.raises(DataError, match=r"the header holds ',': is it a CSV file \(data.source: csv\)\?$"):
        load_text_dataset(TextFileData(source="tsv", train=comma, test=comma, val_examples=1), seed=0)


@pytest.mark.parametrize("labels", [["a|b", "b", "a"], ["['a', 'b']", "['b']", '["a"]'], ["a, b", "b", "a"]],
                         ids=["pipes", "list-literals", "commas"])
def test_multi_label_rows_as_pipes_or_list_literals(tmp_path: Path, labels: list[str]) -> None:
    """'a|b' was a third class of a single-label task, and "['a', 'b']" the classes "['a'" and "'b']"."""
    rows = [f"text {i}\t{labels[i % 3]}" for i in range(9)]
    splits = load_text_dataset(tsv_config(tmp_path, rows, val_examples=1), seed=0)
    assert splits.task == "multi_label" and splits.class_names == ("a", "b")
    assert splits.test.labels[:3].tolist() == [[1.0, 1.0], [0.0, 1.0], [1.0, 0.0]]


def test_validate_reads_a_saved_text_dataset(tmp_path: Path) -> None:
    """edgekd validate said ok for a text hf_disk directory that holds no saved dataset (or a split or column the
    recipe names wrongly); the run then stopped at its teacher stage."""
    datasets = pytest.importorskip("datasets")
    import edgekd

    rows = {"sentence": ["good film", "bad film", "fine film", "dull film"], "label": ["pos", "neg", "pos", "neg"]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
                         ).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "plain").mkdir()
    recipe = {"name": "saved", "data": {"source": "hf_disk", "path": str(tmp_path / "saved"), "val_examples": 1},
              "tokenizer": {"vocab_size": 100, "max_length": 16},
              "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}},
              "student": {"model": {"arch": "bert", "layers": 1, "hidden": 8, "heads": 2, "ffn": 16}},
              "stages": [{"stage": "teacher", "epochs": 1}]}
    assert edgekd.validate(recipe).data.path == tmp_path / "saved"
    with pytest.raises(DataError, match=r"plain: not a dataset saved with save_to_disk \(data.path\)"):
        edgekd.validate({**recipe, "data": {**recipe["data"], "path": str(tmp_path / "plain")}})
    with pytest.raises(DataError, match=r"saved: no split 'test' \(data.test_split\)"):
        edgekd.validate({**recipe, "data": {**recipe["data"], "test_split": "test"}})
    (tmp_path / "saved.arrow").write_bytes(b"")  # a file where the directory is expected: was 'directory not found'
    with pytest.raises(DataError, match=r"saved.arrow: a file, not a directory \(data.path\); expected a datasets "
                                        r"directory saved with save_to_disk$"):
        edgekd.validate({**recipe, "data": {**recipe["data"], "path": str(tmp_path / "saved.arrow")}})


def test_whole_number_labels_written_as_floats_are_the_integer_classes(tmp_path: Path) -> None:
    """pandas writes an integer column with a gap as floats: a test file of 1.0/0.0 beside a training file of 1/0
    was refused ('label '1.0' is not one of the training split's labels'), a float file alone had classes '0.0'."""
    splits = load_text_dataset(tsv_config(tmp_path, ["a\t0", "b\t1", "c\t5", "d\t1"], ["e\t1.0", "f\t0.0", "g\t5.0"],
                                          val_examples=1), seed=0)
    assert splits.class_names == ("0", "1", "5") and splits.test.labels.tolist() == [1, 0, 2]
    floats = load_text_dataset(tsv_config(tmp_path, ["a\t0.0", "b\t1.0", "c\t10.0"], val_examples=1), seed=0)
    assert floats.class_names == ("0", "1", "10") and floats.task == "single_label"


@pytest.mark.parametrize(("name", "what"), [
    ("parquet", "a Parquet file, not CSV text \\(data.train\\); set data.source: parquet to read it$"),
    ("gzip", "gzip-compressed"),
    ("jsonl", "the file holds JSON \\(lines, or an array of records\\): set data.source: json$"),
    ("json", "the columns are '\\[{\"sentence\": \"good film\", \"label\": 1}[^']*…' \\(\\d+ characters\\); "
             "the file holds JSON \\(lines, or an array of records\\): set data.source: json$")])
def test_tables_of_other_formats_say_what_they_are(tmp_path: Path, name: str, what: str) -> None:
    """A Parquet or gzipped table given as a CSV was 'not UTF-8 text (invalid start byte)', a JSON-lines file a
    header of JSON fragments (JSON is read as data.source: json, which the refusal names)."""
    import gzip
    import json

    rows = [{"sentence": "good film", "label": 1}, {"sentence": "dull film", "label": 0}]
    path = tmp_path / f"train.{name}"
    if name == "parquet":
        pytest.importorskip("pandas").DataFrame(rows).to_parquet(path)
    elif name == "gzip":
        path.write_bytes(gzip.compress(b"sentence,label\ngood film,1\ndull film,0\n"))
    elif name == "json":  # an array of records: the whole file was quoted as one column name (15 KB)
        path.write_text(json.dumps(rows * 100))
    else:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataError, match=rf"train.{name}: .*{what}") as caught:
        load_text_dataset(TextFileData(source="tsv" if name == "json" else "csv", train=path, test=path,
                                       val_examples=1), seed=0)
    assert len(str(caught.value)) < 400
    if name == "gzip":
        assert "datasets directory (save_to_disk, data.source: hf_disk)" in str(caught.value)


@pytest.mark.parametrize(("header", "message"), [
    ("text\tlabels", r"no column 'sentence' \(data.text_column\); the columns are 'text', 'labels'; set "
                     r"data.text_column: 'text'$"),
    ("sentence\ttarget", r"no column 'label' \(data.label_column\); the columns are 'sentence', 'target'; set "
                         r"data.label_column: 'target'$"),
    ("Review\tSentiment", r"set data.text_column: 'Review'$"),
])
def test_a_missing_column_names_the_one_the_key_probably_means(tmp_path: Path, header: str, message: str) -> None:
    train = write_table(tmp_path / "train.tsv", header, ["good film\tpos", "dull film\tneg"])
    with pytest.raises(DataError, match=message):
        load_text_dataset(TextFileData(source="tsv", train=train, test=train, val_examples=1), seed=0)


def test_a_saved_dataset_of_float_lists_is_not_read_as_classes(tmp_path: Path) -> None:
    """Lists of floats (soft labels, several targets) became a multi-label task of classes named '0.1' and '0.9'."""
    datasets = pytest.importorskip("datasets")
    rows = {"sentence": ["a b", "c d", "e f"], "label": [[0.1, 0.9], [0.9, 0.1], [0.5, 0.5]]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "validation": datasets.Dataset.from_dict(rows)}
                         ).save_to_disk(str(tmp_path / "soft"))
    with pytest.raises(DataError, match=r"soft split 'train': column 'label' holds lists of float64 \(soft labels"):
        load_text_dataset(HFDiskData(source="hf_disk", path=tmp_path / "soft", val_examples=1), seed=0)


def test_a_semicolon_separated_csv_is_read(tmp_path: Path) -> None:
    """Excel saves 'CSV' with ';' where the decimal mark is a comma: it was one column named 'sentence;label'."""
    train = write_table(tmp_path / "train.csv", "sentence;label", ['"good; really";pos', "dull, slow;neg", "fine;pos"])
    splits = load_text_dataset(TextFileData(source="csv", train=train, test=train, val_examples=1), seed=0)
    assert splits.test.texts == ("good; really", "dull, slow", "fine") and splits.class_names == ("neg", "pos")


def test_empty_fields_after_the_last_column_are_left_out(tmp_path: Path) -> None:
    """A spreadsheet's export ends rows with separators ('good film\\tpos\\t\\t'): refused as 4 fields."""
    splits = load_text_dataset(tsv_config(tmp_path, ["good film\tpos\t\t", "dull film\tneg", "fine\tpos\t "],
                                          val_examples=1), seed=0)
    assert splits.test.texts == ("good film", "dull film", "fine")
    with pytest.raises(DataError, match=r"train.tsv line 2: 3 fields, expected 2"):
        load_text_dataset(tsv_config(tmp_path, ["good film\tpos\tx", "dull film\tneg"], val_examples=1), seed=0)


def test_an_unlabelled_test_file_says_the_test_set_must_be_labelled(tmp_path: Path) -> None:
    """GLUE's test.tsv (index, sentence) as data.test was only 'no column label'."""
    train = write_table(tmp_path / "train.tsv", "sentence\tlabel", ["good\t1", "dull\t0"])
    test = write_table(tmp_path / "test.tsv", "index\tsentence", ["0\tfine", "1\tslow"])
    with pytest.raises(DataError, match=r"test.tsv: no column 'label' \(data.label_column\); the columns are 'index', "
                                        r"'sentence'; data.test must be labelled .*use dev.tsv$"):
        load_text_dataset(TextFileData(source="tsv", train=train, test=test, val_examples=1), seed=0)


def test_a_semicolon_csv_reads_decimal_comma_labels_as_numbers(tmp_path: Path) -> None:
    """Excel's semicolon CSV writes 0.671 as '0,671': split on the comma, it trained as 33 multi-label classes, and
    with task: regression it was refused ('label '1,008' is not a finite number')."""
    train = write_table(tmp_path / "train.csv", "sentence;label",
                        ["good film;0,671", "dull film;-1,5", "fine;2", "slow;1,008e1"])
    config = TextFileData(source="csv", train=train, test=train, val_examples=1)
    splits = load_text_dataset(config, seed=0)
    assert splits.task == "regression" and splits.class_names == ("label",)
    assert splits.test.labels.tolist() == pytest.approx([0.671, -1.5, 2.0, 10.08])
    assert load_text_dataset(config.model_copy(update={"task": "regression"}), seed=0).task == "regression"
    names = write_table(tmp_path / "names.csv", "sentence;label", ["good film;pos,movie", "dull;neg", "ok;1,5,2"])
    multi = load_text_dataset(TextFileData(source="csv", train=names, test=names, val_examples=1), seed=0)
    assert multi.task == "multi_label" and multi.class_names == ("1", "2", "5", "movie", "neg", "pos")


@pytest.mark.parametrize(("source", "header", "column"), [("tsv", "sentence\tlabel\tlabel", "label"),
                                                          ("csv", "sentence,label,sentence", "sentence")])
def test_a_header_naming_a_read_column_twice_is_refused(tmp_path: Path, source: str, header: str, column: str) -> None:
    """'sentence\\tlabel\\tlabel' was read silently, the first 'label' taken and the second ignored."""
    sep = "\t" if source == "tsv" else ","
    train = write_table(tmp_path / f"train.{source}", header, [sep.join(["good film", "1", "0"]),
                                                               sep.join(["dull film", "0", "1"])])
    with pytest.raises(DataError, match=rf"train.{source}: the header names column '{column}' 2 times \(columns "
                                        rf"\d, 3\) \(data.train\); expected each column once"):
        load_text_dataset(TextFileData(source=source, train=train, test=train, val_examples=1), seed=0)
    other = write_table(tmp_path / "notes.tsv", "sentence\tlabel\tnote\tnote", ["good film\t1\ta\tb", "dull\t0\tc\td"])
    assert load_text_dataset(TextFileData(source="tsv", train=other, test=other, val_examples=1),
                             seed=0).class_names == ("0", "1")  # a repeated column that is not read is no matter


@pytest.mark.parametrize("marker", ["N/A", "NaN", "null", "#N/A", "n/a"])
def test_a_label_written_as_a_missing_value_marker_is_no_label(tmp_path: Path, marker: str) -> None:
    """'N/A' (pandas' na_values) became a class of its own beside pos/neg, or a stray word among 0/1 (a warning)."""
    for labels, fields in ((["pos", "neg", marker], {}), (["1", "0", marker], {}),
                           (["pos,movie", "neg", marker], {})):
        rows = [f"text {i}\t{label}" for i, label in enumerate(labels)]
        with pytest.raises(DataError, match=rf"train.tsv line 4: no label in column 'label' \('{marker}', a "
                                            r"missing-value marker\); expected"):
            load_text_dataset(tsv_config(tmp_path, rows, val_examples=1, **fields), seed=0)
    rows = ["a\t0.25", "b\t1.5", f"c\t{marker}"]
    expected = (rf"label '{marker}' is not a finite number" if marker.lower() == "nan"
                else rf"no label \('{marker}', a missing-value marker\)")
    with pytest.raises(DataError, match=rf"train.tsv line 4: {expected}; expected a number for every example"):
        load_text_dataset(tsv_config(tmp_path, rows, val_examples=1), seed=0)
    with pytest.raises(DataError, match=rf"train.tsv line 4: {expected} \(data.task is regression\)"):
        load_text_dataset(tsv_config(tmp_path, rows, val_examples=1, task="regression"), seed=0)
    fine = load_text_dataset(tsv_config(tmp_path, ["a\tpos", "b\tneg", "c\t-", "d\tNone of these", "e\tNone",
                                                   "f\tNA"], val_examples=1), seed=0)
    assert fine.class_names == ("-", "NA", "None", "None of these", "neg", "pos")  # whole cells, and words


def test_labels_that_are_one_number_written_two_ways_stay_distinct_classes(tmp_path: Path) -> None:
    """Labels 01, 1 and 2 gave the classes ('1', '2'): two classes merged silently by the conversion to integers."""
    splits = load_text_dataset(tsv_config(tmp_path, ["a\t01", "b\t1", "c\t2", "d\t01"], ["e\t1", "f\t01"],
                                          val_examples=1), seed=0)
    assert splits.class_names == ("01", "1", "2") and splits.test.labels.tolist() == [1, 0]
    floats = load_text_dataset(tsv_config(tmp_path, ["a\t1.0", "b\t1", "c\t2"], val_examples=1), seed=0)
    assert floats.class_names == ("1", "1.0", "2")
    one_to_one = load_text_dataset(tsv_config(tmp_path, ["a\t01", "b\t02", "c\t10"], ["d\t1", "e\t10.0"],
                                              val_examples=1), seed=0)
    assert one_to_one.class_names == ("1", "2", "10") and one_to_one.test.labels.tolist() == [0, 2]


def test_labels_read_as_multi_label_from_a_separator_are_warned_about_once(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A class named 'Arts, Culture' made the file multi-label without a word: the inference now says so, once,
    and how to read such names as single classes."""
    from edgekd.data.text import text_file_task

    config = tsv_config(tmp_path, ["a\tArts, Culture", "b\tSports", "c\tArts, Culture"], val_examples=1)
    assert text_file_task(config) == "multi_label"
    assert load_text_dataset(config, seed=0).class_names == ("Arts", "Culture", "Sports")
    warnings = [r.getMessage() for r in caplog.records if "so the task is read as multi_label" in r.getMessage()]
    assert len(warnings) == 1 and "train.tsv line 2: label 'Arts, Culture' holds ',' or '|'" in warnings[0]
    assert "set data.task: single_label" in warnings[0]
    single = load_text_dataset(config.model_copy(update={"task": "single_label"}), seed=0)
    assert single.task == "single_label" and single.class_names == ("Arts, Culture", "Sports")
    caplog.clear()
    (tmp_path / "listed").mkdir()
    load_text_dataset(tsv_config(tmp_path / "listed", ["a\t['x', 'y']", "b\t['y']"], val_examples=1), seed=0)
    assert "so the task is read as multi_label" not in caplog.text  # a list literal is no guess


def test_a_class_label_named_like_a_missing_value_marker_is_a_class(tmp_path: Path) -> None:
    """A ClassLabel declares its names: one called 'None' is a class, not a missing label (text cells are)."""
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["None", "some", "many"])})
    rows = {"sentence": ["a", "b", "c", "d"], "label": [0, 1, 2, 0]}
    datasets.DatasetDict({split: datasets.Dataset.from_dict(rows, features=features)
                          for split in ("train", "validation")}).save_to_disk(str(tmp_path / "saved"))
    splits = load_text_dataset(HFDiskData(source="hf_disk", path=tmp_path / "saved", val_examples=1), seed=0)
    assert splits.class_names == ("None", "some", "many") and splits.test.labels.tolist() == [0, 1, 2, 0]
