"""A one-channel Hugging Face image model (``num_channels: 1``) with its image processor (one mean, one std).

Images went to the processor converted to RGB, whatever the model took: its one-channel normalisation failed
on three channels ("mean must have 3 elements", an internal error as the teacher stage began). A processor
normalising one channel is a grey model's: images are converted to grey for it, and the bundle says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.image_config import ImagePrep
from edgekd.data.image_prep import make_preparer
from tests.image_sets import write_folder

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning",
                                        "ignore::UserWarning")


def _grey_vit(directory: Path) -> Path:
    torch.manual_seed(0)
    config = ViTConfig(image_size=16, patch_size=4, num_channels=1, hidden_size=24, num_hidden_layers=1,
                       num_attention_heads=3, intermediate_size=37, num_labels=3)
    ViTForImageClassification(config).save_pretrained(directory)
    ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=[0.4], image_std=[0.2]).save_pretrained(directory)
    return directory


def test_a_one_channel_processor_is_given_grey_images(tmp_path: Path) -> None:
    preparer = make_preparer(ImagePrep(image_processor=str(_grey_vit(tmp_path / "vit"))), [])
    assert (preparer.record["color"], preparer.record["mean"], preparer.shape) == ("L", [0.4], (1, 16, 16))
    colour = Image.new("RGB", (30, 20), (200, 100, 50))
    grey = np.asarray(colour.convert("L").resize((16, 16)), dtype=np.float64)
    np.testing.assert_allclose(preparer([colour])[0, 0], (grey / 255 - 0.4) / 0.2, atol=1e-5)


def test_a_one_channel_checkpoint_trains_exports_and_bundles_on_colour_files(tmp_path: Path) -> None:
    write_folder(tmp_path / "images" / "train", 12, seed=0)
    write_folder(tmp_path / "images" / "test", 6, seed=1)
    data = {"source": "imagefolder", "train": str(tmp_path / "images" / "train"),
            "test": str(tmp_path / "images" / "test"), "val_fraction": 0.2}
    recipe = validate_model({
        "name": "grey-vit", "seed": 0, "threads": 1, "data": data,
        "teacher": {"model": {"arch": "hf", "pretrained": str(_grey_vit(tmp_path / "vit"))}},
        "student": {"model": {"arch": "cnn", "channels": [8], "hidden": 16}},
        "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 8}, {"stage": "distill", "epochs": 1,
                                                                          "batch_size": 8},
                   {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 1, "runs": 10},
                   {"stage": "bundle"}]}, Recipe, source="test")
    result = edgekd.run(recipe, out=tmp_path / "run")
    teacher = result.artifact.models["teacher"]
    assert teacher.metrics["parity_max_abs_diff"] < 1e-4
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    assert (pre["channels"], pre["channel_order"], pre["color"]) == (1, "L", "grayscale (one channel)")
