"""Which data each recipe needs: ``edgekd pipelines list`` and ``validate`` say what is missing and where to get it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.catalog import find, names
from edgekd.cli import app
from edgekd.config.recipe import load_recipe
from edgekd.data_needs import data_need, where_to_get
from tests.reliability import assert_user_error, cli

TEXT_RECIPES = [name for name in names("pipelines") if load_recipe(name).data.source in ("tsv", "csv")]
CORPUS_RECIPES = [name for name in names("pipelines") if load_recipe(name).data.source == "corpus"]


def test_every_built_in_recipe_says_what_it_needs() -> None:
    result = CliRunner().invoke(app, ["pipelines", "list", "--json"])
    assert result.exit_code == 0, result.output
    listed = {r["name"]: r for r in json.loads(result.stdout)}
    assert sorted(listed) == names("pipelines")
    for name, entry in listed.items():
        data = entry["data"]
        assert data["ready"] == all(Path(p).exists() for p in data["paths"].values())
        assert sorted(data["missing"]) == sorted(k for k, p in data["paths"].items() if not Path(p).exists())
        if load_recipe(name).data.source == "sklearn":
            assert data["kind"] == "bundled" and data["ready"] and data["paths"] == {}
        else:
            assert data["where"].startswith("Data: ") and "SOURCE.md" in data["where"], name
    assert TEXT_RECIPES, "the SST-2 recipes are the ones with local files"


@pytest.mark.parametrize("name", TEXT_RECIPES)
def test_a_fresh_clone_without_the_data_gets_one_line_saying_where_to_get_it(name: str, tmp_path: Path) -> None:
    clone = tmp_path / "checkout" / "pipelines"
    clone.mkdir(parents=True)
    recipe = Path(shutil.copy(find("pipelines", name), clone / f"{name}.yaml"))  # ../../shared/data is not there
    need = data_need(load_recipe(recipe), recipe)
    assert not need.ready and set(need.missing) == {"data.train", "data.test"}
    outcome = cli("validate", recipe)
    assert_user_error(outcome, str(recipe), "needs data that is not here", "(data.train)", "(data.test)",
                      "Data: the GLUE SST-2 TSV files", "Data you have elsewhere: --set data.train=PATH --set "
                      "data.test=PATH")
    assert_user_error(cli("run", recipe, "--out", tmp_path / "run"), "needs data that is not here", logged=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, expected", [
    ("# Data: the files.\n# More about them.\n#\n# Teacher: other\nname: x\n", "Data: the files. More about them."),
    ("# Intro.\n#\n# Data: here\n# Teacher: a heading ends it\n", "Data: here"),
    ("# Data: one line\nname: x\n# not part of it\n", "Data: one line"),
    ("# no data paragraph\nname: x\n", ""),
    ("name: x  # Data: not a comment line of its own\n", ""),
])
def test_where_to_get_reads_the_data_comment_paragraph(text: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert where_to_get(path) == expected


def test_pipelines_list_table_groups_recipes_missing_the_same_files(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    clone = tmp_path / "checkout" / "pipelines"
    shutil.copytree(find("pipelines", "demo-digits").parent, clone)
    monkeypatch.setattr("edgekd.catalog.catalog_dir", lambda kind: clone if kind == "pipelines" else
                        find(kind, {"devices": "host-cpu", "exporters": "onnx-fp32"}[kind]).parent)
    result = CliRunner().invoke(app, ["pipelines", "list"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    needs = [line for line in lines if " need " in line or " needs " in line]
    # one line per set of missing files: the SST-2 recipes together, the corpus recipe on its own
    assert len(needs) == 2 and all("Data: " in line for line in needs)
    assert any(all(name in line for name in TEXT_RECIPES) for line in needs)
    assert any(all(name in line for name in CORPUS_RECIPES) for line in needs)
    for name in names("pipelines"):
        row = next(line for line in lines if line.split()[:1] == [name])
        assert row.rstrip().endswith("missing" if name in TEXT_RECIPES + CORPUS_RECIPES else "yes")


def test_links_to_nothing_and_link_loops_are_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    recipe = Path(shutil.copy(find("pipelines", "sst2-bilstm"), tmp_path / "a" / "b" / "r.yaml"))
    data = recipe.parent / "../../shared/data/sst2"  # where the recipe's paths point, as messages show them
    data.mkdir(parents=True)
    (data / "train.tsv").symlink_to(data / "dev.tsv")
    (data / "dev.tsv").symlink_to(data / "train.tsv")  # a loop
    assert_user_error(cli("validate", recipe), f"symbolic link loop: {data / 'train.tsv'} (data.train)",
                      f"symbolic link loop: {data / 'dev.tsv'} (data.test)")
    (data / "dev.tsv").unlink()
    (data / "dev.tsv").symlink_to(tmp_path / "gone.tsv")
    assert_user_error(cli("validate", recipe), f"file not found: {tmp_path / 'gone.tsv'} (data.test)",
                      f"file not found: {tmp_path / 'gone.tsv'} (data.train)")  # the end of each chain of links
