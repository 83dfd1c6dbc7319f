"""Mistakes refused up front in one line, before anything trains or is written: a device input shape no model can
take, a run directory named in bytes that are not UTF-8, a dry run into a directory the run would refuse, API
arguments of the wrong type; and YAML's reading of ``no`` accepted where the docs write it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.config.device import MAX_BATCH, load_device
from edgekd.errors import ConfigError, EdgekdError


@pytest.mark.parametrize(("key", "value"), [("batch", MAX_BATCH + 1), ("batch", 10**23),
                                            ("sequence_length", 10**9)])
def test_a_device_input_shape_beyond_any_model_is_refused_naming_file_and_key(tmp_path: Path, key: str,
                                                                              value: int) -> None:
    """batch 1e23 passed validate; the run trained teacher and student, then ONNX export failed naming neither."""
    data = yaml.safe_load(Path(edgekd.catalog.find("devices", "host-cpu")).read_text())
    data["inputs"][key] = value
    profile = tmp_path / "huge.yaml"
    profile.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=rf"huge.yaml: inputs.{key}: Input should be less than or equal to"):
        load_device(profile)


def test_mixed_precision_no_unquoted_as_the_docs_write_it_is_no() -> None:
    recipe = edgekd.validate({"name": "mp", "data": {"source": "sklearn", "name": "digits", "limit": 300},
                              "teacher": {"model": {"arch": "cnn", "channels": [4], "hidden": 8}},
                              "student": {"model": {"arch": "cnn", "channels": [4], "hidden": 8}},
                              "stages": [{"stage": "teacher", "epochs": 1, "mixed_precision": False}]})
    assert recipe.stages[0].mixed_precision == "no"


@pytest.mark.parametrize("call", [lambda: edgekd.validate(None), lambda: edgekd.validate([{"name": "x"}]),
                                  lambda: edgekd.validate("demo-digits", device=3)])
def test_api_arguments_of_the_wrong_type_are_edgekd_errors(call) -> None:
    """They were plain TypeErrors, which a handler of edgekd's errors (except EdgekdError) let through."""
    with pytest.raises(EdgekdError, match="expected a built-in name, a YAML path, a mapping") as caught:
        call()
    assert isinstance(caught.value, TypeError)  # as before, for handlers of TypeError


def test_a_run_directory_not_in_utf8_and_a_dry_run_into_a_file_are_refused_before_anything_runs(
        tmp_path: Path) -> None:
    """--out $'runs/caf\\xe9' trained the teacher, then failed reading its own weights back; --dry-run planned a
    run into a file that the run refuses."""
    (tmp_path / "afile").write_text("mine\n")
    for out, message in ((b"caf\xe9", "is not valid UTF-8; name it in UTF-8"),
                         (b"afile", "afile: is a file, not a directory")):
        done = subprocess.run([sys.executable, "-m", "edgekd", "run", "demo-digits", "--dry-run", "--out", out],
                              cwd=tmp_path, capture_output=True, check=False, timeout=300)
        assert done.returncode == 2
        assert message in done.stderr.decode("utf-8", "replace") and len(done.stderr.splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
