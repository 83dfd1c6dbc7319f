"""What stages pass to each other: the models so far and where their files are.

Paths inside an :class:`Artifact` are stored relative to the run directory (``01-teacher/teacher.safetensors``)
so a run directory can be moved or rebuilt into a report without re-running anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.distributed import LOCAL, World
from edgekd.model_metrics import ModelMetrics
from edgekd.rundir import note_outputs
from edgekd.stage_kind import RecipeView

#: ``ModelArtifact.updated``'s default for ``deploy_files``: keep the model's.
_KEEP: Any = object()


@dataclass(frozen=True)
class ModelArtifact:
    """One model (teacher or student) as the pipeline carries it from stage to stage."""

    role: str
    weights: str | None = None
    onnx: str | None = None
    metrics: ModelMetrics = field(default_factory=ModelMetrics)
    """What the stages measured of the model (a plain mapping given here is read as :class:`ModelMetrics`)."""
    members: tuple[str, ...] = ()
    """For an ensemble teacher: every member's model directory (``weights`` is the first)."""
    member_weights: tuple[float, ...] = ()
    """How much each member's soft targets count (sums to 1)."""
    deploy_files: dict[str, str] | None = None
    """The files the export target ships the model as, by kind (``ort``, ``onnx``); None: the ``onnx`` file."""

    def __post_init__(self) -> None:
        if not isinstance(self.metrics, ModelMetrics):
            object.__setattr__(self, "metrics", ModelMetrics.from_json(self.metrics))

    def updated(self, *, onnx: str | None = None, deploy_files: dict[str, str] | None = _KEEP,
                **metrics: Any) -> ModelArtifact:
        """A copy with ``metrics`` merged into the existing ones (and a new ONNX file or deploy files, if given)."""
        return replace(self, onnx=onnx or self.onnx, metrics=self.metrics.merged(metrics),
                       deploy_files=self.deploy_files if deploy_files is _KEEP else deploy_files)

    def to_json(self) -> dict[str, Any]:
        data = {"role": self.role, "weights": self.weights, "onnx": self.onnx, "metrics": self.metrics.to_json(),
                "members": list(self.members), "member_weights": list(self.member_weights)}
        return data if self.deploy_files is None else {**data, "deploy_files": dict(self.deploy_files)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelArtifact:
        """The model of a ``stage.json`` record; one written before ``deploy_files`` left ``metrics`` loads too."""
        metrics = dict(data.get("metrics", {}))
        legacy_deploy = metrics.pop("deploy_files", None)
        return cls(role=data["role"], weights=data.get("weights"), onnx=data.get("onnx"),
                   metrics=ModelMetrics.from_json(metrics), members=tuple(data.get("members", ())),
                   member_weights=tuple(data.get("member_weights", ())),
                   deploy_files=data.get("deploy_files", legacy_deploy))


@dataclass(frozen=True)
class Artifact:
    """The state between stages: the models by role (``teacher``, ``student``)."""

    models: dict[str, ModelArtifact] = field(default_factory=dict)

    def get(self, role: str) -> ModelArtifact:
        """The model of ``role``; a missing one is a recipe-order mistake caught by validation."""
        return self.models[role]

    def with_model(self, model: ModelArtifact) -> Artifact:
        """A copy with ``model`` added or replaced."""
        return Artifact(models={**self.models, model.role: model})

    def to_json(self) -> dict[str, Any]:
        return {role: m.to_json() for role, m in self.models.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(models={role: ModelArtifact.from_json(m) for role, m in data.items()})


@dataclass(frozen=True)
class StageContext:
    """Everything a stage may use besides its input artifact.

    A stage writes its files only through :meth:`path` (inside the stage's working directory,
    which the pipeline renames into place once the stage has finished) and stores the
    matching :meth:`ref` in the artifact it returns. What it writes at the top of the run
    directory (the bundle) is named by :meth:`output` first, which lists it in ``run.json``.
    """

    recipe: RecipeView
    """The recipe fields the stage declares it reads (see :class:`~edgekd.stage_kind.RecipeView`)."""
    device: DeviceProfile
    run_dir: Path
    work_dir: Path
    stage_dir_name: str
    where: str
    """The stage's key path in the recipe (``stages[2]``), to prefix errors the recipe causes."""
    log: logging.Logger
    show_progress: bool = True
    previous: tuple[dict[str, Any], ...] = ()
    """The ``stage.json`` records of the stages before this one, in order."""
    world: World = LOCAL
    """The processes running this stage: all of a data-parallel run's for ``teacher``/``distill``, else one.
    Only ``world.is_main`` writes files."""

    @property
    def seed(self) -> int:
        """The recipe's seed (a stage using it declares ``seed`` in its reads)."""
        return self.recipe.seed

    def path(self, name: str) -> Path:
        """Where to write the file ``name`` of this stage."""
        return self.work_dir / name

    def output(self, name: str) -> Path:
        """Where to write ``name`` at the top of the run directory, beside the stage directories (``bundle``): the
        name, which the stage's kind declares in its ``outputs``, is listed in ``run.json`` first
        (:func:`~edgekd.rundir.note_outputs`), so a later run whose recipe has no such stage removes it."""
        note_outputs(self.run_dir, add=(name,))
        return self.run_dir / name

    def ref(self, name: str) -> str:
        """The run-relative reference under which ``name`` is found once the stage is committed."""
        return f"{self.stage_dir_name}/{name}"

    def resolve(self, ref: str) -> Path:
        """The file a reference in an artifact points at (absolute refs pass through)."""
        path = Path(ref)
        return path if path.is_absolute() else self.run_dir / path


@dataclass(frozen=True)
class StageOutput:
    """What a stage returns: the new artifact and the metrics it measured."""

    artifact: Artifact
    metrics: dict[str, Any] = field(default_factory=dict)
