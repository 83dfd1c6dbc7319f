"""Small generated image sets for the image-file source tests: folders per class, CSVs and datasets dirs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

#: Classes told apart by colour (a learnable set): name → mean RGB.
COLOURS = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40)}
#: Image sizes cycled through (mixed sizes are resized), and formats.
SIZES = ((10, 12), (11, 12), (12, 12), (12, 14))
FORMATS = ("png", "jpg")


def write_folder(root: Path, per_class: int, *, seed: int = 0, colours: dict[str, tuple[int, int, int]] = COLOURS,
                 noise: float = 45.0) -> Path:
    """``root/<class>/<i>.png|jpg``: noisy images of each class's colour in mixed sizes and formats."""
    rng = np.random.default_rng(seed)
    for name, rgb in colours.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            height, width = SIZES[index % len(SIZES)]
            pixels = np.clip(np.array(rgb) + rng.normal(0, noise, (height, width, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{index:03d}.{FORMATS[index % len(FORMATS)]}")
    return root


def folder_items(root: Path) -> list[tuple[Path, str]]:
    """The (image path, class) pairs of a folder per class, in the order the imagefolder source reads them."""
    return [(path, folder.name) for folder in sorted(root.iterdir()) for path in sorted(folder.iterdir())]


def write_csv(path: Path, items: list[tuple[Path, str]]) -> Path:
    """A CSV of image paths (relative to the CSV's folder) and labels."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows((image.relative_to(path.parent).as_posix(), label) for image, label in items)
    return path


def write_hf_disk(path: Path, splits: dict[str, list[tuple[Path, str]]], *, class_label: bool = True,
                  embed: bool = True) -> Path:
    """A ``save_to_disk`` DatasetDict with an ``image`` column (Image feature) and a ``label`` column.

    ``embed=False`` leaves each row only its image's absolute path, as directories written by older
    ``datasets`` releases (before ``save_to_disk`` embedded local files) do.
    """
    import datasets

    names = sorted({label for items in splits.values() for _, label in items})
    features = datasets.Features({
        "image": datasets.Image(),
        "label": datasets.ClassLabel(names=names) if class_label else datasets.Value("string"),
    })
    built = {split: datasets.Dataset.from_dict(
        {"image": [str(image) for image, _ in items],
         "label": [names.index(label) if class_label else label for _, label in items]}, features=features)
        for split, items in splits.items()}
    datasets.DatasetDict(built).save_to_disk(str(path))  # embeds the images' bytes: the directory stands alone
    if not embed:
        for split, items in splits.items():
            _keep_paths_only(path / split, [image.resolve() for image, _ in items])
    return path


def _keep_paths_only(split_dir: Path, images: list[Path]) -> None:
    """Rewrite a saved split's Arrow shard so its ``image`` column holds paths and no bytes."""
    import pyarrow as pa

    (shard,) = split_dir.glob("data-*.arrow")
    table = pa.ipc.open_stream(pa.BufferReader(shard.read_bytes())).read_all()  # in memory: the file is rewritten
    column = table.schema.get_field_index("image")
    paths = pa.StructArray.from_arrays([pa.nulls(len(images), pa.binary()), pa.array(map(str, images))],
                                       names=["bytes", "path"])
    table = table.set_column(column, table.schema.field(column), paths)
    with pa.OSFile(str(shard), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
