"""Timed runs have an upper bound as well as a lower one: a typo such as ``--runs 10000000`` timed for hours. The
same bounds (:mod:`edgekd.config.base`) hold for the CLI's flags, the API's timing arguments and the recipe's stages."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from edgekd.config.base import MAX_ROUNDS, MAX_RUNS, MAX_WARMUP, MIN_RUNS
from edgekd.errors import ConfigError
from tests.conftest import demo_recipe_dict
from tests.reliability import cli
from tests.test_verb_errors import cnn_onnx  # noqa: F401 - the fixture

TOO_MANY = 10_000_000


@pytest.mark.parametrize(("verb", "extra"), [
    ("profile", []), ("bench", ["--out", "b"]), ("export", ["--out", "e"]), ("bundle", ["--out", "a"]),
    ("quantize", ["--out", "q"]),
])
def test_a_runs_typo_is_refused_naming_the_flag_and_the_range(verb: str, extra: list[str], cnn_onnx: Path,  # noqa: F811
                                                              tmp_path: Path) -> None:
    started = time.perf_counter()
    outcome = cli(verb, cnn_onnx, *(["--device", "host-cpu"] if verb in ("bundle", "quantize") else []),
                  *[str(tmp_path / part) if part in ("b", "e", "a", "q") else part for part in extra],
                  "--runs", str(TOO_MANY))
    assert outcome.exit_code == 2, outcome.output
    assert f"'--runs': expected {MIN_RUNS} to {MAX_RUNS}, got {TOO_MANY}" in outcome.output
    assert "Traceback" not in outcome.output
    assert time.perf_counter() - started < 5  # refused, not timed
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--warmup", MAX_WARMUP + 1, f"'--warmup': expected 0 to {MAX_WARMUP}, got {MAX_WARMUP + 1}"),
    ("--rounds", MAX_ROUNDS + 1, f"'--rounds': expected 1 to {MAX_ROUNDS}, got {MAX_ROUNDS + 1}"),
    ("--runs", MIN_RUNS - 1, f"'--runs': expected {MIN_RUNS} to {MAX_RUNS}, got {MIN_RUNS - 1}"),
])
def test_warmup_and_rounds_are_bounded_as_well(flag: str, value: int, expected: str, cnn_onnx: Path,  # noqa: F811
                                               tmp_path: Path) -> None:
    outcome = cli("bench", cnn_onnx, "--out", tmp_path / "b", flag, str(value))
    assert outcome.exit_code == 2 and expected in outcome.output, outcome.output


@pytest.mark.parametrize("verb", ["profile", "bench", "export", "bundle"])
def test_the_api_refuses_the_same_runs_in_one_line(verb: str, cnn_onnx: Path, tmp_path: Path) -> None:  # noqa: F811
    from edgekd import api

    call = {"profile": lambda: api.profile(cnn_onnx, runs=TOO_MANY),
            "bench": lambda: api.bench([cnn_onnx], out=tmp_path / "b", runs=TOO_MANY),
            "bundle": lambda: api.bundle(cnn_onnx, device="host-cpu", out=tmp_path / "a", runs=TOO_MANY),
            "export": lambda: api.export(cnn_onnx, out=tmp_path / "e", runs=TOO_MANY)}[verb]
    with pytest.raises(ConfigError, match=f"^timing arguments: runs: Input should be less than or equal to {MAX_RUNS} "
                                          f"\\(got {TOO_MANY}\\)$"):
        call()


@pytest.mark.parametrize(("stage", "key"), [("profile", "runs"), ("profile", "warmup"), ("quantize", "runs")])
def test_a_recipe_stage_refuses_the_same_runs_by_key(stage: str, key: str, tmp_path: Path) -> None:
    recipe = demo_recipe_dict()
    names = [entry["stage"] for entry in recipe["stages"]]
    if stage not in names:  # quantize goes between export and profile
        recipe["stages"].insert(names.index("profile"), {"stage": stage})
        names = [entry["stage"] for entry in recipe["stages"]]
    index = names.index(stage)
    recipe["stages"][index][key] = TOO_MANY
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    outcome = cli("validate", path)
    assert outcome.exit_code == 2, outcome.output
    assert f"stages[{index}].{key}" in outcome.output and "less than or equal to" in outcome.output, outcome.output
    assert len(outcome.output.strip().splitlines()) == 1, outcome.output


def test_the_bound_itself_is_accepted() -> None:
    from edgekd.profile.config import ProfileStage
    from edgekd.quantize.config import QuantizeSettings

    assert ProfileStage(runs=MAX_RUNS, warmup=MAX_WARMUP).runs == MAX_RUNS
    assert QuantizeSettings(runs=MAX_RUNS, rounds=MAX_ROUNDS).rounds == MAX_ROUNDS
