"""A required key spelt wrong is both missing and unknown to pydantic; the one line names the misspelling and the
key meant ('did you mean'), in a device profile, an export preset and a recipe, instead of 'required key is
missing' for the key the user believes they wrote."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from tests.reliability import tiny_recipe, write_yaml
from tests.test_config_errors import _assert_one_line_error

DEVICE = {"name": "phone", "threads": 1, "inputs": {"batch": 1, "sequence_length": 32, "image_size": None},
          "budget": {"p90_ms": 30, "size_mb": 20, "peak_memory_mb": 200}, "precision": "fp32", "isa": "detect"}


@pytest.mark.parametrize(("where", "wrong", "meant"), [
    ("budget", "p90_msx", "p90_ms"),
    ("budget", "sizemb", "size_mb"),
    (None, "nmae", "name"),
])
def test_a_misspelt_required_device_key_is_named_with_the_key_meant(tmp_path: Path, where: str | None, wrong: str,
                                                                    meant: str) -> None:
    device = yaml.safe_load(yaml.safe_dump(DEVICE))
    section = device[where] if where else device
    section[wrong] = section.pop(meant)
    write_yaml(tmp_path / "phone.yaml", device)
    recipe = tiny_recipe(stages=("teacher", "export", "profile"))
    recipe["device"] = "phone.yaml"
    result = CliRunner().invoke(app, ["validate", str(write_yaml(tmp_path / "recipe.yaml", recipe))])
    key = f"{where}.{wrong}" if where else wrong
    _assert_one_line_error(result, "phone.yaml", f"{key}: unknown key '{wrong}' (did you mean '{meant}'?)")


def test_a_missing_key_alone_is_still_said_missing(tmp_path: Path) -> None:
    device = yaml.safe_load(yaml.safe_dump(DEVICE))
    del device["budget"]["p90_ms"]
    device["budget"]["colour"] = "red"  # unknown, but spelt nothing like p90_ms: the missing key is said
    write_yaml(tmp_path / "phone.yaml", device)
    recipe = tiny_recipe(stages=("teacher", "export", "profile"))
    recipe["device"] = "phone.yaml"
    result = CliRunner().invoke(app, ["validate", str(write_yaml(tmp_path / "recipe.yaml", recipe))])
    _assert_one_line_error(result, "phone.yaml: budget.p90_ms: required key is missing (and 1 more problem)")
