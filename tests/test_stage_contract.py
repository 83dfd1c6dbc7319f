"""The stage contract, checked for every registered stage kind.

- A stage's fingerprint changes with every recipe field it declares and with no other one.
- A stage reading a field it does not declare fails (so the real stages, run by the other tests, prove
  their declarations).
- ``check_recipe`` (``edgekd validate``) finds cross-field mistakes before anything trains, with the key path.
- The pipeline runs any registry: here tiny fake stages stand in for training, so the re-run rules
  (which stages re-run after a change, and why, as ``--dry-run`` says) are tested in milliseconds.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.cli import app
from edgekd.config.device import DeviceProfile, load_device
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.pipeline import fingerprint, fingerprint_inputs, run_pipeline
from edgekd.run_plan import plan_run
from edgekd.stage_kind import ALL_FIELDS, UndeclaredReadError
from edgekd.stages import DEFAULT_REGISTRY, StageRegistry, check_recipe
from tests.conftest import demo_recipe_dict, shrink

runner = CliRunner()
DEVICE = load_device("host-cpu")

#: A text recipe with an assistant, in the shape of pipelines/sst2-assistant.yaml (its files are never read).
TEXT_RECIPE: dict[str, Any] = {
    "name": "contract",
    "data": {"source": "tsv", "train": "/nonexistent/train.tsv", "test": "/nonexistent/dev.tsv"},
    "tokenizer": {"vocab_size": 8000},
    "teacher": {"model": {"arch": "bert", "layers": 4, "hidden": 64, "heads": 2}},
    "assistant": {"model": {"arch": "bert", "layers": 2, "hidden": 32, "heads": 2}},
    "student": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2}},
    "stages": [
        {"stage": "teacher"},
        {"stage": "distill", "teacher": "teacher", "student": "assistant"},
        {"stage": "distill", "teacher": "assistant", "student": "student"},
        {"stage": "export"},
        {"stage": "quantize"},
        {"stage": "profile"},
        {"stage": "bundle"},
        {"stage": "report"},
    ],
}

#: One change to each top-level recipe field (a function of the recipe dict).
FIELD_CHANGES = {
    "name": lambda r: r.update(name="renamed"),
    "description": lambda r: r.update(description="another description"),
    "seed": lambda r: r.update(seed=7),
    "device": lambda r: r.update(device="android-midrange-cpu"),
    "data": lambda r: r["data"].update(val_examples=123),
    "tokenizer": lambda r: r["tokenizer"].update(vocab_size=4000),
    "teacher": lambda r: r["teacher"]["model"].update(layers=6),
    "assistant": lambda r: r["assistant"]["model"].update(layers=3),
    "student": lambda r: r["student"]["model"].update(hidden=64),
    "stages": lambda r: r["stages"][5].update(runs=300),
}
#: Settings a kind's config needs besides its tag.
REQUIRED = {"hybrid": {"target_params_ratio": 0.5}}


def _recipe(changes: dict[str, Any] | None = None, base: dict[str, Any] = TEXT_RECIPE) -> Recipe:
    data = copy.deepcopy(base)
    for key, value in (changes or {}).items():
        FIELD_CHANGES[key](data) if value is None else value(data)
    return validate_model(data, Recipe, source="test")


def _stage_fingerprint(kind_name: str, recipe: Recipe) -> str:
    kind = DEFAULT_REGISTRY[kind_name]
    config = kind.config.model_validate({"stage": kind_name, **REQUIRED.get(kind_name, {})})
    return fingerprint(fingerprint_inputs("", config, recipe, DEVICE, kind))


def _reads(kind_name: str) -> tuple[str, ...]:
    kind = DEFAULT_REGISTRY[kind_name]
    reads = kind.reads_of(kind.config.model_validate({"stage": kind_name, **REQUIRED.get(kind_name, {})}))
    return tuple(Recipe.model_fields) if reads == ALL_FIELDS else reads


CASES = [(kind, field) for kind in DEFAULT_REGISTRY.names() for field in FIELD_CHANGES]


@pytest.mark.parametrize(("kind", "field"), CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_fingerprint_covers_exactly_the_fields_a_stage_reads(kind: str, field: str) -> None:
    changed = _stage_fingerprint(kind, _recipe({field: None})) != _stage_fingerprint(kind, _recipe())
    assert changed == (field in _reads(kind)), f"{kind} reads {_reads(kind)}; changing {field} changed={changed}"


def test_every_kind_declares_real_fields_and_a_runnable_target() -> None:
    for kind in DEFAULT_REGISTRY:
        assert set(_reads(kind.name)) <= set(Recipe.model_fields), kind.name
        assert callable(kind.runner()), kind.name
        if kind.rejudge is not None:  # what judges a reused record of the kind again
            module, function = kind.rejudge.split(":")
            assert callable(getattr(importlib.import_module(module), function)), kind.name


def test_every_kind_a_run_may_reuse_reads_its_record_back_as_a_typed_record() -> None:
    """A stage's record is reused, or a report rebuilt from it, only when its metrics read back as its kind's typed
    record: a kind without a reader would have its damaged figures trusted (the report stage is always re-run)."""
    for kind in DEFAULT_REGISTRY:
        if kind.name == "report":
            assert kind.record is None and not kind.cacheable
            continue
        assert kind.record is not None, kind.name
        assert kind.record_problem({"index": 1, "stage": kind.name, "metrics": {"x": "?"}}) is not None, kind.name


def test_reading_an_undeclared_field_fails() -> None:
    view = DEFAULT_REGISTRY["export"].view(_recipe(), None)
    assert view.data.source == "tsv"
    with pytest.raises(UndeclaredReadError, match="stage 'export' read recipe.teacher"):
        _ = view.teacher
    with pytest.raises(UndeclaredReadError):
        view.model_dump(include={"student"})


# --------------------------------------------------------------------------- pipeline with fake stages

CALLS: list[str] = []


def fake_run(config: Any, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Stands in for a stage: reads every field it declares (through the view) and passes the artifact on."""
    for name in ctx.recipe.reads:
        getattr(ctx.recipe, name)
    CALLS.append(ctx.stage_dir_name)
    (ctx.path("output.txt")).write_text(config.stage)
    return StageOutput(artifact=artifact, metrics={"stage": config.stage})


def fake_failure(_config: Any, _artifact: Artifact, _ctx: StageContext) -> StageOutput:
    raise ConfigError("targets: 'heads' asked of a model without heads")


def _fake_registry(**runs: str) -> StageRegistry:
    # the fake stages' metrics are not the kinds' typed records: none is read back, nor judged again
    return StageRegistry(dataclasses.replace(kind, run=runs.get(kind.name, f"{__name__}:fake_run"),
                                             extra_inputs=None, record=None, rejudge=None) for kind in DEFAULT_REGISTRY)


def _ran(recipe: Recipe, run_dir: Path, registry: StageRegistry) -> list[str]:
    CALLS.clear()
    run_pipeline(recipe, DEVICE, run_dir, show_progress=False, registry=registry)
    return list(CALLS)


def test_changed_tokenizer_reruns_the_teacher_and_everything_after(tmp_path: Path) -> None:
    registry = _fake_registry()
    assert len(_ran(_recipe(), tmp_path, registry)) == 8
    assert _ran(_recipe(), tmp_path, registry) == ["07-bundle", "08-report"]  # never cached
    changed = _recipe({"tokenizer": None})
    plan = plan_run(changed, DEVICE, tmp_path, registry=registry)
    assert plan[0].describe() == "01-teacher  re-runs: tokenizer.vocab_size changed 8000 → 4000"
    assert all(p.status == "re-runs" for p in plan)
    assert _ran(changed, tmp_path, registry)[0] == "01-teacher"


def test_changed_assistant_reruns_both_distill_stages_not_the_teacher(tmp_path: Path) -> None:
    registry = _fake_registry()
    _ran(_recipe(), tmp_path, registry)
    changed = _recipe({"assistant": None})
    plan = {p.directory: p for p in plan_run(changed, DEVICE, tmp_path, registry=registry)}
    assert plan["01-teacher"].status == "cached"
    assert plan["02-distill"].describe() == "02-distill  re-runs: assistant.model.layers changed 2 → 3"
    assert plan["03-distill"].status == "re-runs"
    assert _ran(changed, tmp_path, registry)[:2] == ["02-distill", "03-distill"]


def test_changed_stage_setting_is_named_with_its_key_path(tmp_path: Path) -> None:
    registry = _fake_registry()
    _ran(_recipe(), tmp_path, registry)
    bigger = _recipe({"stages": lambda r: r["stages"][3].update(target="onnx-fp32"), "student": None})
    plan = plan_run(bigger, DEVICE, tmp_path, registry=registry)
    assert [p.status for p in plan[:3]] == ["cached", "cached", "re-runs"]
    assert "student.model.hidden changed 32 → 64" in plan[2].describe()
    assert plan[3].describe() == "04-export  re-runs: an earlier stage re-runs"


def test_a_recipe_mistake_found_while_running_names_the_stage(tmp_path: Path) -> None:
    registry = _fake_registry(distill=f"{__name__}:fake_failure")
    with pytest.raises(ConfigError, match=r"^recipe 'contract': stages\[1\] \(distill\): targets: 'heads'"):
        run_pipeline(_recipe(), DEVICE, tmp_path, show_progress=False, registry=registry)


def fake_importing(config: Any, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """A stage that imports a library in the middle of its work (as the report stage imports matplotlib) and uses it."""
    import interrupted_library

    assert interrupted_library.submodule.package_value() == "loaded"
    return fake_run(config, artifact, ctx)


def test_a_re_run_in_the_same_process_after_a_ctrl_c_inside_an_import_imports_the_library_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a stage imported a package left its submodules cached on the half-built package: every re-run in
    that process (a notebook's) failed in the import (matplotlib: no attribute 'get_data_path') until a restart."""
    package = tmp_path / "lib" / "interrupted_library"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "from . import submodule\n"
        "import os\n"
        "if os.environ.get('EDGEKD_TEST_INTERRUPT'):\n"
        "    raise KeyboardInterrupt  # Ctrl-C half-way through the import\n"
        "VALUE = 'loaded'\n")
    (package / "submodule.py").write_text(
        "import interrupted_library\n\n\ndef package_value():\n    return interrupted_library.VALUE\n")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    monkeypatch.setenv("EDGEKD_TEST_INTERRUPT", "1")
    registry = _fake_registry(distill=f"{__name__}:fake_importing")
    with pytest.raises(KeyboardInterrupt):
        _ran(_recipe(), tmp_path / "run", registry)
    assert "interrupted_library.submodule" not in sys.modules  # not left bound to the half-built package
    monkeypatch.delenv("EDGEKD_TEST_INTERRUPT")
    try:
        assert _ran(_recipe(), tmp_path / "run", registry)[0] == "02-distill"  # the teacher stage resumed
    finally:
        for name in ("interrupted_library", "interrupted_library.submodule"):
            sys.modules.pop(name, None)


# --------------------------------------------------------------------------- validation before training


def _demo(**edits: Any) -> dict[str, Any]:
    recipe = shrink(demo_recipe_dict())
    for key, value in edits.items():
        recipe[key] = value
    return recipe


def _with_stage(recipe: dict[str, Any], index: int, stage: dict[str, Any]) -> dict[str, Any]:
    recipe["stages"].insert(index, stage)
    return recipe


def _text(**edits: Any) -> dict[str, Any]:
    recipe = copy.deepcopy(TEXT_RECIPE)
    recipe.update(edits)
    return recipe


LATE_MISTAKES = {
    "ensemble weights": (
        _text(teacher={"model": {"arch": "bert"}, "ensemble": {"members": 3, "weighting": [1.0, 2.0]}}),
        "teacher.ensemble.weighting: 2 weights for 3 members"),
    "heads of a cnn": (
        _with_stage(_demo(), 2, {"stage": "prune", "targets": ["heads"]}),
        "stages[2].targets: a 'cnn' model prunes channels, not heads"),
    "hybrid ffn of a cnn": (
        _with_stage(_demo(), 2, {"stage": "hybrid", "target_params_ratio": 0.5, "prune": {"targets": ["ffn"]}}),
        "stages[2].prune.targets: a 'cnn' model prunes channels"),
    "prune a bilstm": (
        _text(student={"model": {"arch": "bilstm"}}, stages=[
            {"stage": "teacher"}, {"stage": "distill"}, {"stage": "prune"}, {"stage": "export"}]),
        "stages[2].stage: a 'bilstm' student has nothing structured pruning removes"),
    "augment images": (
        _demo(stages=[{"stage": "teacher"}, {"stage": "distill", "augment": {}}, {"stage": "export"}]),
        "stages[1].augment: augmentation makes new sentences"),
    "hidden loss on a cnn": (
        _demo(stages=[{"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "hidden"}]}]),
        "stages[1].losses[0].kind: loss 'hidden' compares the models' hidden_states, which a 'cnn' student"),
    "minilm loss on a textcnn": (
        _text(student={"model": {"arch": "textcnn"}}, stages=[
            {"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "hinton"}, {"kind": "minilm"}]}]),
        "stages[1].losses[1].kind: loss 'minilm' compares the models' qkv"),
    "attention recovery on a cnn": (
        _with_stage(_demo(), 2, {"stage": "prune", "recovery": {"losses": [{"kind": "attention"}]}}),
        "stages[2].recovery.losses[0].kind: loss 'attention'"),
    # the losses are built for the models' declared sizes: these failed only after the teacher trained
    "skip map deeper than the teacher": (
        _text(stages=[{"stage": "teacher"}, {"stage": "distill", "losses": [
            {"kind": "hidden", "layer_map": {"kind": "skip", "k": 5}}]}]),
        "stages[1].losses[0]: layer map 'skip' with k=5 maps student layer 1 to teacher layer 5, but the teacher "
        "has 4 layers"),
    "relation heads not dividing the widths": (
        _text(stages=[{"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "minilm", "relation_heads": 5}]}]),
        "stages[1].losses[0]: loss 'minilm': the student's hidden size 32 is not divisible by relation_heads=5"),
    "explicit pair beyond the assistant": (
        _text(stages=[{"stage": "teacher"}, {"stage": "distill", "teacher": "teacher", "student": "assistant"},
                      {"stage": "distill", "teacher": "assistant", "student": "student", "losses": [
                          {"kind": "attention", "layer_map": {"kind": "explicit", "pairs": [[1, 3]]}}]}]),
        "stages[2].losses[0]: layer map 'explicit' pair [1, 3] is out of range: student layers are 0..1 and teacher "
        "layers 0..2"),
    "keep beyond the assistant it is cut from": (
        _text(student={"model": {"arch": "drop_layers", "keep": [0, 2, 3]}}),
        "student.model.keep: expected distinct layer indices below 2 (the assistant's layers), got [0, 2, 3]"),
    "keep beyond a drop_layers assistant": (
        _text(assistant={"model": {"arch": "drop_layers", "keep": 2}},
              student={"model": {"arch": "drop_layers", "keep": 3}}),
        "student.model.keep: expected at most 2 layers (the assistant's), got 3"),
    "ensemble with a hidden loss": (
        _text(teacher={"model": {"arch": "bert"}, "ensemble": {"members": 2}}, stages=[
            {"stage": "teacher"}, {"stage": "distill", "student": "student", "losses": [{"kind": "cosine"}]}]),
        "stages[1].losses[0].kind: distilling from an ensemble transfers averaged soft targets only"),
    "bert on images": (
        _demo(student={"model": {"arch": "bert", "layers": 1}}),
        "student.model.arch: a 'bert' model takes text inputs, but data.source 'sklearn' gives image data"),
    "quantize a model no stage makes": (
        _text(stages=[{"stage": "teacher"}, {"stage": "export"}, {"stage": "quantize", "roles": ["student"]}]),
        "stages[2].roles[0]: no earlier stage makes the student"),
}


@pytest.mark.parametrize("case", list(LATE_MISTAKES))
def test_cross_field_mistakes_exit_2_from_validate_with_the_key_path(case: str, tmp_path: Path) -> None:
    recipe, expected = LATE_MISTAKES[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert expected in result.output, result.output


def test_validation_and_the_pipeline_check_the_same_rules(tmp_path: Path) -> None:
    recipe, expected = LATE_MISTAKES["hidden loss on a cnn"]
    loaded = validate_model(recipe, Recipe, source="r.yaml")
    with pytest.raises(ConfigError, match="losses"):
        check_recipe(loaded, "r.yaml")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.losses\[0\]\.kind"):
        run_pipeline(loaded, DEVICE, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "01-teacher").exists()  # refused before the teacher trained


def test_dry_run_names_what_changed(write_recipe, tmp_path: Path) -> None:
    recipe = shrink(demo_recipe_dict())
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("teacher", "distill", "export")]
    out = tmp_path / "run"
    first = runner.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(out), "--dry-run"])
    assert first.exit_code == 0, first.output
    assert first.output.split() == ["01-teacher", "runs", "02-distill", "runs", "03-export", "runs"]
    assert not out.exists()
    assert runner.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(out), "-q"]).exit_code == 0
    lr = recipe["stages"][1]["lr"]
    recipe["stages"][1]["lr"] = lr * 2
    second = runner.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(out), "--dry-run"])
    assert second.exit_code == 0, second.output
    assert second.output.splitlines() == [
        "01-teacher  cached", f"02-distill  re-runs: stages[1].lr changed {lr} → {lr * 2}",
        "03-export  re-runs: an earlier stage re-runs"]


def test_a_stage_whose_files_changed_is_planned_to_rerun_with_the_reason(tmp_path: Path) -> None:
    registry = _fake_registry()
    _ran(_recipe(), tmp_path, registry)
    (tmp_path / "02-distill" / "output.txt").unlink()
    plan = plan_run(_recipe(), DEVICE, tmp_path, registry=registry)
    assert plan[0].status == "cached"
    assert plan[1].status == "re-runs" and "cannot be reused" in plan[1].describe()
    assert "output.txt" in plan[1].describe()
    assert plan[2].describe() == "03-distill  re-runs: an earlier stage re-runs"
    assert _ran(_recipe(), tmp_path, registry)[:2] == ["02-distill", "03-distill"]


def test_a_teacher_in_the_shared_store_is_planned_as_copied_and_then_copied(tmp_path: Path) -> None:
    registry = _fake_registry()
    _ran(_recipe(), tmp_path / "one", registry)
    plan = plan_run(_recipe(), DEVICE, tmp_path / "two", registry=registry)
    assert plan[0].describe().startswith("01-teacher  cached: copied from the shared stage store")
    assert plan[1].status == "runs"
    assert _ran(_recipe(), tmp_path / "two", registry)[0] == "02-distill"  # the teacher was not run again
    assert plan_run(_recipe(), DEVICE, tmp_path / "three", fresh=True, registry=registry)[0].status == "runs"


def test_a_description_re_runs_no_stage_that_times_or_exports(tmp_path: Path) -> None:
    """A device profile's or export preset's description is shown in listings and reports only: a changed one
    re-timed every model (profile, quantize) and re-exported them."""
    preset = tmp_path / "mine.yaml"
    recipe = _recipe()

    def fingerprints(device: DeviceProfile, description: str) -> dict[str, str]:
        preset.write_text(f"name: mine\nformat: ort\ndescription: {description}\n")
        configs = {"quantize": {}, "profile": {}, "export": {"target": str(preset)}}
        return {kind: fingerprint(fingerprint_inputs("", DEFAULT_REGISTRY[kind].config.model_validate(
            {"stage": kind, **settings}), recipe, device, DEFAULT_REGISTRY[kind]))
            for kind, settings in configs.items()}

    before = fingerprints(DEVICE, "one")
    assert fingerprints(DEVICE.model_copy(update={"description": "my laptop"}), "two") == before
    wider = DEVICE.model_copy(update={"inputs": DEVICE.inputs.model_copy(update={"batch": DEVICE.inputs.batch + 1})})
    assert all(a != b for a, b in zip(fingerprints(wider, "two").values(), before.values(), strict=True))


def test_neither_a_budget_nor_a_description_re_runs_a_compression_stage() -> None:
    """prune, factorize and hybrid measure at the device's input shapes and threads (a hybrid's latency target is its
    own): another budget or description re-trained them and every stage after."""
    recipe = _recipe()
    configs = {"prune": {}, "factorize": {}, "hybrid": {"target_params_ratio": 0.5}}

    def fingerprints(device: DeviceProfile) -> list[str]:
        return [fingerprint(fingerprint_inputs("", DEFAULT_REGISTRY[kind].config.model_validate(
            {"stage": kind, **settings}), recipe, device, DEFAULT_REGISTRY[kind]))
            for kind, settings in configs.items()]

    before = fingerprints(DEVICE)
    budget = DEVICE.budget.model_copy(update={"p90_ms": DEVICE.budget.p90_ms / 2, "size_mb": DEVICE.budget.size_mb / 2})
    assert fingerprints(DEVICE.model_copy(update={"budget": budget, "description": "my phone"})) == before
    longer = DEVICE.model_copy(update={"inputs": DEVICE.inputs.model_copy(
        update={"sequence_length": DEVICE.inputs.sequence_length * 2})})
    assert all(a != b for a, b in zip(fingerprints(longer), before, strict=True))


def test_a_latency_budget_does_not_re_run_quantization_but_a_size_budget_does() -> None:
    """The quantize stage keeps INT8 where it is faster, or where only it fits the size budget: a new p90 budget
    (compress at another budget) keeps its result, a new size budget re-runs it; the profile stage, whose timings
    no budget changes, keeps its result for either (its verdict is judged again: test_pipeline.py)."""
    recipe = _recipe()
    budget = DEVICE.budget

    def fingerprints(**changes: float) -> tuple[str, str]:
        device = DEVICE.model_copy(update={"budget": budget.model_copy(update=changes)})
        return tuple(fingerprint(fingerprint_inputs("", DEFAULT_REGISTRY[kind].config.model_validate({"stage": kind}),
                                                    recipe, device, DEFAULT_REGISTRY[kind]))
                     for kind in ("quantize", "profile"))  # type: ignore[return-value]

    quantize, profile = fingerprints()
    faster = fingerprints(p90_ms=budget.p90_ms / 2, peak_memory_mb=budget.peak_memory_mb / 2)
    assert faster == (quantize, profile)
    smaller = fingerprints(size_mb=budget.size_mb / 2)
    assert smaller[0] != quantize and smaller[1] == profile
