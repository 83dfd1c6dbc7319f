"""Labelled text datasets: local TSV/CSV/JSON/Parquet files, datasets saved to disk, and hub datasets.

Every source gives a training and a test split of (sentence, label) pairs; :func:`load_text_dataset`
turns them into :class:`TextSplits`:

- **validation**: ``val_examples`` examples held out of the training split by a permutation seeded
  with the recipe's seed;
- **limit_train**: the first N training examples in that same seeded order (a random subset, not the
  head of the file, which may be sorted), so the validation set does not change with the limit;
- **limit_test**: the first N rows of the test split, in file order (the test split is never shuffled);
- every split keeps the file order of the examples it holds.

Labels become class indices: the distinct labels of the training split, sorted (numerically when
they are all integers, else as strings), are the class names, and a label's index is its position
among them, so SST-2's 0/1 stay 0/1. A ``datasets.ClassLabel`` column keeps its own names and order.
Multi-label rows (names separated by ``,`` or ``|``, a list literal, or a ``datasets`` sequence column) and
regression values are encoded as :mod:`edgekd.data.label_kind` says; ``data.task`` names the task, else it is
inferred there.
Token classification (tokens and tags columns: space-separated in TSV/CSV, sequences in ``datasets``) is read
as :mod:`edgekd.data.token_tags` says: a text is its tokens joined by spaces, its labels the tag indices of
its words.

TSV files are read with the ``csv`` module without quote processing (SST-2 sentences contain quote
characters) unless they were written with CSV quoting (pandas' ``to_csv(sep="\t")``: see :func:`_table_rows`),
CSV files with standard CSV quoting; both need a header line (its names stripped), are UTF-8 (a byte-order mark
skipped) or UTF-16/32 with their byte-order mark, and may contain blank lines (or lines of spaces only), which
are skipped; a field may be of any length. Texts and labels are stripped (SST-2 sentences end with a space). An
example needs a text, and a single-label one a label: an empty one (or a ``datasets`` null, or a ClassLabel's
-1, which marks an unlabelled row) is refused, naming the line or row, and so is a label cell written as a
missing-value marker (``N/A``, ``NaN``, ``null``: :func:`~edgekd.data.label_kind.is_missing`). A header naming
a column that is read twice is refused; a semicolon CSV's decimal-comma labels (``0,671``) are numbers.
JSON files (JSON lines, or one array of records) and Parquet files are read as the table their records' keys make
(:mod:`edgekd.data.record_table`); their lines, records or rows are named in messages.
Sentence pairs are not encoded: a table holding both columns of a known pair (``sentence1``/``sentence2``, QNLI's
``question``/``sentence``, ...) is refused unless the recipe sets ``text_column``.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.config import HFDiskData, HubData, TaskKind, TextFileData
from edgekd.data.label_kind import (
    as_number,
    decimal_point,
    infer_task,
    is_missing,
    label_name,
    label_sets,
    missing_what,
    multi_hot,
    regression_values,
    whole_numbers,
)
from edgekd.data.places import check_place
from edgekd.data.record_table import Role, json_records, parquet_records, record_cell, record_columns
from edgekd.data.saved_dataset import load_saved_dataset
from edgekd.data.table_text import check_unique_columns, read_table_text
from edgekd.data.token_tags import hf_tagged_rows, table_columns, tag_ids, tag_names, tagged_row
from edgekd.errors import DataError, quoted

log = logging.getLogger(__name__)

#: csv's field size limit while a table is read (its default, 128 KiB, refuses a long document).
FIELD_LIMIT = 2**31 - 1
TextDataConfig = TextFileData | HFDiskData | HubData


@dataclass(frozen=True, eq=False)
class TextSet:
    """Sentences and their labels (a read-only array: int64 class indices, float32 multi-hot rows or float32
    values, by task; see :mod:`edgekd.data.label_kind`); compared by identity."""

    texts: tuple[str, ...]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True, eq=False)
class TextSplits:
    """A labelled text dataset split three ways, with the names of its classes; compared by identity."""

    train: TextSet
    val: TextSet
    test: TextSet
    class_names: tuple[str, ...]
    task: TaskKind = "single_label"

    @property
    def num_classes(self) -> int:
        """How many classes the labels index."""
        return len(self.class_names)


@dataclass(frozen=True)
class _RawSplit:
    """One split as read, before labels become indices; ``lines`` locate each example for messages."""

    name: str
    texts: list[str]
    labels: list[str]
    lines: Sequence[int]
    unit: str
    task: TaskKind | None = None
    """What the file's columns say the task is (tagged tokens), when they say it."""


def load_text_dataset(config: TextDataConfig, seed: int) -> TextSplits:
    """Read the text dataset ``config`` names and split it (see the module docstring for the rules).

    Cached per (config, seed) and, for local files, their size and modification time: the stages
    of a run share one copy, whose texts are tuples and whose label arrays are read-only.

    Raises :class:`~edgekd.errors.DataError` (one line naming the file, the line or column, and
    what was expected) for a missing file, split or column, a row with the wrong number of fields,
    an empty split, a test label the training split lacks, or ``val_examples`` not below the
    number of training examples.
    """
    return _load_cached(config, seed, _file_stamps(config))


def text_file_task(config: TextFileData) -> TaskKind:
    """The task of a TSV/CSV/JSON/Parquet source: ``data.task``, else what its training file's labels read as."""
    train = _read_table(config.train, "train", config)
    return config.task or train.task or infer_task(train.name, train.labels, train.lines, train.unit)


def _file_stamps(config: TextDataConfig) -> tuple[tuple[int, int], ...]:
    if not isinstance(config, TextFileData):
        return ()
    return tuple((s.st_size, s.st_mtime_ns) for s in (p.stat() for p in (config.train, config.test) if p.is_file()))


@lru_cache(maxsize=4)
def _load_cached(config: TextDataConfig, seed: int, stamps: tuple[tuple[int, int], ...]) -> TextSplits:
    if isinstance(config, TextFileData):
        train = _read_table(config.train, "train", config)
        test = _read_table(config.test, "test", config)
        known_names, known_task = None, None
    else:
        train, test, known_names, known_task = _read_hf(config)
    task = config.task or train.task or known_task or infer_task(train.name, train.labels, train.lines, train.unit)
    for split in (train, test):
        _check_labelled(split, task, config.label_column, named=known_names)
    if task == "single_label" and known_names is None:
        train, test = _plain_integers(train, test)
    class_names = (known_names if task != "regression" else None) or _class_names(task, train.labels,
                                                                                   config.label_column)
    _check_distinct_classes(train, class_names, task, config.label_column)
    if task == "single_label":
        _warn_stray_labels(train, class_names, config.label_column)
    return _split(train, test, class_names, task, config, seed)


def _warn_stray_labels(train: _RawSplit, class_names: tuple[str, ...], label_column: str) -> None:
    """Warn when the classes are numbers but for a few names that are not: a stray word in a 0/1 column (a typo,
    a header row pasted in) becomes a class of its own, which the model is then built and scored for."""
    words = [name for name in class_names if as_number(name) is None]
    numbers = len(class_names) - len(words)
    if not words or numbers < 2 or len(words) >= numbers:
        return
    rows = [i for i, label in enumerate(train.labels) if label in words]
    log.warning("%s %s %s: column '%s' holds the classes %s, but also %s (%d row(s)): each read as a class of its "
                "own; fix the file if that is a mistake", train.name, train.unit, train.lines[rows[0]], label_column,
                ", ".join(name for name in class_names if name not in words),
                ", ".join(quoted(word) for word in words[:3]), len(rows))


def _plain_integers(train: _RawSplit, test: _RawSplit) -> tuple[_RawSplit, _RawSplit]:
    """Both splits' class labels as plain integers when all of them are whole numbers: ``1.0`` in one file and
    ``1`` in the other were different classes (the test file refused, or classes named ``0.0`` and ``1.0``)."""
    train_labels, test_labels = whole_numbers(train.labels), whole_numbers(test.labels)
    if train_labels is None or test_labels is None:
        return train, test
    return replace(train, labels=train_labels), replace(test, labels=test_labels)


def _check_labelled(split: _RawSplit, task: TaskKind, label_column: str,
                    named: tuple[str, ...] | None = None) -> None:
    """Refuse a single-label example without a label, and a class label written as a missing-value marker
    (``N/A``, ``NaN``, ``null``: :func:`~edgekd.data.label_kind.is_missing`): either would silently become a class
    of its own. A multi-label row may be empty (no class). A class the dataset declares (``named``, a
    ``ClassLabel``'s names) is a class whatever it is called."""
    if task not in ("single_label", "multi_label"):
        return
    at = next((i for i, label in enumerate(split.labels) if is_missing(label) and (label or task == "single_label")
               and label not in (named or ())), None)
    if at is not None:
        what = "empty, null or -1" if not split.labels[at] else missing_what(split.labels[at])
        expected = "a class name for every example" if task == "single_label" else "class names (an empty cell: none)"
        raise DataError(f"{split.name} {split.unit} {split.lines[at]}: no label in column '{label_column}' ({what}); "
                        f"expected {expected}")


def _check_distinct_classes(train: _RawSplit, class_names: tuple[str, ...], task: TaskKind,
                            label_column: str) -> None:
    """Refuse a single-label or tagging training set with one class: the model would learn a constant."""
    if task in ("single_label", "token_classification") and len(class_names) < 2:
        what = "tag" if task == "token_classification" else f"label in column '{label_column}'"
        raise DataError(f"{train.name}: every example has the same {what} ({', '.join(class_names) or 'none'}); "
                        "expected at least 2 classes")


# --------------------------------------------------------------------------- local TSV / CSV / JSON / Parquet files


def _read_table(path: Path, key: str, config: TextFileData) -> _RawSplit:
    kind = config.file_kind
    check_place(path, f"data.{key}", f"{kind} file")
    if config.source in ("json", "parquet"):
        header, body, unit = _record_rows(path, key, config)
        delimiter = ""
    else:
        content = read_table_text(path, f"data.{key}", kind, parquet_source=True)
        rows, delimiter = _table_rows(path, content, config)
        if not rows:
            raise DataError(
                f"{path}: empty file; expected a header line naming the columns "
                f"'{config.text_column}' and '{config.label_column}'"
            )
        (_, header), body, unit = rows[0], rows[1:], "line"
        header = [name.strip() for name in header]
    text_column, label_column, tagged = table_columns(config, header)
    if not tagged:
        _check_single_text(str(path), header, config)
    _check_columns(str(path), header, config, (text_column, label_column),
                   _other_delimiter(header, config) or _unlabelled(header, key, text_column[0]))
    check_unique_columns(path, header, (text_column[0], label_column[0]), f"data.{key}")
    text_at, label_at = header.index(text_column[0]), header.index(label_column[0])
    texts: list[str] = []
    labels: list[str] = []
    lines: list[int] = []
    for line, row in body:
        if len(row) > len(header) and not any(field.strip() for field in row[len(header):]):
            row = row[: len(header)]  # empty fields after the last column: a spreadsheet's trailing separators
        if len(row) != len(header):
            raise DataError(
                f"{path} line {line}: {len(row)} fields, expected {len(header)} like the header ({_listing(header)})"
            )
        text, label = row[text_at].strip(), row[label_at].strip()
        if tagged:
            text, label = tagged_row(f"{path} {unit} {line}", text, label)
        elif delimiter == ";":
            label = decimal_point(label)
        texts.append(text)
        labels.append(label)
        lines.append(line)
    if not texts:
        raise DataError(f"{path}: no data rows after the header line")
    split = _RawSplit(str(path), texts, labels, lines, unit, "token_classification" if tagged else None)
    _check_texts(split, text_column[0])
    return split


def _record_rows(path: Path, key: str,
                 config: TextFileData) -> tuple[list[str], list[tuple[int, list[str]]], str]:
    """A JSON or Parquet file's columns, its records as (position, cells) rows of the table a TSV would hold (the text
    and label columns read as :func:`~edgekd.data.record_table.record_cell` says, the others left empty), and what
    positions count (``line``, ``record`` or ``row``)."""
    where = f"{path} (data.{key})"
    records, unit = parquet_records(where, path) if config.source == "parquet" else \
        json_records(where, read_table_text(path, f"data.{key}", "JSON", parquet_source=True))
    if not records:
        raise DataError(f"{path}: no records (data.{key}); expected records with the columns "
                        f"'{config.text_column}' and '{config.label_column}'")
    header = record_columns(records)
    (text_column, _), (label_column, _), tagged = table_columns(config, header)
    roles: dict[str, Role] = {text_column: "words" if tagged else "text", label_column: "words" if tagged else "label"}
    rows = [(position, [record_cell(f"{path} {unit} {position}", column, record.get(column), roles[column])
                        if column in roles else "" for column in header])
            for position, record in records]
    return header, rows, unit


def _table_rows(path: Path, content: str, config: TextFileData) -> tuple[list[tuple[int, list[str]]], str]:
    """The (line, fields) rows of a table's text, blank lines left out, and the delimiter that separated them.

    CSV is comma-separated, or semicolon-separated when its header holds ';' and no ',' (Excel's CSV in locales
    whose decimal mark is a comma; its labels' decimal commas are read as :func:`decimal_point` says). TSV is read
    without quote processing (SST-2 sentences hold quote characters), unless the file was written with CSV quoting
    (pandas' ``to_csv(sep="\t")`` quotes a field holding a quote, a tab or a line break): rows whose field counts
    disagree, or a field wholly in quotes with doubled quotes inside, are read again with quoting, which is kept
    when every row then has the header's fields.
    """
    if config.source == "csv":
        rows = _parsed(path, content, ",", csv.QUOTE_MINIMAL, config)
        if rows and len(rows[0][1]) == 1 and ";" in rows[0][1][0]:  # Excel's CSV where ',' is the decimal mark
            return _parsed(path, content, ";", csv.QUOTE_MINIMAL, config), ";"
        return rows, ","
    return _tsv_rows(path, content, config), "\t"


def _tsv_rows(path: Path, content: str, config: TextFileData) -> list[tuple[int, list[str]]]:
    """A TSV's rows: unquoted, or with CSV quoting when the file was written with it (see :func:`_table_rows`)."""
    plain = _parsed(path, content, "\t", csv.QUOTE_NONE, config)
    if plain and (any(len(row) != len(plain[0][1]) for _, row in plain)
                  or any(_csv_quoted(field) for _, row in plain for field in row)):
        try:
            quoted = _parsed(path, content, "\t", csv.QUOTE_MINIMAL, config, strict=True)
        except DataError:
            return plain
        if all(len(row) == len(quoted[0][1]) for _, row in quoted):
            return quoted
    return plain


def _parsed(path: Path, content: str, delimiter: str, quoting: int, config: TextFileData,
            strict: bool = False) -> list[tuple[int, list[str]]]:
    """``content`` read by :mod:`csv` with ``delimiter`` and ``quoting``: each non-blank row with its line number
    (``strict``: a quote in the middle of a field is an error, not a character)."""
    rows = []
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, quoting=quoting, strict=strict)
    with _field_limit(FIELD_LIMIT):
        try:
            for row in reader:
                if any(field.strip() for field in row):
                    rows.append((reader.line_num, row))
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: malformed {config.source.upper()} ({exc})") from None
    return rows


def _csv_quoted(field: str) -> bool:
    """Whether ``field`` (read without quote processing) is one CSV-quoted value holding doubled quotes."""
    inner = field[1:-1]
    return (len(field) >= 2 and field[0] == field[-1] == '"' and '""' in inner
            and '"' not in inner.replace('""', ""))


def _unlabelled(header: list[str], key: str, text_column: str) -> str:
    """A hint when the test file has the texts but no label column: GLUE's test.tsv is unlabelled (index, sentence)."""
    if key == "test" and text_column in header:
        return "; data.test must be labelled (the accuracy is measured on it): GLUE's test.tsv is not, use dev.tsv"
    return ""


def _other_delimiter(header: list[str], config: TextFileData) -> str:
    """A hint when a header is another format's: a one-column header holding the other delimiter (a CSV read as
    TSV, or the reverse), or JSON (an object: JSON lines; an array of records)."""
    if config.source in ("json", "parquet"):
        return ""
    other, source = (",", "csv") if config.source == "tsv" else ("\t", "tsv")
    if header and header[0].lstrip().startswith(("{", "[")):
        return "; the file holds JSON (lines, or an array of records): set data.source: json"
    if len(header) == 1 and other in header[0]:
        return f"; the header holds {other!r}: is it a {source.upper()} file (data.source: {source})?"
    return ""


@contextmanager
def _field_limit(limit: int) -> Iterator[None]:
    """csv's (process-wide) field size limit set to ``limit`` while the block runs."""
    previous = csv.field_size_limit(limit)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _check_columns(where: str, columns: list[str], config: TextDataConfig,
                   wanted: tuple[tuple[str, str], ...] | None = None, hint: str = "") -> None:
    """Every (column, recipe key) of ``wanted`` (default: the text and label columns) is among ``columns``; the
    refusal names the column the key probably means (a ``text`` column for ``text_column``) when one is there."""
    for column, key in wanted or ((config.text_column, "text_column"), (config.label_column, "label_column")):
        if column not in columns:
            likely = next((name for name in columns if name.strip().lower() in COLUMN_NAMES.get(key, ())), None)
            guess = f"; set data.{key}: '{likely}'" if likely is not None and not hint else ""
            raise DataError(f"{where}: no column '{column}' (data.{key}); the columns are {_listing(columns)}"
                            f"{hint}{guess}")


#: Names datasets commonly give the column a recipe key reads (lower case), for the refusal's suggestion.
COLUMN_NAMES = {
    "text_column": ("text", "sentence", "review", "content", "document", "comment", "tweet", "utterance", "body"),
    "label_column": ("label", "labels", "target", "class", "sentiment", "category", "y"),
}


#: Column pairs holding the two texts of a sentence-pair task (GLUE's MRPC, STS-B, RTE, QQP, QNLI, MNLI layouts
#: and the usual names elsewhere).
PAIR_COLUMNS = (("sentence1", "sentence2"), ("#1 String", "#2 String"), ("question1", "question2"),
                ("question", "sentence"), ("premise", "hypothesis"), ("text_a", "text_b"), ("question", "passage"),
                ("sentence_a", "sentence_b"), ("text1", "text2"))


def _check_single_text(where: str, columns: list[str], config: TextDataConfig) -> None:
    """Refuse sentence-pair data read as one text: with QNLI's question and sentence columns the default
    ``text_column`` took the sentence alone and trained without the question (exit 0). A ``text_column`` the
    recipe sets is read as it says."""
    if "text_column" in config.model_fields_set:
        return
    pair = next((pair for pair in PAIR_COLUMNS if set(pair) <= set(columns)), None)
    if pair is not None:
        raise DataError(f"{where}: columns '{pair[0]}' and '{pair[1]}' hold sentence pairs, which edgekd does not "
                        "encode (it reads one text column, data.text_column); join each pair into one column, or "
                        "set data.text_column to read one of them alone")


def _check_texts(split: _RawSplit, column: str) -> None:
    """Refuse an example without text (an empty field): it would train as an input of special tokens only."""
    if "" in split.texts:
        at = split.texts.index("")
        raise DataError(f"{split.name} {split.unit} {split.lines[at]}: no text in column '{column}' (empty); "
                        "expected a text for every example")


# --------------------------------------------------------------------------- Hugging Face datasets


def _read_hf(
    config: HFDiskData | HubData,
) -> tuple[_RawSplit, _RawSplit, tuple[str, ...] | None, TaskKind | None]:
    """Both splits of a ``DatasetDict``, the class names when the label column is a ClassLabel (or a sequence
    of them), and ``multi_label`` when the label column is a sequence (one list of classes a row)."""
    import datasets

    where = str(config.path) if isinstance(config, HFDiskData) else f"hub dataset '{config.id}'"
    loaded = _open_hf(config, where)
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(
            f"{where}: holds a single Dataset; expected a DatasetDict with the splits "
            f"'{config.train_split}' and '{config.test_split}'"
        )
    train, test = (_hf_split(loaded, name, where, key, config) for name, key in
                   ((config.train_split, "train_split"), (config.test_split, "test_split")))
    labels = config.tags_column if train.task else config.label_column
    feature, is_sequence = _label_feature(loaded[config.train_split].features[labels])
    return (train, test, tuple(feature.names) if isinstance(feature, datasets.ClassLabel) else None,
            train.task or ("multi_label" if is_sequence else None))


def _label_feature(feature: Any) -> tuple[Any, bool]:
    """A label column's per-class feature, and whether the column holds a list of them a row (multi-label)."""
    import datasets

    if isinstance(feature, datasets.Sequence):
        return feature.feature, True
    if isinstance(feature, list):
        return feature[0], True
    return feature, False


def _open_hf(config: HFDiskData | HubData, where: str) -> Any:
    import datasets

    if isinstance(config, HFDiskData):
        return load_saved_dataset(config.path)
    try:
        return datasets.load_dataset(config.id, config.config)
    except Exception as exc:  # the hub client raises many types (network, auth, unknown config)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{where} (config {config.config!r}): cannot load it: {detail}") from exc


def _hf_split(loaded: Any, split: str, where: str, key: str, config: HFDiskData | HubData) -> _RawSplit:
    import datasets

    if split not in loaded:
        raise DataError(f"{where}: no split '{split}' (data.{key}); the dataset has {_listing(list(loaded))}")
    table = loaded[split]
    name = f"{where} split '{split}'"
    text_column, label_column, tagged = table_columns(config, table.column_names)
    if not tagged:
        _check_single_text(name, table.column_names, config)
    _check_columns(name, table.column_names, config, (text_column, label_column))
    if tagged:
        return _hf_tagged_split(table, name, config)
    text_feature = table.features[config.text_column]
    if not (isinstance(text_feature, datasets.Value) and text_feature.dtype in ("string", "large_string")):
        raise DataError(f"{name}: column '{config.text_column}' holds {text_feature}, expected strings")
    if table.num_rows == 0:
        raise DataError(f"{name}: the split has no rows")
    texts = list(table[config.text_column])
    if None in texts:
        raise DataError(f"{name} row {texts.index(None)}: column '{config.text_column}' is empty (null)")
    label_feature, listed = _label_feature(table.features[config.label_column])
    if listed and isinstance(label_feature, datasets.Value) and label_feature.dtype.startswith("float"):
        raise DataError(f"{name}: column '{config.label_column}' holds lists of {label_feature.dtype} (soft labels or "
                        "several regression targets), which edgekd does not read; expected lists of class names or "
                        "ids (multi-label)")
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    labels = [label_name(value, names) for value in table[config.label_column]]
    split = _RawSplit(name, [text.strip() for text in texts], labels, range(len(texts)), "row")
    _check_texts(split, config.text_column)
    return split


def _hf_tagged_split(table: Any, name: str, config: HFDiskData | HubData) -> _RawSplit:
    """A split of tagged tokens: a sequence-of-strings tokens column and a tags column of names or ClassLabels."""
    import datasets

    words, _ = _label_feature(table.features[config.tokens_column])
    if not (isinstance(words, datasets.Value) and words.dtype in ("string", "large_string")) \
            or words is table.features[config.tokens_column]:
        raise DataError(f"{name}: column '{config.tokens_column}' holds {table.features[config.tokens_column]}, "
                        "expected a sequence of strings (data.tokens_column)")
    if table.num_rows == 0:
        raise DataError(f"{name}: the split has no rows")
    tag_feature, _ = _label_feature(table.features[config.tags_column])
    names = tuple(tag_feature.names) if isinstance(tag_feature, datasets.ClassLabel) else None
    texts, labels = hf_tagged_rows(name, table[config.tokens_column], table[config.tags_column], names)
    return _RawSplit(name, texts, labels, range(len(texts)), "row", "token_classification")


# --------------------------------------------------------------------------- labels and splits


def _class_names(task: TaskKind, labels: list[str], label_column: str) -> tuple[str, ...]:
    """The model's outputs: the sorted classes (multi-label: the names in any row), or the regression column."""
    if task == "regression":
        return (label_column,)
    if task == "token_classification":
        return tag_names(labels)
    return _sorted_labels([name for names in label_sets(labels) for name in names] if task == "multi_label"
                          else labels)


def _sorted_labels(labels: list[str]) -> tuple[str, ...]:
    """The distinct labels, sorted numerically when all are integers (``01`` before ``1``, as written), else as
    strings."""
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=lambda label: (int(label), label)))
    except ValueError:
        return tuple(sorted(distinct))


def _encode_labels(split: _RawSplit, class_names: tuple[str, ...], task: TaskKind) -> np.ndarray:
    if task == "regression":
        return regression_values(split.name, split.labels, split.lines, split.unit)
    if task == "multi_label":
        return multi_hot(split.name, split.labels, split.lines, split.unit, class_names)
    if task == "token_classification":
        return tag_ids(split.name, split.labels, split.lines, split.unit, class_names)
    index = {name: i for i, name in enumerate(class_names)}
    codes = [index.get(label, -1) for label in split.labels]
    if -1 in codes:
        at = codes.index(-1)
        raise DataError(
            f"{split.name} {split.unit} {split.lines[at]}: label {quoted(split.labels[at])} is not one of "
            f"the training split's labels ({_listing(class_names)})"
        )
    return np.asarray(codes, dtype=np.int64)


def _split(
    train: _RawSplit, test: _RawSplit, class_names: tuple[str, ...], task: TaskKind, config: TextDataConfig,
    seed: int,
) -> TextSplits:
    if config.val_examples >= len(train.texts):
        raise DataError(
            f"data.val_examples ({config.val_examples}) must be below the {len(train.texts)} examples "
            f"of {train.name}, so that some remain for training"
        )
    train_labels = _encode_labels(train, class_names, task)
    test_labels = _encode_labels(test, class_names, task)
    order = np.random.default_rng(seed).permutation(len(train.texts))
    val_rows = np.sort(order[: config.val_examples])
    train_rows = np.sort(order[config.val_examples :][: config.limit_train])
    test_rows = np.arange(len(test.texts))[: config.limit_test]
    return TextSplits(
        train=_subset(train.texts, train_labels, train_rows),
        val=_subset(train.texts, train_labels, val_rows),
        test=_subset(test.texts, test_labels, test_rows),
        class_names=class_names,
        task=task,
    )


def _subset(texts: list[str], labels: np.ndarray, rows: np.ndarray) -> TextSet:
    chosen = labels[rows]
    chosen.setflags(write=False)
    return TextSet(tuple(texts[i] for i in rows), chosen)


def _listing(items: Sequence[str], most: int = 10) -> str:
    shown = ", ".join(quoted(item) for item in items[:most])
    return shown + (f", … ({len(items)} in all)" if len(items) > most else "")
