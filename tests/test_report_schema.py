"""report.json has a typed shape (:mod:`edgekd.report.record`) and a shipped JSON Schema that stays current."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

import edgekd
from edgekd.errors import StorageError
from edgekd.export.bundle_record import BundleRecord, read_bundle_record
from edgekd.pipeline import load_run_records
from edgekd.profile.record import ProfiledModel, ProfileRecord, read_profile_record
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.report.record import SCHEMA_PATH, check_report, report_schema
from tests.conftest import demo_recipe_dict, shrink


def test_shipped_schema_is_the_models_schema() -> None:
    assert json.loads(SCHEMA_PATH.read_text()) == report_schema(), "run: python -m edgekd.report.record"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=1, runs=10)
    path = tmp_path_factory.mktemp("schema") / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return Path(edgekd.run(path, out=path.parent / "run").report_path).parent


@pytest.fixture(scope="module")
def report(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text())


def test_a_written_report_matches_the_schema(report: dict) -> None:
    assert check_report(report).to_json() == report  # read back whole: what the renderers read is what was written
    assert report["operators"] and sum(op["share"] for op in report["operators"]) == pytest.approx(1.0, abs=1e-6)
    for role in report["roles"]:
        assert set(report[role]) <= set(report_schema()["$defs"]["ModelFigures"]["properties"])


@pytest.mark.parametrize("damage", [
    lambda r: r.pop("stages"),
    lambda r: r["student"].update(p90_ms="fast"),
    lambda r: r["student"].update(new_figure=1.0),
    lambda r: r["stages"][0].pop("fingerprint"),
    lambda r: r["budget"]["checks"][0].update(passed="maybe"),
    lambda r: r["budget"].update(verdict="passed"),
    lambda r: r["cpu"].update(cores=2),
    lambda r: r["cpu"].pop("isa"),
    lambda r: r["roles"].append("assistant"),
    lambda r: r["operators"].append({"op_type": "MatMul", "nodes": 2}),
    lambda r: r["operators"][0].update(share="most"),
    lambda r: r["quantization"].append({"stage": "quantize", "role": "student", "decision": "int8"}),
    lambda r: r["quantization"].append({"stage": "quantize", "role": None, "decision": 8, "reason": None}),
])
def test_a_report_of_another_shape_is_refused(report: dict, damage) -> None:
    broken = copy.deepcopy(report)
    damage(broken)
    with pytest.raises((ValidationError, ValueError)):
        check_report(broken)


def test_every_model_figure_the_report_builds_is_in_the_schema() -> None:
    from edgekd.model_metrics import ModelFigures
    from edgekd.report.build import MODEL_FIELDS, TASK_FIELDS

    assert set(MODEL_FIELDS) | set(TASK_FIELDS) == set(ModelFigures.model_fields)



def _assert_damage_is_one_line(read, record: dict, field: str, damage) -> None:
    """Damaging a stage record's metrics makes ``read`` raise one StorageError line naming its file and field."""
    record = copy.deepcopy(record)
    damage(record["metrics"])
    with pytest.raises(StorageError) as caught:
        read(record)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{record['index']:02d}-{record['stage']}/stage.json: metrics.{field}: ")


def _bundle_record(run_dir: Path) -> dict:
    return next(r for r in load_run_records(run_dir) if r["stage"] == "bundle")


def test_the_bundle_record_round_trips_from_its_stage_json_into_the_report(run_dir: Path, report: dict) -> None:
    record = _bundle_record(run_dir)
    bundle = read_bundle_record(record)
    assert bundle.model_dump() == record["metrics"] == report["bundle"]
    assert BundleRecord.model_validate_json(bundle.model_dump_json()) == bundle
    assert bundle.files[bundle.model_file].bytes == (run_dir / bundle.directory / bundle.model_file).stat().st_size


@pytest.mark.parametrize("field,damage", [
    ("zip_bytes", lambda m: m.pop("zip_bytes")),
    ("format", lambda m: m.update(format="tflite")),
    ("files.model.onnx.sha256", lambda m: m["files"]["model.onnx"].pop("sha256")),
    ("files.README.md.bytes", lambda m: m["files"]["README.md"].update(bytes="many")),
    ("legacy", lambda m: m.update(legacy=True)),
])
def test_a_malformed_bundle_record_is_one_line_naming_its_file_and_field(run_dir: Path, field: str, damage) -> None:
    _assert_damage_is_one_line(read_bundle_record, _bundle_record(run_dir), field, damage)


def _profile_record(run_dir: Path) -> dict:
    return next(r for r in load_run_records(run_dir) if r["stage"] == "profile")


def test_the_budget_verdict_round_trips_from_its_stage_json_into_the_report(run_dir: Path, report: dict) -> None:
    record = _profile_record(run_dir)
    verdict = read_profile_record(record).budget
    assert verdict is not None and verdict.to_json() == record["metrics"]["budget"] == report["budget"]
    assert verdict.judged == report["final_model"] and verdict.measured
    assert [c.name for c in verdict.checks] == ["p90_latency", "model_size", "peak_memory"]
    assert verdict.passed == all(c.passed for c in verdict.checks)
    assert verdict.limits.p90_ms == next(c.limit for c in verdict.checks if c.name == "p90_latency")


def test_a_run_without_profile_says_so_in_a_typed_verdict(tmp_path: Path) -> None:
    from edgekd.config.device import load_device
    from edgekd.report.build import _budget

    device = load_device("host-cpu")
    verdict = BudgetVerdict.model_validate(_budget(device, None))
    assert verdict.verdict == "not measured" and not verdict.measured and not verdict.checks
    assert set(_budget(device, None)) == {"verdict", "limits", "reason"}  # report.json's shape before typing
    assert verdict.limits == device.budget


def test_the_profile_record_is_each_models_timing_count_and_the_judged_models_operators(run_dir: Path,
                                                                                       report: dict) -> None:
    record = _profile_record(run_dir)
    profile = read_profile_record(record)
    assert isinstance(profile, ProfileRecord) and profile.to_json() == record["metrics"]
    assert set(profile.models) == {"teacher", "student"}
    student, teacher = profile.models["student"], profile.models["teacher"]
    assert isinstance(student, ProfiledModel) and student.p50_ms <= student.p90_ms <= student.p99_ms
    assert student.macs == report["student"]["macs"] and sum(student.macs_by_op.values()) == student.macs
    assert [op.to_json() for op in student.operators or []] == report["operators"]
    assert teacher.operators is None and teacher.speedup is None  # only the judged model gets them
    speedup = (student.speedup or {})["teacher"]
    assert speedup.rounds == len(student.session_p50_ms) == len(teacher.session_p50_ms) and speedup.ratio > 0
    assert profile.cpu is not None and profile.cpu.to_json() == report["cpu"]


@pytest.mark.parametrize("field,damage", [
    ("budget.verdict", lambda m: m["budget"].update(verdict="maybe")),
    ("budget.limits.p90_ms", lambda m: m["budget"]["limits"].pop("p90_ms")),
    ("budget.checks[0].passed", lambda m: m["budget"]["checks"][0].update(passed="sometimes")),
    ("budget.legacy", lambda m: m["budget"].update(legacy=True)),
    ("student.p90_ms", lambda m: m["student"].update(p90_ms="fast")),
    ("teacher.macs_by_op", lambda m: m["teacher"].pop("macs_by_op")),
    ("teacher.cpu.isa", lambda m: m["teacher"]["cpu"].pop("isa")),
    ("student.operators[1].share", lambda m: m["student"]["operators"][1].update(share="most")),
    ("student.speedup.teacher.rounds", lambda m: m["student"]["speedup"]["teacher"].pop("rounds")),
    ("student.legacy", lambda m: m["student"].update(legacy=1)),
    ("assistant", lambda m: m.update(assistant=3)),
])
def test_a_malformed_profile_record_is_one_line_naming_its_file_and_field(run_dir: Path, field: str, damage) -> None:
    _assert_damage_is_one_line(read_profile_record, _profile_record(run_dir), field, damage)
