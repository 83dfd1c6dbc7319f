"""The teacher, distill and export stages write typed records (:mod:`edgekd.distill.record`,
:mod:`edgekd.export.record`): read back by field they equal what the stage wrote and what the models carry,
and a damaged one is one line naming its ``stage.json`` and the field. (A causal LM's records:
``tests/test_causal_lm_pipeline.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import edgekd
from edgekd.distill.record import DistillFigures, TeacherFigures, read_distill_record, read_teacher_record
from edgekd.errors import StorageError
from edgekd.export.config import load_export_target
from edgekd.export.record import OnnxExportRecord, read_export_record, recorded_target
from edgekd.pipeline import RunResult
from tests.conftest import demo_recipe_dict, shrink
from tests.test_report_schema import _assert_damage_is_one_line


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """A two-member ensemble teacher, a student distilled from it and both exported to .ort (one epoch each)."""
    recipe = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=2)
    recipe["teacher"]["ensemble"] = {"members": 2, "weighting": "accuracy"}
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("teacher", "distill", "export")]
    path = tmp_path_factory.mktemp("records") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return edgekd.run(path, out=path.parent / "run", show_progress=False)


def _record(result: RunResult, stage: str) -> dict:
    return next(s.data for s in result.stages if s.stage == stage)


def test_the_teacher_record_is_the_ensembles_figures(result: RunResult) -> None:
    record = _record(result, "teacher")
    typed = read_teacher_record(record)
    assert typed.to_json() == record["metrics"] and typed.history is None
    teacher = typed.teacher
    assert isinstance(teacher, TeacherFigures) and teacher.members is not None and len(teacher.members) == 2
    assert teacher.accuracy == teacher.members[0].accuracy and 0.0 < teacher.ensemble_accuracy <= 1.0
    assert teacher.members[0].epochs_run == teacher.members[1].epochs_run == 1
    carried = result.artifact.get("teacher").metrics.to_json()  # the export added its figures since
    assert {key: carried[key] for key in teacher.to_json()} == teacher.to_json()


def test_the_distill_record_names_its_model_losses_and_epochs(result: RunResult) -> None:
    record = _record(result, "distill")
    typed = read_distill_record(record)
    assert typed.to_json() == record["metrics"] and typed.role == "student"
    figures = typed.figures
    assert isinstance(figures, DistillFigures) and figures.losses == ["hinton"]
    assert figures.transfer_set_size == figures.labelled_examples > 0  # no augmentation: the training set
    assert [epoch.epoch for epoch in typed.history] == [1, 2] == list(range(1, figures.epochs_run + 1))
    assert all(epoch.model_extra and 0.0 <= epoch.model_extra["val_accuracy"] <= 1.0 for epoch in typed.history)
    assert result.artifact.get("student").metrics.params == figures.params


def test_the_export_record_lists_each_models_file_target_and_parity(result: RunResult) -> None:
    record = _record(result, "export")
    typed = read_export_record(record)
    assert typed.to_json() == record["metrics"]
    assert typed.target == load_export_target("ort-mobile") == recorded_target(record)
    assert set(typed.models) == {"teacher", "student"}
    for role, exported in typed.models.items():
        assert isinstance(exported, OnnxExportRecord) and exported.ort is not None
        onnx = result.run_dir / exported.path
        assert exported.size_mb == pytest.approx(onnx.stat().st_size / 2**20)
        assert exported.parity.passed and exported.parity.max_abs_diff <= exported.parity.tolerance
        assert (onnx.parent / exported.ort.file).is_file() and exported.ort.parity.passed
        assert result.artifact.get(role).metrics.parity_max_abs_diff == exported.parity.max_abs_diff


@pytest.mark.parametrize("field,damage", [
    ("teacher.accuracy", lambda m: m["teacher"].update(accuracy="high")),
    ("teacher.members[1].params", lambda m: m["teacher"]["members"][1].update(params=1.5)),
    ("teacher.ensemble_votes", lambda m: m["teacher"].update(ensemble_votes=3)),
    ("history[0].epoch", lambda m: m.update(history=[{"train_loss": 1.0, "seconds": 1.0}])),
])
def test_a_malformed_teacher_record_is_one_line(result: RunResult, field: str, damage) -> None:
    _assert_damage_is_one_line(read_teacher_record, _record(result, "teacher"), field, damage)


@pytest.mark.parametrize("field,damage", [
    ("history", lambda m: m.pop("history")),
    ("history[1].val_accuracy", lambda m: m["history"][1].update(val_accuracy="best")),
    ("student.losses", lambda m: m["student"].update(losses="hinton")),
    ("student.transfer_set_size", lambda m: m["student"].pop("transfer_set_size")),
    ("assistant.params", lambda m: m.update(assistant={**m["student"], "params": "few"})),
])
def test_a_malformed_distill_record_is_one_line(result: RunResult, field: str, damage) -> None:
    _assert_damage_is_one_line(read_distill_record, _record(result, "distill"), field, damage)


@pytest.mark.parametrize("field,damage", [
    ("target", lambda m: m.pop("target")),
    ("target.opset", lambda m: m["target"].update(opset=99)),
    ("student.parity.passed", lambda m: m["student"]["parity"].update(passed="maybe")),
    ("teacher.ort.file", lambda m: m["teacher"]["ort"].pop("file")),
    ("teacher.input_shapes.input", lambda m: m["teacher"]["input_shapes"].update(input="8x8")),
    ("student.kv_cache.optimization_level", lambda m: m["student"].update(kv_cache=True)),
])
def test_a_malformed_export_record_is_one_line(result: RunResult, field: str, damage) -> None:
    _assert_damage_is_one_line(read_export_record, _record(result, "export"), field, damage)


def test_a_record_without_its_target_is_one_line_for_the_stages_reading_it(result: RunResult) -> None:
    record = _record(result, "export")
    broken = {**record, "metrics": {k: v for k, v in record["metrics"].items() if k != "target"}}
    with pytest.raises(StorageError, match=r"^03-export/stage\.json: metrics\.target: missing$"):
        recorded_target(broken)


def test_a_distill_record_of_two_models_is_refused(result: RunResult, tmp_path: Path) -> None:
    record = _record(result, "distill")
    both = {**record, "metrics": {**record["metrics"], "assistant": record["metrics"]["student"]}}
    with pytest.raises(StorageError, match=r"^02-distill/stage\.json: metrics: .*one model, found 2"):
        read_distill_record(both)


@pytest.mark.parametrize("metrics", [{}, {"budget": None}])
def test_a_profile_record_of_no_model_is_damaged_and_its_stage_runs_again(metrics: dict) -> None:
    """A profile stage.json whose metrics were emptied read as a finished stage: every later run stopped at the
    bundle ('the student was not profiled') and never healed, and edgekd report wrote 'not measured'."""
    from edgekd.stages import DEFAULT_REGISTRY

    problem = DEFAULT_REGISTRY["profile"].record_problem({"index": 4, "stage": "profile", "metrics": metrics})
    assert problem is not None and "no profiled model" in problem
