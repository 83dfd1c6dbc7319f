"""The typed shape of ``report.json``, the machine record of a run, and its JSON Schema.

:func:`edgekd.report.build.build_report` assembles the record; :class:`RunReport` checks it before it is
written, so a report that does not match the shipped schema (``edgekd/schemas/report.schema.json``)
is an internal error, never a file a script downstream trips over. ``python -m edgekd.report.record``
rewrites the schema file after a change here (a test keeps the two equal).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ConfigDict, Field

from edgekd.config.device import DeviceProfile
from edgekd.dataset_distill.record import LearntSet
from edgekd.errors import ConfigError, StorageError, first_line
from edgekd.export.bundle_record import BundleRecord
from edgekd.model_metrics import ModelFigures, ModelMetrics
from edgekd.profile.cpu import CpuInfo
from edgekd.profile.operators import OperatorTime
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.quantize.record import QuantizationDecision
from edgekd.rundir import RUN_RECORD, STAGE_RECORD, read_stage_record, stage_dir_name
from edgekd.search.record import AnySearchRecord
from edgekd.stage_record import Record, read_stored

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schemas" / "report.schema.json"


class StageFigures(ModelFigures):
    """A model's figures after one stage: those measured so far, and the profile's verdict once judged."""

    budget_verdict: str | None = Field(default=None, description="The profile stage's verdict on the budget.")


def stage_figures(metrics: ModelMetrics) -> StageFigures:
    """The :class:`StageFigures` among a model's ``metrics`` (only those a stage set)."""
    return StageFigures.model_validate(metrics.model_dump(include=set(StageFigures.model_fields), exclude_unset=True))


class StageRow(Record):
    """One stage of the run: what it changed and every model's figures after it."""

    model_config = ConfigDict(extra="allow")

    index: int
    stage: str
    fingerprint: str
    changed: list[str]
    models: dict[str, StageFigures]
    wall_seconds: float
    started_at: str | None = None
    torch_threads: int | None = None


class DatasetDistillRun(LearntSet):
    """One ``dataset_distill`` stage in ``report.json``: its index and what it learnt (:class:`LearntSet`)."""

    index: int


class Comparison(Record):
    """The student's figures over the teacher's (null where either lacks the figure or the teacher's is 0)."""

    accuracy_ratio: float | None = None
    params_ratio: float | None = None
    macs_ratio: float | None = None
    size_ratio: float | None = None
    p50_latency_ratio: float | None = None
    p90_latency_ratio: float | None = None
    val_loss_ratio: float | None = None
    per_token_p50_ratio: float | None = None


class RunReport(Record):
    """``report.json``: one :class:`ModelFigures` object per model role at the top level (``teacher``,
    ``student``, ...) besides the fields below."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, ModelFigures] = Field(init=False)

    edgekd_version: str
    # a mapping, not a Recipe: validating a Recipe opens the checkpoints it names (a local ``pretrained`` must
    # exist and load), so a report read back elsewhere, or after a checkpoint moved, would be refused
    recipe: dict[str, Any] = Field(description="The recipe as run (its validated fields, as JSON).")
    device: DeviceProfile = Field(description="The device profile the run was judged on.")
    cpu: CpuInfo
    roles: list[str]
    final_model: str | None
    budget: BudgetVerdict
    stages: list[StageRow]
    operators: list[OperatorTime]
    bundle: BundleRecord | None
    quantization: list[QuantizationDecision]
    search: AnySearchRecord | None
    dataset_distill: list[DatasetDistillRun] = Field(
        default=[], description="Each dataset_distill stage's synthetic set and scores (empty without one).")
    trust_remote_code: list[str]
    warnings: list[str]
    notes: list[str]
    comparison: Comparison | None = Field(default=None, description="Set when the run has a teacher and a student.")
    files: list[str] = []
    plots: dict[str, str] = {}

    def models(self) -> dict[str, ModelFigures]:
        """Every model's figures by role, in the report's ``roles`` order."""
        extra = self.model_extra or {}
        return {role: extra[role] for role in self.roles if role in extra}

    def figures(self, role: str | None) -> ModelFigures | None:
        """The figures of the model ``role`` (``None`` when the report has no such model)."""
        return (self.model_extra or {}).get(role) if role is not None else None

    def to_json(self) -> dict[str, Any]:
        """``report.json``'s content: exactly the keys the report was built or read with."""
        return self.model_dump(mode="json", exclude_unset=True)


def check_report(report: dict[str, Any]) -> RunReport:
    """``report`` as a :class:`RunReport`, once it matches it (a mismatch raises ``ValidationError``) and every model
    its ``roles`` lists has figures (else ``ValueError``)."""
    typed = RunReport.model_validate(report)
    if missing := _without_figures(typed):
        raise ValueError(f"report.json lists roles without figures: {', '.join(missing)}")
    return typed


def _without_figures(report: RunReport) -> list[str]:
    """The roles ``report`` lists that have no figures."""
    return [role for role in report.roles if role not in (report.model_extra or {})]


def report_json(path: Path) -> dict[str, Any]:
    """The ``report.json`` at ``path`` as the JSON it holds; a missing one, or one built from stages its run
    directory has since replaced, is a one-line :class:`ConfigError`, one that is not UTF-8 JSON (cut short,
    overwritten) a one-line :class:`StorageError`."""
    if not path.is_file():
        raise ConfigError(f"{path}: not found; the recipe has no 'report' stage or it has not run")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both are
        raise StorageError(f"{path}: not a JSON report ({first_line(exc)}); rebuild it with edgekd report "
                           f"{path.parent}") from None
    if changed := changed_since(report, path.parent):
        raise ConfigError(f"{path}: describes an earlier run of this directory: stage {changed} has changed since "
                          "(a later run re-ran it and stopped before its 'report' stage, or has none); run the "
                          f"recipe through its 'report' stage again, or report on this run's own stages with edgekd "
                          f"report {path.parent}")
    return report


def changed_since(report: Any, run_dir: Path) -> str | None:
    """The first stage directory ``report`` was built from that no longer holds the stage it read (another
    fingerprint, or gone), in a run directory (one with a ``run.json``); None when every one still does."""
    if not (run_dir / RUN_RECORD).is_file() or not isinstance(report, dict):
        return None
    for row in report.get("stages") or []:
        if not isinstance(row, dict) or not {"index", "stage", "fingerprint"} <= row.keys():
            continue  # a malformed row is the typed reader's to name
        name = stage_dir_name(row["index"], row["stage"]) if isinstance(row["index"], int) else None
        record = read_stage_record(run_dir / name / STAGE_RECORD) if name else None
        if name and (record is None or record.get("fingerprint") != row["fingerprint"]):
            return name
    return None


def read_report(path: Path) -> RunReport:
    """The ``report.json`` at ``path`` as its :class:`RunReport`; a malformed one raises a one-line
    :class:`StorageError` naming the file and the first bad field."""
    report = read_stored(RunReport, report_json(path), str(path))
    if missing := _without_figures(report):
        raise StorageError(f"{path}: roles: {', '.join(missing)} listed without figures")
    return report


def report_schema() -> dict[str, Any]:
    """The JSON Schema of ``report.json``."""
    schema = RunReport.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://edgekd.invalid/schemas/report.schema.json"
    return schema


if __name__ == "__main__":
    SCHEMA_PATH.write_text(json.dumps(report_schema(), indent=2, sort_keys=True) + "\n")
