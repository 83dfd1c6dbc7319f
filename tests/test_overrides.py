"""--set KEY=VALUE (overrides=): a recipe's keys changed beside it, before validation, with one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import edgekd.api as api
from edgekd.config.overrides import apply_overrides, path_keys
from edgekd.config.recipe import load_recipe
from edgekd.errors import ConfigError

STAGES = {"stages": [{"stage": "teacher", "epochs": 2}, {"stage": "distill", "epochs": 3}, {"stage": "export"},
                     {"stage": "export"}]}


def test_keys_are_set_by_path_index_or_stage_kind_and_values_read_as_yaml() -> None:
    changed = apply_overrides(STAGES, ["stages.teacher.epochs=5", "stages.1.lr=0.01", "data.limit=300",
                                       "stages.2.target=[a, b]", "name=x", "description=", "seed=7",
                                       "stages.distill.augment={copies: 2}"])
    assert changed["stages"][0] == {"stage": "teacher", "epochs": 5}
    assert changed["stages"][1] == {"stage": "distill", "epochs": 3, "lr": 0.01, "augment": {"copies": 2}}
    assert changed["stages"][2] == {"stage": "export", "target": ["a", "b"]}
    assert changed["data"] == {"limit": 300} and changed["name"] == "x" and changed["seed"] == 7
    assert changed["description"] is None
    assert STAGES["stages"][0]["epochs"] == 2  # the parsed recipe is not changed in place
    # a free-form mapping (a Hugging Face config's id2label) takes numbered keys where the recipe has none
    config = apply_overrides({"student": {"model": {"config": {}}}}, ["student.model.config.id2label.0=neg"])
    assert config["student"]["model"]["config"] == {"id2label": {"0": "neg"}}
    assert {"train", "test", "path", "pretrained", "weights", "device", "image_processor"} <= path_keys()
    assert not {"arch", "name", "epochs", "stage"} & path_keys()


@pytest.mark.parametrize(("override", "message"), [
    ("epochs", r"--set 'epochs': expected KEY=VALUE with a dotted key"),
    ("stages..epochs=1", r"--set 'stages..epochs=1': expected KEY=VALUE"),
    ("=3", r"--set '=3': expected KEY=VALUE"),
    ("stages.4.epochs=1", r"--set 'stages.4.epochs=1': stages has 4 item\(s\), numbered 0 to 3; got 4$"),
    ("stages.export.target=x", r"--set 'stages.export.target=x': stages has 2 'export' stages \(2, 3\): give its "
                               r"index$"),
    ("stages.prune.ratio=0.5", r"--set 'stages.prune.ratio=0.5': stages has no item named 'prune'; give an index "
                               r"\(0 \(teacher\), 1 \(distill\), 2 \(export\), 3 \(export\)\)$"),
    ("stages.0.epochs.x=1", r"--set 'stages.0.epochs.x=1': stages.0.epochs is 2, not a mapping or a list of keys$"),
    ("name=[unclosed", r"--set 'name=\[unclosed': the value is not readable YAML"),
    # the distill stage's losses are its default list: validation said "stages[1].losses: Input should be a valid
    # list (got {'0': {'temperature': 2}})", a mapping the user never wrote
    ("stages.distill.losses.0.temperature=2", r"--set 'stages.distill.losses.0.temperature=2': stages.distill.losses "
                                              r"is not in the recipe \(its default applies\), so it has no item 0 to "
                                              r"change; set the whole list instead, e.g. --set "
                                              r"'stages.distill.losses=\[...\]'$"),
])
def test_malformed_overrides_are_one_line_naming_them(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        apply_overrides(STAGES, [override])
    assert "\n" not in str(caught.value)


def _recipe(folder: Path) -> Path:
    folder.mkdir(parents=True)
    rows = "sentence\tlabel\n" + "".join(f"{'a good film' if i % 2 else 'a dull plot'} {i}\t{i % 2}\n"
                                         for i in range(60))
    (folder / "train.tsv").write_text(rows)
    (folder / "test.tsv").write_text(rows)
    recipe = folder / "recipe.yaml"
    recipe.write_text(json.dumps({
        "name": "overridden", "data": {"source": "tsv", "train": "train.tsv", "test": "test.tsv", "val_examples": 10},
        "tokenizer": {"vocab_size": 100, "max_length": 16},
        "teacher": {"model": {"arch": "bilstm", "embedding_dim": 16, "hidden": 16}},
        "student": {"model": {"arch": "bilstm", "embedding_dim": 8, "hidden": 8}},
        "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16}, {"stage": "report"}]}))
    return recipe


def test_a_relative_path_is_from_the_working_directory_and_others_stay_beside_the_recipe(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _recipe(tmp_path / "recipes")
    work = tmp_path / "work"
    (work / "mine").mkdir(parents=True)
    (work / "mine" / "train.tsv").write_text((tmp_path / "recipes" / "train.tsv").read_text())
    monkeypatch.chdir(work)
    loaded = load_recipe(recipe, ["data.train=mine/train.tsv", "data.val_examples=5"])
    assert loaded.data.train == work / "mine" / "train.tsv" and loaded.data.val_examples == 5
    assert loaded.data.test == tmp_path / "recipes" / "test.tsv"  # the recipe's own path: from its folder
    beside = load_recipe(recipe, ["data.train=test.tsv"])  # not in the working directory: as the recipe reads it
    assert beside.data.train == tmp_path / "recipes" / "test.tsv"
    with pytest.raises(ConfigError, match=r"recipe.yaml \(with --set data.shuffle=1\): data.shuffle: unknown key"):
        load_recipe(recipe, ["data.shuffle=1"])
    with pytest.raises(ConfigError, match="overrides: they change the keys of a recipe file"):
        api.run(loaded, overrides=["seed=1"])
    assert load_recipe(recipe, "seed=4").seed == 4  # one text is one override
    with pytest.raises(ConfigError, match=r"overrides: expected KEY=VALUE texts, got int 4$"):
        load_recipe(recipe, ["seed=1", 4])


def test_the_run_records_the_changed_recipe_and_a_changed_override_re_runs_its_stage(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "recipes")
    out = tmp_path / "run"
    api.run(str(recipe), out=out, overrides=["stages.teacher.epochs=2", "seed=3"])
    recorded = json.loads((out / "run.json").read_text())["recipe"]
    assert recorded["stages"][0]["epochs"] == 2 and recorded["seed"] == 3
    assert json.loads(next(out.glob("01-teacher/stage.json")).read_text())["config"]["epochs"] == 2
    same = api.plan(str(recipe), out=out, overrides=["stages.teacher.epochs=2", "seed=3"])
    assert same[0].status == "cached"
    changed = api.plan(str(recipe), out=out, overrides=["stages.teacher.epochs=1", "seed=3"])
    assert changed[0].status == "re-runs" and any("epochs" in change for change in changed[0].changes)


def test_the_command_line_takes_repeated_set_options(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "recipes")
    done = subprocess.run([sys.executable, "-m", "edgekd", "validate", str(recipe), "--json", "--set",
                           "stages.teacher.epochs=3", "-s", "data.limit_train=20"],
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True
    bad = subprocess.run([sys.executable, "-m", "edgekd", "run", str(recipe), "--dry-run", "--set",
                          "stages.teacher.epochs=0"], capture_output=True, text=True, check=False, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"error: {recipe} (with --set stages.teacher.epochs=0): stages[0].epochs: Input should be greater than 0 ("
        "got 0)"]
