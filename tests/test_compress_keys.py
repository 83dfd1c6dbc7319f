"""``edgekd compress`` refusals name the keys of the recipe the user wrote, not of the search recipe compress makes
of it (whose ``stages[1]`` is a ``search`` stage the user never wrote)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.recipe import load_recipe
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
    assert CliRunner().invoke(app, ["validate", str(recipe)]).exit_code == 0  # a valid recipe, not a valid search
    result = CliRunner().invoke(app, ["compress", str(recipe), "--budget-ms", "5", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (f"error: {recipe}: stages[2] (run by compress as a search): 'search' distils "
                                     "from one teacher; remove teacher.ensemble")
    assert not (tmp_path / "run").exists()


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
