"""Malformed recipes fail with one line naming the file and key, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from tests.conftest import demo_recipe_dict

runner = CliRunner()


def _validate(path: Path):
    return runner.invoke(app, ["validate", str(path)])


def _assert_one_line_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1, text
    for fragment in fragments:
        assert fragment in text, text


def test_builtin_demo_recipe_validates() -> None:
    result = runner.invoke(app, ["validate", "demo-digits"])
    assert result.exit_code == 0, result.output
    stages = ", ".join(stage["stage"] for stage in demo_recipe_dict()["stages"])
    assert "ok" in result.output and stages in " ".join(result.output.split())


def test_unknown_key_is_named_with_suggestion(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["stages"][1]["losses"][0]["tempreature"] = 2.0
    path = write_recipe(recipe)
    _assert_one_line_error(_validate(path), str(path), "stages[1].losses[0].tempreature", "did you mean 'temperature'")


def test_wrong_type_names_key_and_value(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["stages"][0]["epochs"] = "many"
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[0].epochs", "valid integer", "'many'")


@pytest.mark.parametrize(("key_path", "value", "expected"), [
    ("stages[1].losses[0].temperature", -1.0, "greater than 0"),
    ("stages[1].losses[0].alpha", 1.5, "less than or equal to 1"),
    ("stages[0].epochs", 0, "greater than 0"),
    ("stages[0].epochs", 99999999999999999999999, "less than or equal to 100000"),
    ("stages[1].warmup_ratio", 1.0, "less than 1"),
])
def test_out_of_range_values(write_recipe, key_path: str, value: float, expected: str) -> None:
    recipe = demo_recipe_dict()
    _set(recipe, key_path, value)
    _assert_one_line_error(_validate(write_recipe(recipe)), key_path, expected)


def _set(tree: dict, key_path: str, value: object) -> None:
    """Set ``tree`` at a path written like the error messages (``stages[1].losses[0].alpha``)."""
    parts = [int(p) if p.isdigit() else p for p in key_path.replace("[", ".").replace("]", "").split(".")]
    for part in parts[:-1]:
        tree = tree[part]
    tree[parts[-1]] = value


def test_a_name_of_the_wrong_form_is_told_in_words_not_as_a_regular_expression(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["name"] = "my run"
    _assert_one_line_error(_validate(write_recipe(recipe)), "name: expected a name of letters, digits",
                           "(got 'my run')")


def test_unknown_stage_and_arch_names_suggest_closest(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["stages"][1]["stage"] = "distil"
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[1].stage", "did you mean 'distill'")
    recipe = demo_recipe_dict()
    recipe["student"]["model"]["arch"] = "cn"
    _assert_one_line_error(_validate(write_recipe(recipe)), "student.model.arch", "'cnn'")


def test_missing_files(write_recipe, tmp_path: Path) -> None:
    _assert_one_line_error(_validate(tmp_path / "nope.yaml"), "nope.yaml", "file not found")
    recipe = demo_recipe_dict()
    recipe["teacher"]["weights"] = "missing-teacher.safetensors"
    result = runner.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(tmp_path / "run"), "-q"])
    _assert_one_line_error(result, "missing-teacher.safetensors", "not found")


def test_ensemble_needs_one_weights_file_per_member(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["teacher"]["ensemble"] = {"members": 3}
    recipe["teacher"]["weights"] = ["a.safetensors", "b.safetensors"]
    _assert_one_line_error(_validate(write_recipe(recipe)), "teacher", "weights",
                           "expected a list of 3 .safetensors files (one per ensemble member), got 2")


def test_teachers_of_different_architectures_are_refused_saying_what_an_ensemble_is(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["teacher"]["model"] = [recipe["teacher"]["model"], {"arch": "mlp", "hidden": [16]}]
    _assert_one_line_error(_validate(write_recipe(recipe)), "teacher.model", "got a list of 2",
                           "teacher.ensemble: {members: N}", "teachers of different architectures cannot form one")


def test_unknown_device_and_export_target(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["device"] = "raspbery-pi-4"
    _assert_one_line_error(_validate(write_recipe(recipe)), "unknown device 'raspbery-pi-4'", "raspberry-pi-4")
    recipe = demo_recipe_dict()
    recipe["stages"][2]["target"] = "onnx-fp64"
    _assert_one_line_error(_validate(write_recipe(recipe)), "unknown exporter 'onnx-fp64'")


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages: [\n  - stage: teacher\n")
    _assert_one_line_error(_validate(path), str(path), "malformed YAML", "line")


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    _assert_one_line_error(_validate(path), "expected a mapping")


def test_stage_order_is_checked(write_recipe) -> None:
    recipe = demo_recipe_dict()
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] != "export"]
    _assert_one_line_error(_validate(write_recipe(recipe)), "'profile' needs an 'export' or a 'search' stage")
    recipe = demo_recipe_dict()
    recipe["stages"] = recipe["stages"][1:]
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[0].teacher", "needs a 'teacher' stage")
    recipe = demo_recipe_dict()
    recipe["stages"] = [{"stage": "report"}, *recipe["stages"]]
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[0].stage", "'report' is the first stage")


def test_bad_device_profile_file(write_recipe, tmp_path: Path) -> None:
    device = tmp_path / "phone.yaml"
    device.write_text("name: phone\nthreads: 0\nbudget: {p90_ms: 20, size_mb: 5, peak_memory_mb: 100}\n")
    recipe = demo_recipe_dict()
    recipe["device"] = str(device)
    _assert_one_line_error(_validate(write_recipe(recipe)), str(device), "threads")


def test_assistant_chain_order_is_checked(write_recipe) -> None:
    recipe = demo_recipe_dict()
    distill = recipe["stages"][1]
    recipe["stages"][1] = {**distill, "teacher": "assistant"}
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[1].teacher", "into 'assistant'")
    recipe["stages"][1] = {**distill, "student": "assistant"}
    _assert_one_line_error(_validate(write_recipe(recipe)), "stages[1].student", "top-level 'assistant'")


def test_a_path_starting_with_a_tilde_is_in_the_home_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``train: ~/data/train.tsv`` was read as ``<recipe folder>/~/data/train.tsv`` (not found)."""
    from edgekd.config.loading import load_yaml_model
    from edgekd.config.recipe import Recipe

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "recipes").mkdir()
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.write_text("name: r\ndata: {source: tsv, train: ~/data/train.tsv, test: dev.tsv}\n"
                      "teacher: {model: {arch: textcnn}}\nstudent: {model: {arch: textcnn}}\n"
                      "stages: [{stage: teacher}]\n")
    loaded = load_yaml_model(recipe, Recipe)
    assert loaded.data.train == home / "data" / "train.tsv"
    assert loaded.data.test == tmp_path / "recipes" / "dev.tsv"


def test_a_tab_in_the_indentation_is_named(tmp_path: Path) -> None:
    """YAML's own message ('found character that cannot start any token') does not say the culprit is a tab,
    which most editors show as spaces."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nteacher:\n\tmodel: {arch: cnn}\n")
    _assert_one_line_error(_validate(recipe), "r.yaml: malformed YAML: line 3, column 1",
                           "a tab character: YAML indents with spaces only")


def test_a_device_profile_beside_the_recipe_is_found_from_any_working_directory(tmp_path: Path) -> None:
    """``device: profiles/my.yaml`` was looked up from the working directory, unlike every other path of a recipe."""
    from edgekd.catalog import find

    (tmp_path / "profiles").mkdir()
    profile = (tmp_path / "profiles" / "my.yaml")
    profile.write_text(find("devices", "host-cpu").read_text().replace("name: host-cpu", "name: my-board"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndevice: profiles/my.yaml\ndata: {source: sklearn, name: digits}\n"
                      "teacher: {model: {arch: cnn, channels: [4], hidden: 8}}\n"
                      "student: {model: {arch: cnn, channels: [2], hidden: 8}}\nstages: [{stage: teacher}]\n")
    result = _validate(recipe)
    assert result.exit_code == 0, result.output
    assert f"on device '{profile}'" in result.output
