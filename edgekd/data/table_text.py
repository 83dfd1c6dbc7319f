"""A user's table file read as text (TSV/CSV/JSON of texts, CSV of image paths), with one-line errors naming the file.

Text is UTF-8 (a byte-order mark skipped when there is one), or UTF-16/32 when the file starts with their
byte-order mark (how Windows tools save "Unicode" text). A binary table format (Parquet, gzip, an Excel
workbook, ...) is named by its first bytes instead of being decoded; text in another encoding (Latin-1) is
refused naming the file and the encodings read.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from pathlib import Path

from edgekd.errors import DataError

#: The first bytes of binary files users hold tables in, and what each is.
PARQUET = "a Parquet file"
BINARY_FORMATS = ((b"PAR1", PARQUET), (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
                  (b"\x1f\x8b", "gzip-compressed"), (b"ARROW1", "an Arrow file"), (b"\x93NUMPY", "a NumPy array"),
                  (b"\xd0\xcf\x11\xe0", "an old Excel (.xls) workbook"))


def read_table_text(path: Path, key: str, kind: str, *, parquet_source: bool = False) -> str:
    """The text of the ``kind`` (``TSV``, ``CSV``) file ``path`` that recipe key ``key`` names (``data.train``);
    ``parquet_source``: the data config reads Parquet too (``data.source: parquet``), which a refusal names.

    Raises :class:`DataError` for a binary format, a file this user may not read, or bytes that do not decode.
    """
    try:
        data = path.read_bytes()
        what = next((name for magic, name in BINARY_FORMATS if data.startswith(magic)), None)
        if what == PARQUET and parquet_source:
            raise DataError(f"{path}: {what}, not {kind} text ({key}); set data.source: parquet to read it")
        if what is not None:
            writer = "to_json(orient='records', lines=True)" if kind == "JSON" else "to_csv"
            raise DataError(f"{path}: {what}, not {kind} text ({key}); save the table as {kind} (pandas: {writer}), "
                            "or as a datasets directory (save_to_disk, data.source: hf_disk)")
        return data.decode(text_encoding(data[:8]))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}) ({key}); save the file as UTF-8 (or UTF-16 with "
                        "its byte-order mark)") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc}) ({key})") from None


def check_unique_columns(path: Path, header: Sequence[str], read: Iterable[str], key: str) -> None:
    """Refuse a header naming a column that is read (``read``) more than once: which of the two holds the data is a
    guess (the text reader took the first, the image CSV reader the last), so neither is taken silently."""
    for name in read:
        places = [str(i + 1) for i, column in enumerate(header) if column == name]
        if len(places) > 1:
            raise DataError(f"{path}: the header names column '{name}' {len(places)} times (columns "
                            f"{', '.join(places)}) ({key}); expected each column once: rename or drop the repeat")


def text_encoding(start: bytes) -> str:
    """The text encoding a file's first bytes name by their byte-order mark; UTF-8 without one."""
    if start.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    return "utf-8-sig"
