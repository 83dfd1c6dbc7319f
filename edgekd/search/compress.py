"""``edgekd compress``: any recipe as a budget search, judged against the budget before anything trains.

:func:`search_recipe` turns a recipe into a search. One with a ``search`` stage is kept as it is.
Otherwise the result (named ``<name>-search``) keeps the recipe's data, teacher and teacher stage and
runs a ``search`` stage that distils with the recipe's own distill settings (its last distillation
into the student), exports with its export target and quantizes with its quantize settings, then its
profile stage (or a default one), its bundle stage if it has one, and a report. The search varies the
recipe's student, or the teacher's architecture when the student cannot be varied (``drop_layers``).

:func:`preflight` builds the latency table (cached, so the search stage reuses it) and raises the
search's :class:`~edgekd.errors.BudgetError` when no candidate fits, before the teacher trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.config import is_corpus
from edgekd.distill.stage import teacher_task_data
from edgekd.models.architectures import SEARCHABLE
from edgekd.pipeline import RunResult
from edgekd.quantize.config import QuantizeSettings
from edgekd.report.record import RunReport
from edgekd.search.build import Family
from edgekd.search.causal_lm import lm_preflight
from edgekd.search.config import SearchStage
from edgekd.search.plan import plan_search
from edgekd.search.record import LMSearchRecord, SearchRecord, TableStats, read_search_record

#: Stages of a recipe a derived search keeps (the others are what the search does itself).
KEPT_STAGES = ("teacher", "profile", "bundle")


@dataclass(frozen=True)
class CompressResult:
    """A finished search run and how its latency table was obtained before training."""

    run: RunResult
    table: TableStats
    """The pre-flight table: ``profiled`` 0 and ``seconds`` 0 when every candidate came from the cache."""

    def report(self) -> dict[str, Any]:
        """The run's ``report.json`` as a dict; :meth:`report_record` is the typed one."""
        return self.run.report()

    def report_record(self) -> RunReport:
        """The run's ``report.json`` as its typed :class:`~edgekd.report.record.RunReport`."""
        return self.run.report_record()

    def search(self) -> SearchRecord | LMSearchRecord:
        """The search stage's typed record (latency table, trained candidates, choice)."""
        record = next(r for r in self.run.stages if r.stage == "search")
        return read_search_record(record.data)


def search_recipe(recipe: Recipe) -> Recipe:
    """``recipe`` as a budget search (see the module docstring)."""
    if "search" in recipe.stage_names():
        return recipe
    kept = {stage.stage: stage for stage in recipe.stages if stage.stage in KEPT_STAGES}
    search: dict[str, Any] = {"stage": "search"}
    for stage in recipe.stages:
        if stage.stage == "distill" and stage.student == "student":
            search["distill"] = stage.model_dump(mode="json", exclude={"stage", "teacher", "student"})
        elif stage.stage == "export":
            search["target"] = stage.target
        elif stage.stage == "quantize":
            search["quantize"] = stage.model_dump(mode="json", include=set(QuantizeSettings.model_fields))
    stages = [kept.get("teacher") or {"stage": "teacher"}, search, kept.get("profile") or {"stage": "profile"},
              *([kept["bundle"]] if "bundle" in kept else []), {"stage": "report"}]
    student = recipe.student.model
    if not is_corpus(recipe.data) and (student.arch not in SEARCHABLE
                                     or getattr(student, "pretrained", None) is not None):
        student = recipe.teacher.model
    # only the fields the recipe set: a default written out reads as given (data.color beside an image processor)
    derived = {**recipe.model_dump(mode="json", exclude={"assistant", "student", "stages"}, exclude_unset=True),
               "name": f"{recipe.name}-search", "student": {"model": student.model_dump(mode="json")},
               "stages": [s if isinstance(s, dict) else s.model_dump(mode="json") for s in stages]}
    return validate_model(derived, Recipe, source=f"recipe '{recipe.name}' as a search", expanded=True)


def search_stage(recipe: Recipe) -> SearchStage | None:
    """The recipe's search stage, if it has one."""
    return next((stage for stage in recipe.stages if isinstance(stage, SearchStage)), None)


def preflight(recipe: Recipe, device: DeviceProfile) -> TableStats | None:
    """Judge the recipe's search grid against ``device``'s budget before anything trains (None: no search).

    Builds (or reads) the latency table and raises :class:`~edgekd.errors.BudgetError` when no
    candidate fits; returns how the table was obtained.
    """
    stage = search_stage(recipe)
    if stage is None:
        return None
    if is_corpus(recipe.data):
        return lm_preflight(stage, recipe, device)
    data = teacher_task_data(recipe, recipe.seed)
    family = Family(recipe.student.model.arch, data.signature, data.class_names)
    return plan_search(stage, recipe.student.model, family, device).table.stats
