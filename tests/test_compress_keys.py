"""``edgekd compress`` refusals name the keys of the recipe the user wrote, not of the search recipe compress makes
of it (whose ``stages[1]`` is a ``search`` stage the user never wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.recipe import load_recipe
from edgekd.errors import ConfigError
from edgekd.search.compress import as_written, check_search, search_recipe, written_keys

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


def test_a_search_varying_a_pretrained_teacher_is_refused_in_the_recipes_terms(tmp_path: Path) -> None:
    """A pretrained student is not varied, so the search varies the teacher's spec, here a pretrained BERT: its
    derived recipe was refused by search_recipe's own validation as ``recipe 'keys' as a search: student.model:
    give either 'pretrained' or sizes`` (the teacher's default sizes written out beside its checkpoint), naming
    neither the user's file nor a key they wrote. (A drop_layers student of it is searched by the layers it keeps:
    tests/test_layer_search.py.)"""
    from tests import hf_families
    from tests.test_text_pipeline import _write_tsv

    checkpoint = hf_families.save("bert", tmp_path / "bert")
    for name in ("train.tsv", "dev.tsv"):
        _write_tsv(tmp_path / name, 20, seed=len(name))
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({
        "name": "keys", "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 5},
        "tokenizer": {"vocab_size": 100}, "teacher": {"model": {"arch": "bert", "pretrained": str(checkpoint)}},
        "student": {"model": {"arch": "bert", "pretrained": str(checkpoint)}},
        "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}, {"stage": "export"}]}))
    assert _compress_refusal(path, tmp_path) == (
        f"error: {path}: compress's search: a search varies the student's sizes; teacher.model.pretrained must be "
        "unset (a 'drop_layers' student of a pretrained teacher is searched by how many layers it keeps)")


def test_the_searched_teachers_keys_are_named_as_the_teachers(tmp_path: Path) -> None:
    """A student the search cannot vary (the user's module) makes it vary the teacher's architecture: a refusal of
    that spec names teacher.model, which the user wrote, not the derived recipe's student.model."""
    recipe = load_recipe(_recipe(tmp_path, teacher={"model": {"arch": "resnet"}},
                                 student={"model": {"arch": "module", "factory": "tests.user_modules:small_cnn"}},
                                 stages=[{"stage": "teacher", "epochs": 1}, {"stage": "distill"}]))
    with pytest.raises(ConfigError) as raised:
        check_search(search_recipe(recipe, "r.yaml"), recipe, "r.yaml")
    assert str(raised.value) == ("r.yaml: compress's search: a search varies a student built from sizes; "
                                 "teacher.model.arch 'resnet' is not one (searchable: cnn, mlp, bert, bilstm, textcnn)")


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
