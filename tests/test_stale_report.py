"""A run directory's ``report.json`` is read only while it describes the stages the directory holds.

A second run of a changed recipe into the same directory re-runs a stage and then stops before its
``report`` stage (a later stage fails), or the recipe no longer has one: the ``report.json`` of the first
run is still there. Reading it (``open_run().report()``, ``report_record()``, ``read_report``) is a
one-line error naming the stage that changed, never the earlier run's figures; ``edgekd run`` does not
print them as the new run's summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.errors import ConfigError
from edgekd.report.record import read_report
from edgekd.report.write import rebuild_report
from edgekd.stage_kind import StageKind

DIGITS = {"source": "sklearn", "name": "digits", "limit": 300}


def _recipe(path: Path, distill_epochs: int, *, report: bool = True, export: bool = False) -> Path:
    stages: list[dict[str, Any]] = [{"stage": "teacher", "epochs": 2, "lr": 0.01},
                                     {"stage": "distill", "epochs": distill_epochs, "lr": 0.01}]
    stages += [{"stage": "export", "target": "onnx-fp32"}] if export else []
    stages += [{"stage": "report"}] if report else []
    path.write_text(yaml.safe_dump({
        "name": "stale", "seed": 0, "device": "host-cpu", "threads": 1, "data": DIGITS,
        "teacher": {"model": {"arch": "mlp", "hidden": [32]}}, "student": {"model": {"arch": "mlp", "hidden": [8]}},
        "stages": stages}))
    return path


def _stopping_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """The export stage raises, as a stage failing half way through a run does."""
    runner = StageKind.runner

    def failing(self: StageKind) -> Any:
        if self.name != "export":
            return runner(self)

        def stop(*args: Any) -> None:
            raise RuntimeError("export stopped")
        return stop
    monkeypatch.setattr(StageKind, "runner", failing)


def test_a_run_that_stops_before_its_report_leaves_no_readable_report_of_the_earlier_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    first = edgekd.run(_recipe(tmp_path / "r.yaml", 2, export=True), out=run)
    assert first.report_record().figures("student") is not None
    _stopping_export(monkeypatch)
    with pytest.raises(RuntimeError, match="export stopped"):
        edgekd.run(_recipe(tmp_path / "r.yaml", 3, export=True), out=run)
    assert (run / "report.json").is_file()  # the earlier run's file is still there ...
    for read in (edgekd.open_run(run).report, edgekd.open_run(run).report_record, first.report,
                 lambda: read_report(run / "report.json")):
        with pytest.raises(ConfigError, match="stage 02-distill has changed since") as error:
            read()  # ... but is not taken for the new run's
        assert "\n" not in str(error.value)


def test_a_finished_run_without_a_report_stage_prints_no_summary_of_the_earlier_one(tmp_path: Path) -> None:
    run = tmp_path / "run"
    edgekd.run(_recipe(tmp_path / "r.yaml", 2), out=run)
    result = CliRunner().invoke(app, ["run", str(_recipe(tmp_path / "r.yaml", 3, report=False)), "--out", str(run),
                                      "-q", "--json"])
    assert result.exit_code == 0, result.output
    assert '"report": null' in result.output
    result = CliRunner().invoke(app, ["run", str(tmp_path / "r.yaml"), "--out", str(run), "-q"])
    assert result.exit_code == 0 and "teacher vs student" not in result.output
    rebuilt = CliRunner().invoke(app, ["report", str(run)])  # the way back: a report of the stages there now
    assert rebuilt.exit_code == 0, rebuilt.output
    assert edgekd.open_run(run).report_record().stages[-1].fingerprint == edgekd.open_run(run).stages[-1][
        "fingerprint"]


def test_a_report_rebuilt_after_a_stopped_run_reads_only_the_stages_that_follow_each_other(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stopped run left its new distill stage beside the earlier run's export and report directories: those
    were made from the earlier student, so the run's records end at the distill stage and so does a rebuilt
    report, whose student is the new one."""
    run = tmp_path / "run"
    edgekd.run(_recipe(tmp_path / "r.yaml", 2, export=True), out=run)
    _stopping_export(monkeypatch)
    with pytest.raises(RuntimeError, match="export stopped"):
        edgekd.run(_recipe(tmp_path / "r.yaml", 3, export=True), out=run)
    assert (run / "03-export" / "stage.json").is_file()
    opened = edgekd.open_run(run)
    assert [record["stage"] for record in opened.stages] == ["teacher", "distill"]
    rebuild_report(run)
    student = opened.report_record().figures("student")
    assert student is not None and student.accuracy == opened.stages[-1]["metrics"]["student"]["accuracy"]


def test_a_changed_recipe_that_stopped_in_its_first_changed_stage_is_not_reported_as_the_earlier_stages(
        tmp_path: Path) -> None:
    """The second run wrote its recipe (distill lr 1e30) to run.json and failed inside distill, leaving the first
    run's stages: edgekd report and open_run showed the earlier student's accuracy beside the new lr (exit 0)."""
    run = tmp_path / "run"
    edgekd.run(_recipe(tmp_path / "r.yaml", 2), out=run)
    changed = yaml.safe_load((tmp_path / "r.yaml").read_text())
    changed["stages"][1]["lr"] = 1.0e30  # diverges at once: the stage fails before writing anything
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(changed))
    with pytest.raises(edgekd.errors.EdgekdError):
        edgekd.run(tmp_path / "r.yaml", out=run)
    before = (run / "report.json").read_bytes()
    for read in (lambda: edgekd.open_run(run), lambda: rebuild_report(run)):
        with pytest.raises(ConfigError, match=r"its recipe \(run.json\) is not the one its stages ran with "
                                              r"\(02-distill: stages\[1\].lr changed 0.01 → 1e\+30\)") as error:
            read()
        assert "\n" not in str(error.value)
    assert (run / "report.json").read_bytes() == before
    changed["stages"][1]["lr"] = 0.01  # the recipe its stages ran with: reported again
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(changed))
    edgekd.run(tmp_path / "r.yaml", out=run)
    assert {path.name for path in rebuild_report(run)} >= {"report.json"}
