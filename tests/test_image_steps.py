"""The bundle's image steps for a processor that resizes by its shortest edge are exact: an app following them
(with PIL and numpy only) makes the input the Hugging Face processor made in training, for images of any aspect.
ConvNeXt's crop_pct read 'resize it (shortest_edge 32)' and then 'resize the shortest edge to shortest_edge /
crop_pct', two resizes where the processor makes one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekd.data.image_config import ImagePrep
from edgekd.data.image_prep import make_preparer
from edgekd.export.image_manifest import preprocessing_steps

RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _processor(kind: str, directory: Path) -> str:
    from transformers import CLIPImageProcessor, ConvNextImageProcessor

    if kind == "convnext":
        ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(directory)
    else:
        CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 24, "width": 24}).save_pretrained(directory)
    return str(directory)


def _as_an_app_does(image: Image.Image, record: dict, steps: list[str]) -> np.ndarray:
    """The steps' numbers applied with PIL: shortest edge to N, the other side in proportion, then the crop."""
    edge = next(int(s.split("shortest edge is ")[1].split()[0]) for s in steps if "shortest edge is" in s)
    crop = int(next(s for s in steps if s.startswith("centre-crop")).split("to ")[1].split(" ×")[0])
    width, height = image.size
    size = (edge, int(edge * height / width)) if width <= height else (int(edge * width / height), edge)
    resized = image.convert("RGB").resize(size, RESAMPLE[record["resize"]["resample"]])
    left, top = (size[0] - crop) // 2, (size[1] - crop) // 2
    pixels = np.asarray(resized.crop((left, top, left + crop, top + crop)), dtype=np.float32).transpose(2, 0, 1)
    mean, std = np.array(record["mean"])[:, None, None], np.array(record["std"])[:, None, None]
    return (pixels * record["rescale_factor"] - mean) / std


@pytest.mark.parametrize("kind", ["convnext", "clip"])
def test_an_app_following_the_steps_makes_the_processors_input(kind: str, tmp_path: Path) -> None:
    preparer = make_preparer(ImagePrep(image_processor=_processor(kind, tmp_path / kind)), [])
    record = preparer.record
    steps = preprocessing_steps(record)
    assert sum("resize" in step for step in steps) == 1, steps
    rng = np.random.default_rng(0)
    for width, height in ((40, 40), (57, 41), (33, 90), (120, 64)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = preparer.processor(images=[image], return_tensors="np")["pixel_values"][0]
        assert np.abs(_as_an_app_does(image, record, steps) - expected).max() < 1e-5, (kind, width, height)
