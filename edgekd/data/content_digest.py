"""Content digests of a recipe's local data, for stage fingerprints: a changed, added, removed or relabelled
example re-runs the stages that read the data; an unchanged copy elsewhere, or a touched file, does not.

- ``tsv``/``csv``/``json``/``parquet``: the training and test files' bytes; ``npz``: the file's bytes (and its
  ``eval_data``'s digest, image files as below); ``corpus``:
  the text file's bytes, or every file of a ``save_to_disk`` directory;
- ``imagefolder``: every file below each split's folder (relative path = class and name, and its bytes) but the
  hidden and system files the folder reader skips (``.DS_Store``, ``Thumbs.db``: a thumbnail cache rewritten
  by the desktop re-ran every stage);
- ``image_csv``: the CSV's bytes and the bytes of every image it names, by the path as written;
- ``hf_disk``: every file of the ``save_to_disk`` directory (Arrow data and metadata) and, for an image
  column, the bytes of every image file a row names by path instead of storing it (``Image`` features
  built from files keep only the path unless embedded);
- an ``image_processor`` directory: its files' names, sizes and modification times (as for checkpoints).

scikit-learn's bundled sets, hub datasets and data given in Python (fingerprinted by its own digest)
have none. A file's SHA-256 is remembered in this process by (path, size, modification time, inode), so
the stages of a run hash each file once. A missing folder or file hashes as missing (loading it reports
the error).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.data.config import CorpusData, HFDiskData, NpzData, TextFileData
from edgekd.data.image_config import ImageCsvData, ImageFolderData
from edgekd.data.image_files import skipped_name
from edgekd.data.saved_dataset import load_saved_dataset
from edgekd.data.table_text import read_table_text
from edgekd.digest import file_digest
from edgekd.errors import DataError
from edgekd.models.packaged import source_digest

_KNOWN: dict[tuple[str, int, int, int], str] = {}


def data_content_digest(data: object) -> str | None:
    """``sha256:<hex>`` over the content of the local files a recipe's ``data`` reads; None when it reads none."""
    if isinstance(data, ImageFolderData | ImageCsvData) or (isinstance(data, HFDiskData) and data.image_column):
        return image_data_digest(data)
    hasher = hashlib.sha256()
    if isinstance(data, TextFileData):
        for name in ("train", "test"):
            hasher.update(f"[{name}]\0{_file(getattr(data, name))}\n".encode())
    elif isinstance(data, NpzData | CorpusData) and not data.path.is_dir():
        hasher.update(f"[path]\0{_file(data.path)}\n".encode())
        held_out = data_content_digest(getattr(data, "eval_data", None))
        if held_out is not None:
            hasher.update(f"[eval_data]\0{held_out}\n".encode())
    elif isinstance(data, HFDiskData | CorpusData):
        _tree(hasher, "path", data.path)
    else:
        return None
    return f"sha256:{hasher.hexdigest()}"


def image_data_digest(config: ImageFolderData | ImageCsvData | HFDiskData) -> str:
    """``sha256:<hex>`` over the content of every file ``config``'s splits are read from."""
    hasher = hashlib.sha256()
    if isinstance(config.image_processor, str):  # an edited preprocessor_config.json prepares images anew
        hasher.update(f"[processor]\0{source_digest(config.image_processor)}\n".encode())
    if isinstance(config, HFDiskData):
        _tree(hasher, "path", config.path)
        _external_images(hasher, config)
    elif isinstance(config, ImageFolderData):
        for name in ("train", "val", "test"):
            place = getattr(config, name)
            if place is not None:
                _tree(hasher, name, place, skipped_name)
    else:
        for name in ("train", "val", "test"):
            place = getattr(config, name)
            if place is not None:
                _csv(hasher, name, place, config.path_column)
    return f"sha256:{hasher.hexdigest()}"


def _tree(hasher: Any, name: str, root: Path, skipped: Callable[[str], bool] | None = None) -> None:
    """Every file below ``root`` (sorted, relative paths) with its content digest, but those with a part of their
    relative path ``skipped`` says is no data."""
    hasher.update(f"[{name}]\n".encode())
    if not root.is_dir():
        hasher.update(b"missing\n")
        return
    for path in sorted(p for p in root.rglob("*") if p.is_file()
                       and not (skipped and any(skipped(part) for part in p.relative_to(root).parts))):
        hasher.update(f"{path.relative_to(root).as_posix()}\0{_file(path)}\n".encode())


def _external_images(hasher: Any, config: HFDiskData) -> None:
    """The image files the train and test splits' rows name by path without storing their bytes.

    Reads only the column's Arrow storage (nothing is decoded); a directory ``datasets`` cannot open adds
    nothing here (loading it reports the error).
    """
    import datasets

    try:
        loaded = load_saved_dataset(config.path)
    except DataError:
        return
    for split in (config.train_split, config.test_split):
        if not isinstance(loaded, datasets.DatasetDict) or split not in loaded:
            continue
        table = loaded[split].data
        if config.image_column not in table.column_names:
            continue
        column = table.column(config.image_column).combine_chunks()
        if not hasattr(column.type, "get_field_index"):  # not the Image feature's {bytes, path} struct
            continue
        stored, paths = column.field("bytes").to_pylist(), column.field("path").to_pylist()
        for row, (data, given) in enumerate(zip(stored, paths, strict=True)):
            if data is None and given:
                hasher.update(f"[{split}:{row}]\0{given}\0{_file(Path(given))}\n".encode())


def _csv(hasher: Any, name: str, table: Path, path_column: str) -> None:
    """The CSV file and every image its ``path_column`` names."""
    hasher.update(f"[{name}]\0{_file(table)}\n".encode())
    if not table.is_file():
        return
    try:
        content = read_table_text(table, name, "CSV")
    except DataError:
        return  # the file's own digest stands for it; reading the data says what is wrong with it
    with io.StringIO(content, newline="") as handle:
        for row in csv.DictReader(handle):
            given = (row.get(path_column) or "").strip()
            if given:
                image = Path(given) if Path(given).is_absolute() else table.parent / given
                hasher.update(f"{given}\0{_file(image)}\n".encode())


def _file(path: Path) -> str:
    """The file's SHA-256 (remembered while it is unchanged), or ``missing``."""
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, info.st_ino)
    if key not in _KNOWN:
        _KNOWN[key] = file_digest(path) or "missing"
    return _KNOWN[key]
