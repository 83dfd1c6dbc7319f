"""The ``teacher`` and ``distill`` stages."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.config import DistillStage, TeacherStage
from edgekd.data import DatasetSplits, load_dataset
from edgekd.distill.losses import HintonDistillationLoss
from edgekd.distill.trainer import accuracy, clear_checkpoint, fit, predict_logits
from edgekd.models import build_model, count_params, load_weights, save_weights


def run_teacher(config: TeacherStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Train the teacher on hard labels, or load the recipe's teacher weights, and evaluate it."""
    data = load_dataset(ctx.recipe.data, ctx.seed)
    torch.manual_seed(ctx.seed)
    model = build_model(ctx.recipe.teacher.model, data.input_shape, data.num_classes)
    started = time.perf_counter()
    if ctx.recipe.teacher.weights is not None:
        load_weights(model, ctx.recipe.teacher.weights)
        history = None
    else:
        history = fit(
            model, (data.x_train, data.y_train), (data.x_val, data.y_val), config,
            lambda logits, labels, _idx: F.cross_entropy(logits, labels),
            seed=ctx.seed, checkpoint_dir=ctx.work_dir, description="teacher", show_progress=ctx.show_progress,
        )
    return _finish(model, "teacher", data, ctx, artifact, started, history)


def run_distill(config: DistillStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Distill the recipe's student from the teacher with Hinton's soft-target loss."""
    data = load_dataset(ctx.recipe.data, ctx.seed)
    teacher = build_model(ctx.recipe.teacher.model, data.input_shape, data.num_classes)
    load_weights(teacher, ctx.resolve(artifact.get("teacher").weights))
    teacher_logits = predict_logits(teacher, data.x_train)  # computed once, not every epoch
    hinton = config.losses[0]
    loss = HintonDistillationLoss(hinton.temperature, hinton.alpha)
    torch.manual_seed(ctx.seed)
    student = build_model(ctx.recipe.student.model, data.input_shape, data.num_classes)
    started = time.perf_counter()
    history = fit(
        student, (data.x_train, data.y_train), (data.x_val, data.y_val), config,
        lambda logits, labels, idx: loss(logits, teacher_logits[idx], labels),
        seed=ctx.seed, checkpoint_dir=ctx.work_dir, description="distill", show_progress=ctx.show_progress,
    )
    return _finish(student, "student", data, ctx, artifact, started, history)


def _finish(model: nn.Module, role: str, data: DatasetSplits, ctx: StageContext, artifact: Artifact,
            started: float, history) -> StageOutput:
    save_weights(model, ctx.path(f"{role}.safetensors"))
    clear_checkpoint(ctx.work_dir)
    metrics = {
        "accuracy": accuracy(model, data.x_test, data.y_test),
        "val_accuracy": accuracy(model, data.x_val, data.y_val),
        "params": count_params(model),
        "train_seconds": time.perf_counter() - started,
    }
    if history is not None:
        metrics.update(epochs_run=history.epochs_run, best_epoch=history.best_epoch,
                       resumed_from_epoch=history.resumed_from_epoch)
    model_artifact = ModelArtifact(role=role, weights=ctx.ref(f"{role}.safetensors"), metrics=metrics)
    stage_metrics = {role: metrics}
    if history is not None:
        stage_metrics["history"] = history.epochs
    return StageOutput(artifact=artifact.with_model(model_artifact), metrics=stage_metrics)
