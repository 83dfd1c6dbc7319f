"""An image bundle's README Python example classifies image files: saved as classify.py and run on the test image
files, it prints the labels the manifest's test accuracy counts, with the probabilities the model gives on the
tensors training made. It fed zeros before (or, for digits, only the manifest's example bitmap): an app developer
copying it learnt nothing about colour conversion, resizing, cropping or normalisation.

Covered: edgekd's own CNN, ResNet and MobileNetV2 on an image folder (plain resize, training images' mean/std), a
Hugging Face ViT (processor: fixed size) and ConvNeXt (processor: shortest edge / crop_pct, then a centre crop) on
images of mixed aspect ratios, and scikit-learn digits (8×8 grey, 0..16) written out as 8-bit PNG files; the
README's function alone against CLIP's crop_size crop, ConvNeXt's square warp at 384 px and an NHWC model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.task_data import prepare_task_data
from edgekd.export.readme_image import SCRIPT
from tests.image_sets import folder_items, write_folder
from tests.test_image_data import save_hf_image_model

CNN = {"arch": "cnn", "channels": [8], "hidden": 16}
TAIL = [{"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 1, "runs": 10},
        {"stage": "bundle"}]


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and test/ folders of three noisy colour classes (mixed sizes and aspect ratios, PNG and JPEG)."""
    root = tmp_path_factory.mktemp("colours")
    write_folder(root / "train", 16, seed=0, noise=90.0)
    write_folder(root / "test", 8, seed=1, noise=90.0)
    return root


def _run(tmp_path: Path, data: dict[str, Any], teacher: dict[str, Any], stages: list[dict[str, Any]]) -> Recipe:
    recipe = validate_model({"name": "readme-images", "seed": 0, "threads": 1, "data": data,
                             "teacher": {"model": teacher}, "student": {"model": CNN}, "stages": [*stages, *TAIL]},
                            Recipe, source="test")
    edgekd.run(recipe, out=tmp_path / "run")
    return recipe


def _readme_answers(bundle: Path, images: list[Path]) -> list[tuple[str, float]]:
    """The README's Python example saved as classify.py in the bundle and run on ``images``: (label, probability)."""
    readme = (bundle / "README.md").read_text()
    assert f"python {SCRIPT} IMAGE" in readme
    (bundle / SCRIPT).write_text(readme.split("```python\n", 1)[1].split("```", 1)[0])
    done = subprocess.run([sys.executable, SCRIPT, *map(str, images)], cwd=bundle, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert len(lines) == len(images), done.stdout
    return [(label, float(probability)) for label, probability in (line.rsplit(" ", 1) for line in lines)]


def _assert_reproduces_the_manifest(bundle: Path, answers: list[tuple[str, float]], gold: list[str],
                                    tensors: np.ndarray, *, atol: float) -> None:
    """The printed labels score the manifest's test accuracy, and each printed probability is the bundled model's
    on the tensor training made of that image (so the example prepares exactly as training did)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    accuracy = np.mean([label == want for (label, _), want in zip(answers, gold, strict=True)])
    assert accuracy == pytest.approx(manifest["accuracy"]["test"], abs=1e-9)
    session = ort.InferenceSession(str(bundle / manifest["model"]["file"]), providers=["CPUExecutionProvider"])
    logits = session.run(None, {manifest["inputs"][0]["name"]: tensors.astype(np.float32)})[0]
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    labels = [manifest["labels"][i] for i in probabilities.argmax(1)]
    assert [label for label, _ in answers] == labels
    np.testing.assert_allclose([p for _, p in answers], probabilities.max(1), atol=atol)
    assert len(set(answers)) > 1  # answers of the images, not of one constant input (a sure model: labels differ)


@pytest.mark.parametrize("teacher", [
    {"arch": "cnn", "channels": [8], "hidden": 16},
    {"arch": "resnet", "depths": [1, 1], "widths": [8, 12], "stem": 8},
    {"arch": "mobilenet_v2", "width_multiplier": 0.25, "dropout": 0.0},
], ids=lambda teacher: teacher["arch"])
def test_the_python_example_classifies_image_files_as_the_model_was_tested(teacher: dict[str, Any], colour_files: Path,
                                                                           tmp_path: Path) -> None:
    data = {"source": "imagefolder", "train": str(colour_files / "train"), "test": str(colour_files / "test")}
    recipe = _run(tmp_path, data, teacher, [{"stage": "teacher", "epochs": 2, "lr": 0.005, "batch_size": 16}])
    assert json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())["name"].endswith("teacher")
    items = folder_items(colour_files / "test")
    bundle = tmp_path / "run" / "bundle"
    answers = _readme_answers(bundle, [path for path, _ in items])
    tensors = prepare_task_data(recipe.data, recipe.seed).test.images.numpy()
    _assert_reproduces_the_manifest(bundle, answers, [label for _, label in items], tensors, atol=1e-4)


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_the_python_example_runs_a_hugging_face_image_processor_s_steps(family: str, colour_files: Path,
                                                                         tmp_path: Path) -> None:
    """ConvNeXt resizes the shortest edge to 24 / 0.875 (the other side in proportion) and centre-crops 24 × 24;
    the test images are 10×12 ... 12×14, so every aspect ratio takes the proportional branch."""
    save_hf_image_model(tmp_path / family, family)
    data = {"source": "imagefolder", "train": str(colour_files / "train"), "test": str(colour_files / "test")}
    recipe = _run(tmp_path, data, {"arch": "hf", "pretrained": str(tmp_path / family)},
                  [{"stage": "teacher", "epochs": 2, "lr": 0.01, "batch_size": 16}])
    assert recipe.data.image_processor == str(tmp_path / family)
    items = folder_items(colour_files / "test")
    bundle = tmp_path / "run" / "bundle"
    code = (bundle / "README.md").read_text().split("```python\n", 1)[1]
    assert ("new_short, new_long = 27" in code) == (family == "convnext")  # int(24 / 0.875)
    answers = _readme_answers(bundle, [path for path, _ in items])
    tensors = prepare_task_data(recipe.data, recipe.seed).test.images.numpy()
    _assert_reproduces_the_manifest(bundle, answers, [label for _, label in items], tensors, atol=1e-4)


def test_the_python_example_classifies_digits_png_files_and_its_example_bitmap(tmp_path: Path) -> None:
    """Digits are 0..16 counts: as 8-bit files (rounded to 0..255) the example multiplies by byte_scale; a rounded
    byte moves a pixel by at most 1/510 of its range, so a label may differ only where the model is that close."""
    data = {"source": "sklearn", "name": "digits", "val_fraction": 0.15, "test_fraction": 0.25}
    recipe = _run(tmp_path, data, {"arch": "cnn", "channels": [16, 32], "hidden": 32},
                  [{"stage": "teacher", "epochs": 4, "batch_size": 64, "lr": 0.004}])
    test = prepare_task_data(recipe.data, recipe.seed).test
    bundle = tmp_path / "run" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = []
    for index, image in enumerate(test.images.numpy()):
        files.append(tmp_path / "png" / f"{index:04d}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(np.rint(image[0] * 255).astype(np.uint8)).save(files[-1])
    answers = _readme_answers(bundle, files)
    gold = [manifest["labels"][int(label)] for label in test.labels]
    right = sum(label == want for (label, _), want in zip(answers, gold, strict=True))
    assert abs(right / len(gold) - manifest["accuracy"]["test"]) <= 1 / len(gold)
    # without an image it answers the manifest's example bitmap, with the manifest's logits
    done = subprocess.run([sys.executable, SCRIPT], cwd=bundle, capture_output=True, text=True, check=True)
    label_line, logits_line = done.stdout.splitlines()
    example = manifest["preprocessing"]["example"]
    assert label_line.split(" ")[0] == example["label"]
    np.testing.assert_allclose([float(v) for v in logits_line.split()], example["logits"], atol=1e-3)
    # an image of another size: the model has no resize step, so one line says what it takes
    Image.new("L", (9, 8)).save(tmp_path / "wide.png")
    done = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "wide.png")], cwd=bundle, capture_output=True,
                          text=True)
    assert done.returncode == 1 and done.stderr.strip() == ("the model takes 8×8 images (width×height), this one is "
                                                     "9×8: it has no resize step")



def _model_input_of_the_readme(manifest: dict[str, Any], directory: Path) -> Any:
    """The README's ``model_input`` for ``manifest``: its code up to the loop, run in ``directory`` beside the
    manifest and a real ONNX model of the input's shape (an identity graph)."""
    import onnx
    from onnx import TensorProto, helper

    from edgekd.export.bundle_readme import render_readme

    shape = manifest["inputs"][0]["shape"]
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "identity",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), directory / "model.onnx")
    (directory / "manifest.json").write_text(json.dumps(manifest))
    code = render_readme(manifest).split("```python\n", 1)[1].split("\nif len(sys.argv)", 1)[0]
    namespace: dict[str, Any] = {}
    here = Path.cwd()
    os.chdir(directory)
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    finally:
        os.chdir(here)
    return namespace["model_input"]


def _processor_manifest(record: dict[str, Any], *, layout: str = "NCHW") -> dict[str, Any]:
    from edgekd.export.image_manifest import image_file_preprocessing
    from tests.test_bundle import _manifest

    height, width = record["size"]
    shape = [1, 3, height, width] if layout == "NCHW" else [1, height, width, 3]
    pre = {**image_file_preprocessing(record, [{"shape": [1, 3, height, width]}]), "layout": layout}
    return {**_manifest(), "preprocessing": pre, "labels": ["a"],
            "model": {**_manifest()["model"], "file": "model.onnx"},
            "inputs": [{"name": "input", "dtype": "float32", "shape": shape}]}


@pytest.mark.parametrize("kind", ["clip", "convnext-384", "clip-nhwc", "mobilevit-bgr"])
def test_the_readme_s_model_input_is_the_processor_s_for_other_resizes_and_layouts(kind: str, tmp_path: Path) -> None:
    """A shortest-edge resize then a crop_size crop (CLIP), ConvNeXt's square warp at 384 px and over (no crop), and a
    model taking NHWC, and MobileViT's processor feeding channels B, G, R without normalising (its settings still
    list a mean and std; the manifest said R, G, B with them): the README's function makes the processor's input of
    images of several aspect ratios."""
    from transformers import CLIPImageProcessor, ConvNextImageProcessor, MobileViTImageProcessor

    from edgekd.data.image_config import ImagePrep
    from edgekd.data.image_prep import make_preparer

    if kind == "mobilevit-bgr":
        MobileViTImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 24, "width": 20},
                                do_flip_channel_order=True).save_pretrained(tmp_path / "p")
    elif kind == "convnext-384":
        ConvNextImageProcessor(size={"shortest_edge": 384}, crop_pct=0.875).save_pretrained(tmp_path / "p")
    else:
        CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 24, "width": 20}).save_pretrained(
            tmp_path / "p")
    preparer = make_preparer(ImagePrep(image_processor=str(tmp_path / "p")), [])
    nhwc = kind.endswith("nhwc")
    if kind == "mobilevit-bgr":
        assert preparer.record["channel_order"] == "BGR"
    model_input = _model_input_of_the_readme(_processor_manifest(preparer.record, layout="NHWC" if nhwc else "NCHW"),
                                             tmp_path)
    rng = np.random.default_rng(0)
    for width, height in ((40, 40), (57, 41), (33, 90)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        expected = preparer([image])
        got = model_input(image)
        np.testing.assert_allclose(got.transpose(0, 3, 1, 2) if nhwc else got, expected, atol=1e-5)
