"""The labelled images a recipe's image source names, before any pixel is read: a reference per image.

- ``imagefolder``: ``DIR/<class>/<image>`` (PNG or JPEG), images in sub-folders of a class folder belonging to
  that class (as torchvision's ``ImageFolder`` reads them); hidden files and folders (``.DS_Store``, macOS's
  ``._*`` AppleDouble files) and the files operating systems leave beside images (``Thumbs.db``, ``desktop.ini``,
  ``__MACOSX``: :data:`SYSTEM_FILES`) are skipped. Any other file, a file beside the class folders, a class
  folder without images or fewer than two classes is a one-line error.
- ``image_csv``: a CSV with a header naming ``path_column`` and ``label_column``; a relative path is
  relative to the CSV file's folder.
- ``hf_disk`` with ``image_column``: a ``datasets`` directory whose column holds images (the ``Image``
  feature); labels from ``label_column`` (a ``ClassLabel`` keeps its names).

Each image is an :class:`ImageRef`: where it is (a path, or the dataset, split and row, for messages) and
how to read its encoded bytes. Decoding (and the error naming a corrupt file) is :func:`open_image`'s;
:func:`check_image` reads only an image's header (what ``edgekd validate`` does for every image listed).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.data.config import HFDiskData
from edgekd.data.image_config import ImageCsvData, ImageFolderData
from edgekd.data.label_kind import is_missing, label_name, missing_what
from edgekd.data.places import check_place
from edgekd.data.saved_dataset import load_saved_dataset
from edgekd.data.table_text import check_unique_columns, read_table_text
from edgekd.errors import DataError, first_line, quoted

if TYPE_CHECKING:
    from PIL import Image

#: File name endings of the images an image folder or CSV may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
ImageDataConfig = ImageFolderData | ImageCsvData | HFDiskData
#: Names (lower case) of the files and folders operating systems and NAS boxes write beside a user's images:
#: Windows' thumbnail caches and folder settings, the folder a macOS zip adds, a Synology's index, macOS's icon.
SYSTEM_FILES = frozenset({"thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "__macosx", "@eadir",
                          "icon\r"})


@dataclass(frozen=True)
class ImageRef:
    """One image: ``where`` names it in messages, ``read`` returns its encoded bytes (PNG, JPEG, …)."""

    where: str
    read: Callable[[], bytes]
    path: Path | None = None
    """The image's file, when it is one (its header is then read without reading the whole file)."""


@dataclass(frozen=True)
class LabelledImages:
    """One split's images and their labels (class names as text)."""

    key: str
    """The recipe key the split comes from (``data.train``), for messages."""
    location: str
    images: tuple[ImageRef, ...]
    labels: tuple[str, ...]


def is_image_data(config: object) -> bool:
    """Whether ``config`` is an image-file source (a folder, a CSV, or an ``hf_disk`` image column)."""
    return isinstance(config, ImageFolderData | ImageCsvData) or (
        isinstance(config, HFDiskData) and config.image_column is not None)


def list_splits(config: ImageDataConfig) -> dict[str, LabelledImages]:
    """The ``train`` and ``test`` (and, when given, ``val``) splits ``config`` names."""
    if isinstance(config, HFDiskData):
        return _dataset_splits(config)
    read = _folder if isinstance(config, ImageFolderData) else _csv_file
    places = {"train": config.train, "test": config.test, "val": config.val}
    return {name: read(place, f"data.{name}", config) for name, place in places.items() if place is not None}


def open_image(ref: ImageRef) -> Image.Image:
    """The decoded image of ``ref`` (a :class:`DataError` naming it when it is not a readable image)."""
    return _image(ref, decode=True)


def check_image(ref: ImageRef) -> None:
    """Refuse ``ref`` when its header is not a readable image's (an empty file, a corrupt or foreign format): the
    header alone is read (PIL's ``Image.open`` is lazy), so a folder of images is checked cheaply; a file damaged
    after its header is found when :func:`open_image` decodes it."""
    _image(ref, decode=False).close()


def _image(ref: ImageRef, *, decode: bool) -> Image.Image:
    """``ref`` opened by PIL, its pixels decoded when ``decode``; one-line :class:`DataError` naming it otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = ref.read() if decode or ref.path is None else None
        size = len(data) if data is not None else ref.path.stat().st_size  # type: ignore[union-attr]
    except OSError as exc:
        raise DataError(f"{ref.where}: cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise DataError(f"{ref.where}: empty file (0 bytes); expected a PNG/JPEG image")
    try:
        image = Image.open(io.BytesIO(data) if data is not None else ref.path)
        if decode:
            image.load()
    except Image.DecompressionBombError as exc:  # more pixels than PIL decodes (a decompression bomb, or a scan)
        raise DataError(f"{ref.where}: too many pixels to decode ({first_line(exc)}); resize the image") from None
    except UnidentifiedImageError:  # its message names the in-memory buffer by address, which says nothing
        raise DataError(f"{ref.where}: not a readable image, the file is corrupt or not PNG/JPEG (no image format "
                        "PIL knows starts it)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{ref.where}: not a readable image, the file is corrupt or not PNG/JPEG "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})") from None
    return image


def _file_ref(path: Path) -> ImageRef:
    return ImageRef(str(path), path.read_bytes, path)


def _folder(root: Path, key: str, _config: Any) -> LabelledImages:
    """``root/<class>/<image>`` as references, classes and images in sorted order."""
    check_place(root, key, "directory", "a folder with one sub-folder per class")
    images: list[ImageRef] = []
    labels: list[str] = []
    for entry in sorted(root.iterdir()):
        if skipped_name(entry.name):
            continue
        if not entry.is_dir():
            raise DataError(f"{entry}: a file beside the class folders ({key}); expected only one sub-folder "
                            "of images per class")
        files = _visible_files(entry)
        if not files:
            raise DataError(f"{entry}: empty class folder ({key}); expected PNG/JPEG images of class "
                            f"'{entry.name}'")
        for path in files:
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(f"{path}: not an image file ({key}); expected only PNG/JPEG images "
                                f"({', '.join(IMAGE_SUFFIXES)}) in class folder '{entry.name}'")
            images.append(_file_ref(path))
            labels.append(entry.name)
    if not images:
        raise DataError(f"{root}: no class folders ({key}); expected one sub-folder of images per class")
    return LabelledImages(key, str(root), tuple(images), tuple(labels))


def _visible_files(folder: Path) -> list[Path]:
    """The files below ``folder``, in sub-folders too (symbolic links to folders not followed), sorted by their
    path; hidden and system files and folders (:func:`skipped_name`) are left out."""
    found = []
    for parent, folders, names in os.walk(folder):
        folders[:] = [name for name in folders if not skipped_name(name)]
        found += [Path(parent, name) for name in names if not skipped_name(name)]
    return sorted(found, key=lambda path: path.relative_to(folder).parts)


def skipped_name(name: str) -> bool:
    """Whether an image folder's entry ``name`` is no image of the user's: hidden (``.DS_Store``, ``._photo.jpg``)
    or a file the system writes there (:data:`SYSTEM_FILES`: ``Thumbs.db``, ``desktop.ini``)."""
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _csv_file(path: Path, key: str, config: ImageCsvData) -> LabelledImages:
    """The rows of a CSV of image paths and labels (blank lines skipped)."""
    check_place(path, key, "CSV file", "a CSV of image paths and labels")
    with io.StringIO(read_table_text(path, key, "CSV"), newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in (config.path_column, config.label_column) if c not in columns]
        if missing:
            raise DataError(f"{path}: no column {', '.join(quoted(c) for c in missing)} ({key}); the header has "
                            f"{', '.join(quoted(c) for c in columns[:10]) or 'no columns'}")
        check_unique_columns(path, columns, (config.path_column, config.label_column), key)
        images: list[ImageRef] = []
        labels: list[str] = []
        for row in reader:
            given, label = (row.get(config.path_column) or "").strip(), (row.get(config.label_column) or "").strip()
            if not given and not label:
                continue
            line = f"{path}:{reader.line_num}"
            if not given or is_missing(label):
                what = "empty path" if not given else f"no label ({missing_what(label)})"
                raise DataError(f"{line}: {what}; expected an image path and its class label")
            image = Path(given) if Path(given).is_absolute() else path.parent / given
            if not image.is_file():
                raise DataError(f"{line}: image {quoted(given)} not found (looked for {image})")
            images.append(_file_ref(image))
            labels.append(label)
    if not images:
        raise DataError(f"{path}: no rows ({key}); expected image paths with labels")
    return LabelledImages(key, str(path), tuple(images), tuple(labels))


def _dataset_splits(config: HFDiskData) -> dict[str, LabelledImages]:
    """The train and test splits of a ``save_to_disk`` directory with an image column."""
    import datasets

    loaded = load_saved_dataset(config.path)
    if isinstance(loaded, datasets.Dataset):
        raise DataError(f"{config.path}: a single dataset; expected a DatasetDict with splits "
                        f"'{config.train_split}' and '{config.test_split}' (data.path)")
    return {name: _dataset_split(config, loaded, split, f"data.{name}_split")
            for name, split in (("train", config.train_split), ("test", config.test_split))}


def _dataset_split(config: HFDiskData, loaded: Any, split: str, key: str) -> LabelledImages:
    import datasets

    where = f"{config.path} split '{split}'"
    if split not in loaded:
        raise DataError(f"{where}: no such split ({key}); the dataset has {', '.join(map(repr, loaded))}")
    table = loaded[split]
    for column in (config.image_column, config.label_column):
        if column not in table.column_names:
            raise DataError(f"{where}: no column '{column}'; it has {', '.join(map(repr, table.column_names))}")
    feature = table.features[config.image_column]
    if not isinstance(feature, datasets.Image):
        raise DataError(f"{where}: column '{config.image_column}' holds {feature}, expected images (data.image_column)")
    if table.num_rows == 0:
        raise DataError(f"{where}: the split has no rows")
    raw = table.cast_column(config.image_column, datasets.Image(decode=False))[config.image_column]
    label_feature = table.features[config.label_column]
    names = label_feature.names if isinstance(label_feature, datasets.ClassLabel) else None
    labels = tuple(label_name(value, names) for value in table[config.label_column])
    if "" in labels:
        raise DataError(f"{where} row {labels.index('')}: no label in column '{config.label_column}' (null or -1); "
                        "expected a class for every image")
    refs = tuple(_row_ref(f"{where} row {row} ('{config.image_column}')", value) for row, value in enumerate(raw))
    return LabelledImages(key, where, refs, labels)


def _row_ref(where: str, value: dict[str, Any] | None) -> ImageRef:
    """A dataset row's image: its stored bytes, else the file its path names."""
    if not value or (value.get("bytes") is None and not value.get("path")):
        return ImageRef(where, lambda: b"")
    if value.get("bytes") is not None:
        data = value["bytes"]
        return ImageRef(where, lambda: data)
    return ImageRef(f"{where}: {value['path']}", Path(value["path"]).read_bytes, Path(value["path"]))
