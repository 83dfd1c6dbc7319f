"""What a run would do, before it does it: each stage cached, run for the first time, or re-run and why.

``edgekd run --dry-run`` (and :func:`edgekd.api.plan`) print this so a user knows what a change to a
recipe costs before paying for it::

    01-teacher   cached
    02-distill   re-runs: student.model.hidden changed 32 → 64
    03-export    re-runs: an earlier stage re-runs

Nothing is trained, written or deleted; the fingerprints are the pipeline's own
(:func:`edgekd.pipeline.fingerprint_inputs`), compared with each finished stage's ``stage.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edgekd.config.device import DeviceProfile
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.pipeline import device_inputs, fingerprint, fingerprint_inputs, stage_dir_name, stated_inputs
from edgekd.rundir import STAGE_RECORD, cached_record, read_json, stage_problem
from edgekd.stage_kind import StageKind
from edgekd.stage_store import stored_stage
from edgekd.stages import DEFAULT_REGISTRY, StageRegistry, check_recipe

Status = Literal["cached", "runs", "re-runs"]
#: How many changed values a plan line names before it says "and N more".
MAX_CHANGES_SHOWN = 3


@dataclass(frozen=True)
class StagePlan:
    """One stage of a planned run."""

    directory: str
    stage: str
    status: Status
    changes: tuple[str, ...] = ()
    """For ``re-runs``: what differs from the finished stage (``student.model.hidden changed 32 → 64``)."""

    def describe(self) -> str:
        """The stage's plan line."""
        if self.status == "cached" and self.changes:
            return f"{self.directory}  cached: {'; '.join(self.changes)}"
        if self.status != "re-runs" or not self.changes:
            return f"{self.directory}  {self.status}"
        shown = list(self.changes[:MAX_CHANGES_SHOWN])
        if len(self.changes) > MAX_CHANGES_SHOWN:
            shown.append(f"and {len(self.changes) - MAX_CHANGES_SHOWN} more")
        return f"{self.directory}  re-runs: {'; '.join(shown)}"

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "stage": self.stage, "status": self.status,
                "changes": list(self.changes)}


def plan_run(recipe: Recipe, device: DeviceProfile, run_dir: Path, *, fresh: bool = False,
             registry: StageRegistry = DEFAULT_REGISTRY) -> list[StagePlan]:
    """What :func:`edgekd.pipeline.run_pipeline` would do with these arguments (see the module docstring)."""
    check_recipe(recipe, f"recipe '{recipe.name}'", registry)
    plans: list[StagePlan] = []
    previous = ""
    upstream_reruns = False
    for index, config in enumerate(recipe.stages, start=1):
        kind = registry[config.stage]
        name = stage_dir_name(index, config.stage)
        inputs = fingerprint_inputs(previous, config, recipe, device, kind)
        fp = fingerprint(inputs)
        stage_dir = Path(run_dir) / name
        record = read_json(stage_dir / STAGE_RECORD)
        problem = stage_problem(stage_dir, record, kind) if isinstance(record, dict) else None
        reusable = not fresh and not upstream_reruns
        if reusable and kind.cacheable and isinstance(record, dict) and record.get("fingerprint") == fp \
                and problem is None:
            status, changes = "cached", ()
        elif reusable and kind.shareable and _stored(name, fp, kind):
            status, changes = "cached", ("copied from the shared stage store (an earlier run made it)",)
            upstream_reruns = True  # as the pipeline does: what follows a copied stage runs again
        elif not isinstance(record, dict):
            status: Status = "runs"
            changes: tuple[str, ...] = ()
        elif fresh:
            status, changes = "re-runs", ("--fresh",)
        elif not kind.cacheable:
            status, changes = "re-runs", ("this stage always runs",)
        elif record.get("fingerprint") == fp and problem is not None:
            status, changes = "re-runs", (f"its finished result cannot be reused ({problem})",)
        elif record.get("fingerprint") == fp:
            status, changes = "re-runs", ("an earlier stage re-runs",)
        else:
            status = "re-runs"
            changes = tuple(describe_changes(record.get("fingerprint_inputs"), inputs, index - 1,
                                             upstream_reruns=upstream_reruns))
        upstream_reruns = upstream_reruns or (status != "cached" and kind.cacheable)
        plans.append(StagePlan(directory=name, stage=config.stage, status=status, changes=changes))
        previous = fp
    return plans


def check_recipe_matches(run_dir: Path, recipe: Recipe, device: DeviceProfile, records: list[dict[str, Any]],
                         doing: str) -> None:
    """Refuse (a one-line :class:`ConfigError` starting ``<run_dir>: <doing>``) a run directory whose finished
    stages were made from other inputs than its ``run.json`` states (:func:`recipe_mismatch`)."""
    mismatch = recipe_mismatch(recipe, device, records)
    if mismatch is not None:
        raise ConfigError(f"{run_dir}: {doing}: its recipe (run.json) is not the one its stages ran with ({mismatch}):"
                          " a run of a changed recipe stopped before finishing; run it again into this directory "
                          "(it resumes)")


def recipe_mismatch(recipe: Recipe, device: DeviceProfile, records: list[dict[str, Any]],
                    registry: StageRegistry = DEFAULT_REGISTRY) -> str | None:
    """Which finished stage of a run directory was made from another recipe or device than its ``run.json`` states,
    and what differs; None when every one matches.

    A run writes its recipe first: one that changed a value and stopped before that stage finished leaves the new
    recipe beside the earlier run's stages, which a report would otherwise show as the new recipe's results. Only
    what the recipe and device state is compared (:func:`~edgekd.pipeline.stated_inputs`): data edited, a newer
    edgekd or another measuring CPU since are no mismatch, and no file is read or hashed."""
    for index, (config, record) in enumerate(zip(recipe.stages, records, strict=False), start=1):
        stated = stated_inputs(config, recipe, device, registry[config.stage])
        recorded = record.get("fingerprint_inputs")
        given = _as_stated_now(recorded, registry[config.stage]) if isinstance(recorded, dict) else {}
        if any(given.get(key) != value for key, value in stated.items()):
            # the other inputs as recorded, so that only the recipe's and the device's changes are described
            shown = {"edgekd": None, "previous": None, **given, **stated}
            changes = describe_changes(recorded, shown, index - 1, upstream_reruns=False)
            return f"{stage_dir_name(index, config.stage)}: {'; '.join(changes) or 'its settings differ'}"
    return None


def _as_stated_now(recorded: dict[str, Any], kind: StageKind) -> dict[str, Any]:
    """A finished stage's recorded inputs with its device profile as a stage of ``kind`` now depends on it
    (:func:`~edgekd.pipeline.device_inputs`): a field an earlier edgekd hashed and this one ignores (the profile
    stage's budget) is no mismatch."""
    device = recorded.get("device")
    stated_device = device_inputs(device, kind) if isinstance(device, dict) else None
    return recorded if stated_device is None else {**recorded, "device": stated_device}


def _stored(name: str, fingerprint: str, kind: StageKind) -> bool:
    """Whether the shared stage store holds this stage (of ``kind``) finished and intact."""
    stored = stored_stage(name, fingerprint)
    return stored is not None and stored.is_dir() and cached_record(stored, fingerprint, kind) is not None


def describe_changes(old: Any, new: dict[str, Any], stage_index: int, *, upstream_reruns: bool) -> list[str]:
    """What differs between a finished stage's fingerprint inputs and the planned ones, as the user wrote it."""
    if not isinstance(old, dict):
        return ["its inputs changed (the finished stage's record does not list them)"]
    changes: list[str] = []
    for path, before, after in _differences(old.get("recipe", {}), new["recipe"], ()):
        changes.append(_changed(_key(path), before, after))
    for path, before, after in _differences(old.get("config", {}), new["config"], ()):
        changes.append(_changed(_key((f"stages[{stage_index}]", *path)), before, after))
    for path, before, after in _differences(old.get("device", {}), new.get("device", {}), ()):
        changes.append(_changed(_key(("device profile", *path)), before, after))
    for path, before, after in _differences(old.get("extra", {}), new.get("extra", {}), ()):
        changes.append(_changed(_key(path), before, after))
    if old.get("data_content") != new.get("data_content"):
        changes.append("the data files' content changed" if old.get("data_content") else
                       "the data files' content is now part of the fingerprint")
    if old.get("pretrained") != new.get("pretrained"):
        changes.append("a pretrained checkpoint's files changed")
    if old.get("edgekd") != new["edgekd"]:
        changes.append(_changed("edgekd version", old.get("edgekd"), new["edgekd"]))
    if old.get("previous") != new["previous"] and upstream_reruns:
        changes.append("an earlier stage re-runs")
    elif old.get("previous") != new["previous"]:
        changes.append("an earlier stage's result changed")
    return changes


def _differences(old: Any, new: Any, path: tuple[Any, ...]) -> list[tuple[tuple[Any, ...], Any, Any]]:
    """The leaf values that differ, with their key paths."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _differences(old.get(key), new.get(key), (*path, key))
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        found = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            found += _differences(a, b, (*path, index))
        return found
    return [] if old == new else [(path, old, new)]


def _key(path: tuple[Any, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + str(part)
    return text


def _changed(key: str, before: Any, after: Any) -> str:
    return f"{key} changed {_short(before)} → {_short(after)}"


def _short(value: Any, limit: int = 40) -> str:
    text = "unset" if value is None else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"
