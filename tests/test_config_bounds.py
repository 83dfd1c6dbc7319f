"""Recipes that would hang, exhaust memory or train NaN models are refused by ``edgekd validate`` in one line.

Families of cases, not single examples: YAML bombs of several shapes, duplicate keys at every depth,
non-finite numbers and booleans in every kind of numeric field, out-of-range seeds and sizes.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.yaml_reader import MAX_BYTES, MAX_NODES
from tests.conftest import demo_recipe_dict

runner = CliRunner()


def _validate(path: Path):
    started = time.perf_counter()
    result = runner.invoke(app, ["validate", str(path)])
    return result, time.perf_counter() - started


def _assert_refused(result, *fragments: str, max_chars: int = 400) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert len(text) <= max_chars, f"{len(text)} characters: {text[:200]}"
    for fragment in fragments:
        assert fragment in text, text


def _bomb(depth: int, fanout: int, key: str) -> str:
    """A billion-laughs document: each anchor repeats the previous one ``fanout`` times."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * fanout)}]"]
    for level in range(1, depth):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * fanout)}]")
    lines.append(f"{key}: *l{depth - 1}")
    return "name: bomb\n" + "\n".join(lines) + "\n"


@pytest.mark.parametrize(("depth", "fanout", "key"), [(9, 10, "seed"), (6, 20, "stages"), (30, 2, "teacher"),
                                                      (4, 200, "description")])
def test_yaml_bombs_are_refused_quickly(tmp_path: Path, depth: int, fanout: int, key: str) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(depth, fanout, key))
    result, seconds = _validate(path)
    _assert_refused(result, str(path), f"more than {MAX_NODES:,} values")
    assert seconds < 30


def test_an_oversized_file_is_refused_before_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: x\nseed: [" + ", ".join(["1"] * (MAX_BYTES // 3)) + "]\n")
    _assert_refused(_validate(path)[0], "expected a YAML file under")


def test_a_long_value_is_shown_briefly(tmp_path: Path) -> None:
    recipe = demo_recipe_dict()
    recipe["seed"] = list(range(5000))
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _assert_refused(_validate(path)[0], "seed:", "...", max_chars=300)


DEMO = (Path(__file__).resolve().parent.parent / "pipelines" / "demo-digits.yaml").read_text()


@pytest.mark.parametrize(("old", "new"), [
    ("seed: 0", "seed: 0\nseed: 1"),
    ("  source: sklearn", "  source: sklearn\n  source: sklearn"),
    ("    arch: cnn", "    arch: cnn\n    arch: mlp"),
    ("    epochs: 30", "    epochs: 30\n    epochs: 3"),
    ("stages:", "stages: []\nstages:"),
], ids=["top level", "data", "model", "stage", "stages"])
def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path, old: str, new: str) -> None:
    assert old in DEMO
    path = tmp_path / "dup.yaml"
    path.write_text(DEMO.replace(old, new, 1))
    _assert_refused(_validate(path)[0], "appears twice in one mapping (lines ")


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = DEMO.replace("  - stage: teacher", "  - <<: {epochs: 3, batch_size: 32, lr: 0.01}\n    stage: teacher", 1)
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    result, _ = _validate(path)
    assert result.exit_code == 0, result.output


NUMERIC_FIELDS = [
    ("stages[0].lr", lambda r, v: r["stages"][0].update(lr=v)),
    ("stages[0].weight_decay", lambda r, v: r["stages"][0].update(weight_decay=v)),
    ("stages[1].losses[0].temperature", lambda r, v: r["stages"][1].update(losses=[{"kind": "hinton",
                                                                                      "temperature": v}])),
    ("stages[1].losses[0].weight", lambda r, v: r["stages"][1].update(losses=[{"kind": "hinton", "weight": v}])),
    ("data.val_fraction", lambda r, v: r["data"].update(val_fraction=v)),
]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(("key", "change"), NUMERIC_FIELDS, ids=[k for k, _ in NUMERIC_FIELDS])
def test_non_finite_numbers_are_refused(tmp_path: Path, key: str, change, value: float) -> None:
    recipe = demo_recipe_dict()
    change(recipe, value)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _assert_refused(_validate(path)[0], key.split("[")[0])


@pytest.mark.parametrize(("change", "fragment"), [
    (lambda r: r["stages"][0].update(epochs=True), "epochs"),
    (lambda r: r["stages"][0].update(batch_size=False), "batch_size"),
    (lambda r: r.update(seed=2**32), "seed"),
    (lambda r: r.update(seed=-1), "seed"),
    (lambda r: r["teacher"]["model"].update(hidden=10**10), "teacher.model.hidden"),
    (lambda r: r["student"]["model"].update(channels=[8, 10**7]), "student.model.channels[1]"),
    (lambda r: r.update(teacher={"model": {"arch": "bert", "layers": 1000, "hidden": 65536, "heads": 8}}),
     "parameters; expected at most"),
    (lambda r: r["data"].update(val_fraction=0.5, test_fraction=0.5), "val_fraction + test_fraction"),
])
def test_values_that_cannot_train_are_refused(tmp_path: Path, change, fragment: str) -> None:
    recipe = demo_recipe_dict()
    change(recipe)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _assert_refused(_validate(path)[0], fragment)


@pytest.mark.parametrize("isa", [["avx513"], ["neon", "Dotprod"], ["sse4.2"]])
def test_unknown_isa_names_in_a_device_profile_are_refused(tmp_path: Path, isa: list[str]) -> None:
    device = tmp_path / "phone.yaml"
    device.write_text(yaml.safe_dump({"name": "phone", "isa": isa,
                                      "budget": {"p90_ms": 10, "size_mb": 10, "peak_memory_mb": 100}}))
    recipe = demo_recipe_dict()
    recipe["device"] = str(device)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    _assert_refused(_validate(path)[0], "isa: unknown instruction-set feature")
