"""``edgekd compress`` refusals name the keys of the recipe the user wrote, not of the search recipe compress makes
of it (whose ``stages[1]`` is a ``search`` stage the user never wrote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.recipe import load_recipe
from edgekd.errors import ConfigError
from edgekd.search.compress import as_written, search_recipe, written_keys

CNN = {"arch": "cnn", "channels": [4], "hidden": 8}


def _recipe(tmp_path: Path, **fields: Any) -> Path:
    recipe = {"name": "keys", "data": {"source": "sklearn", "name": "digits", "limit": 300},
              "teacher": {"model": {**CNN, "channels": [8]}}, "student": {"model": CNN}, **fields}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def test_a_refusal_of_the_search_names_the_distill_stage_it_replaces(tmp_path: Path) -> None:
    """The student's distillation is the third stage here (after one into an assistant)."""
    recipe = _recipe(tmp_path, teacher={"model": {**CNN, "channels": [8]}, "ensemble": {"members": 2}},
                     assistant={"model": {**CNN, "channels": [6]}},
                     stages=[{"stage": "teacher", "epochs": 1}, {"stage": "distill", "student": "assistant"},
                             {"stage": "distill", "teacher": "assistant"}, {"stage": "export"}])
    assert _compress_refusal(recipe, tmp_path) == (f"error: {recipe}: stages[2] (run by compress as a search): "
                                                   "'search' distils from one teacher; remove teacher.ensemble")


def _compress_refusal(recipe: Path, tmp_path: Path) -> str:
    """The one line ``edgekd compress`` refuses ``recipe`` with (a recipe ``validate`` accepts), before any run."""
    assert CliRunner().invoke(app, ["validate", str(recipe)]).exit_code == 0  # a valid recipe, not a valid search
    result = CliRunner().invoke(app, ["compress", str(recipe), "--budget-ms", "5", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "run").exists()
    return result.output.strip()


def test_every_part_of_the_search_is_named_where_the_recipe_wrote_it(tmp_path: Path) -> None:
    recipe = load_recipe(_recipe(tmp_path, stages=[
        {"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1},
        {"stage": "export", "target": "onnx-fp32"}, {"stage": "quantize"}, {"stage": "profile", "runs": 20},
        {"stage": "bundle"}, {"stage": "report"}]))
    search = search_recipe(recipe)
    assert search.stage_names() == ["teacher", "search", "profile", "bundle", "report"]
    keys = written_keys(recipe)
    derived = {"stages[0].epochs": "stages[0].epochs",
               "stages[1].distill.losses[0].kind": "stages[1].losses[0].kind",
               "stages[1].target": "stages[2].target",
               "stages[1].quantize.rounds": "stages[3].rounds",
               "stages[1].stage": "stages[1] (run by compress as a search)",
               "stages[1].space.hidden[0]": "compress's search.space.hidden[0]",
               "stages[1]": "compress's search",
               "stages[2].runs": "stages[4].runs",
               "stages[3]": "stages[5]",
               "stages[4].stage": "stages[6].stage",
               "teacher.ensemble": "teacher.ensemble"}
    assert {key: as_written(key, keys) for key in derived} == derived

    # a recipe without a profile, export or quantize stage: what compress adds is named as compress's
    bare = load_recipe(_recipe(tmp_path, stages=[{"stage": "teacher"}, {"stage": "distill"}]))
    keys = written_keys(bare)
    assert as_written("stages[2].runs", keys) == "compress's profile.runs"
    assert as_written("stages[1].distill.lr", keys) == "stages[1].lr"
    assert as_written("stages[1].target", keys) == "compress's search.target"
    assert as_written("stages[1].stage", keys) == "stages[1] (run by compress as a search)"
    assert written_keys(search) == {}  # a recipe that is a search already is checked as written


def _text_recipe(tmp_path: Path, teacher: dict[str, Any], student: dict[str, Any]) -> Path:
    """A text recipe (two small TSVs, a trained tokenizer) of ``teacher`` and ``student``, written to a file."""
    from tests.test_text_pipeline import _write_tsv

    for name in ("train.tsv", "dev.tsv"):
        _write_tsv(tmp_path / name, 20, seed=len(name))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "keys", "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 5},
        "tokenizer": {"vocab_size": 100}, "teacher": {"model": teacher}, "student": {"model": student},
        "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}, {"stage": "export"}]}))
    return path


#: What the refusal of a student a search cannot vary says when the teacher is a transformer it can cut.
_CUT = ("(searchable: bert, bilstm, textcnn, drop_layers): drop_layers starts from the teacher's weights and varies "
        "how many of its layers the student keeps")


def test_an_hf_student_of_an_hf_teacher_is_refused_in_one_line_naming_drop_layers(tmp_path: Path) -> None:
    """Neither an ``arch: hf`` student nor its ``arch: hf`` teacher can be varied: compress said it would vary the
    teacher's architecture instead (a warning) and then refused that (``teacher.model.arch 'hf' is not one
    (searchable: cnn, mlp, bert, bilstm, textcnn)``), omitting drop_layers, the student that does work here. One
    line now, on stderr and as the --json document, naming the student's key and drop_layers."""
    from tests import hf_families

    checkpoint = hf_families.save("deberta-v2", tmp_path / "deberta", num_labels=2)
    student = {"arch": "hf", "config": {"model_type": "distilbert", **hf_families.TEXT["distilbert"]}}
    path = _text_recipe(tmp_path, {"arch": "hf", "pretrained": str(checkpoint)}, student)
    line = (f"{path}: student.model.arch: a search cannot vary the student ('hf' (distilbert)), nor the teacher's "
            "architecture in its place ('hf' (deberta-v2), pretrained); set student.model.arch to one it varies "
            f"{_CUT}")
    assert _compress_refusal(path, tmp_path) == f"error: {line}"
    result = CliRunner().invoke(app, ["compress", str(path), "--budget-ms", "5", "--json", "--out",
                                      str(tmp_path / "run")])
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": line, "internal": False, "exit_code": 2}


def test_a_pretrained_student_of_a_pretrained_teacher_is_refused_at_the_students_checkpoint(tmp_path: Path) -> None:
    """A pretrained BERT student beside a pretrained BERT teacher: the key named is the student's checkpoint (a BERT
    of sizes would be searched), and no warning about varying the teacher comes first."""
    from tests import hf_families

    checkpoint = str(hf_families.save("bert", tmp_path / "bert"))
    path = _text_recipe(tmp_path, {"arch": "bert", "pretrained": checkpoint},
                        {"arch": "bert", "pretrained": checkpoint})
    assert _compress_refusal(path, tmp_path) == (
        f"error: {path}: student.model.pretrained: a search cannot vary the student ('bert', pretrained), nor the "
        "teacher's architecture in its place ('bert', pretrained); unset student.model.pretrained or set "
        f"student.model.arch to one it varies {_CUT}")


@pytest.mark.parametrize("teacher", [{"arch": "resnet"}, {"arch": "module", "factory": "tests.user_modules:small_cnn"}])
def test_a_student_and_teacher_neither_searchable_are_refused_without_drop_layers(
        tmp_path: Path, teacher: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """A user's module student and a teacher that is not a transformer: drop_layers cannot cut it, so the searchable
    archs named are the image ones a search varies by their sizes, generated from the registry; nothing is warned."""
    recipe = load_recipe(_recipe(tmp_path, teacher={"model": teacher},
                                 student={"model": {"arch": "module", "factory": "tests.user_modules:small_cnn"}},
                                 stages=[{"stage": "teacher", "epochs": 1}, {"stage": "distill"}]))
    with pytest.raises(ConfigError) as raised, caplog.at_level("WARNING", logger="edgekd.search.compress"):
        search_recipe(recipe, "r.yaml")
    assert str(raised.value) == (
        "r.yaml: student.model.arch: a search cannot vary the student ('module'), nor the teacher's architecture in "
        f"its place ('{teacher['arch']}'); set student.model.arch to one it varies (searchable: cnn, mlp)")
    assert caplog.text == ""


def test_a_search_stage_of_an_unsearchable_student_names_the_searchable_archs(tmp_path: Path) -> None:
    """A search stage the recipe writes with an hf student: the archs named include drop_layers, which a search of
    this BERT teacher takes."""
    from tests import hf_families

    checkpoint = str(hf_families.save("bert", tmp_path / "bert"))
    path = _text_recipe(tmp_path, {"arch": "hf", "pretrained": checkpoint}, {"arch": "hf", "pretrained": checkpoint})
    recipe = yaml.safe_load(path.read_text())
    recipe["stages"] = [{"stage": "teacher", "epochs": 1}, {"stage": "search"}]
    path.write_text(yaml.safe_dump(recipe))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == (f"error: {path}: stages[1]: student.model.arch 'hf' is not one a search varies "
                                     "(searchable: bert, bilstm, textcnn, drop_layers)")


def test_the_searched_teachers_keys_are_named_as_the_teachers(tmp_path: Path) -> None:
    """A student the search cannot vary (the user's module) makes it vary the teacher's architecture: a refusal of
    that spec names teacher.model, which the user wrote, not the derived recipe's student.model."""
    module = {"arch": "module", "factory": "tests.user_modules:small_cnn"}
    recipe = load_recipe(_recipe(tmp_path, student={"model": module},
                                 stages=[{"stage": "teacher", "epochs": 1}, {"stage": "distill"}]))
    keys = written_keys(recipe)
    assert as_written("student.model.channels", keys) == "teacher.model.channels"
    assert search_recipe(recipe, "r.yaml").student.model.arch == "cnn"


def test_search_recipes_own_validation_is_translated_as_check_search_is(tmp_path: Path) -> None:
    """One translation (in_users_terms) for both: a value the derived recipe's validation refuses is named by the
    key the recipe wrote (the export stage's target), in the recipe's file."""
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from edgekd.search.compress import in_users_terms

    recipe = load_recipe(_recipe(tmp_path, stages=[{"stage": "teacher"}, {"stage": "distill"},
                                                   {"stage": "export", "target": "onnx-fp32"}]))
    derived = search_recipe(recipe, "r.yaml").model_dump(mode="json")
    derived["stages"][1]["target"] = 5
    with pytest.raises(ConfigError) as raised, in_users_terms(recipe, "r.yaml"):
        validate_model(derived, Recipe, source="r.yaml", expanded=True)
    assert str(raised.value).startswith("r.yaml: stages[2].target: "), str(raised.value)
