"""A user's export preset named by a path relative to the recipe is read beside the recipe, as its device profile,
data and weights are, wherever edgekd is started from (it was looked up in the working directory: 'file not found'
from any other directory, or another file of that name used)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from tests.reliability import cli, one_torch_thread, tiny_recipe, write_yaml


def _preset(path: Path, opset: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_yaml(path, {"name": path.stem, "format": "onnx", "opset": opset, "optimization_level": "basic"})


def test_an_export_preset_beside_the_recipe_is_found_from_another_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    _preset(project / "presets" / "opset15.yaml", 15)
    _preset(elsewhere / "presets" / "opset15.yaml", 14)
    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher", "export"))
    recipe["stages"][1]["target"] = "presets/opset15.yaml"
    path = write_yaml(project / "recipe.yaml", recipe)
    monkeypatch.chdir(elsewhere)  # holds a preset of the same relative name: the recipe's own must win
    assert cli("validate", path).exit_code == 0
    with one_torch_thread():
        outcome = cli("run", path, "--out", tmp_path / "run", "-q")
    assert outcome.exit_code == 0, outcome.output
    model = onnx.load(str(tmp_path / "run" / "02-export" / "teacher.onnx"))
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [15]


def test_a_preset_missing_beside_the_recipe_and_here_is_one_line_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher", "export"))
    recipe["stages"][1]["target"] = "presets/missing.yaml"
    path = write_yaml(tmp_path / "recipe.yaml", recipe)
    monkeypatch.chdir(tmp_path)
    outcome = cli("validate", path)
    assert outcome.exit_code == 2 and "stages[1].target: presets/missing.yaml: file not found" in outcome.output


def test_checkpoints_named_beside_the_recipe_are_read_there_from_another_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``pretrained: my-vit`` beside the recipe: the teacher, and the image processor it ships (the default
    preprocessing), come from there; a directory of the same name where edgekd is started is not read."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    from edgekd.config.recipe import load_recipe
    from tests.test_hf_image_teacher_search import VIT

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    ViTForImageClassification(ViTConfig(**VIT)).save_pretrained(project / "my-vit")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(project / "my-vit")
    (elsewhere / "my-vit").mkdir(parents=True)  # no checkpoint: read, it would refuse the recipe
    for split in ("train", "test"):
        for name in ("a", "b"):
            (project / split / name).mkdir(parents=True)
    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher",))
    recipe["data"] = {"source": "imagefolder", "train": "train", "test": "test"}
    recipe["teacher"]["model"] = {"arch": "hf", "pretrained": "my-vit"}
    recipe.pop("tokenizer", None)
    path = write_yaml(project / "recipe.yaml", recipe)
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(path)
    assert loaded.teacher.model.pretrained == str(project / "my-vit")
    assert loaded.data.image_processor == str(project / "my-vit")  # the default found the processor there
    assert load_recipe(path) == loaded
