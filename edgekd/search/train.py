"""Training the structures a search picked: each one is an edgekd run of its own, inside the search stage.

A structure's run (``candidates/<key>/`` in the search stage's directory) has the search recipe's
data, seed and tokenizer, the teacher loaded from the teacher stage's weights, the structure's spec as
the student, and the stages teacher → distill (the search's ``distill`` settings) → prune (its ratio,
with ``recovery``) → factorize (its parameter ratio, with ``recovery``) → export (the search's
``target``, parity-checked) → quantize (the search's ``quantize`` settings; only for structures
feasible in INT8, and keeping INT8 only where it pays, as the quantize stage always does); the teacher's
outputs are cached once for all the structures (``teacher-outputs/`` in the stage's directory). Being a
pipeline run, it resumes where an interrupted search stopped; and a search run again in the same run
directory with another budget starts from the structure runs of the previous one (:func:`carry_over`), so
only structures not trained before are.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from edgekd.artifacts import Artifact, ModelArtifact, StageContext
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import BudgetError, ExportError, ModelError
from edgekd.pipeline import run_pipeline
from edgekd.profile.load import is_loaded, watch_other_load
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.search.build import PRUNE_SETTINGS
from edgekd.search.config import SearchStage
from edgekd.search.plan import Choice, SearchPlan
from edgekd.stages import check_recipe

log = logging.getLogger(__name__)

#: The subdirectory of the search stage holding one run per trained structure.
CANDIDATES = "candidates"
#: The subdirectory of the search stage caching the teacher's outputs that every structure's distillation reads.
TEACHER_OUTPUTS = "teacher-outputs"

class Judged(Protocol):
    """A measured variant: its budget verdict on the device (what every task's measurement gives)."""

    verdict: BudgetVerdict


MeasuredT = TypeVar("MeasuredT", bound=Judged)
AttemptT = TypeVar("AttemptT")
ChosenT = TypeVar("ChosenT")


@dataclass(frozen=True)
class Variant:
    """One deployable model of a trained structure (file references relative to the search stage's directory)."""

    choice: Choice
    model: ModelArtifact
    table_p90_ms: float | None
    """The structure's latency-table p90 at this precision (None: the table did not time it)."""

    @property
    def precision(self) -> str:
        """``fp32`` as exported, or the variant the quantize stage kept (``int8-dynamic``, ``fp32-optimized``, ...)."""
        return self.model.metrics.precision or "fp32"

    @property
    def label(self) -> str:
        """The structure's label and the precision."""
        return f"{self.choice.structure.label} {self.precision}"


@dataclass(frozen=True)
class Trained:
    """What training a structure gave: its deployable variants and the teacher as its run exported it."""

    choice: Choice
    variants: tuple[Variant, ...]
    teacher: ModelArtifact
    wall_seconds: float
    note: str | None = None
    """Why INT8 is missing, when the quantize stage refused every INT8 variant."""


@contextmanager
def earlier_structures(ctx: StageContext) -> Iterator[None]:
    """Run a search (the ``with`` body) from the structure runs earlier searches of the run directory trained: the
    last finished search's, and those of searches stopped before they finished (a budget missed after training,
    an interruption), kept beside the stage (``.<stage>.tried/``) until a search finishes."""
    kept = ctx.run_dir / f".{ctx.stage_dir_name}.tried"
    for earlier in (ctx.run_dir / ctx.stage_dir_name, kept):
        carry_over(earlier, ctx.work_dir)
    try:
        yield
    except BaseException:
        try:
            carry_over(ctx.work_dir, kept)
        except OSError as exc:  # e.g. a full disk: the search's own error is the one to report
            log.warning("search: could not keep the trained structures in %s (%s); a re-run trains them again",
                        kept, exc)
        raise
    shutil.rmtree(kept, ignore_errors=True)


@dataclass(frozen=True)
class SearchRounds(Generic[MeasuredT, AttemptT, ChosenT]):
    """What training until a structure is chosen gave: every structure trained, every variant measured, every
    confirmation attempted, and the confirmed choice."""

    trained: list[Trained]
    measured: list[MeasuredT]
    attempts: list[AttemptT]
    chosen: ChosenT


def train_until_chosen(plan: SearchPlan, config: SearchStage, ctx: StageContext, teacher_weights: Path, *,
                       measure: Callable[[list[Variant]], list[MeasuredT]],
                       choose: Callable[[list[MeasuredT]], tuple[ChosenT | None, list[AttemptT]]],
                       missed: Callable[[list[MeasuredT], list[AttemptT]], str]
                       ) -> SearchRounds[MeasuredT, AttemptT, ChosenT]:
    """Train ``plan``'s ranked structures ``top_k`` at a time (starting from the structures earlier searches of the
    run directory trained, :func:`earlier_structures`) until ``choose`` confirms one of the variants ``measure``
    timed in a round; none after the last round is a :class:`BudgetError` with ``missed``'s message over them all
    and the confirmations that failed.

    The task decides how variants are measured and chosen (a classifier's p90 and validation score, a causal
    LM's per-token time and validation loss); the rounds are the same for every task."""
    trained: list[Trained] = []
    measured: list[MeasuredT] = []
    attempts: list[AttemptT] = []
    busiest = 0.0  # the most CPUs other processes kept busy while a round was timed
    with earlier_structures(ctx):
        for batch in plan.batches(config.top_k):
            fresh = [train(choice, config, ctx.recipe, ctx.device, ctx.work_dir, teacher_weights,
                           show_progress=ctx.show_progress) for choice in batch]
            trained += fresh
            with watch_other_load() as load:
                new = measure([variant for structure in fresh for variant in structure.variants])
                chosen, tried = choose(new)
            busiest = max(busiest, load.cores or 0.0)
            measured += new
            attempts += tried
            if chosen is not None:
                over = [m for m in measured if any(not check.passed and check.unit.startswith("ms")
                                                   for check in m.verdict.checks)]
                if is_loaded(busiest) and over:  # none missed a latency limit: the load changed nothing
                    ctx.log.warning("search: %d trained variant(s) missed the budget while other processes kept %.2g "
                                    "CPUs busy: on a quiet machine one of them may fit", len(over), busiest)
                return SearchRounds(trained, measured, attempts, chosen)
        loaded = (f"; they were timed while other processes kept {busiest:.2g} CPUs busy, so time them again on a "
                  "quiet machine (re-run: nothing trains twice) before relaxing anything") if is_loaded(busiest) else ""
        raise BudgetError(missed(measured, attempts) + loaded)


def carry_over(previous: Path, work_dir: Path) -> None:
    """Give this search the structures an earlier search of the same run directory trained (``previous``: that
    search's finished stage directory, e.g. before the budget changed): their runs, and the teacher outputs they
    were distilled from, are hard-linked into ``work_dir``, where each run resumes as any interrupted run does, so
    a structure trained for one budget is not trained again for the next."""
    if not previous.is_dir() or previous.resolve() == work_dir.resolve():
        return
    if (previous / TEACHER_OUTPUTS).is_dir() and not (work_dir / TEACHER_OUTPUTS).exists():
        shutil.copytree(previous / TEACHER_OUTPUTS, work_dir / TEACHER_OUTPUTS, copy_function=_link_or_copy)
    source, target = previous / CANDIDATES, work_dir / CANDIDATES
    runs = sorted(path for path in source.iterdir() if path.is_dir()) if source.is_dir() else []
    carried = [run for run in runs if not (target / run.name).exists()]
    for run in carried:
        shutil.copytree(run, target / run.name, copy_function=_link_or_copy)
    if carried:
        log.info("search: %d structure run(s) of the previous search kept; those trained again resume", len(carried))


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (stage files are replaced, never written in place), or a copy across filesystems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def moved_under(model: ModelArtifact, prefix: str) -> ModelArtifact:
    """``model`` with every relative file reference (weights, ONNX, members, deploy files) under ``prefix``."""

    def ref(value: str | None) -> str | None:
        return f"{prefix}/{value}" if value is not None and not Path(value).is_absolute() else value

    deploy = None if model.deploy_files is None else {kind: str(ref(v)) for kind, v in model.deploy_files.items()}
    return replace(model, weights=ref(model.weights), onnx=ref(model.onnx),
                   members=tuple(str(ref(m)) for m in model.members), deploy_files=deploy)


def candidate_recipe(recipe: Recipe, choice: Choice, stage: SearchStage, teacher_weights: Path, *,
                     quantize: bool = True, teacher_outputs: Path | None = None) -> Recipe:
    """The recipe of one structure's run (see the module docstring); ``quantize=False`` leaves INT8 out.

    ``teacher_outputs``: where the distillation caches the teacher's outputs when the search's settings name no
    ``teacher_cache_dir`` (:func:`train`: one cache for every structure of the search, all distilled from the
    same teacher on the same transfer set, so the teacher runs over it once, not once per structure)."""
    structure = choice.structure
    recovery = stage.recovery.model_dump(mode="json")
    distill = stage.distill.model_dump(mode="json")
    if teacher_outputs is not None and distill["cache_teacher"] and distill["teacher_cache_dir"] is None:
        distill["teacher_cache_dir"] = str(teacher_outputs)
    stages: list[dict[str, Any]] = [{"stage": "teacher"}, {"stage": "distill", **distill}]
    if structure.prune:
        stages.append({"stage": "prune", "ratio": structure.prune, **PRUNE_SETTINGS, "recovery": recovery})
    if structure.factorize is not None:
        stages.append({"stage": "factorize", "param_ratio": structure.factorize, "recovery": recovery})
    stages.append({"stage": "export", "target": stage.target})
    if quantize and "int8" in choice.precisions:
        stages.append({"stage": "quantize", **stage.quantize.model_dump(mode="json")})
    source = f"search candidate '{structure.label}'"
    candidate = validate_model({
        # only the fields the recipe set: a default written out reads as given (data.color beside an image processor)
        **recipe.model_dump(mode="json", include={"seed", "device", "data", "tokenizer"}, exclude_unset=True),
        "name": f"{recipe.name}-{structure.key}",
        "description": structure.label,
        # only the fields the recipe set: a pretrained teacher's default sizes would read as sizes given with it
        # a fixed teacher (an ONNX file) is its own weights: its candidates evaluate the same file
        "teacher": {"model": recipe.teacher.model.model_dump(mode="json", exclude_unset=True),
                    **({"weights": str(teacher_weights)} if recipe.teacher.model.trainable else {})},
        "student": {"model": structure.spec},
        "stages": stages,
    }, Recipe, source=source, expanded=True)
    check_recipe(candidate, source)
    return candidate


def train(choice: Choice, stage: SearchStage, recipe: Recipe, device: DeviceProfile, work_dir: Path,
          teacher_weights: Path, *, show_progress: bool) -> Trained:
    """Run ``choice``'s structure in ``work_dir/candidates/<key>`` and collect its deployable variants."""
    started = time.perf_counter()
    key = choice.structure.key
    run_dir = work_dir / CANDIDATES / key
    outputs = work_dir.resolve() / TEACHER_OUTPUTS
    log.info("search: training %s", choice.structure.label)
    note = None
    try:
        result = run_pipeline(candidate_recipe(recipe, choice, stage, teacher_weights, teacher_outputs=outputs),
                              device, run_dir, show_progress=show_progress)
    except (ExportError, ModelError) as exc:
        if "int8" not in choice.precisions:
            raise
        note = f"int8 refused: {exc}"  # the agreement gate or the quantizer; FP32 stays a candidate
        log.info("search: %s: %s", choice.structure.label, note)
        result = run_pipeline(candidate_recipe(recipe, choice, stage, teacher_weights, quantize=False,
                                               teacher_outputs=outputs), device, run_dir, show_progress=show_progress)
    prefix = f"{CANDIDATES}/{key}"
    artifacts = {record.stage: Artifact.from_json(record.data["artifact"]) for record in result.stages}
    exported = artifacts["export"]
    variants = [Variant(choice, moved_under(model, prefix), _table_p90(choice, _precision_family(model)))
                for model in deployable_students(exported, artifacts.get("quantize"))]
    return Trained(choice=choice, variants=tuple(variants), teacher=moved_under(exported.get("teacher"), prefix),
                   wall_seconds=time.perf_counter() - started, note=note)


def deployable_students(exported: Artifact, quantized: Artifact | None) -> list[ModelArtifact]:
    """The students a structure's run can deploy: the FP32 export and, when its quantize stage kept another file,
    that one. When the quantize stage kept the FP32 file it is the quantize stage's student that is returned, whose
    metrics carry that decision (``precision``, ``quantization_reason``): the export's lack them, and a search
    choosing it would report neither."""
    fp32 = exported.get("student")
    if quantized is None:
        return [fp32]
    kept = quantized.get("student")
    return [kept] if kept.onnx == fp32.onnx else [fp32, kept]


def _precision_family(model: ModelArtifact) -> str:
    """The latency table's precision a deployable student was timed at: ``int8`` for an INT8 variant, else ``fp32``
    (as exported, kept by the quantize stage, or its optimized FP32 graph)."""
    return "int8" if (model.metrics.precision or "").startswith("int8") else "fp32"


def _table_p90(choice: Choice, precision: str) -> float | None:
    entry = choice.entries.get(precision)
    return entry.p90_ms if entry is not None else None
