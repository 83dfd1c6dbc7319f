"""Labelled text in JSON files (data.source: json: JSON lines or one array of records) and Parquet files
(data.source: parquet), read as the table a TSV holds, with one-line errors naming the line, record or row."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.data.config import TextFileData
from edgekd.data.text import TextSplits, load_text_dataset
from edgekd.errors import DataError

ROWS = [{"sentence": f"{'a good film' if i % 3 else 'a dull plot'} number {i}", "label": int(i % 3 > 0)}
        for i in range(40)]


def _jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def _load(train: Path, test: Path | None = None, source: str = "json", **fields: Any) -> TextSplits:
    return load_text_dataset(TextFileData(source=source, train=train, test=test or train,
                                          **{"val_examples": 4, **fields}), seed=0)


def _parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def _same(a: TextSplits, b: TextSplits) -> None:
    assert a.class_names == b.class_names and a.task == b.task
    for split in ("train", "val", "test"):
        assert getattr(a, split).texts == getattr(b, split).texts
        np.testing.assert_array_equal(getattr(a, split).labels, getattr(b, split).labels)


def test_json_lines_an_array_of_records_and_parquet_read_as_the_same_table_as_a_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\n" + "".join(f"{r['sentence']}\t{r['label']}\n" for r in ROWS))
    from_tsv = load_text_dataset(TextFileData(source="tsv", train=tsv, test=tsv, val_examples=4), seed=0)
    lines = _jsonl(tmp_path / "train.jsonl", ROWS)
    lines.write_text(lines.read_text().replace("\n", "\n\n", 3))  # blank lines are skipped
    array = tmp_path / "train.json"
    array.write_text(json.dumps(ROWS, indent=1))  # pandas' to_json(orient="records"), spread over lines
    _same(_load(lines), from_tsv)
    _same(_load(array), from_tsv)
    _same(_load(_parquet(tmp_path / "train.parquet", ROWS), source="parquet"), from_tsv)
    assert from_tsv.class_names == ("0", "1") and len(from_tsv.test) == 40


def test_cells_other_than_strings_read_as_a_table_would_hold_them(tmp_path: Path) -> None:
    """Booleans are classes 'false'/'true', floats make a regression, lists a multi-label row, and the keys may come
    in any order with extra columns that are not read."""
    booleans = _load(_jsonl(tmp_path / "b.jsonl", [{"id": i, "label": bool(i % 2), "sentence": f"text {i}"}
                                                   for i in range(12)]))
    assert booleans.class_names == ("false", "true") and booleans.test.labels.tolist()[:3] == [0, 1, 0]
    scores = _load(_jsonl(tmp_path / "r.jsonl", [{"sentence": f"text {i}", "label": i / 10} for i in range(12)]))
    assert scores.task == "regression" and scores.test.labels.tolist() == pytest.approx([i / 10 for i in range(12)])
    topics = _load(_jsonl(tmp_path / "m.jsonl", [{"sentence": f"text {i}", "label": ["sport", "news"][: i % 2 + 1]}
                                                 for i in range(12)]))
    assert topics.task == "multi_label" and topics.class_names == ("news", "sport")
    assert topics.test.labels[:2].tolist() == [[0.0, 1.0], [1.0, 1.0]]


def test_token_classification_reads_lists_of_words_and_tags(tmp_path: Path) -> None:
    records = [{"tokens": ["Ada", "Lovelace", "wrote", str(i)], "tags": ["B-PER", "I-PER", "O", "O"]}
               for i in range(10)]
    splits = _load(_jsonl(tmp_path / "ner.jsonl", records))
    assert splits.task == "token_classification" and splits.test.texts[0] == "Ada Lovelace wrote 0"
    assert set(splits.class_names) == {"B-PER", "I-PER", "O"}
    records[6]["tags"] = ["B-PER", "O"]
    with pytest.raises(DataError, match=r"ner.jsonl line 7: 4 tokens but 2 tags; expected one tag per token"):
        _load(_jsonl(tmp_path / "ner.jsonl", records))
    records[6]["tags"], records[2]["tokens"][1] = ["O"] * 4, "Love lace"
    with pytest.raises(DataError, match=r"ner.jsonl line 3: column 'tokens' holds 'Love lace', which is empty or "
                                        r"holds whitespace; expected one word or tag per item$"):
        _load(_jsonl(tmp_path / "ner.jsonl", records))


@pytest.mark.parametrize(("content", "message"), [
    ('{"sentence": "a", "label": 1}\n{"sentence": "b", "label": 0\n', r"train.jsonl \(data.train\) line 2: not JSON "
     r"\(Expecting ',' delimiter\); expected one object per line \(JSON lines\) or one array of objects$"),
    ('{"sentence": "a", "label": 1}\n["b", 0]\n', r"train.jsonl \(data.train\) line 2: a JSON array, expected an "
     r"object of columns"),
    ('[{"sentence": "a", "label": 1},\n "b"]', r"train.jsonl \(data.train\) record 2: a JSON string, expected an "
     r"object of columns"),
    ('[{"sentence": "a", "label": 1},\n {"sentence": "b" "label": 0}]', r"train.jsonl \(data.train\) line 2: not "
     r"JSON \(Expecting ',' delimiter\); expected one array of objects"),
    ('{"sentence": "a", "label": 1}\n{"sentence": ["b"], "label": 0}\n', r"train.jsonl line 2: column 'sentence' "
     r"holds a JSON array, expected a text$"),
    ('{"sentence": "a", "label": 1}\n{"sentence": "b", "label": {"x": 0}}\n', r"train.jsonl line 2: column 'label' "
     r"holds a JSON object, expected a label$"),
    ('{"sentence": "a", "label": 1}\n{"sentence": "b", "label": [0.5, 1]}\n', r"train.jsonl line 2: column 'label' "
     r"holds a list of numbers, expected strings or whole numbers$"),
    ('{"sentence": "a", "label": 1}\n{"sentence": null, "label": 0}\n', r"train.jsonl line 2: no text in column "
     r"'sentence' \(empty\)"),
    ('{"sentence": "a", "label": 1}\n{"sentence": "b"}\n{"sentence": "c", "label": 0}\n', r"train.jsonl line 2: "),
    ('{"text": "a", "label": 1}\n', r"train.jsonl: no column 'sentence' \(data.text_column\); the columns are "
     r"'text', 'label'; set data.text_column: 'text'$"),
    ("\n\n", r"train.jsonl: no records \(data.train\); expected records with the columns 'sentence' and 'label'"),
])
def test_malformed_json_is_one_line_naming_the_line_or_record(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(content)
    good = _jsonl(tmp_path / "test.jsonl", ROWS)
    with pytest.raises(DataError, match=message) as caught:
        _load(path, good, val_examples=1)
    assert "\n" not in str(caught.value)


def test_a_recipe_of_json_files_validates_and_runs_from_the_command_line(tmp_path: Path) -> None:
    _jsonl(tmp_path / "train.jsonl", ROWS * 2)
    _jsonl(tmp_path / "test.jsonl", ROWS)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "json-text", "data": {"source": "json", "train": "train.jsonl", "test": "test.jsonl",
                                      "val_examples": 10},
        "tokenizer": {"vocab_size": 100, "max_length": 16},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2}},
        "student": {"model": {"arch": "bilstm", "embedding_dim": 16, "hidden": 16}},
        "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16}, {"stage": "report"}]}))
    done = subprocess.run([sys.executable, "-m", "edgekd", "run", str(recipe), "--out", str(tmp_path / "run"),
                           "--quiet"], capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert 0.0 <= report["teacher"]["accuracy"] <= 1.0
    (tmp_path / "test.jsonl").write_text('{"sentence": "x", "label": 7}\n')
    refused = subprocess.run([sys.executable, "-m", "edgekd", "validate", str(recipe)], capture_output=True, text=True,
                             check=False, timeout=600)
    assert refused.returncode != 0
    assert "test.jsonl line 1: label '7' is not one of the training split's labels ('0', '1')" in refused.stderr


def test_parquet_lists_and_nulls_read_as_json_s_do_and_other_types_are_refused(tmp_path: Path) -> None:
    import datetime

    records = [{"sentence": f"text {i}", "label": ["sport", "news"][: i % 2 + 1]} for i in range(12)]
    topics = _load(_parquet(tmp_path / "m.parquet", records), source="parquet")
    assert topics.task == "multi_label" and topics.test.labels[:2].tolist() == [[0.0, 1.0], [1.0, 1.0]]
    records = [{"sentence": f"text {i}", "label": datetime.date(2024, 1, 1 + i)} for i in range(12)]
    with pytest.raises(DataError, match=r"d.parquet row 1: column 'label' holds a date value, expected a label$"):
        _load(_parquet(tmp_path / "d.parquet", records), source="parquet")
    nulls = [{"sentence": f"text {i}", "label": None if i == 4 else i % 2} for i in range(12)]
    with pytest.raises(DataError, match=r"n.parquet row 5: "):
        _load(_parquet(tmp_path / "n.parquet", nulls), source="parquet")
    (tmp_path / "bad.parquet").write_text("sentence,label\na,1\n")
    with pytest.raises(DataError, match=r"bad.parquet \(data.train\): not a readable Parquet file \("):
        _load(tmp_path / "bad.parquet", source="parquet")
    with pytest.raises(DataError, match=r"m.parquet: a Parquet file, not CSV text \(data.train\); set data.source: "
                                        r"parquet to read it$"):
        _load(tmp_path / "m.parquet", source="csv")
