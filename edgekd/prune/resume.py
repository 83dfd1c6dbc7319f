"""A compression schedule's finished steps, kept so that an interrupted stage resumes after the last of them.

A LadaBERT-style hybrid on a real model runs for hours: each step prunes, factorizes and recovers for an epoch of
distillation. After every finished step the stage saves its model and the figures measured so far
(:func:`save_step`) in its working directory, which the pipeline keeps when a run with the same inputs is
interrupted; the next run loads them back (:func:`resume`) and goes on with the step after. Only the newest step is
kept, and :func:`clear` removes it once the stage has saved its result. Each step seeds the random generators from
the recipe's seed and the step's number (:func:`seed_step`), so a resumed schedule takes the same steps as one run
straight through.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from edgekd.artifacts import StageContext
from edgekd.atomic import write_text

logger = logging.getLogger(__name__)

#: The file naming the newest finished step, written after that step's model directory is complete.
STATE_FILE = "schedule.json"
#: The model directory of a finished step (``{step}``: its number).
STEP_DIR = "schedule-step-{step}"


class ScheduleJob(Protocol):
    """What a compression stage's job offers: its model, the figures of every step measured, its ONNX exports."""

    model: Any
    snapshots: list[Any]
    snapshot_type: type[BaseModel]
    exports: dict[int, Path]
    ctx: StageContext


class ScheduleState(BaseModel):
    """What :data:`STATE_FILE` holds: the newest finished step, the figures so far, the steps exported for timing
    and the share each step pruned."""

    model_config = ConfigDict(extra="forbid")

    step: int
    snapshots: list[dict[str, Any]]
    exported_steps: list[int]
    prune_ratios: list[float]


def seed_step(seed: int, step: int) -> None:
    """Seed torch's generator for ``step`` of a schedule (step 0: the measurements before any change)."""
    torch.manual_seed(seed + step)


def save_step(job: ScheduleJob, step: int, prune_ratios: list[float]) -> None:
    """Keep ``job``'s model after ``step`` and its figures so far; the step before is then removed."""
    job.model.save(job.ctx.path(STEP_DIR.format(step=step)))
    state = ScheduleState(step=step, snapshots=[shot.to_json() for shot in job.snapshots],
                          exported_steps=sorted(job.exports), prune_ratios=prune_ratios)
    write_text(job.ctx.path(STATE_FILE), state.model_dump_json(indent=2) + "\n")
    _remove_steps(job.ctx, keep=step)


def resume(job: ScheduleJob) -> list[float] | None:
    """Load the newest finished step kept in the stage's working directory into ``job`` (its model, figures and
    exports) and return the share each step pruned; ``None`` (nothing loaded) when no step was kept, or when what
    was kept is unreadable (logged: the schedule starts over)."""
    state_file = job.ctx.path(STATE_FILE)
    if not state_file.is_file():
        return None
    try:
        state = ScheduleState.model_validate(json.loads(state_file.read_text()))
        exports = {step: job.ctx.path(f"check-{step}.onnx") for step in state.exported_steps}
        missing = [path.name for path in exports.values() if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} missing")
        snapshots = [job.snapshot_type.model_validate(shot) for shot in state.snapshots]
        model = type(job.model).load(job.ctx.path(STEP_DIR.format(step=state.step)))
    except (OSError, ValueError, ValidationError) as exc:
        logger.warning("%s: the steps an interrupted run finished cannot be read back (%s); the schedule starts over",
                       state_file, str(exc).splitlines()[0])
        clear(job.ctx)
        return None
    job.model, job.snapshots, job.exports = model, snapshots, exports
    logger.info("%s resumed after step %d of an interrupted run", job.ctx.stage_dir_name, state.step)
    return state.prune_ratios


def clear(ctx: StageContext) -> None:
    """Remove the kept step and its state (the stage's result is saved; nothing is left to resume)."""
    ctx.path(STATE_FILE).unlink(missing_ok=True)
    _remove_steps(ctx, keep=None)


def _remove_steps(ctx: StageContext, keep: int | None) -> None:
    for directory in ctx.work_dir.glob(STEP_DIR.format(step="*")):
        if directory.name != STEP_DIR.format(step=keep):
            shutil.rmtree(directory, ignore_errors=True)
