"""The stage registry: each stage kind's run function and what its result depends on.

Adding a stage = a config model in :mod:`edgekd.config`, a module with
``run(config, artifact, ctx) -> StageOutput``, and one entry here. Run functions are named
as ``"module:function"`` and imported only when the stage runs, so validating a recipe or
listing devices does not import torch.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.catalog import UnknownEntryError, load_export_target
from edgekd.config import Recipe
from edgekd.errors import ConfigError


@dataclass(frozen=True)
class StageKind:
    """How the pipeline runs one kind of stage and decides whether its cached result still holds."""

    target: str
    recipe_inputs: tuple[str, ...]
    uses_device: bool = False
    cacheable: bool = True
    extra_inputs: Callable[[Any, Recipe], dict[str, Any]] | None = None

    def runner(self) -> Callable[[Any, Artifact, StageContext], StageOutput]:
        """Import and return the stage's run function."""
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


def _file_digest(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _teacher_weights(_config: Any, recipe: Recipe) -> dict[str, Any]:
    return {"teacher_weights_sha256": _file_digest(recipe.teacher.weights)}


def _export_target(config: Any, _recipe: Recipe) -> dict[str, Any]:
    return {"export_target": load_export_target(config.target).model_dump(mode="json")}


STAGES: dict[str, StageKind] = {
    "teacher": StageKind("edgekd.distill.stage:run_teacher", ("seed", "data", "teacher"),
                         extra_inputs=_teacher_weights),
    "distill": StageKind("edgekd.distill.stage:run_distill", ("seed", "data", "teacher", "student")),
    "export": StageKind("edgekd.export.stage:run_export", ("data", "teacher", "student"),
                        extra_inputs=_export_target),
    "profile": StageKind("edgekd.profile.stage:run_profile", (), uses_device=True),
    "report": StageKind("edgekd.report.stage:run_report", (), uses_device=True, cacheable=False),
}


def check_stage_order(recipe: Recipe, source: str) -> None:
    """Reject recipes whose stages need something no earlier stage provides."""
    seen: list[str] = []
    for index, stage in enumerate(recipe.stages):
        where = f"{source}: stages[{index}].stage"
        kind = stage.stage
        if kind in seen and kind != "report":
            raise ConfigError(f"{where}: stage '{kind}' appears twice; expected each stage once")
        if kind == "distill" and "teacher" not in seen:
            raise ConfigError(f"{where}: 'distill' needs a 'teacher' stage before it (it trains or loads the teacher)")
        if kind == "export" and not {"teacher", "distill"} & set(seen):
            raise ConfigError(f"{where}: 'export' needs a 'teacher' or 'distill' stage before it")
        if kind == "profile" and "export" not in seen:
            raise ConfigError(f"{where}: 'profile' needs an 'export' stage before it")
        if kind == "export":
            try:
                load_export_target(stage.target)
            except UnknownEntryError as exc:
                raise ConfigError(f"{source}: stages[{index}].target: {exc}") from None
        seen.append(kind)
