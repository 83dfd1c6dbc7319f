"""Image-file data sources (issue 18): folders per class, CSVs of paths, ``hf_disk`` image columns; the model's
image processor or plain resizing; preprocessing recorded for the bundle; content fingerprints; one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.config import HFDiskData
from edgekd.data.content_digest import image_data_digest
from edgekd.data.image_config import ImageCsvData, ImageFolderData
from edgekd.data.task_data import prepare_task_data
from edgekd.errors import ConfigError, DataError
from tests.image_sets import COLOURS, folder_items, write_csv, write_folder, write_hf_disk
from tests.reliability import assert_user_error, cli, write_yaml

CNN_TEACHER = {"arch": "cnn", "channels": [8, 16], "hidden": 16}
CNN_STUDENT = {"arch": "cnn", "channels": [8], "hidden": 16}


@pytest.fixture(scope="module")
def colour_sets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/ and test/ folders of three colour classes (mixed sizes, PNG and JPEG)."""
    root = tmp_path_factory.mktemp("colours")
    write_folder(root / "train", 24, seed=0)
    write_folder(root / "test", 8, seed=1)
    return root


def folder_data(root: Path, **extra: Any) -> dict[str, Any]:
    return {"source": "imagefolder", "train": str(root / "train"), "test": str(root / "test"), **extra}


def recipe_of(data: dict[str, Any], stages: list[dict[str, Any]], *, teacher: dict[str, Any] = CNN_TEACHER,
              student: dict[str, Any] = CNN_STUDENT) -> Recipe:
    return validate_model({"name": "images", "threads": 1, "data": data, "teacher": {"model": teacher},
                           "student": {"model": student}, "stages": stages}, Recipe, source="test")


def manifest_input(pre: dict[str, Any], path: Path) -> np.ndarray:
    """The model input an app makes of the image file at ``path`` by following a plain manifest's steps."""
    image = Image.open(path).convert("RGB").resize((pre["resize"]["width"], pre["resize"]["height"]),
                                                   Image.Resampling.BILINEAR)
    pixel = np.asarray(image, dtype=np.float64).transpose(2, 0, 1) * pre["byte_scale"]
    mean, std = np.array(pre["mean"])[:, None, None], np.array(pre["std"])[:, None, None]
    return ((pixel * pre["scale"] - mean) / std)[None]


def test_cnn_recipe_on_an_image_folder_learns_exports_and_bundles_its_preprocessing(colour_sets: Path,
                                                                                     tmp_path: Path) -> None:
    stages = [{"stage": "teacher", "epochs": 6, "lr": 0.01, "batch_size": 16},
              {"stage": "distill", "epochs": 8, "lr": 0.01, "batch_size": 16},
              {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 2, "runs": 10},
              {"stage": "bundle"}]
    recipe = recipe_of(folder_data(colour_sets), stages)
    result = edgekd.run(recipe, out=tmp_path / "run")
    teacher, student = (result.artifact.get(role).metrics["accuracy"] for role in ("teacher", "student"))
    assert teacher >= 0.85 and student >= 0.85, (teacher, student)  # chance: 1/3
    manifest = json.loads((result.run_dir / "bundle" / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    sizes = [Image.open(path).size for path, _ in folder_items(colour_sets / "train")]
    assert pre["processor"] is None and pre["mean_std_from"] == "training images"
    assert [pre["height"], pre["width"]] == [pre["resize"]["height"], pre["resize"]["width"]]
    assert (pre["width"], pre["height"]) in sizes and pre["channel_order"] == "RGB" and len(pre["std"]) == 3
    readme = (result.run_dir / "bundle" / "README.md").read_text()
    assert f"resize it (height {pre['height']}, width {pre['width']}) with bilinear resampling" in readme
    assert "floatArrayOf(" + ", ".join(f"{v!r}f" for v in pre["mean"]) in readme
    # following the manifest on a test file gives the exact tensor the model was evaluated on
    data = prepare_task_data(recipe.data, recipe.seed)
    first_test, _ = folder_items(colour_sets / "test")[0]
    np.testing.assert_allclose(manifest_input(pre, first_test)[0], data.test.images[0].numpy(), atol=1e-5)


@pytest.mark.parametrize("source", ["imagefolder", "image_csv", "hf_disk_classlabel", "hf_disk_strings",
                                    "hf_disk_paths"])
def test_every_image_source_gives_the_same_tensors_for_the_same_images(source: str, colour_sets: Path,
                                                                      tmp_path: Path) -> None:
    items = {split: folder_items(colour_sets / split) for split in ("train", "test")}
    held = round(len(items["train"]) * 0.15)
    expected = prepare_task_data(ImageFolderData(**folder_data(colour_sets)), 3)
    if source == "imagefolder":
        config: Any = ImageFolderData(**folder_data(colour_sets))
    elif source == "image_csv":
        config = ImageCsvData(source="image_csv", train=write_csv(colour_sets / "train.csv", items["train"]),
                              test=write_csv(colour_sets / "test.csv", items["test"]))
    else:
        path = write_hf_disk(tmp_path / "ds", items, class_label=source != "hf_disk_strings",
                             embed=source != "hf_disk_paths")
        config = HFDiskData(source="hf_disk", path=path, image_column="image", test_split="test",
                            val_examples=held)
    got = prepare_task_data(config, 3)
    assert got.class_names == tuple(sorted(COLOURS)) == expected.class_names
    assert got.signature == expected.signature and got.signature.preprocessing["mean_std_from"] == "training images"
    for split in ("train", "val", "test"):
        mine, theirs = getattr(got, split), getattr(expected, split)
        assert torch.equal(mine.images, theirs.images) and torch.equal(mine.labels, theirs.labels), split


@pytest.mark.parametrize("settings, shape", [
    ({"image_size": 8}, (3, 8, 8)),
    ({"image_size": [6, 9], "color": "L"}, (1, 6, 9)),
    ({"image_size": 5, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}, (3, 5, 5)),
])
def test_plain_settings_resize_convert_and_normalise_as_given(settings: dict[str, Any], shape: tuple[int, ...],
                                                              colour_sets: Path) -> None:
    data = prepare_task_data(ImageFolderData(**folder_data(colour_sets, **settings)), 0)
    pre = data.signature.preprocessing
    assert data.signature.image_shape == shape and pre["size"] == list(shape[1:])
    images = torch.cat([data.train.images, data.val.images])
    if "mean" in settings:
        assert pre["mean"] == settings["mean"] and pre["mean_std_from"] == "given"
        assert images.min() >= (0 - 0.5) / 0.25 - 1e-6 and images.max() <= (1 - 0.5) / 0.25 + 1e-6
    else:  # measured on the training split: it is standardised there
        per_channel = data.train.images.transpose(0, 1).reshape(shape[0], -1)
        np.testing.assert_allclose(per_channel.mean(1).numpy(), 0, atol=1e-4)
        np.testing.assert_allclose(per_channel.std(1, unbiased=False).numpy(), 1, atol=1e-3)


def save_hf_image_model(directory: Path, family: str) -> dict[str, Any]:
    """A tiny random ViT or ConvNeXt classifier and its image processor saved in ``directory``; the processor's
    expected size, mean and std."""
    import transformers

    mean, std = [0.4, 0.45, 0.5], [0.2, 0.25, 0.3]
    if family == "vit":
        config = transformers.ViTConfig(image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=32, num_labels=3)
        model: Any = transformers.ViTForImageClassification(config)
        processor: Any = transformers.ViTImageProcessor(size={"height": 16, "width": 16}, image_mean=mean,
                                                        image_std=std)
        size = [16, 16]
    else:
        config = transformers.ConvNextConfig(num_channels=3, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                                             num_labels=3)
        model = transformers.ConvNextForImageClassification(config)
        processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 24}, crop_pct=0.875,
                                                        image_mean=mean, image_std=std)
        size = [24, 24]
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return {"size": size, "mean": mean, "std": std, "processor": processor}


@pytest.mark.parametrize("family", ["vit", "convnext"])
def test_a_pretrained_image_model_s_processor_prepares_the_images(family: str, colour_sets: Path,
                                                                  tmp_path: Path) -> None:
    expected = save_hf_image_model(tmp_path / family, family)
    recipe = recipe_of(folder_data(colour_sets), [{"stage": "teacher", "epochs": 1}],
                       teacher={"arch": "hf", "pretrained": str(tmp_path / family)})
    assert recipe.data.image_processor == str(tmp_path / family)  # the default: the teacher's processor
    data = prepare_task_data(recipe.data, 0)
    pre = data.signature.preprocessing
    assert (pre["size"], pre["mean"], pre["std"]) == (expected["size"], expected["mean"], expected["std"])
    assert pre["processor"].startswith("ConvNext" if family == "convnext" else "ViT")
    assert (pre["crop"] is not None) == (family == "convnext")
    test_images = [Image.open(path).convert("RGB") for path, _ in folder_items(colour_sets / "test")]
    direct = expected["processor"](images=test_images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(data.test.images.numpy(), direct, atol=1e-6)


def test_an_hf_image_teacher_s_processor_is_recorded_in_the_bundle_manifest(colour_sets: Path,
                                                                          tmp_path: Path) -> None:
    expected = save_hf_image_model(tmp_path / "vit", "vit")
    stages = [{"stage": "teacher", "epochs": 2, "lr": 0.01, "batch_size": 16},
              {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 2, "runs": 10},
              {"stage": "bundle"}]
    recipe = recipe_of(folder_data(colour_sets), stages, teacher={"arch": "hf", "pretrained": str(tmp_path / "vit")})
    result = edgekd.run(recipe, out=tmp_path / "run")
    pre = json.loads((result.run_dir / "bundle" / "manifest.json").read_text())["preprocessing"]
    assert [pre["height"], pre["width"]] == expected["size"] and pre["processor"] == "ViTImageProcessor"
    assert (pre["mean"], pre["std"], pre["mean_std_from"]) == (expected["mean"], expected["std"], "image processor")
    assert pre["processor_config"]["image_mean"] == expected["mean"]
    readme = (result.run_dir / "bundle" / "README.md").read_text()
    assert "floatArrayOf(0.4f, 0.45f, 0.5f)" in readme and "resize it (height 16, width 16)" in readme


@pytest.mark.parametrize("model, size", [
    ({"arch": "hf", "config": {"model_type": "vit", "image_size": 20, "patch_size": 10, "hidden_size": 16,
                               "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}, 20),
    ({"arch": "cnn", "channels": [4]}, None),
])
def test_without_a_processor_the_hf_model_s_input_size_is_used(model: dict[str, Any], size: int | None,
                                                               colour_sets: Path) -> None:
    recipe = recipe_of(folder_data(colour_sets), [{"stage": "teacher", "epochs": 1}], student=model)
    assert recipe.data.image_processor is None and recipe.data.image_size == size


@pytest.mark.parametrize("data, fragment", [
    ({"image_processor": "DIR", "image_size": 8}, "image_processor decides size"),
    ({"mean": [0.5]}, "mean: 1 values for RGB images; expected 3"),
    ({"color": "L", "std": [0.5, 0.5, 0.5]}, "std: 3 values for L images; expected 1"),
])
def test_contradicting_image_settings_are_refused(data: dict[str, Any], fragment: str, colour_sets: Path) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        recipe_of(folder_data(colour_sets, **data), [{"stage": "teacher"}])


def test_image_settings_on_a_text_dataset_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image settings, but the dataset is read as text; set image_column"):
        validate_model({"source": "hf_disk", "path": str(tmp_path), "image_size": 8}, HFDiskData, source="test")


MUTATIONS = {
    "pixels": lambda root: Image.new("RGB", (12, 12), (1, 2, 3)).save(root / "train" / "red" / "000.png"),
    "relabel": lambda root: shutil.move(root / "train" / "red" / "001.jpg", root / "train" / "blue" / "001.jpg"),
    "added": lambda root: shutil.copy(root / "train" / "red" / "000.png", root / "train" / "red" / "new.png"),
    "removed": lambda root: (root / "test" / "green" / "000.png").unlink(),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_data_digest_follows_image_content_not_timestamps(mutation: str, tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_folder(tmp_path / split, 3)
    config = ImageFolderData(**folder_data(tmp_path))
    before = image_data_digest(config)
    touched = tmp_path / "train" / "red" / "000.png"
    assert touched.is_file()
    touched.write_bytes(touched.read_bytes())  # same bytes, new modification time
    assert image_data_digest(config) == before
    (tmp_path / "train" / "red" / "Thumbs.db").write_bytes(b"cache")  # files the reader skips are no content
    (tmp_path / "train" / ".DS_Store").write_bytes(b"finder")
    assert image_data_digest(config) == before
    MUTATIONS[mutation](tmp_path)
    assert image_data_digest(config) != before


def test_an_hf_disk_directory_naming_images_by_path_digests_those_images(tmp_path: Path) -> None:
    write_folder(tmp_path / "images", 3)
    items = folder_items(tmp_path / "images")
    config = HFDiskData(source="hf_disk", path=write_hf_disk(tmp_path / "ds", {"train": items, "test": items},
                                                             embed=False),
                        image_column="image", test_split="test")
    before = image_data_digest(config)
    outside = items[0][0]
    outside.write_bytes(outside.read_bytes())  # same bytes, new modification time
    assert image_data_digest(config) == before
    Image.new("RGB", (12, 12), (1, 2, 3)).save(outside)  # the dataset directory is untouched
    assert image_data_digest(config) != before


def test_a_changed_image_re_runs_the_stages_and_the_same_images_resume(tmp_path: Path) -> None:
    for split, seed in (("train", 0), ("test", 1)):
        write_folder(tmp_path / split, 6, seed=seed)
    recipe = recipe_of(folder_data(tmp_path), [{"stage": "teacher", "epochs": 1, "batch_size": 16},
                                               {"stage": "export", "target": "onnx-fp32"}])
    first = edgekd.run(recipe, out=tmp_path / "run")
    again = edgekd.run(recipe, out=tmp_path / "run")
    assert [s.skipped for s in again.stages] == [True, True]
    image = tmp_path / "train" / "red" / "002.png"
    Image.fromarray(np.full((12, 12, 3), 250, dtype=np.uint8)).save(image)
    changed = edgekd.run(recipe, out=tmp_path / "run")
    assert [s.skipped for s in changed.stages] == [False, False]
    assert changed.stages[0].fingerprint != first.stages[0].fingerprint


def test_images_in_sub_folders_of_a_class_folder_belong_to_that_class(tmp_path: Path) -> None:
    """A class folder's sub-folders (shots per day, per camera…) were refused as 'not an image file'; they are read
    as torchvision's ImageFolder reads them, hidden files and folders skipped at every depth."""
    flat, nested = tmp_path / "flat", tmp_path / "nested"
    for root in (flat, nested):
        for split in ("train", "test"):
            write_folder(root / split, 4, seed=len(split))
    for folder in sorted((nested / "train").iterdir()):  # the same images, half of them one or two levels down
        for i, image in enumerate(sorted(folder.iterdir())):
            if i % 2:
                target = folder / ("day 1" if i % 4 == 1 else "day 2/cam") / image.name
                target.parent.mkdir(parents=True, exist_ok=True)
                image.rename(target)
        (folder / ".DS_Store").write_text("finder")
        (folder / ".thumbnails").mkdir()
        (folder / ".thumbnails" / "notes.txt").write_text("not an image")
    settings = {"image_size": 8, "mean": [0.0] * 3, "std": [1.0] * 3}
    got = {name: prepare_task_data(ImageFolderData(**folder_data(root, **settings)), 0)
           for name, root in (("flat", flat), ("nested", nested))}
    assert got["nested"].class_names == got["flat"].class_names == tuple(sorted(COLOURS))

    def examples(data: Any, splits: tuple[str, ...]) -> list[tuple[int, float]]:
        """(label, pixel sum) of every image of ``splits``, sorted: the images whatever their order."""
        return sorted((int(label), round(float(image.sum()), 3)) for split in splits
                      for image, label in zip(getattr(data, split).images, getattr(data, split).labels, strict=True))

    for splits in (("train", "val"), ("test",)):  # the same images and labels, whatever the folders below a class
        assert examples(got["nested"], splits) == examples(got["flat"], splits)
    assert len(examples(got["nested"], ("train", "val"))) == 12


ERRORS = {
    "empty class folder": (lambda root: (root / "train" / "purple").mkdir(), "train/purple: empty class folder"),
    "non-image file": (lambda root: (root / "train" / "red" / "notes.txt").write_text("hi"),
                       "train/red/notes.txt: not an image file"),
    "corrupt png": (lambda root: (root / "train" / "green" / "000.png").write_bytes(b"\x89PNG not really"),
                    "train/green/000.png: not a readable image, the file is corrupt or not PNG/JPEG (no image format "
                    "PIL knows starts it)"),
    "empty file": (lambda root: (root / "train" / "green" / "000.png").write_bytes(b""),
                   "train/green/000.png: empty file (0 bytes); expected a PNG/JPEG image"),
    "truncated jpeg": (lambda root: (root / "test" / "blue" / "001.jpg").write_bytes(
        (root / "test" / "blue" / "001.jpg").read_bytes()[:200]), "test/blue/001.jpg: not a readable image"),
    "test class not in train": (lambda root: write_folder(root / "test", 1, colours={"purple": (90, 0, 90)}),
                                "class 'purple' (data.test) is not among the training classes"),
    "one class": (lambda root: [shutil.rmtree(root / "train" / name) for name in ("blue", "green")],
                  "1 class (red) in data.train; expected at least 2 classes"),
    "file beside class folders": (lambda root: (root / "train" / "labels.txt").write_text("x"),
                                  "train/labels.txt: a file beside the class folders"),
    "missing folder": (lambda root: shutil.rmtree(root / "test"), "directory not found"),
}
#: Faults found only by decoding the pixels, which the run does, not ``validate`` (which reads each header only).
PIXEL_FAULTS = ("truncated jpeg",)


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_image_folders_are_one_line_errors_naming_the_path(case: str, tmp_path: Path) -> None:
    for split in ("train", "test"):
        write_folder(tmp_path / split, 2)
    mutate, fragment = ERRORS[case]
    mutate(tmp_path)
    recipe = write_yaml(tmp_path / "recipe.yaml", {
        "name": "bad", "data": folder_data(tmp_path), "teacher": {"model": CNN_TEACHER},
        "student": {"model": CNN_STUDENT}, "stages": [{"stage": "teacher", "epochs": 1}]})
    if case not in PIXEL_FAULTS:
        assert_user_error(cli("validate", recipe), fragment)
    assert_user_error(cli("run", recipe, "--out", tmp_path / "run"), fragment, logged=True)


def test_bad_image_csvs_and_datasets_are_one_line_errors(tmp_path: Path) -> None:
    write_folder(tmp_path / "train", 2)
    items = folder_items(tmp_path / "train")
    good = write_csv(tmp_path / "good.csv", items)
    (tmp_path / "missing.csv").write_text("path,label\ntrain/red/000.png,red\nnowhere.png,red\n")
    (tmp_path / "columns.csv").write_text("file,label\nx.png,red\n")
    cases = [
        ({"source": "image_csv", "train": str(tmp_path / "missing.csv"), "test": str(good)},
         "missing.csv:3: image 'nowhere.png' not found"),
        ({"source": "image_csv", "train": str(tmp_path / "columns.csv"), "test": str(good)},
         "columns.csv: no column 'path' (data.train)"),
        ({"source": "hf_disk", "path": str(write_hf_disk(tmp_path / "ds", {"train": items, "test": items},
                                                         class_label=False)),
          "image_column": "label", "test_split": "test", "val_examples": 1},
         "column 'label' holds Value('string'), expected images (data.image_column)"),
        ({"source": "hf_disk", "path": str(tmp_path / "ds"), "image_column": "image", "test_split": "nope",
          "val_examples": 1}, "split 'nope': no such split (data.test_split)"),
    ]
    for data, fragment in cases:
        recipe = write_yaml(tmp_path / "recipe.yaml", {
            "name": "bad", "data": data, "teacher": {"model": CNN_TEACHER}, "student": {"model": CNN_STUDENT},
            "stages": [{"stage": "teacher", "epochs": 1}]})
        assert_user_error(cli("run", recipe, "--out", tmp_path / "run", "--fresh"), fragment, logged=True)


def test_images_of_any_pixel_format_keep_their_brightness(tmp_path: Path) -> None:
    """The same grey pictures saved as 8-bit grey, 16-bit grey, palette, RGBA PNGs and CMYK JPEGs become the
    same inputs (PIL's own conversion clips 16-bit grey at 255: every picture would turn white)."""
    rng = np.random.default_rng(0)
    pictures = {name: [np.clip(level + rng.normal(0, 20, (12, 12)), 0, 255) for _ in range(6)]
                for name, level in (("dark", 60.0), ("light", 190.0))}
    writers = {
        "grey8": lambda grey, path: Image.fromarray(grey.astype(np.uint8)).save(path.with_suffix(".png")),
        "grey16": lambda grey, path: Image.fromarray((grey * 257).astype(np.uint16)).save(path.with_suffix(".png")),
        "palette": lambda grey, path: Image.fromarray(grey.astype(np.uint8)).convert("P").save(
            path.with_suffix(".png")),
        "rgba": lambda grey, path: Image.fromarray(grey.astype(np.uint8)).convert("RGBA").save(
            path.with_suffix(".PNG")),
        "cmyk": lambda grey, path: Image.fromarray(grey.astype(np.uint8)).convert("CMYK").save(
            path.with_suffix(".JPG"), quality=100),
    }
    inputs = {}
    for kind, write in writers.items():
        for split in ("train", "test"):
            for name, greys in pictures.items():
                (tmp_path / kind / split / name).mkdir(parents=True)
                for i, grey in enumerate(greys):
                    write(grey, tmp_path / kind / split / name / f"{i}")
        data = ImageFolderData(**folder_data(tmp_path / kind, image_size=12, color="L", mean=[0.0], std=[1.0],
                                             val_fraction=0.25))
        inputs[kind] = prepare_task_data(data, 0).test.images
    reference = inputs.pop("grey8")
    assert 0.2 < reference[:6].mean() < 0.3 and 0.7 < reference[6:].mean() < 0.8
    for kind, images in inputs.items():
        np.testing.assert_allclose(images.numpy(), reference.numpy(), atol=0.02, err_msg=kind)


@pytest.mark.parametrize("kind", ["null", "class-label-minus-one"])
def test_an_image_dataset_row_without_a_label_is_one_line(kind: str, tmp_path: Path) -> None:
    """A null label, or a ClassLabel's -1 (``datasets``' mark of an unlabelled row), was a class 'None' or the last
    class; it is refused naming the row."""
    import datasets

    images = [Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)) for i in range(8)]
    label = datasets.ClassLabel(names=["a", "b"]) if kind != "null" else datasets.Value("string")
    labels: list[Any] = [0, 1] * 3 + [-1, 0] if kind != "null" else ["a", "b"] * 3 + [None, "a"]
    table = datasets.Dataset.from_dict({"image": images, "label": labels},
                                       features=datasets.Features({"image": datasets.Image(), "label": label}))
    datasets.DatasetDict({"train": table, "test": table}).save_to_disk(str(tmp_path / "ds"))
    config = HFDiskData(source="hf_disk", path=tmp_path / "ds", image_column="image", test_split="test",
                        val_examples=2)
    with pytest.raises(DataError, match=r"ds split 'train' row 6: no label in column 'label' \(null or -1\)"):
        prepare_task_data(config, 0)


@pytest.mark.parametrize("inside", ["train/runs", "train", "train/red/new"])
def test_a_run_directory_inside_a_data_folder_is_refused_before_anything_is_written(inside: str,
                                                                                   tmp_path: Path) -> None:
    """``--out`` in an image folder was created, then read back as a class folder ('run.json: not an image
    file'), leaving the run's files among the user's images; now refused naming --out and the data key."""
    for split in ("train", "test"):
        write_folder(tmp_path / "data" / split, 2)
    recipe = write_yaml(tmp_path / "recipe.yaml", {
        "name": "inside", "data": folder_data(tmp_path / "data", val_fraction=0.34), "teacher": {"model": CNN_TEACHER},
        "student": {"model": CNN_STUDENT}, "stages": [{"stage": "teacher", "epochs": 1}]})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "data" / inside
    assert_user_error(cli("run", recipe, "--out", out), f"inside the data directory {tmp_path / 'data' / 'train'} "
                                                        "(data.train)")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_an_image_with_more_pixels_than_pil_decodes_is_one_line(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """PIL refuses images over twice ``MAX_IMAGE_PIXELS`` (a decompression bomb) with an exception of its own,
    which was an 'internal error'; the limit is lowered here so a 60 × 60 picture stands for a 14,000² scan."""
    for split in ("train", "test"):
        write_folder(tmp_path / split, 2)
    Image.new("RGB", (60, 60)).save(tmp_path / "train" / "red" / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    recipe = write_yaml(tmp_path / "recipe.yaml", {
        "name": "bomb", "data": folder_data(tmp_path), "teacher": {"model": CNN_TEACHER},
        "student": {"model": CNN_STUDENT}, "stages": [{"stage": "teacher", "epochs": 1}]})
    assert_user_error(cli("run", recipe, "--out", tmp_path / "run"), "train/red/huge.png: too many pixels to decode",
                      "resize the image", logged=True)


def test_an_image_csv_in_utf16_is_read_and_one_in_latin1_is_one_line(colour_sets: Path) -> None:
    """An image CSV saved as UTF-16 or Latin-1 stopped edgekd validate with 'internal error: UnicodeDecodeError'."""
    items = {split: folder_items(colour_sets / split) for split in ("train", "test")}
    plain = ImageCsvData(source="image_csv", train=write_csv(colour_sets / "train.csv", items["train"]),
                         test=write_csv(colour_sets / "test.csv", items["test"]))
    expected = prepare_task_data(plain, 3)
    wide = colour_sets / "train-utf16.csv"
    wide.write_bytes(plain.train.read_text(encoding="utf-8").encode("utf-16"))
    got = prepare_task_data(plain.model_copy(update={"train": wide}), 3)
    assert torch.equal(got.train.images, expected.train.images) and got.class_names == expected.class_names
    narrow = colour_sets / "train-latin1.csv"
    narrow.write_bytes(plain.train.read_bytes() + "caf\u00e9.png,red\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train-latin1.csv: not UTF-8 text \(.*\) \(data.train\); save the file as "
                                        r"UTF-8"):
        prepare_task_data(plain.model_copy(update={"train": narrow}), 3)


def test_digits_batches_are_row_major_so_a_view_after_a_convolution_works() -> None:
    """numpy's split left the one channel with stride 1, which torch reads as channels-last: a convolution then
    returned channels-last activations and a model's ``x.view(x.size(0), -1)`` failed in the teacher stage."""
    from edgekd.data.config import SklearnData

    data = prepare_task_data(SklearnData(source="sklearn", name="digits"), 0)
    conv = torch.nn.Conv2d(1, 4, 3, padding=1)
    for split in (data.train, data.val, data.test):
        _, inputs, _ = next(split.batches(32, shuffle=True, generator=torch.Generator().manual_seed(0)))
        assert inputs["input"].stride() == (64, 64, 8, 1)
        assert conv(inputs["input"]).view(32, -1).shape == (32, 256)


def test_an_image_csv_naming_a_read_column_twice_is_refused(tmp_path: Path) -> None:
    """'path,label,label' was read silently with the last 'label' (the text reader took the first)."""
    write_folder(tmp_path / "train", 2)
    rows = "".join(f"{path},{label},{label}\n" for path, label in folder_items(tmp_path / "train"))
    (tmp_path / "dup.csv").write_text("path,label,label\n" + rows)
    with pytest.raises(DataError, match=r"dup.csv: the header names column 'label' 2 times \(columns 2, 3\) "
                                        r"\(data.train\); expected each column once"):
        edgekd.validate(recipe_of({"source": "image_csv", "train": str(tmp_path / "dup.csv"),
                                   "test": str(tmp_path / "dup.csv")}, [{"stage": "teacher", "epochs": 1}]))


def test_an_image_csv_label_written_as_a_missing_value_marker_is_no_label(tmp_path: Path) -> None:
    """An image CSV's 'N/A' label became a class of its own."""
    write_folder(tmp_path / "train", 2)
    items = folder_items(tmp_path / "train")
    (tmp_path / "na.csv").write_text("path,label\n" + "".join(f"{path},{label}\n" for path, label in items[:-1])
                                     + f"{items[-1][0]},N/A\n")
    with pytest.raises(DataError, match=rf"na.csv:{len(items) + 1}: no label \('N/A', a missing-value marker\); "
                                        "expected an image path and its class label"):
        edgekd.validate(recipe_of({"source": "image_csv", "train": str(tmp_path / "na.csv"),
                                   "test": str(tmp_path / "na.csv")}, [{"stage": "teacher", "epochs": 1}]))


def test_system_files_beside_images_are_skipped(tmp_path: Path) -> None:
    """Thumbs.db (Windows' thumbnail cache) in a class folder was refused as 'not an image file'; desktop.ini,
    AppleDouble ._ files and a zip's __MACOSX folder are no images of the user's either."""
    from edgekd.data.image_data import checked_splits

    write_folder(tmp_path / "train", 2)
    images = [str(path) for path, _ in folder_items(tmp_path / "train")]
    for folder in (tmp_path / "train").iterdir():
        (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 cache")
        (folder / "desktop.ini").write_text("[.ShellClassInfo]")
        (folder / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "train" / "__MACOSX" / "red").mkdir(parents=True)
    (tmp_path / "train" / "__MACOSX" / "red" / "._000.png").write_bytes(b"\x00\x05\x16\x07")
    (tmp_path / "train" / "Desktop.ini").write_text("[.ShellClassInfo]")
    splits, classes = checked_splits(ImageFolderData(source="imagefolder", train=tmp_path / "train",
                                                     test=tmp_path / "train"))
    assert classes == tuple(sorted(COLOURS))
    assert [ref.where for ref in splits["train"].images] == images and len(images) == 2 * len(COLOURS)


def test_validate_reads_each_image_s_header_and_names_an_empty_file(tmp_path: Path) -> None:
    """A zero-byte or corrupt image passed validate and failed at run, the empty one said to be of a format 'no
    image format PIL knows starts it'; a dataset's stored bytes are checked the same way."""
    from edgekd.data.image_files import ImageRef, check_image, open_image

    for data, fragment in ((b"", "empty file (0 bytes); expected a PNG/JPEG image"),
                           (b"GIF89 not really", "not a readable image, the file is corrupt or not PNG/JPEG")):
        file = tmp_path / "image.png"
        file.write_bytes(data)
        for ref in (ImageRef("row 3", lambda data=data: data), ImageRef("row 3", file.read_bytes, file)):
            for read in (check_image, open_image):
                with pytest.raises(DataError, match=rf"^row 3: {re.escape(fragment)}"):
                    read(ref)
    write_folder(tmp_path / "train", 2)
    (tmp_path / "train" / "red" / "junk.png").write_bytes(b"<html>not an image</html>")
    data = {"source": "imagefolder", "train": str(tmp_path / "train"), "test": str(tmp_path / "train")}
    with pytest.raises(DataError, match=r"train/red/junk.png: not a readable image, the file is corrupt"):
        edgekd.validate(recipe_of(data, [{"stage": "teacher", "epochs": 1}]))


def test_a_file_where_a_folder_is_expected_or_the_reverse_says_what_it_is(tmp_path: Path) -> None:
    """An image CSV's train naming a directory said 'file not found', an image folder naming a file 'not a
    directory'."""
    write_folder(tmp_path / "train", 2)
    (tmp_path / "afile").write_text("x")
    cases = [({"source": "image_csv", "train": str(tmp_path / "train"), "test": str(tmp_path / "train")},
              "train: a directory, not a CSV file (data.train); expected a CSV of image paths and labels"),
             ({"source": "imagefolder", "train": str(tmp_path / "afile"), "test": str(tmp_path / "train")},
              "afile: a file, not a directory (data.train); expected a folder with one sub-folder per class")]
    for data, fragment in cases:
        with pytest.raises(DataError, match=re.escape(fragment)):
            edgekd.validate(recipe_of(data, [{"stage": "teacher", "epochs": 1}]))
