"""Run a recipe's stages in order over a work directory, resuming finished work.

Layout of a run directory::

    runs/<name>/
      01-teacher/    teacher.safetensors, stage.json
      02-distill/    student.safetensors, stage.json
      03-export/     teacher.onnx, student.onnx, stage.json
      ...
      report.json, report.md

A stage runs in ``.NN-<stage>.partial/`` and is renamed to ``NN-<stage>/`` only after its
``stage.json`` (config fingerprint, input and output artifacts, metrics, wall time) is written,
so a directory without the ``.partial`` suffix is always a finished stage. The fingerprint of a
stage hashes its config, the parts of the recipe (and device profile) it reads, and the
fingerprint of the stage before it: a changed stage re-runs together with every stage after
it, the others are skipped. An interrupted stage keeps its ``.partial`` directory so that
training can resume from its last epoch checkpoint. What stages write beside their directories
(``bundle/``, ``bundle.zip``, the report's files) is listed in ``run.json``; before its first stage
a run removes those no stage of its recipe writes, as it removes the directories of stages its
recipe no longer has after its last.

Launched as several processes (``torchrun``/``accelerate launch``, see :mod:`edgekd.distributed`),
every process runs this loop: rank 0 decides which stages are cached, prepares and commits stage
directories and writes every record; data-parallel stages (``teacher``, ``distill``) run in all
processes, the others in rank 0 while the rest wait for its record. Processes other than rank 0
return after the last data-parallel stage.
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.artifacts import Artifact, StageContext
from edgekd.atomic import remove_temporaries, write_json
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.paths import recorded_context
from edgekd.config.recipe import Recipe
from edgekd.config.training import TrainingConfig
from edgekd.data.content_digest import data_content_digest
from edgekd.data_needs import check_run_dir_outside_data
from edgekd.distributed import World, check_training, current_world
from edgekd.errors import ConfigError
from edgekd.models.packaged import source_digest
from edgekd.models.specs import HFSpec
from edgekd.module_cache import drop_orphan_modules
from edgekd.rundir import (
    FILES_KEY,
    FINGERPRINT_FILE,
    OUTPUTS_KEY,
    RUN_RECORD,
    STAGE_RECORD,
    cached_record,
    claimed,
    inventory,
    is_output_name,
    read_json,
    read_run_record,
    read_stage_record,
    recorded_outputs,
    remove_outputs,
    remove_stale_stage_dirs,
    replace_stage_dir,
    stage_dir_name,
    stage_problem,
    stage_record_problem,
)
from edgekd.stage_kind import StageKind
from edgekd.stage_store import fetch_stage, keep_stage
from edgekd.stages import DEFAULT_REGISTRY, StageRegistry, check_recipe
from edgekd.threads import retune_training_threads, torch_threads
from edgekd.version import __version__

if TYPE_CHECKING:
    from edgekd.report.record import RunReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageRecord:
    """One stage of a run as recorded in its ``stage.json``."""

    index: int
    stage: str
    directory: str
    fingerprint: str
    skipped: bool
    data: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.data.get("metrics", {})

    @property
    def wall_seconds(self) -> float:
        return float(self.data.get("wall_seconds", 0.0))


class ReportFile:
    """Reading a run directory's ``report.json`` (:class:`RunResult` and an opened run): ``report_path`` names it."""

    @property
    def report_path(self) -> Path:
        """The run's ``report.json`` (each run class says where its directory is)."""
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """The run's ``report.json`` as a dict (needs a ``report`` stage); :meth:`report_record` is the typed one."""
        from edgekd.report.record import report_json  # onnxruntime with it: not for every import of this module

        return report_json(self.report_path)

    def report_record(self) -> RunReport:
        """The run's ``report.json`` as its typed :class:`~edgekd.report.record.RunReport` (needs a ``report``
        stage); a damaged one is a one-line :class:`~edgekd.errors.StorageError` naming the field."""
        from edgekd.report.record import read_report

        return read_report(self.report_path)


@dataclass(frozen=True)
class RunResult(ReportFile):
    """The outcome of a pipeline run."""

    run_dir: Path
    artifact: Artifact
    stages: tuple[StageRecord, ...]
    is_main_process: bool = True
    """False in the other processes of a data-parallel run: their result ends at the last data-parallel stage."""

    @property
    def report_path(self) -> Path:
        """The run's ``report.json``."""
        return self.run_dir / "report.json"


def fingerprint_inputs(previous: str, stage_config: Any, recipe: Recipe, device: DeviceProfile,
                       kind: StageKind) -> dict[str, Any]:
    """Everything a stage's result depends on, as JSON: its config, the recipe fields it reads, the device
    profile (or the fields of it) if it uses one, its extra inputs, the previous stage's fingerprint and edgekd's
    version."""
    inputs: dict[str, Any] = {"edgekd": __version__, "previous": previous,
                              **stated_inputs(stage_config, recipe, device, kind)}
    if kind.extra_inputs is not None:
        inputs["extra"] = kind.extra_inputs(stage_config, recipe)
    checkpoints = {name: source_digest(name) for name in _pretrained_names(inputs["recipe"])}
    if checkpoints:
        inputs["pretrained"] = checkpoints
    content = data_content_digest(recipe.data) if "data" in inputs["recipe"] else None
    if content is not None:  # local data files: their bytes, so an edited example re-runs the stages reading it
        inputs["data_content"] = content
    return json.loads(json.dumps(inputs, default=str))


def stated_inputs(stage_config: Any, recipe: Recipe, device: DeviceProfile, kind: StageKind) -> dict[str, Any]:
    """The part of a stage's :func:`fingerprint_inputs` the recipe and the device profile state, as JSON: its config,
    the recipe fields it reads, and the device profile (or the fields of it) if it uses one. Not the contents of
    files (data, checkpoints, weights) nor edgekd's version: nothing here reads a file."""
    inputs: dict[str, Any] = {
        "config": stage_config.model_dump(mode="json"),
        "recipe": kind.fingerprint_inputs(recipe, stage_config),
    }
    stated_device = device_inputs(device.model_dump(mode="json"), kind)
    if stated_device is not None:
        inputs["device"] = stated_device
    return json.loads(json.dumps(inputs, default=str))


def device_inputs(device: dict[str, Any], kind: StageKind) -> dict[str, Any] | None:
    """What of a device profile (as JSON) a stage of ``kind`` depends on: all of it less its ``device_ignores`` if it
    uses the device, else its ``device_fields``; None when neither."""
    if kind.uses_device:
        return _without(copy.deepcopy(device), kind.device_ignores)
    if kind.device_fields:
        return {key: value for key, value in device.items() if key in kind.device_fields}
    return None


def _without(fields: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    """``fields`` without the nested keys ``dotted`` names (``budget.p90_ms``)."""
    for path in dotted:
        *parents, last = path.split(".")
        holder = fields
        for parent in parents:
            holder = holder.get(parent) or {}
        holder.pop(last, None)
    return fields


def _pretrained_names(value: Any) -> set[str]:
    """Every ``pretrained`` checkpoint named in a JSON value (models, tokenizer, ensemble members)."""
    if isinstance(value, dict):
        named = {value["pretrained"]} if isinstance(value.get("pretrained"), str) else set()
        return named.union(*(_pretrained_names(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_pretrained_names(v) for v in value))
    return set()


def fingerprint(inputs: dict[str, Any]) -> str:
    """The hash of a stage's :func:`fingerprint_inputs`."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def run_pipeline(
    recipe: Recipe,
    device: DeviceProfile,
    run_dir: Path,
    *,
    fresh: bool = False,
    show_progress: bool = True,
    registry: StageRegistry = DEFAULT_REGISTRY,
) -> RunResult:
    """Run ``recipe``'s stages for ``device`` in ``run_dir``, skipping stages already finished.

    ``fresh`` ignores (and replaces) every cached stage. ``registry`` says how each stage kind runs
    (tests pass small fake stages). Under a launcher every process calls this (see the module docstring).
    """
    world = current_world()
    check_recipe(recipe, f"recipe '{recipe.name}'", registry)
    _check_training(recipe, world, registry)
    run_dir = Path(run_dir)
    check_run_dir_outside_data(recipe, run_dir)
    with claimed(run_dir, main=world.is_main):  # refuses directories that are not runs; one run at a time
        try:
            return _run_stages(recipe, device, run_dir, world, registry, fresh=fresh, show_progress=show_progress)
        except KeyboardInterrupt:  # a re-run in this process (a notebook's) imports what the stage was importing
            drop_orphan_modules()
            raise


def _run_stages(recipe: Recipe, device: DeviceProfile, run_dir: Path, world: World, registry: StageRegistry, *,
                fresh: bool, show_progress: bool) -> RunResult:
    if world.is_main:
        _say_other_recipe(run_dir, recipe)
        outputs = _remove_earlier_outputs(run_dir, recipe, registry)
        # the recipe's fields as given: a default written out would read back as a setting (load_run validates it)
        write_json(run_dir / RUN_RECORD, {"edgekd_version": __version__,
                                          "recipe": recipe.model_dump(mode="json", exclude_unset=True),
                                          "device": device.model_dump(mode="json"),
                                          "checkpoints": _checkpoint_types(recipe), OUTPUTS_KEY: outputs})
    last_parallel = max((i for i, s in enumerate(recipe.stages, start=1) if registry[s.stage].data_parallel),
                        default=0)
    artifact = Artifact()
    previous = ""
    rerun = fresh  # a stage that ran again runs every cacheable stage after it again
    records: list[StageRecord] = []
    planned: set[str] = set()
    everyone = world
    for index, stage_config in enumerate(recipe.stages, start=1):
        if index > last_parallel:  # no data-parallel stage left: rank 0 goes on alone, the others wait
            if not world.is_main:
                break
            world = world.alone()
        kind = registry[stage_config.stage]
        name = stage_dir_name(index, stage_config.stage)
        planned.add(name)
        decision = None
        if world.is_main:
            inputs = fingerprint_inputs(previous, stage_config, recipe, device, kind)
            fp = fingerprint(inputs)
            cached = None if rerun or not kind.cacheable else _finished_record(run_dir, name, fp, kind)
            shared = (None if cached is not None or rerun or not kind.shareable
                      else _shared_record(run_dir, name, fp, kind))
            decision = (fp, inputs, _rejudged(run_dir / name, cached or shared, kind, device), shared is not None)
        fp, inputs, cached, from_store = world.broadcast(decision)
        if cached is not None:
            if not from_store:
                log.info("stage %s: skipped, finished earlier with the same inputs (%.1f s then)",
                         name, cached.get("wall_seconds", 0.0))
            rerun = rerun or from_store  # not this directory's own result: what follows it is run again
            record = StageRecord(index, stage_config.stage, name, fp, True, cached)
        else:
            log.info("stage %s: running", name)
            retune_training_threads()
            rerun = rerun or kind.cacheable
            stage_world = world if kind.data_parallel else world.alone()
            work_dir = _partial_dir(run_dir, name, fp, fresh) if world.is_main else run_dir / f".{name}.partial"
            if kind.data_parallel:
                world.barrier()
                _check_shared(work_dir, fp, world)
            data = None
            if world.is_main or kind.data_parallel:
                ctx = StageContext(
                    recipe=kind.view(recipe, stage_config), device=device, run_dir=run_dir.resolve(),
                    work_dir=work_dir, stage_dir_name=name, where=f"stages[{index - 1}]",
                    log=logging.getLogger(f"edgekd.stage.{stage_config.stage}"),
                    show_progress=show_progress and world.is_main, previous=tuple(r.data for r in records),
                    world=stage_world,
                )
                data = _run_stage(kind, stage_config, artifact, ctx, index, fp, inputs, recipe.name).data
            record = StageRecord(index, stage_config.stage, name, fp, False, world.broadcast(data))
            log.info("stage %s: done in %.1f s", name, record.wall_seconds)
        artifact = Artifact.from_json(record.data["artifact"])
        previous = fp
        records.append(record)
    if world.is_main:
        remove_stale_stage_dirs(run_dir, planned)
    # The other processes wait for rank 0 rather than exit while it works: a process leaving the
    # group early aborted now and then ("terminate called without an active exception"), and the
    # launcher then stopped rank 0 mid-stage.
    everyone.barrier()
    return RunResult(run_dir=run_dir, artifact=artifact, stages=tuple(records), is_main_process=world.is_main)


def _remove_earlier_outputs(run_dir: Path, recipe: Recipe, registry: StageRegistry) -> list[str]:
    """Delete what earlier runs wrote at the top of ``run_dir`` that no stage of ``recipe`` writes (the bundle of a
    recipe that no longer has a bundle stage, the report of one without a report stage), before any stage runs: a
    run that stops half way leaves no earlier run's bundle beside its own stages. Returns the outputs kept, which the
    recipe's stages write again.

    Only what ``run.json`` lists is deleted (:func:`~edgekd.rundir.remove_outputs`) and only under a name some stage
    kind declares (:attr:`~edgekd.stage_kind.StageKind.outputs`): never a file of the user's. A run directory of an
    edgekd that kept no list has the names of its kinds' fixed outputs and its report's ``files`` taken for it."""
    kinds = [registry[stage.stage] for stage in recipe.stages]
    earlier = recorded_outputs(run_dir)
    if earlier is None:
        earlier = _outputs_before_the_list(run_dir, registry)
    earlier = [name for name in earlier if any(kind.writes(name) for kind in registry)]
    gone = remove_outputs(run_dir, [name for name in earlier if not any(kind.writes(name) for kind in kinds)])
    return [name for name in earlier if name not in gone]


def _outputs_before_the_list(run_dir: Path, registry: StageRegistry) -> list[str]:
    """What an edgekd that listed no outputs in ``run.json`` wrote at the top of ``run_dir``: the outputs of fixed
    names its stage kinds declare (``bundle``, ``report.json``) that are there, and the files its ``report.json``
    lists (the plots)."""
    fixed = [pattern for kind in registry for pattern in kind.outputs if not glob.has_magic(pattern)]
    report = read_json(run_dir / "report.json")
    files = report.get("files") if isinstance(report, dict) else None
    listed = [name for name in files if isinstance(name, str)] if isinstance(files, list) else []
    return sorted({name for name in fixed + listed if is_output_name(name) and (run_dir / name).exists()})


def _checkpoint_types(recipe: Recipe) -> dict[str, str]:
    """The model type of each ``arch: hf`` checkpoint the recipe's models load, by its ``pretrained`` value: what
    :func:`load_run` needs of one moved or deleted since (``edgekd report``, ``open_run``)."""
    specs = [getattr(getattr(recipe, role), "model", None) for role in ("teacher", "assistant", "student")]
    return {spec.pretrained: spec.model_type for spec in specs if isinstance(spec, HFSpec) and spec.pretrained}


def _say_other_recipe(run_dir: Path, recipe: Recipe) -> None:
    """Warn when ``run_dir`` holds a run of a recipe of another name: its stages are replaced (stages of the same
    inputs are kept, the others run again, and directories of stages this recipe does not have are removed)."""
    earlier = read_run_record(run_dir / RUN_RECORD)
    name = (earlier or {}).get("recipe", {}).get("name")
    if isinstance(name, str) and name != recipe.name:
        log.warning("%s: holds a run of recipe '%s'; this run of '%s' replaces it (its stages whose inputs differ "
                    "run again, those this recipe does not have are removed); give another --out to keep both",
                    run_dir, name, recipe.name)


def _check_training(recipe: Recipe, world: World, registry: StageRegistry) -> None:
    """Reject training options (the stages' own and nested ones like ``recovery``) this run cannot honour."""
    for index, stage in enumerate(recipe.stages):
        stage_world = world if registry[stage.stage].data_parallel else world.alone()
        where = f"recipe '{recipe.name}': stages[{index}]"
        if isinstance(stage, TrainingConfig):
            check_training(stage, where, stage_world)
        for key, value in stage:
            if isinstance(value, TrainingConfig):
                check_training(value, f"{where}.{key}", stage_world)


def _check_shared(work_dir: Path, fp: str, world: World) -> None:
    """Fail clearly when this process cannot see the stage directory rank 0 just prepared."""
    marker = work_dir / FINGERPRINT_FILE
    if not world.is_main and not (marker.is_file() and marker.read_text() == fp):
        raise ConfigError(f"{work_dir.parent}: process {world.rank} does not see what rank 0 wrote there; a run "
                          "over several machines needs its run directory (--out) on a filesystem they all share")


def _finished_record(run_dir: Path, name: str, fp: str, kind: StageKind) -> dict[str, Any] | None:
    """The record of a finished stage of ``kind`` with fingerprint ``fp`` whose files verify, completing an
    interrupted rename."""
    final = run_dir / name
    record = cached_record(final, fp, kind)
    if record is not None:
        return record
    partial = run_dir / f".{name}.partial"
    record = cached_record(partial, fp, kind)
    if record is not None:
        replace_stage_dir(partial, final)  # the stage finished but was stopped before its rename
        return record
    return None


def _rejudged(stage_dir: Path, record: dict[str, Any] | None, kind: StageKind,
              device: DeviceProfile) -> dict[str, Any] | None:
    """A reused finished stage's ``record`` judged again against this run's ``device`` (a profile's verdict under
    another budget, :attr:`~edgekd.stage_kind.StageKind.rejudge`), its ``stage.json`` rewritten when that changed
    it; None when no stage is reused."""
    if record is None:
        return None
    judged = kind.rejudged(record, device)
    if judged is not record:
        write_json(stage_dir / STAGE_RECORD, judged)
    return judged


def _shared_record(run_dir: Path, name: str, fp: str, kind: StageKind) -> dict[str, Any] | None:
    """The record of the same stage finished by another run (:mod:`edgekd.stage_store`), copied into this one."""
    partial = run_dir / f".{name}.partial"
    record = fetch_stage(name, fp, partial, kind)
    if record is not None:
        replace_stage_dir(partial, run_dir / name)
    return record


def _partial_dir(run_dir: Path, name: str, fp: str, fresh: bool) -> Path:
    """The stage's working directory; kept from an interrupted attempt with the same inputs.

    A kept directory loses the temporary files of writes the interruption cut short, so that
    they are not renamed into place with the finished stage.
    """
    partial = run_dir / f".{name}.partial"
    marker = partial / FINGERPRINT_FILE
    keep = not fresh and marker.is_file() and marker.read_text() == fp
    if partial.exists() and not keep:
        shutil.rmtree(partial)
    elif keep:
        remove_temporaries(partial)
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp)
    return partial


def _run_stage(kind: StageKind, stage_config: Any, artifact: Artifact, ctx: StageContext,
               index: int, fp: str, inputs: dict[str, Any], recipe_name: str) -> StageRecord:
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    try:
        output = kind.runner()(stage_config, artifact, ctx)
    except ConfigError as exc:  # a mistake in the recipe found while running: say which stage it concerns
        raise ConfigError(f"recipe '{recipe_name}': {ctx.where} ({kind.name}): {exc}") from exc
    ctx.world.barrier()  # every process is done with the stage directory before rank 0 commits it
    data = {
        "stage": stage_config.stage,
        "index": index,
        "fingerprint": fp,
        "fingerprint_inputs": inputs,
        "config": stage_config.model_dump(mode="json"),
        "inputs": artifact.to_json(),
        "artifact": output.artifact.to_json(),
        "metrics": output.metrics,
        "started_at": started_at,
        "wall_seconds": round(time.perf_counter() - started, 3),
        "torch_threads": torch_threads(),
        "edgekd_version": __version__,
    }
    if not ctx.world.is_main:
        return StageRecord(index, stage_config.stage, ctx.stage_dir_name, fp, False, data)
    data[FILES_KEY] = inventory(ctx.work_dir)
    write_json(ctx.work_dir / STAGE_RECORD, data)
    (ctx.work_dir / FINGERPRINT_FILE).unlink(missing_ok=True)
    replace_stage_dir(ctx.work_dir, ctx.run_dir / ctx.stage_dir_name)
    if kind.shareable:
        keep_stage(ctx.run_dir / ctx.stage_dir_name, fp)
    return StageRecord(index, stage_config.stage, ctx.stage_dir_name, fp, False, data)


def load_run(run_dir: Path) -> tuple[Recipe, DeviceProfile, list[dict[str, Any]]]:
    """The recipe, device profile and finished stage records of a run directory (nothing is re-run)."""
    record = read_run_record(Path(run_dir) / RUN_RECORD)
    if record is None:
        raise ConfigError(f"{run_dir}: not an edgekd run directory ({RUN_RECORD} missing, unreadable or not "
                          "an edgekd run record)")
    source = str(Path(run_dir) / RUN_RECORD)
    checkpoints = record.get("checkpoints")  # absent from the records of runs before edgekd recorded them
    context = recorded_context({path: kind for path, kind in checkpoints.items()
                                if isinstance(path, str) and isinstance(kind, str)}
                               if isinstance(checkpoints, dict) else {})
    recipe = validate_model(record["recipe"], Recipe, source=f"{source} (recipe)", context=context)
    device = validate_model(record["device"], DeviceProfile, source=f"{source} (device)", expanded=True)
    return recipe, device, load_run_records(run_dir)


def damaged_stage(run_dir: Path, registry: StageRegistry = DEFAULT_REGISTRY) -> str | None:
    """Which finished stage directory of ``run_dir`` (the report stage's aside) cannot be trusted, and why: its
    ``stage.json`` missing or unreadable or of no kind in ``registry``, its metrics not its kind's typed record, or
    a file it lists missing or changed; None when every one verifies."""
    for stage_dir in sorted(p for p in Path(run_dir).glob("[0-9][0-9]-*") if p.is_dir()):
        if stage_dir.name.endswith("-report"):
            continue
        path = stage_dir / STAGE_RECORD
        record = read_stage_record(path)
        if record is None:
            return f"{path}: {stage_record_problem(path)}"
        if record["stage"] not in registry.names():
            return f"{path}: 'stage' names no stage kind of edgekd ({record['stage'][:40]!r})"
        problem = stage_problem(stage_dir, record, registry[record["stage"]])
        if problem is not None:
            return f"{path}: {problem}"
    return None


def load_run_records(run_dir: Path) -> list[dict[str, Any]]:
    """The ``stage.json`` records of a run directory's finished stages, in order, up to the first one that did not
    follow the record before it (a later run re-ran a stage and stopped: the directories after it are an earlier
    run's, made from another input)."""
    records: list[dict[str, Any]] = []
    for path in sorted(Path(run_dir).glob("[0-9][0-9]-*/" + STAGE_RECORD)):
        record = read_stage_record(path)
        if record is None:
            continue
        previous = (record.get("fingerprint_inputs") or {}).get("previous")
        if isinstance(previous, str) and previous != (records[-1].get("fingerprint") if records else ""):
            break
        records.append(record)
    return records
