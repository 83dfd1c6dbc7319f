"""The ``search`` stage: latency table first, training second; the chosen model becomes the student.

1. The grid around the recipe's ``student.model`` (:mod:`edgekd.search.space`) is timed with random
   weights into the latency table (:mod:`edgekd.search.table`, cached) and judged against the device's
   budget; over-budget candidates are dropped before any training, and no feasible one is a
   :class:`~edgekd.errors.BudgetError` (:mod:`edgekd.search.plan`).
2. The ``top_k`` feasible structures with the most capacity are trained, each as its own run
   (:mod:`edgekd.search.train`), and their real exports measured; the best by the task's primary metric
   on validation (accuracy, micro-F1, MSE, token accuracy; the summary's ``metric``) within the whole
   budget is re-profiled to confirm it (:mod:`edgekd.search.select`). When none fits, the next
   ``top_k`` are trained.
3. The stage's artifact holds the teacher (its ONNX from a candidate run) and the chosen student; its
   metrics hold the table, the trained candidates and the confirmation, which the report shows.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.config.device import DeviceProfile
from edgekd.data.config import is_corpus
from edgekd.models.task_model import WEIGHTS
from edgekd.search.build import Family
from edgekd.search.causal_lm import run_lm_search
from edgekd.search.config import SearchStage
from edgekd.search.messages import missed_message
from edgekd.search.plan import SearchPlan, plan_search
from edgekd.search.record import SearchRecord, search_fields, stage_metrics
from edgekd.search.select import Confirmation, Measured, choose, measure
from edgekd.search.space import space_for
from edgekd.search.train import SearchRounds, moved_under, train_until_chosen
from edgekd.task_heads import LOWER_IS_BETTER

#: Teacher figures carried over from the candidate run that exported it.
EXPORT_FIGURES = ("size_mb", "parity_max_abs_diff", "opset")


def run_search(config: SearchStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Search the grid for the most accurate student within the device's budget (see the module docstring)."""
    if is_corpus(ctx.recipe.data):
        return run_lm_search(config, artifact, ctx)
    started = time.perf_counter()
    teacher = artifact.get("teacher")
    student_spec = ctx.recipe.student.model
    family = Family.of_model_dir(ctx.resolve(teacher.weights), student_spec.arch)
    teacher_params = teacher.metrics.get("params")
    plan = plan_search(config, student_spec, family, ctx.device, teacher_params=teacher_params)
    outgrown = sum(row.outgrows_teacher for row in plan.rows)
    if outgrown:
        ctx.log.info("search: left out %d candidate(s) of the default space with as many parameters as the "
                     "teacher (%s) or more", outgrown, f"{teacher_params:,}")
    ctx.log.info("search: %d of %d candidates fit the budget; training up to %d of %d feasible structures",
                 sum(row.feasible for row in plan.rows), len(plan.rows), config.top_k, len(plan.ranked))
    rounds = train_until_chosen(
        plan, config, ctx, ctx.resolve(teacher.weights) / WEIGHTS,
        measure=lambda variants: measure(variants, ctx.device, config, ctx.path),
        choose=lambda new: choose(new, ctx.device, config, ctx.path),
        missed=lambda measured, attempts: missed_message(
            [(m.variant.label, m.result.p90_ms, m.variant.table_p90_ms) for m in measured], ctx.device,
            [(a.measured.variant.label, a.measured.result.p90_ms, a.result.p90_ms) for a in attempts]))
    chosen = rounds.chosen
    exported_teacher = moved_under(rounds.trained[0].teacher, ctx.stage_dir_name)
    teacher = replace(teacher, onnx=exported_teacher.onnx, metrics=teacher.metrics.merged(
        exported_teacher.metrics.model_dump(include=set(EXPORT_FIGURES), exclude_unset=True)))
    student = _chosen_student(chosen, ctx)
    summary = _summary(config, ctx.device, family, plan, rounds, started,
                       space_for(config, student_spec, family.depth))
    ctx.log.info("search: chose %s (validation %s %.4f, p90 %.3f ms)", chosen.measured.variant.label,
                 chosen.measured.metric, chosen.measured.val_score, chosen.result.p90_ms)
    return StageOutput(artifact=artifact.with_model(teacher).with_model(student),
                       metrics=stage_metrics(summary, config))


def _chosen_student(chosen: Confirmation, ctx: StageContext) -> ModelArtifact:
    """The chosen variant as the run's student, its files referenced from the run directory."""
    variant = chosen.measured.variant
    model = moved_under(variant.model, ctx.stage_dir_name)
    return replace(model, role="student", metrics=model.metrics.merged({"search_candidate": variant.label}))


def _summary(config: SearchStage, device: DeviceProfile, family: Family, plan: SearchPlan,
             rounds: SearchRounds[Measured, Confirmation, Confirmation], started: float,
             space: dict[str, list[Any]]) -> SearchRecord:
    """The search's record: budget, table (with each candidate's status), trained candidates, the choice."""
    chosen = rounds.chosen
    return SearchRecord(
        **search_fields(config, device, family.to_json(), plan, rounds.trained, space, started),
        metric=chosen.measured.metric, lower_is_better=chosen.measured.metric in LOWER_IS_BETTER,
        measured=[m.to_json() for m in rounds.measured], confirmations=[a.to_json() for a in rounds.attempts],
        chosen={**chosen.measured.to_json(), "confirmed": chosen.to_json()},
    )
