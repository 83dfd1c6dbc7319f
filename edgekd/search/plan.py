"""What a budget search will train: the latency table judged against the budget, feasible structures ranked.

A candidate is *feasible* when its table p90 is at most the budget less ``latency_margin`` (the
table times untrained models a little differently from the real export, and the machine is
noisy) and its size and peak memory are within the budget. Feasible candidates are grouped by
structure (one training run serves every precision of it) and ranked by capacity: ``rank_by``
(MACs or parameters of the exported graph) descending, then the lower table p90. When nothing is
feasible the search fails here, before any training, with :func:`edgekd.search.messages.no_fit_message`.

A search on its arch's default space (no ``space`` in the recipe) leaves out candidates with as many parameters
as the teacher or more: the fixed default lists (a BERT student up to hidden 512) can outgrow a small teacher,
and a student as large as its teacher is no compression. A ``space`` the recipe gives is taken as written.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from edgekd.config.device import Budget, DeviceProfile
from edgekd.errors import BudgetError, ConfigError
from edgekd.search.build import Family
from edgekd.search.config import SearchStage
from edgekd.search.messages import no_fit_message, outgrown_message
from edgekd.search.record import Entry
from edgekd.search.space import Candidate, Structure, candidates
from edgekd.search.table import LatencyTable, latency_table


@dataclass(frozen=True)
class Row:
    """A candidate, its table entry, and the budget limits it exceeds (none: feasible)."""

    candidate: Candidate
    entry: Entry
    over: tuple[str, ...]
    outgrows_teacher: bool = False
    """As many parameters as the teacher or more, in a default space: left out whatever the budget."""

    @property
    def feasible(self) -> bool:
        """True when the table entry is within every limit (and not left out as outgrowing the teacher)."""
        return not self.over and not self.outgrows_teacher

    def to_json(self) -> dict[str, Any]:
        """The entry's figures with the candidate's label, its structure's key and what it exceeds."""
        return {**self.entry.to_json(), "label": self.candidate.label, "structure": self.candidate.structure.key,
                "over": list(self.over)}


@dataclass(frozen=True)
class Choice:
    """A feasible structure and the precisions at which it is feasible, with its table figures."""

    structure: Structure
    precisions: tuple[str, ...]
    capacity: int
    entries: dict[str, Entry]
    """Its feasible entries by precision."""


@dataclass(frozen=True)
class SearchPlan:
    """The table, every candidate's verdict, and the feasible structures in training order."""

    table: LatencyTable
    rows: tuple[Row, ...]
    ranked: tuple[Choice, ...]

    def batches(self, size: int) -> Iterator[tuple[Choice, ...]]:
        """The ranked structures ``size`` at a time: the top-K, then the next K if none of them fits."""
        for start in range(0, len(self.ranked), size):
            yield self.ranked[start:start + size]


def exceeded(entry: Entry, budget: Budget, margin: float) -> tuple[str, ...]:
    """The budget limits ``entry`` is over (``p90_ms`` against the budget less ``margin``)."""
    limits = (("p90_ms", entry.p90_ms, budget.p90_ms * (1 - margin)), ("size_mb", entry.size_mb, budget.size_mb),
              ("peak_memory_mb", entry.peak_memory_mb, budget.peak_memory_mb))
    return tuple(name for name, value, limit in limits if value > limit)


def plan_search(stage: SearchStage, student: Any, family: Family, device: DeviceProfile, *,
                fresh: bool = False, teacher_params: int | None = None) -> SearchPlan:
    """The latency table of ``stage``'s grid around ``student`` (``fresh``: every candidate timed again) and what
    to train, best first; with ``teacher_params`` a default space leaves out candidates not smaller than the
    teacher.

    Raises :class:`BudgetError` when no candidate fits the device's budget, :class:`ConfigError` when every
    candidate of a default space is at least as large as the teacher.
    """
    grid = candidates(stage, student, depth=family.depth)
    table = latency_table(grid, family, device, stage, fresh=fresh)
    ceiling = teacher_params if stage.space is None and teacher_params else None
    rows = tuple(Row(c, table[c], exceeded(table[c], device.budget, stage.latency_margin),
                     outgrows_teacher=ceiling is not None and table[c].params >= ceiling) for c in grid)
    kept = [row for row in rows if not row.outgrows_teacher]
    if not kept:
        raise ConfigError(outgrown_message(rows, student.arch, teacher_params or 0))
    feasible = [row for row in kept if row.feasible]
    if not feasible:
        raise BudgetError(no_fit_message(kept, device, stage, family))
    return SearchPlan(table=table, rows=rows, ranked=rank_feasible(feasible, stage.rank_by))


def rank_feasible(feasible: list[Row], rank_by: str) -> tuple[Choice, ...]:
    """The feasible rows grouped by structure, the most capacity (``rank_by``) first, then the lower table p90."""
    by_structure: dict[str, list[Row]] = {}
    for row in feasible:
        by_structure.setdefault(row.candidate.structure.key, []).append(row)
    choices = [Choice(structure=group[0].candidate.structure, precisions=tuple(r.candidate.precision for r in group),
                      capacity=getattr(group[0].entry, rank_by),
                      entries={r.candidate.precision: r.entry for r in group})
               for group in by_structure.values()]
    choices.sort(key=lambda c: (-c.capacity, min(e.p90_ms for e in c.entries.values())))
    return tuple(choices)
