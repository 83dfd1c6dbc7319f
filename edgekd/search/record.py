"""The typed record a budget search writes into its ``stage.json`` metrics (``search``) and ``report.json``
repeats as ``search``: the latency table and each candidate's status, the trained structures, every trained
variant's real export as measured, the confirmations and the choice.

A classifier's search (:class:`SearchRecord`) chooses by a validation metric named by a string; a causal
LM's (:class:`LMSearchRecord`, ``task: causal_lm``) by validation loss, with per-token latencies.
:func:`read_search_record` reads either back from a stage record with one clear line when it is malformed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Discriminator, Field, RootModel, Tag

from edgekd.config.device import Budget, DeviceProfile, GenerationShape
from edgekd.export.config import load_export_target
from edgekd.stage_record import FullRecord, read_stage_record

if TYPE_CHECKING:
    from edgekd.search.config import SearchStage
    from edgekd.search.plan import Row, SearchPlan
    from edgekd.search.train import Trained

#: What became of a latency-table candidate.
Status = Literal["trained", "feasible", "over budget", "not smaller than the teacher"]


class Entry(FullRecord):
    """One latency-table candidate's figures on the device (``estimate``: host time × the device's speed ratio)."""

    key: str
    label: str
    precision: str
    p50_ms: float
    p90_ms: float
    size_mb: float
    peak_memory_mb: float
    host_p90_ms: float
    estimate: bool
    macs: int
    params: int
    measured_at: str
    other_load: float | None = Field(
        default=None, description="CPUs other processes kept busy, on average, while the table timed it (None: not "
                                  "watched, a table cached by an older edgekd).")


class TableStats(FullRecord):
    """How a table was obtained: entries timed now, entries read from the cache, and the time it took."""

    path: str
    entries: int
    profiled: int
    reused: int
    seconds: float = Field(description="Wall time of building, exporting and timing the missing candidates (0 when "
                                       "all were cached).")


class TableCandidate(Entry):
    """One latency-table entry (random weights, exported and timed) and what became of it."""

    structure: str
    over: list[str] = Field(description="The budget limits the entry exceeds (none: feasible).")
    status: Status


class TableRecord(TableStats):
    """How the latency table was obtained (timed now or read from its cache file) and its candidates."""

    feasible: int
    candidates: list[TableCandidate]


class TrainedStructure(FullRecord):
    """A feasible structure that was distilled (and pruned/factorized) for real."""

    structure: str
    label: str
    capacity: int
    train_seconds: float
    note: str | None = Field(description="Why a precision was dropped (e.g. int8 refused), else null.")


class ConfirmationRecord(FullRecord):
    """A chosen variant timed again (``runs`` runs) and judged against the whole budget."""

    label: str
    p50_ms: float
    p90_ms: float
    size_mb: float
    peak_memory_mb: float
    runs: int
    verdict: Literal["pass", "fail"]


class _Measured(FullRecord):
    """A trained variant's real export, timed and judged (latencies per generated token for a causal LM)."""

    structure: str
    label: str
    precision: str
    onnx: str
    params: int | None
    p50_ms: float
    p90_ms: float
    table_p90_ms: float | None
    size_mb: float
    peak_memory_mb: float
    estimate: bool
    verdict: Literal["pass", "fail"]


class MeasuredRecord(_Measured):
    """A trained classifier variant: its validation ``metric`` (what the choice is made on) and test figures."""

    metric: str
    score: float | None
    val_score: float | None
    accuracy: float | None
    val_accuracy: float | None


class LMMeasuredRecord(_Measured):
    """A trained causal-LM variant: its validation loss and generation speed."""

    val_loss: float
    tokens_per_second: float


class ChosenRecord(MeasuredRecord):
    """The chosen classifier variant and its confirmation."""

    confirmed: ConfirmationRecord


class LMConfirmationRecord(LMMeasuredRecord):
    """A causal-LM variant measured again (``runs`` generations) and judged against the whole budget."""

    runs: int


class LMChosenRecord(LMMeasuredRecord):
    """The chosen causal-LM variant and its confirmation."""

    confirmed: LMConfirmationRecord


class LMMetric(FullRecord):
    """What a causal-LM search chooses by."""

    name: str
    description: str


class _Search(FullRecord):
    """What every budget search records."""

    device: str
    budget: Budget
    latency_margin: float
    estimate: bool
    reference: dict[str, Any] | None = Field(
        description="An estimated device's speed ratio and its reference model (null when measured here).")
    family: dict[str, Any]
    space: dict[str, list[Any]]
    prune: list[float]
    factorize: list[float | None]
    precision: list[str]
    rank_by: str
    top_k: int
    table: TableRecord
    trained: list[TrainedStructure]
    wall_seconds: float


class SearchRecord(_Search):
    """A classifier's budget search (chosen by the best validation ``metric`` within the budget)."""

    task: Literal["classifier"] = "classifier"
    metric: str
    lower_is_better: bool
    measured: list[MeasuredRecord]
    confirmations: list[ConfirmationRecord]
    chosen: ChosenRecord


class LMSearchRecord(_Search):
    """A causal LM's budget search (chosen by the lowest validation loss within the per-token budget)."""

    task: Literal["causal_lm"]
    metric: LMMetric
    per_token_limit_ms: float
    generation: GenerationShape
    measured: list[LMMeasuredRecord]
    confirmations: list[LMConfirmationRecord]
    chosen: LMChosenRecord


def _task(value: Any) -> str:
    """The record's ``task`` (records written before it was recorded are a classifier's)."""
    task = value.get("task") if isinstance(value, dict) else getattr(value, "task", None)
    return task or "classifier"


AnySearchRecord = Annotated[Annotated[SearchRecord, Tag("classifier")] | Annotated[LMSearchRecord, Tag("causal_lm")],
                            Discriminator(_task)]


class SearchRecordOf(RootModel[AnySearchRecord]):
    """Either search record, told apart by ``task``."""


def search_record(data: dict[str, Any]) -> SearchRecord | LMSearchRecord:
    """``data`` (a search stage's ``search`` metrics, or report.json's ``search``) as its typed record."""
    return SearchRecordOf.model_validate(data).root


def read_search_record(record: dict[str, Any]) -> SearchRecord | LMSearchRecord:
    """The search stage ``record``'s ``search`` metrics as a typed record; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(SearchRecordOf, record, "search").root


def stage_metrics(record: SearchRecord | LMSearchRecord, stage: SearchStage) -> dict[str, Any]:
    """The search stage's ``stage.json`` metrics: its record and the export target its candidates used."""
    target = load_export_target(stage.target)
    return {"search": record.model_dump(mode="json"), "target": target.model_dump(mode="json")}


def search_fields(stage: SearchStage, device: DeviceProfile, family: dict[str, Any], plan: SearchPlan,
                  trained: Sequence[Trained], space: dict[str, list[Any]], started: float) -> dict[str, Any]:
    """What every search records alike (:class:`_Search`'s fields): the device and its budget, the grid searched,
    the latency table, what was trained and the wall time since ``started`` (a ``time.perf_counter`` reading)."""
    return {
        "device": device.name, "budget": device.budget, "latency_margin": stage.latency_margin,
        "estimate": device.is_estimate, "reference": _reference(device), "family": family, "space": space,
        "prune": stage.prune, "factorize": stage.factorize, "precision": stage.precision, "rank_by": stage.rank_by,
        "top_k": stage.top_k, "table": table_record(plan, trained), "trained": trained_structures(trained),
        "wall_seconds": round(time.perf_counter() - started, 3),
    }


def _reference(device: DeviceProfile) -> dict[str, Any] | None:
    """Where an estimated device's latencies come from: the reference model and the speed ratio measured here."""
    if device.reference is None:
        return None
    from edgekd.profile.speed_ratio import speed_ratio  # times the reference model: not for importers of records

    return speed_ratio(device.reference).to_json()


def table_record(plan: SearchPlan, trained: Sequence[Trained]) -> TableRecord:
    """The plan's latency table with each candidate's status: trained, feasible, over budget or not smaller
    than the teacher."""
    done = {t.choice.structure.key for t in trained}
    rows = [TableCandidate(**row.to_json(), status=_status(row, done)) for row in plan.rows]
    return TableRecord(**plan.table.stats.to_json(), feasible=sum(row.feasible for row in plan.rows), candidates=rows)


def _status(row: Row, trained: set[str]) -> Status:
    """What became of a latency-table candidate (``trained``: the keys of the structures trained)."""
    if row.outgrows_teacher:
        return "not smaller than the teacher"
    if not row.feasible:
        return "over budget"
    return "trained" if row.candidate.structure.key in trained else "feasible"


def trained_structures(trained: Sequence[Trained]) -> list[TrainedStructure]:
    """What was trained for real, in training order."""
    return [TrainedStructure(structure=t.choice.structure.key, label=t.choice.structure.label,
                             capacity=t.choice.capacity, train_seconds=round(t.wall_seconds, 3), note=t.note)
            for t in trained]
