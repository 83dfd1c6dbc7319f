"""The ``dataset_distill`` stage: learn a synthetic training set, judge it, save it as ``synthetic.npz``."""

from __future__ import annotations

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.dataset_distill.config import DatasetDistillStage
from edgekd.dataset_distill.record import DatasetDistillRecord
from edgekd.dataset_distill.run import distill_dataset
from edgekd.models.task_model import TaskModel
from edgekd.profile.cpu import detect_cpu

#: The file the stage writes (its record's ``synthetic_set`` refers to it).
SYNTHETIC_FILE = "synthetic.npz"


def run_dataset_distill(config: DatasetDistillStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Distil the recipe's training set; the artifact passes through, the metrics name the set and its scores.

    ``labels: teacher`` uses the teacher an earlier stage trained (every member of an ensemble, weighted as the
    distill stage weighs them). Later stages find the set through its record's ``synthetic_set`` (the quantize
    stage's ``calibration: synthetic``).
    """
    teachers: list[TaskModel] = []
    weights: tuple[float, ...] = ()
    if config.labels == "teacher" and "teacher" in artifact.models:
        source = artifact.get("teacher")
        teachers = [TaskModel.load(ctx.resolve(ref)) for ref in (source.members or (source.weights,))]
        weights = source.member_weights or (1.0,)
    result = distill_dataset(config, ctx.recipe, ctx.seed, ctx.path(SYNTHETIC_FILE),
                             teachers=[t.module for t in teachers], teacher_weights=weights, where=ctx.where)
    record = DatasetDistillRecord(
        synthetic_set=ctx.ref(SYNTHETIC_FILE), method=config.method, images_per_class=config.images_per_class,
        examples=len(result.synthetic.labels), distill_seconds=round(result.wall_seconds, 3),
        accuracy=result.accuracy, details=result.synthetic.details, cpu=detect_cpu())
    return StageOutput(artifact=artifact, metrics=record.to_json())
