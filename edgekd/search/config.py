"""Settings of the budget-driven ``search`` stage."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from edgekd.config.base import Fraction, PathOrId, PositiveInt, StrictModel, TimedRuns, TimingRounds, WarmupRuns
from edgekd.data.config import is_corpus
from edgekd.distill.config import DistillSettings
from edgekd.export.config import check_export_target, export_target_input
from edgekd.prune.config import RecoveryConfig
from edgekd.quantize.config import QuantizeSettings
from edgekd.search.lm_space import check_lm_search
from edgekd.search.space import check_space
from edgekd.stage_kind import PlanState, StageKind, check_losses_fit, measuring_host


class LatencyTableConfig(StrictModel):
    """How each candidate of a search's latency table is timed: interleaved sessions, as ``edgekd bench`` does."""

    warmup: WarmupRuns = 10
    runs: TimedRuns = 100
    rounds: TimingRounds = Field(
        default=2, description="Timing sessions per candidate, interleaved with the other candidates'.")


class SearchStage(StrictModel):
    """Budget-driven search: the most accurate student that fits the device's budget, found by measuring.

    Candidates are the product of ``space`` (student spec fields → values, around the recipe's
    ``student.model``), ``prune``, ``factorize`` and ``precision``. Each is built with random
    weights, exported and timed on the device profile into a latency table (cached per
    architecture family, device profile, input shape and CPU); those over the budget (p90 with
    ``latency_margin``, size, memory) are dropped before any training. The ``top_k`` feasible
    architectures with the most capacity (``rank_by``) are distilled, pruned/factorized and
    quantized as asked, exported for real and timed again; the most accurate one within the budget
    is re-profiled to confirm it and becomes the student. A causal LM's search varies decoder sizes by
    transformers' config names, is timed per generated token and chooses by validation loss
    (:mod:`edgekd.search.causal_lm`).
    """

    stage: Literal["search"] = "search"
    space: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        default=None, description="Student spec fields → values to try; unset: the defaults for the student's arch.")
    prune: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default=[0.0], min_length=1, description="Structured prune ratios applied after distillation (0: none).")
    factorize: list[Fraction | None] = Field(
        default=[None], min_length=1, description="Low-rank param_ratio values tried after distillation (null: none).")
    precision: list[Literal["fp32", "int8"]] = Field(default=["fp32", "int8"], min_length=1)
    top_k: PositiveInt = Field(default=3, description="Feasible architectures trained, the largest by rank_by first.")
    rank_by: Literal["macs", "params"] = Field(
        default="macs", description="The capacity heuristic that decides which feasible candidates are trained.")
    latency_margin: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="In the table, a candidate's p90 must be this share under the budget (noise).")
    max_candidates: PositiveInt = Field(default=200, description="Refuse grids larger than this.")
    distill: DistillSettings = Field(default_factory=DistillSettings, description="How each candidate is distilled.")
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig, description="Distillation after prune/factorize.")
    quantize: QuantizeSettings = Field(default_factory=QuantizeSettings, description="How int8 candidates are made.")
    target: PathOrId = Field(default="onnx-fp32", description="Export preset from exporters/ or a YAML path.")
    table: LatencyTableConfig = Field(default_factory=LatencyTableConfig)
    confirm_runs: TimedRuns = Field(
        default=200, description="Timed runs of the re-profile that confirms the chosen model.")


def _check_search(config: SearchStage, state: PlanState, where: str) -> None:
    """A search distils the student from one trained teacher, over a space the student's spec can take."""
    if "teacher" not in state.trained:
        raise state.fail(f"{where}.stage", "'search' needs a 'teacher' stage before it")
    if state.recipe.teacher.ensemble is not None:
        raise state.fail(f"{where}.stage", "'search' distils from one teacher; remove teacher.ensemble")
    if "student" in state.trained:
        raise state.fail(f"{where}.stage", "'student' is already trained by an earlier stage")
    check_export_target(config, state, where)
    if is_corpus(state.recipe.data):
        check_lm_search(config, state, where)
    else:
        check_space(config, state.recipe, f"{state.source}: {where}")
    check_losses_fit(config.distill.losses, "student", "teacher", state, f"{where}.distill.losses")


def _search_inputs(config: SearchStage, recipe: Any) -> dict[str, Any]:
    """A search measures on this host and exports with its target."""
    return {**measuring_host(config, recipe), **export_target_input(config, recipe)}


SEARCH = StageKind(
    SearchStage, "edgekd.search.stage:run_search",
    reads=("name", "seed", "device", "data", "tokenizer", "teacher", "student"), uses_device=True,
    extra_inputs=_search_inputs, check=_check_search, trains=lambda _config: "student",
    followed_only_by=("profile", "bundle", "report"),
    followed_reason="the search distils, compresses, exports and quantizes the student itself",
    record="edgekd.search.record:read_search_record")
KINDS = (SEARCH,)
