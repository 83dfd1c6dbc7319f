"""The ``search`` stage (and ``edgekd compress``) for a causal language model, budgeted in ms per token.

1. The grid of decoder sizes around the recipe's ``student.model`` (:mod:`edgekd.search.lm_space`) is timed
   per generated token with random weights into the latency table (:mod:`edgekd.search.lm_table`, cached)
   and judged against the device's per-token limit (``budget.ms_per_token``, else ``p90_ms``, as the
   profile stage judges a causal LM) less ``latency_margin``, and its size and peak-memory limits. No
   feasible candidate is a :class:`~edgekd.errors.BudgetError` before anything trains.
2. The ``top_k`` feasible structures with the most capacity (``rank_by``) are each trained as a run of
   their own (:mod:`edgekd.search.train`: teacher weights → distill → export → quantize), and their real
   exports timed per token side by side on the device's prompt (validation text) and judged against the
   whole budget. The one with the lowest validation loss (nats per token; an INT8 variant's includes the
   change the quantize stage measured) within budget is timed again alone (``confirm_runs`` generations)
   to confirm it and becomes the run's student; when none fits, the next ``top_k`` are trained.
3. The stage's metrics say which metric chose and list the table's rows, the trained candidates and the
   choice, which the report and ``edgekd compress`` show.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.config.device import Budget, DeviceProfile
from edgekd.config.recipe import Recipe
from edgekd.data.lm_data import device_prompt, prepare_lm_data
from edgekd.errors import BudgetError
from edgekd.models.causal_lm import load_tokenizer
from edgekd.models.specs import HFSpec
from edgekd.models.task_model import WEIGHTS
from edgekd.profile.budget import judge_generation
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.search.config import SearchStage
from edgekd.search.lm_space import lm_candidates, lm_space_for
from edgekd.search.lm_table import LMFamily, lm_latency_table, time_decoders
from edgekd.search.messages import unconfirmed_message
from edgekd.search.plan import Row, SearchPlan, exceeded, rank_feasible
from edgekd.search.record import LMSearchRecord, TableStats, search_fields, stage_metrics
from edgekd.search.train import SearchRounds, Variant, moved_under, train_until_chosen

#: What chooses among a causal-LM search's trained candidates.
METRIC = {"name": "val_loss", "description": "validation loss (nats per token; lower is better)"}
#: Teacher figures carried over from the candidate run that exported it.
TEACHER_EXPORT_FIGURES = ("size_mb", "parity_max_abs_diff", "opset")


def per_token_limit(budget: Budget) -> float:
    """A causal LM's per-token p90 limit: ``ms_per_token``, else ``p90_ms`` (as the profile stage judges it)."""
    return budget.ms_per_token if budget.ms_per_token is not None else budget.p90_ms


def plan_lm_search(stage: SearchStage, student: HFSpec, family: LMFamily, device: DeviceProfile, teacher: Any, *,
                   fresh: bool = False) -> SearchPlan:
    """The per-token latency table of ``stage``'s grid around ``student`` (no larger than the ``teacher`` spec's model
    by default) and what to train, best first.

    Raises :class:`BudgetError` when no candidate fits the device's budget.
    """
    grid = lm_candidates(stage, student, teacher=teacher)
    table = lm_latency_table(grid, family, device, stage, fresh=fresh)
    per_token = device.budget.model_copy(update={"p90_ms": per_token_limit(device.budget)})
    rows = tuple(Row(c, table[c], tuple("ms_per_token" if limit == "p90_ms" else limit
                                        for limit in exceeded(table[c], per_token, stage.latency_margin)))
                 for c in grid)
    feasible = [row for row in rows if row.feasible]
    if not feasible:
        raise BudgetError(no_fit_message(rows, device, stage))
    return SearchPlan(table=table, rows=rows, ranked=rank_feasible(feasible, stage.rank_by))


def no_fit_message(rows: Sequence[Row], device: DeviceProfile, stage: SearchStage) -> str:
    """Why no candidate of a causal-LM table fits ``device``'s budget, and what would be needed (one line)."""
    where, budget = f"search on '{device.name}'", device.budget
    fast = [row for row in rows if "ms_per_token" not in row.over]
    if not fast:
        fastest = min(rows, key=lambda row: row.entry.p90_ms)
        limit = per_token_limit(budget) * (1 - stage.latency_margin)
        estimate = " (estimated)" if fastest.entry.estimate else ""
        hints = (["int8 (add it to precision)"] if "int8" not in stage.precision else []) + [
            "fewer or narrower layers in space", f"a per-token budget above {fastest.entry.p90_ms:.3g} ms"]
        return (f"{where}: no candidate meets the per-token budget: fastest candidate {fastest.entry.p90_ms:.3g} ms "
                f"per token p90{estimate} vs budget {per_token_limit(budget):g} ms ({limit:.3g} ms with the "
                f"{stage.latency_margin:.0%} noise margin), {fastest.entry.p90_ms / limit:.1f}× too slow "
                f"({fastest.candidate.label}); try {', '.join(hints[:-1])} or {hints[-1]}")
    smallest = min(fast, key=lambda row: row.entry.size_mb)
    lightest = min(fast, key=lambda row: row.entry.peak_memory_mb)
    return (f"{where}: {len(fast)} candidate(s) meet the per-token budget but not the rest of it: smallest file "
            f"{smallest.entry.size_mb:.3g} MB vs budget {budget.size_mb:g} MB, least peak memory "
            f"{lightest.entry.peak_memory_mb:.3g} MB vs budget {budget.peak_memory_mb:g} MB; try a smaller "
            "vocabulary (tokenizer.vocab_size), int8 or smaller students in space")


def lm_preflight(stage: SearchStage, recipe: Recipe, device: DeviceProfile, *, fresh: bool = False) -> TableStats:
    """Judge a causal-LM recipe's search grid against ``device``'s budget before anything trains (see
    :func:`edgekd.search.compress.preflight`): the corpus is tokenized as the teacher stage will, for its
    vocabulary."""
    data = prepare_lm_data(recipe.data, recipe.tokenizer)
    family = LMFamily(data.tokenizer, data.context)
    return plan_lm_search(stage, recipe.student.model, family, device, recipe.teacher.model, fresh=fresh).table.stats


@dataclass(frozen=True)
class LMMeasured:
    """A trained variant with its real export's generation figures and budget verdict."""

    variant: Variant
    figures: dict[str, Any]
    verdict: BudgetVerdict

    @property
    def passed(self) -> bool:
        """True when the export is within the whole budget."""
        return self.verdict.passed

    @property
    def val_loss(self) -> float:
        """Validation loss (what the choice is made on): the trained model's plus the quantize stage's measured
        change for an INT8 variant."""
        metrics = self.variant.model.metrics
        return float(metrics.val_loss) + float(metrics.get("quantization_loss_change") or 0.0)

    def to_json(self) -> dict[str, Any]:
        """The variant's label, files, validation loss, measured per-token figures and verdict."""
        metrics = self.variant.model.metrics
        return {"structure": self.variant.choice.structure.key, "label": self.variant.label,
                "precision": self.variant.precision, "onnx": self.variant.model.onnx, "val_loss": self.val_loss,
                "params": metrics.params, "p50_ms": self.figures["per_token_p50_ms"],
                "p90_ms": self.figures["per_token_p90_ms"], "table_p90_ms": self.variant.table_p90_ms,
                "tokens_per_second": self.figures["tokens_per_second"], "size_mb": self.figures["size_mb"],
                "peak_memory_mb": self.figures["peak_memory_mb"], "estimate": self.figures["estimate"],
                "verdict": self.verdict.verdict}


def measure(variants: Sequence[Variant], device: DeviceProfile, prompt: list[int], *, warmup: int, runs: int,
            path: Callable[[str], Path]) -> list[LMMeasured]:
    """Time every variant's ONNX file per token, side by side, and judge it against the device's budget."""
    timed = time_decoders({v.label: path(str(v.model.onnx)) for v in variants}, device, prompt, warmup=warmup,
                          runs=runs)
    return [LMMeasured(v, timed[v.label], judge_generation(timed[v.label], device)) for v in variants]


def choose(measured: Sequence[LMMeasured], device: DeviceProfile, stage: SearchStage, prompt: list[int],
           path: Callable[[str], Path]) -> tuple[tuple[LMMeasured, LMMeasured] | None, list[LMMeasured]]:
    """The lowest-loss variant within budget and its confirming re-measurement (or None), and every one attempted."""
    attempts = []
    passing = sorted((m for m in measured if m.passed), key=lambda m: (m.val_loss, m.figures["per_token_p90_ms"]))
    for candidate in passing:
        again = measure([candidate.variant], device, prompt, warmup=stage.table.warmup, runs=stage.confirm_runs,
                        path=path)[0]
        attempts.append(again)
        if again.passed:
            return (candidate, again), attempts
    return None, attempts


def run_lm_search(config: SearchStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Search the grid for the lowest-loss causal LM within the device's per-token budget (module docstring)."""
    started = time.perf_counter()
    teacher = artifact.get("teacher")
    teacher_dir = ctx.resolve(teacher.weights)
    data = prepare_lm_data(ctx.recipe.data, None, tokenizer=load_tokenizer(teacher_dir))
    family = LMFamily(data.tokenizer, data.context)
    plan = plan_lm_search(config, ctx.recipe.student.model, family, ctx.device, ctx.recipe.teacher.model)
    ctx.log.info("search: %d of %d candidates fit the per-token budget; training up to %d of %d feasible structures",
                 sum(row.feasible for row in plan.rows), len(plan.rows), config.top_k, len(plan.ranked))
    prompt = device_prompt(data.validation, ctx.device.generation.prompt_tokens)
    rounds = train_until_chosen(
        plan, config, ctx, teacher_dir / WEIGHTS,
        measure=lambda variants: measure(variants, ctx.device, prompt, warmup=config.table.warmup,
                                         runs=config.table.runs, path=ctx.path),
        choose=lambda new: choose(new, ctx.device, config, prompt, ctx.path),
        missed=lambda measured, attempts: missed_message(measured, ctx.device, attempts))
    best, confirmed = rounds.chosen
    exported = moved_under(rounds.trained[0].teacher, ctx.stage_dir_name)
    export_figures = exported.metrics.model_dump(include=set(TEACHER_EXPORT_FIGURES), exclude_unset=True)
    teacher = replace(teacher.updated(**export_figures), onnx=exported.onnx)
    student = moved_under(best.variant.model, ctx.stage_dir_name).updated(search_candidate=best.variant.label)
    student = replace(student, role="student")
    summary = lm_summary(config, ctx.device, family, plan, rounds, started,
                         lm_space_for(config, ctx.recipe.student.model, ctx.recipe.teacher.model))
    ctx.log.info("search: chose %s (validation loss %.4f nats/token, %.3f ms per token p90)", best.variant.label,
                 best.val_loss, confirmed.figures["per_token_p90_ms"])
    return StageOutput(artifact=artifact.with_model(teacher).with_model(student),
                       metrics=stage_metrics(summary, config))


def missed_message(measured: Sequence[LMMeasured], device: DeviceProfile,
                   unconfirmed: Sequence[LMMeasured] = ()) -> str:
    """Why none of the trained causal-LM candidates fits after the real export (one line); ``unconfirmed``: the
    re-measurements of those that met the budget at first but not when timed again to confirm it."""
    where, limit = f"search on '{device.name}'", per_token_limit(device.budget)
    if unconfirmed:
        again = min(unconfirmed, key=lambda m: m.figures["per_token_p90_ms"])
        first = next(m for m in measured if m.variant.label == again.variant.label)
        timings = (first.figures["per_token_p90_ms"], again.figures["per_token_p90_ms"])
        return unconfirmed_message(where, len(unconfirmed), again.variant.label, timings, f"{limit:g} ms per token",
                                   "ms per token p90")
    fastest = min(measured, key=lambda m: m.figures["per_token_p90_ms"])
    table = (f" (the latency table said {fastest.variant.table_p90_ms:.3g} ms)"
             if fastest.variant.table_p90_ms is not None else "")
    failed = [c.name for c in fastest.verdict.checks if not c.passed]
    return (f"{where}: none of the {len(measured)} trained candidate model(s) meets the budget "
            f"after the real export: fastest {fastest.figures['per_token_p90_ms']:.3g} ms per token p90 vs budget "
            f"{limit:g} ms{table} ({fastest.variant.label}; over: {', '.join(failed)}); "
            "raise latency_margin so the table keeps more room, or relax the budget")


def lm_summary(config: SearchStage, device: DeviceProfile, family: LMFamily, plan: SearchPlan,
               rounds: SearchRounds[LMMeasured, LMMeasured, tuple[LMMeasured, LMMeasured]], started: float,
               space: dict[str, list[Any]]) -> LMSearchRecord:
    """The search's record: budget, metric, table (each candidate's status), trained candidates, the choice."""
    best, confirmed = rounds.chosen
    return LMSearchRecord(
        **search_fields(config, device, family.to_json(), plan, rounds.trained, space, started),
        task="causal_lm", metric=METRIC, per_token_limit_ms=per_token_limit(device.budget),
        generation=device.generation, measured=[m.to_json() for m in rounds.measured],
        confirmations=[{**a.to_json(), "runs": config.confirm_runs} for a in rounds.attempts],
        chosen={**best.to_json(), "confirmed": {**confirmed.to_json(), "runs": config.confirm_runs}},
    )
