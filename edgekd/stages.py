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
from edgekd.search.space import check_space


@dataclass(frozen=True)
class StageKind:
    """How the pipeline runs one kind of stage and decides whether its cached result still holds."""

    target: str
    recipe_inputs: tuple[str, ...]
    uses_device: bool = False
    cacheable: bool = True
    extra_inputs: Callable[[Any, Recipe], dict[str, Any]] | None = None
    data_parallel: bool = False
    """Runs in every process of a data-parallel run (see :mod:`edgekd.distributed`); else in rank 0 alone."""

    def runner(self) -> Callable[[Any, Artifact, StageContext], StageOutput]:
        """Import and return the stage's run function."""
        module, function = self.target.split(":")
        return getattr(importlib.import_module(module), function)


def _file_digest(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _teacher_weights(_config: Any, recipe: Recipe) -> dict[str, Any]:
    """Digests of the given teacher weights (a list for an ensemble): new weights re-run the stage."""
    digests = [_file_digest(path) for path in recipe.teacher.weight_files]
    return {"teacher_weights_sha256": digests if len(digests) > 1 else next(iter(digests), None)}


def _export_target(config: Any, _recipe: Recipe) -> dict[str, Any]:
    return {"export_target": load_export_target(config.target).model_dump(mode="json")}


def _measuring_host(_config: Any, _recipe: Recipe) -> dict[str, Any]:
    """The CPU and onnxruntime a measured decision was taken on: another host re-measures."""
    from importlib.metadata import version

    from edgekd.profile.cpu import detect_cpu

    return {"cpu": detect_cpu().to_json(), "onnxruntime": version("onnxruntime")}


def _search_inputs(config: Any, recipe: Recipe) -> dict[str, Any]:
    """A search measures on this host and exports with its target."""
    return {**_measuring_host(config, recipe), **_export_target(config, recipe)}


STAGES: dict[str, StageKind] = {
    "teacher": StageKind("edgekd.distill.stage:run_teacher", ("seed", "data", "teacher"),
                         extra_inputs=_teacher_weights, data_parallel=True),
    "distill": StageKind("edgekd.distill.stage:run_distill", ("seed", "data", "teacher", "student"),
                         data_parallel=True),
    "prune": StageKind("edgekd.prune.stage:run_prune", ("seed", "data"), uses_device=True,
                       extra_inputs=_measuring_host),
    "factorize": StageKind("edgekd.prune.stage:run_factorize", ("seed", "data"), uses_device=True,
                           extra_inputs=_measuring_host),
    "hybrid": StageKind("edgekd.prune.stage:run_hybrid", ("seed", "data"), uses_device=True,
                        extra_inputs=_measuring_host),
    "export": StageKind("edgekd.export.stage:run_export", ("data", "teacher", "student"),
                        extra_inputs=_export_target),
    "quantize": StageKind("edgekd.quantize.stage:run_quantize", ("seed", "data"), uses_device=True,
                          extra_inputs=_measuring_host),
    "search": StageKind("edgekd.search.stage:run_search", ("seed", "data", "tokenizer", "teacher", "student"),
                        uses_device=True, extra_inputs=_search_inputs),
    "profile": StageKind("edgekd.profile.stage:run_profile", (), uses_device=True),
    "bundle": StageKind("edgekd.export.bundle_stage:run_bundle", ("data",), uses_device=True, cacheable=False),
    "report": StageKind("edgekd.report.stage:run_report", (), uses_device=True, cacheable=False),
    "dataset_distill": StageKind("edgekd.dataset_distill.stage:run_dataset_distill",
                                 ("seed", "data", "teacher", "student")),
}


def check_stage_order(recipe: Recipe, source: str) -> None:
    """Reject recipes whose stages need something no earlier stage provides."""
    seen: list[str] = []
    trained: set[str] = set()  # model roles an earlier stage produces
    for index, stage in enumerate(recipe.stages):
        where = f"{source}: stages[{index}].stage"
        kind = stage.stage
        if kind in seen and kind not in ("report", "distill"):
            raise ConfigError(f"{where}: stage '{kind}' appears twice; expected each stage once")
        if "search" in seen and kind not in AFTER_SEARCH:
            raise ConfigError(f"{where}: '{kind}' cannot follow 'search' (the search distils, compresses, exports and "
                              f"quantizes the student itself); expected only {', '.join(AFTER_SEARCH)} after it")
        if kind == "teacher":
            trained.add("teacher")
        if kind == "search":
            _check_search(stage, recipe, trained, f"{source}: stages[{index}]")
            trained.add("student")
        if kind == "distill":
            _check_distill(stage, recipe, trained, f"{source}: stages[{index}]")
            trained.add(stage.student)
        if kind in COMPRESS_STAGES:
            _check_compress(stage, trained, seen, f"{source}: stages[{index}]")
        if kind == "export" and not {"teacher", "distill"} & set(seen):
            raise ConfigError(f"{where}: 'export' needs a 'teacher' or 'distill' stage before it")
        if kind == "quantize" and "export" not in seen:
            raise ConfigError(f"{where}: 'quantize' needs an 'export' stage before it (it quantizes the ONNX files)")
        if kind == "profile" and not {"export", "search"} & set(seen):
            raise ConfigError(f"{where}: 'profile' needs an 'export' stage before it (or a 'search')")
        if kind == "bundle" and "profile" not in seen:
            raise ConfigError(f"{where}: 'bundle' needs a 'profile' stage before it (the manifest carries the latency)")
        if kind in ("export", "search"):
            try:
                load_export_target(stage.target)
            except UnknownEntryError as exc:
                raise ConfigError(f"{source}: stages[{index}].target: {exc}") from None
        seen.append(kind)


COMPRESS_STAGES = ("prune", "factorize", "hybrid")
#: The stages that may follow a search: they measure and ship the student it chose.
AFTER_SEARCH = ("profile", "bundle", "report")


def _check_search(stage: Any, recipe: Recipe, trained: set[str], where: str) -> None:
    """A search distils the student from a trained single teacher, over a space the student's spec can take."""
    if "teacher" not in trained:
        raise ConfigError(f"{where}.stage: 'search' needs a 'teacher' stage before it")
    if recipe.teacher.ensemble is not None:
        raise ConfigError(f"{where}.stage: 'search' distils from one teacher; remove teacher.ensemble")
    if "student" in trained:
        raise ConfigError(f"{where}.stage: 'student' is already trained by an earlier stage")
    check_space(stage, recipe.student.model, where)


def _check_compress(stage: Any, trained: set[str], seen: list[str], where: str) -> None:
    """A prune/factorize/hybrid stage changes a model an earlier stage made, before it is exported."""
    if stage.role not in trained:
        raise ConfigError(f"{where}.role: '{stage.role}' needs a 'teacher' or 'distill' stage making it before this")
    if "export" in seen:
        raise ConfigError(f"{where}.stage: '{stage.stage}' must come before 'export' (it changes the PyTorch model)")


def _check_distill(stage: Any, recipe: Recipe, trained: set[str], where: str) -> None:
    """A distill stage needs its teacher trained earlier, an assistant spec if it trains one, and a new student."""
    if stage.teacher not in trained:
        before = "a 'teacher' stage" if stage.teacher == "teacher" else "a 'distill' stage into 'assistant'"
        raise ConfigError(f"{where}.teacher: distilling from '{stage.teacher}' needs {before} before it")
    if stage.student == "assistant" and recipe.assistant is None:
        raise ConfigError(f"{where}.student: 'assistant' needs a top-level 'assistant' with a model")
    if stage.student in trained:
        raise ConfigError(f"{where}.student: '{stage.student}' is already trained by an earlier stage")
