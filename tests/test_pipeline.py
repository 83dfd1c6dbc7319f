"""The pipeline resumes finished stages, re-runs what changed, and never trusts half-written work."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import edgekd
from edgekd import catalog
from edgekd.cli import app
from edgekd.pipeline import load_run_records
from tests.conftest import demo_recipe_dict, shrink
from tests.reliability import TINY_STAGES, assert_user_error, cli, tiny_recipe, write_yaml

TRAIN_AND_EXPORT = ("teacher", "distill", "export")


def _recipe(**changes) -> dict:
    recipe = shrink(demo_recipe_dict())
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in TRAIN_AND_EXPORT]
    for stage in recipe["stages"]:
        stage.update(changes.get(stage["stage"], {}))
    return recipe


def _metrics(result) -> dict:
    return {role: {k: m.metrics[k] for k in ("accuracy", "params")} for role, m in result.artifact.models.items()}


def test_second_run_skips_finished_stages_with_same_metrics(write_recipe, tmp_path: Path) -> None:
    path = write_recipe(_recipe())
    first = edgekd.run(path, out=tmp_path / "run")
    assert [r.skipped for r in first.stages] == [False, False, False]
    second = edgekd.run(path, out=tmp_path / "run")
    assert [r.skipped for r in second.stages] == [True, True, True]
    assert _metrics(second) == _metrics(first)
    assert [r.wall_seconds for r in second.stages] == [r.wall_seconds for r in first.stages]
    assert (tmp_path / "run" / "03-export" / "student.onnx").is_file()
    assert [r["stage"] for r in load_run_records(tmp_path / "run")] == list(TRAIN_AND_EXPORT)


def test_changed_stage_reruns_it_and_later_stages_only(write_recipe, tmp_path: Path) -> None:
    edgekd.run(write_recipe(_recipe()), out=tmp_path / "run")
    changed = write_recipe(_recipe(distill={"lr": 0.002}), name="changed.yaml")
    result = edgekd.run(changed, out=tmp_path / "run")
    assert [r.skipped for r in result.stages] == [True, False, False]


def _run_json(recipe: Path, run_dir: Path, *args: str | Path) -> dict:
    """``edgekd run RECIPE --out RUN_DIR --json ARGS``'s document (the run must succeed)."""
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(run_dir), "--json", *map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_a_new_budget_judges_the_stored_timings_again(write_recipe, tmp_path: Path, caplog) -> None:
    """A budget changes only the profile stage's verdict, not what it measures, yet another one (``--budget-ms``, a
    device profile's) timed every model again: the stage is reused, its timings judged against the new budget."""
    recipe = write_recipe(tiny_recipe(stages=(*TINY_STAGES, "report")))
    run_dir = tmp_path / "run"
    first = _run_json(recipe, run_dir, "--budget-ms", 1000)
    profiled = json.loads((run_dir / "04-profile" / "stage.json").read_text())
    assert first["report"]["budget"]["verdict"] == "pass" and first["report"]["budget"]["limits"]["p90_ms"] == 1000
    device = yaml.safe_load(catalog.find("devices", "host-cpu").read_text())  # the same device, half as much disk
    size_mb = profiled["metrics"]["student"]["size_mb"]
    device["budget"]["size_mb"] = size_mb / 2
    (tmp_path / "smaller.yaml").write_text(yaml.safe_dump(device))
    caplog.clear()

    second = _run_json(recipe, run_dir, "--budget-ms", 500, "--device", tmp_path / "smaller.yaml")
    assert [stage["skipped"] for stage in second["stages"]] == [True, True, True, True, False, False]
    assert "stage 04-profile: skipped" in caplog.text and "stage 04-profile: running" not in caplog.text
    rejudged = json.loads((run_dir / "04-profile" / "stage.json").read_text())
    assert {key: value for key, value in rejudged.items() if key not in ("metrics", "artifact")} == {
        key: value for key, value in profiled.items() if key not in ("metrics", "artifact")}
    assert {role: rejudged["metrics"][role] for role in ("teacher", "student")} == {
        role: profiled["metrics"][role] for role in ("teacher", "student")}  # the same timings, not new ones
    verdict = rejudged["metrics"]["budget"]
    assert verdict["verdict"] == "fail" and verdict["limits"] == {**device["budget"], "p90_ms": 500}
    assert [(check["name"], check["limit"], check["passed"]) for check in verdict["checks"]] == [
        ("p90_latency", 500, True), ("model_size", size_mb / 2, False), ("peak_memory", 500, True)]
    assert rejudged["artifact"]["student"]["metrics"]["budget_verdict"] == "fail"
    assert second["report"]["budget"] == verdict
    assert json.loads((run_dir / "bundle" / "manifest.json").read_text())["budget"]["verdict"] == "fail"

    hashed = rejudged["fingerprint_inputs"] | {"device": rejudged["fingerprint_inputs"]["device"] | {
        "budget": rejudged["metrics"]["budget"]["limits"]}}  # as an edgekd that hashed the budget recorded it
    (run_dir / "04-profile" / "stage.json").write_text(json.dumps(rejudged | {"fingerprint_inputs": hashed}))
    rebuilt = cli("report", run_dir)  # such a run's report is rebuilt: the budget it ignores now is no mismatch
    assert rebuilt.exit_code == 0, rebuilt.output


def test_fresh_ignores_cache(write_recipe, tmp_path: Path) -> None:
    path = write_recipe(_recipe())
    edgekd.run(path, out=tmp_path / "run")
    result = edgekd.run(path, out=tmp_path / "run", fresh=True)
    assert not any(r.skipped for r in result.stages)


def test_same_seed_gives_identical_metrics_and_onnx_bytes(write_recipe, tmp_path: Path) -> None:
    # A fixed thread count: with ``auto`` a busier machine may train the second run on fewer threads, whose
    # sums add in another order (a suite on 2 cores once got weights differing in their last bits).
    path = write_recipe({**_recipe(), "threads": 1})
    a = edgekd.run(path, out=tmp_path / "a")
    b = edgekd.run(path, out=tmp_path / "b")
    assert [r.data["torch_threads"] for r in a.stages] == [1, 1, 1]
    assert _metrics(a) == _metrics(b)
    for role in ("teacher", "student"):
        assert (tmp_path / "a/03-export" / f"{role}.onnx").read_bytes() == (
            tmp_path / "b/03-export" / f"{role}.onnx").read_bytes()


def test_unfinished_stage_directory_is_not_taken_for_a_result(write_recipe, tmp_path: Path) -> None:
    path = write_recipe(_recipe())
    run_dir = tmp_path / "run"
    edgekd.run(path, out=run_dir)
    # Simulate a crash inside the export stage: its directory is back to ".partial" with no stage.json.
    (run_dir / "03-export" / "stage.json").unlink()
    (run_dir / "03-export").rename(run_dir / ".03-export.partial")
    result = edgekd.run(path, out=run_dir)
    assert [r.skipped for r in result.stages] == [True, True, False]
    assert not (run_dir / ".03-export.partial").exists()


def test_stage_finished_but_not_renamed_is_recovered(write_recipe, tmp_path: Path) -> None:
    path = write_recipe(_recipe())
    run_dir = tmp_path / "run"
    edgekd.run(path, out=run_dir)
    (run_dir / "02-distill").rename(run_dir / ".02-distill.partial")  # killed between stage.json and rename
    result = edgekd.run(path, out=run_dir)
    assert [r.skipped for r in result.stages] == [True, True, True]
    assert (run_dir / "02-distill" / "stage.json").is_file()


def test_interrupted_training_resumes_from_checkpoint(write_recipe, tmp_path: Path, monkeypatch) -> None:
    from edgekd.distill import trainer

    path = write_recipe(_recipe(distill={"epochs": 6}))
    reference = edgekd.run(path, out=tmp_path / "reference")

    calls = {"n": 0}
    original = trainer._save_checkpoint

    def crash_after_three_epochs(directory, modules, optimizer, scheduler, best_state, history):
        original(directory, modules, optimizer, scheduler, best_state, history)
        if "distill" in directory.name and history.epochs_run == 3:  # as if killed right after epoch 3
            calls["n"] += 1
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "_save_checkpoint", crash_after_three_epochs)
    with pytest.raises(KeyboardInterrupt):
        edgekd.run(path, out=tmp_path / "run")
    assert calls["n"] == 1
    monkeypatch.setattr(trainer, "_save_checkpoint", original)
    resumed = edgekd.run(path, out=tmp_path / "run")
    distill = resumed.stages[1]
    assert distill.metrics["student"]["resumed_from_epoch"] == 3
    assert _metrics(resumed) == _metrics(reference)


def test_stage_record_contents(write_recipe, tmp_path: Path) -> None:
    edgekd.run(write_recipe(_recipe()), out=tmp_path / "run")
    record = json.loads((tmp_path / "run/02-distill/stage.json").read_text())
    assert set(record) >= {"fingerprint", "config", "inputs", "artifact", "metrics", "wall_seconds"}
    assert record["inputs"]["teacher"]["weights"] == "01-teacher/teacher"
    assert record["artifact"]["student"]["weights"] == "02-distill/student"
    assert (tmp_path / "run/02-distill/student/edgekd_model.json").is_file()
    assert record["config"]["losses"] == [{"kind": "hinton", "weight": 1.0, "temperature": 4.0, "alpha": 0.7}]
    assert len(record["metrics"]["history"]) == record["config"]["epochs"]


def test_removed_stages_leave_no_stale_directories(write_recipe, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    edgekd.run(write_recipe(_recipe()), out=tmp_path / "run")
    shorter = _recipe()
    shorter["stages"] = shorter["stages"][:2]
    edgekd.run(write_recipe(shorter, name="short.yaml"), out=tmp_path / "run")
    assert not (tmp_path / "run" / "03-export").exists()
    assert "holds a run of recipe" not in caplog.text  # the same recipe, changed
    edgekd.run(write_recipe({**shorter, "name": "other"}, name="other.yaml"), out=tmp_path / "run")
    assert f"{tmp_path / 'run'}: holds a run of recipe 'demo-digits'; this run of 'other' replaces it" in caplog.text
    shutil.rmtree(tmp_path / "run")


ALL_STAGES = (*TINY_STAGES, "report")
#: Files of the user's at the top of a run directory, one under a name like a plot's.
USERS_FILES = {"notes.txt": b"mine", "photo.png": b"not a plot of edgekd's"}


@pytest.fixture(scope="module")
def bundled_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run with every stage writing at the top of the run directory (profile, bundle, report)."""
    root = tmp_path_factory.mktemp("bundled")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(teacher_epochs=1, distill_epochs=2, stages=ALL_STAGES)))
    edgekd.run(recipe, out=root / "run")
    return root / "run"


def _copied_with_users_files(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    for name, data in USERS_FILES.items():
        (to / name).write_bytes(data)
    return to


def _top(run_dir: Path) -> set[str]:
    """What is at the top of ``run_dir`` besides stage directories and edgekd's hidden files."""
    return {path.name for path in run_dir.iterdir() if not path.name.startswith(".") and not path.name[:2].isdigit()}


def _outputs_are_the_reports(run_dir: Path) -> None:
    """The top of ``run_dir`` holds run.json, the report's files and the user's, and run.json lists the report's."""
    files = json.loads((run_dir / "report.json").read_text())["files"]
    assert _top(run_dir) == {"run.json", *files, *USERS_FILES}
    assert json.loads((run_dir / "run.json").read_text())["outputs"] == sorted(files)
    assert all((run_dir / name).read_bytes() == data for name, data in USERS_FILES.items())


def test_a_rerun_without_the_bundle_stage_removes_the_bundle_before_its_stages_run(
        bundled_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundle stayed, an earlier student's, beside a report saying the run had none."""
    from tests.test_stale_report import _stopping_export

    assert {"bundle", "bundle.zip", "latency_distribution.png"} <= _top(bundled_run)
    run_dir = _copied_with_users_files(bundled_run, tmp_path / "run")
    without = tmp_path / "without.yaml"
    without.write_text(yaml.safe_dump(tiny_recipe(teacher_epochs=1, distill_epochs=3,
                                                  stages=tuple(s for s in ALL_STAGES if s != "bundle"))))
    _stopping_export(monkeypatch)
    with pytest.raises(RuntimeError, match="export stopped"):  # a run that stops half way ...
        edgekd.run(without, out=run_dir)
    assert not {"bundle", "bundle.zip"} & _top(run_dir)  # ... shows no earlier run's bundle as its own
    monkeypatch.undo()
    result = edgekd.run(without, out=run_dir)
    assert result.report_record().bundle is None
    _outputs_are_the_reports(run_dir)
    assert "latency_distribution.png" in _top(run_dir)  # profiled again


def test_a_rerun_without_profile_or_report_stages_removes_their_plots_and_report(
        bundled_run: Path, tmp_path: Path) -> None:
    """Another recipe into the same directory left the bundle and the latency plots of the earlier one."""
    run_dir = _copied_with_users_files(bundled_run, tmp_path / "run")
    other = tiny_recipe(teacher_epochs=1, distill_epochs=3, stages=("teacher", "distill", "export", "report"))
    edgekd.run(write_yaml(tmp_path / "other.yaml", {**other, "name": "other"}), out=run_dir)
    assert "latency_distribution.png" not in _top(run_dir)
    _outputs_are_the_reports(run_dir)
    other["stages"] = other["stages"][:-1]
    edgekd.run(write_yaml(tmp_path / "other.yaml", {**other, "name": "other"}), out=run_dir)
    assert _top(run_dir) == {"run.json", *USERS_FILES}
    assert json.loads((run_dir / "run.json").read_text())["outputs"] == []


def test_outputs_of_a_run_record_without_their_list_are_found_and_a_tampered_list_deletes_nothing_else(
        bundled_run: Path, tmp_path: Path) -> None:
    """A run directory of an edgekd that kept no list loses its bundle too; a list naming the user's files, a stage
    directory or a path leaves them."""
    tampered = ["bundle", "bundle.zip", "notes.txt", "01-teacher", "../outside.png", "/tmp", "run.json"]
    for case, listed in enumerate((None, tampered)):
        run_dir = _copied_with_users_files(bundled_run, tmp_path / f"run{case}")
        record = json.loads((run_dir / "run.json").read_text())
        if listed is None:
            record.pop("outputs", None)
        else:
            record["outputs"] = listed
        (run_dir / "run.json").write_text(json.dumps(record))
        (tmp_path / "outside.png").write_bytes(b"outside")
        without = tiny_recipe(teacher_epochs=1, distill_epochs=2, stages=("teacher", "distill", "export", "report"))
        result = edgekd.run(write_yaml(tmp_path / "without.yaml", without), out=run_dir)
        assert [r.skipped for r in result.stages] == [True, True, True, False]
        assert not {"bundle", "bundle.zip"} & _top(run_dir)
        if listed is None:
            _outputs_are_the_reports(run_dir)  # and the earlier latency plot gone, which its report.json listed
        assert (run_dir / "01-teacher" / "stage.json").is_file() and (tmp_path / "outside.png").is_file()
        assert all((run_dir / name).read_bytes() == data for name, data in USERS_FILES.items())


def test_a_rerun_with_the_bundle_stage_replaces_the_bundle_and_its_zip_together(
        bundled_run: Path, tmp_path: Path) -> None:
    run_dir = _copied_with_users_files(bundled_run, tmp_path / "run")
    changed = tiny_recipe(teacher_epochs=1, distill_epochs=3, stages=ALL_STAGES)
    result = edgekd.run(write_yaml(tmp_path / "changed.yaml", changed), out=run_dir)
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    assert manifest["accuracy"]["test"] == result.artifact.get("student").metrics.accuracy
    assert (run_dir / "bundle" / "model.onnx").read_bytes() != (bundled_run / "bundle" / "model.onnx").read_bytes()
    with zipfile.ZipFile(run_dir / "bundle.zip") as archive:  # the zip is of the new directory
        assert {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()} == {
            path.relative_to(run_dir / "bundle").as_posix(): path.read_bytes()
            for path in (run_dir / "bundle").rglob("*") if path.is_file()}
    files = json.loads((run_dir / "report.json").read_text())["files"]
    assert json.loads((run_dir / "run.json").read_text())["outputs"] == sorted([*files, "bundle", "bundle.zip"])


def test_run_directory_records_recipe_and_device(write_recipe, tmp_path: Path) -> None:
    from edgekd.pipeline import load_run

    edgekd.run(write_recipe(_recipe()), out=tmp_path / "run")
    recipe, device, records = load_run(tmp_path / "run")
    assert recipe.name == "demo-digits" and device.name == "host-cpu"
    assert [r["stage"] for r in records] == list(TRAIN_AND_EXPORT)


def test_an_identical_teacher_is_reused_from_another_run_directory(write_recipe, tmp_path: Path,
                                                                   own_stage_store: Path) -> None:
    path = write_recipe(_recipe())
    first = edgekd.run(path, out=tmp_path / "one")
    assert [r.skipped for r in first.stages] == [False, False, False]
    second = edgekd.run(path, out=tmp_path / "two")
    assert [r.skipped for r in second.stages] == [True, False, False]  # teacher from the store, the rest run
    teacher = "01-teacher/teacher/model.safetensors"
    assert (tmp_path / "two" / teacher).read_bytes() == (tmp_path / "one" / teacher).read_bytes()
    assert _metrics(second) == _metrics(first)
    changed = edgekd.run(write_recipe(_recipe(teacher={"lr": 0.003}), name="changed.yaml"), out=tmp_path / "three")
    assert not changed.stages[0].skipped  # another teacher: trained, not fetched
    assert len([stored for stored in own_stage_store.iterdir() if stored.is_dir()]) == 2


def test_the_store_is_not_used_when_off_or_fresh(write_recipe, tmp_path: Path, monkeypatch) -> None:
    path = write_recipe(_recipe())
    edgekd.run(path, out=tmp_path / "one")
    assert not edgekd.run(path, out=tmp_path / "two", fresh=True).stages[0].skipped
    monkeypatch.setenv("EDGEKD_STAGE_STORE", "off")
    assert not edgekd.run(path, out=tmp_path / "three").stages[0].skipped


@pytest.mark.parametrize("value", ["~nosuchuser-edgekd/store", "~"])
def test_a_stage_store_path_whose_home_cannot_be_found_turns_sharing_off(
        value: str, write_recipe, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    """``~nosuchuser/x`` (or ``~`` without a home) was an internal error naming neither the variable nor its value:
    the run goes on without the store, saying why."""
    monkeypatch.setenv("EDGEKD_STAGE_STORE", value)
    if value == "~":
        monkeypatch.delenv("HOME")
        monkeypatch.setattr("pwd.getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(uid)))
    with caplog.at_level("WARNING", logger="edgekd.stage_store"):
        result = edgekd.run(write_recipe(_recipe()), out=tmp_path / "run")
    assert not any(stage.skipped for stage in result.stages)
    assert f"shared stage store off: EDGEKD_STAGE_STORE='{value}': cannot expand '~'" in caplog.text


def test_a_cache_path_whose_home_cannot_be_found_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from edgekd.cache import cache_root
    from edgekd.errors import ConfigError

    monkeypatch.setenv("EDGEKD_CACHE", "~nosuchuser-edgekd/cache")
    with pytest.raises(ConfigError, match=r"^EDGEKD_CACHE='~nosuchuser-edgekd/cache': cannot expand '~' \(.*\); set "
                                          r"EDGEKD_CACHE to an absolute path$"):
        cache_root()


def test_a_stored_teacher_damaged_in_place_is_not_copied_into_new_runs(
        write_recipe, tmp_path: Path, own_stage_store: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Weights damaged in the store (same size: a run directory checks large files by size) were copied into every
    new run, whose teacher then failed naming the run's copy: the store's copy is checked against the SHA-256 it was
    kept with, and a damaged one is trained again and kept anew."""
    recipe = {**_recipe(), "threads": 1}
    recipe["teacher"]["model"]["hidden"] = 4096  # weights over 1 MiB: a run directory checks them by size only
    path = write_recipe(recipe)
    first = edgekd.run(path, out=tmp_path / "one")
    (stored,) = [p for p in own_stage_store.iterdir() if p.is_dir()]
    weights = stored / "teacher" / "model.safetensors"
    data = weights.read_bytes()
    assert len(data) > 1 << 20
    weights.write_bytes(data[:-64] + b"\xff" * 64)
    with caplog.at_level("WARNING", logger="edgekd.stage_store"):
        second = edgekd.run(path, out=tmp_path / "two")
    assert not second.stages[0].skipped  # trained again, not fetched
    assert f"{stored}: the shared stage store's copy changed since it was kept" in caplog.text
    assert _metrics(second) == _metrics(first)
    assert (stored / "teacher" / "model.safetensors").read_bytes() == data  # kept anew from the new run
    assert edgekd.run(path, out=tmp_path / "three").stages[0].skipped


def _killed_while_replacing(run_dir: Path, state: str) -> None:
    """Leave ``02-distill`` as a kill while a re-run of it (``--fresh``) was replacing it left it: the new stage
    finished in ``.02-distill.partial``, the earlier one somewhere between in place and deleted."""
    stage, partial, aside = (run_dir / name for name in ("02-distill", ".02-distill.partial", ".02-distill.old"))
    shutil.copytree(stage, partial)
    if state == "deleted in place":  # edgekd up to this fix: rmtree() unlinks stage.json first
        (stage / "stage.json").unlink()
        (stage / "student" / "model.safetensors").unlink()
    elif state == "deleted in place, among a user's files":
        (stage / "stage.json").unlink()
        (stage / "student" / "mine.txt").write_text("keep")
    else:
        shutil.copytree(stage, aside)
        if state == "renamed aside":
            shutil.rmtree(stage)
        elif state == "replaced, the earlier one half deleted":
            shutil.rmtree(partial)
            (aside / "stage.json").unlink()
        else:
            shutil.rmtree(partial)


@pytest.mark.parametrize("state", ["deleted in place", "renamed aside", "replaced", "replaced, the earlier one half "
                                   "deleted", "deleted in place, among a user's files", "deleted in place, unreadable"])
def test_a_run_killed_while_replacing_a_finished_stage_resumes(write_recipe, tmp_path: Path, state: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill while a stage directory was deleted before its new one took its place left it without its stage.json:
    every later run was refused ('exists and was not written by edgekd')."""
    path = write_recipe(_recipe())
    run_dir = tmp_path / "run"
    edgekd.run(path, out=run_dir)
    written = _stage_files(run_dir)
    _killed_while_replacing(run_dir, state.removesuffix(", unreadable"))
    left = {p: p.read_bytes() for p in (run_dir / "02-distill").rglob("*") if p.is_file()}
    if state.endswith("unreadable"):  # a directory in it that cannot be listed may hold anything
        unreadable, scandir = run_dir / "02-distill" / "student", os.scandir
        monkeypatch.setattr(os, "scandir", lambda p=".": (
            _raise(PermissionError(13, "Permission denied", str(p))) if Path(p) == unreadable else scandir(p)))
    if "user" in state or "unreadable" in state:  # what edgekd may not have written is never taken for its own
        outcome = cli("run", path, "--out", run_dir, "-q")
        assert_user_error(outcome, "02-distill", "was not written by edgekd", logged=True)
        monkeypatch.undo()
        assert {p: p.read_bytes() for p in (run_dir / "02-distill").rglob("*") if p.is_file()} == left
        return
    outcome = cli("run", path, "--out", run_dir, "-q")
    assert outcome.exit_code == 0, outcome.output
    assert _stage_files(run_dir) == written  # every stage resumed whole (their records too: none ran again)
    assert not list(run_dir.glob(".02-distill.*"))


def _raise(exc: OSError) -> None:
    raise exc


def _stage_files(run_dir: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run_dir.glob("[0-9][0-9]-*/**/*") if p.is_file()}
