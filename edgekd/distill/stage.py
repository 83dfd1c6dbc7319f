"""The ``teacher`` and ``distill`` stages.

A causal-LM recipe (``data.source: corpus``) runs :mod:`edgekd.distill.causal_lm_stage` instead.
``teacher`` trains the recipe's teacher on the labels (or loads its weights), optionally as an
ensemble of members trained with different seeds. ``distill`` trains a student (or a teacher
assistant) from a teacher (or from the assistant) with the recipe's weighted losses; the teacher's
outputs over the transfer set (the logits and whatever intermediate states the losses compare) are
computed once and kept memory-mapped on disk (:mod:`edgekd.distill.teacher_cache`).
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.config.recipe import EnsembleConfig, Recipe
from edgekd.data.augment import augment_texts, mask_token_of
from edgekd.data.config import TokenizerConfig, is_corpus
from edgekd.data.examples import UNLABELLED, Examples, TextExamples
from edgekd.data.task_data import TaskData, prepare_task_data, text_examples
from edgekd.distill.causal_lm_stage import run_causal_lm_distill, run_causal_lm_teacher
from edgekd.distill.config import DistillStage, TeacherStage
from edgekd.distill.losses.combined import CombinedLoss
from edgekd.distill.objective import combined_loss, distillation_objective
from edgekd.distill.record import distill_record, teacher_record
from edgekd.distill.task_metrics import evaluation_metrics
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.distill.trainer import TrainHistory, clear_checkpoint, fit, predict_logits
from edgekd.errors import StorageError
from edgekd.model_file import copy_model
from edgekd.models.call import call_logits
from edgekd.models.embeddings import inherit_embeddings
from edgekd.models.onnx_teacher import OnnxTeacher
from edgekd.models.task_model import TaskModel, build_task_model
from edgekd.models.weights import load_weights
from edgekd.stage_kind import RecipeView
from edgekd.task_heads import hard_loss, target_cross_entropy


def run_teacher(config: TeacherStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Train (or load) the teacher — every member of an ensemble — and evaluate it on the test split."""
    recipe = ctx.recipe
    if is_corpus(recipe.data):
        return run_causal_lm_teacher(config, artifact, ctx)
    data = teacher_task_data(recipe, ctx.seed)
    ensemble = recipe.teacher.ensemble
    members: list[TaskModel] = []
    member_metrics: list[dict[str, Any]] = []
    for member in range(ensemble.members if ensemble else 1):
        seed = ctx.seed + member
        torch.manual_seed(seed)
        model = build_task_model(recipe.teacher.model, data.signature, data.class_names, tokenizer=data.tokenizer)
        started = time.perf_counter()
        history = None
        if recipe.teacher.weight_files:
            load_weights(model.module, recipe.teacher.weight_files[member])
        elif not recipe.teacher.model.trainable:
            ctx.log.info("teacher: %s is a fixed model (an ONNX file): evaluated, not trained",
                         recipe.teacher.model.label)
        else:
            objective = _hard_label_objective if data.train_targets is None else \
                partial(_target_objective, targets=data.train_targets)
            history = fit(
                model.module, data.train, data.val, config, objective, seed=seed,
                checkpoint_dir=ctx.work_dir / f"checkpoint-{member}",
                description=f"teacher {member + 1}" if ensemble else "teacher", show_progress=ctx.show_progress,
                world=ctx.world,
            )
        members.append(model)
        member_metrics.append(_evaluate(model, data, started, history))
        if ctx.world.is_main:
            model.save(ctx.path(_member_name(member)))
    if ctx.world.is_main:  # every member is saved: their epoch checkpoints (weights + optimizer state) can go
        for member in range(len(members)):
            shutil.rmtree(ctx.work_dir / f"checkpoint-{member}", ignore_errors=True)
    weights = _member_weights(ensemble, [m["val_accuracy"] for m in member_metrics])
    figures = dict(member_metrics[0])
    if ensemble:
        figures.update(ensemble_accuracy=_ensemble_accuracy(members, weights, data.test), members=member_metrics)
    onnx = _onnx_copy(members[0], ctx)
    if onnx is not None:
        figures["onnx"] = members[0].module.describe()
    record = teacher_record(figures, history=None)
    teacher = ModelArtifact(role="teacher", weights=ctx.ref(_member_name(0)), metrics=record.teacher.to_json(),
                            members=tuple(ctx.ref(_member_name(i)) for i in range(len(members))) if ensemble else (),
                            member_weights=tuple(weights) if ensemble else (), onnx=onnx)
    return StageOutput(artifact=artifact.with_model(teacher), metrics=record.to_json())


def _onnx_copy(teacher: TaskModel, ctx: StageContext) -> str | None:
    """An ONNX teacher's file copied (external data embedded) into the stage, as the model the later stages
    profile and compare against (it is not exported again); None for any other teacher."""
    if not isinstance(teacher.module, OnnxTeacher):
        return None
    if ctx.world.is_main:
        copy_model(teacher.module.path, ctx.path("teacher.onnx"))
    return ctx.ref("teacher.onnx")


def run_distill(config: DistillStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Distil ``config.student`` from ``config.teacher`` with the weighted ``config.losses``."""
    if is_corpus(ctx.recipe.data):
        return run_causal_lm_distill(config, artifact, ctx)
    source = artifact.get(config.teacher)
    teachers = [TaskModel.load(ctx.resolve(ref)) for ref in (source.members or (source.weights,))]
    teacher = teachers[0]
    data = prepare_task_data(ctx.recipe.data, ctx.seed, tokenizer=teacher.tokenizer)
    torch.manual_seed(ctx.seed)
    spec = getattr(ctx.recipe, config.student).model
    student = build_task_model(spec, data.signature, data.class_names, tokenizer=teacher.tokenizer, teacher=teacher)
    if getattr(spec, "embeddings", "random") == "teacher":
        inherit_embeddings(student.module, teacher.module, where=f"{config.student}.model")
    loss = combined_loss(config.losses, student.module, teacher.module)  # check_recipe: an ensemble → hinton only
    train = _transfer_set(data, config, ctx.seed)
    for member in teachers:
        member.module.to(ctx.world.device)
    cache = _teacher_cache(teachers, source, train, loss, config, ctx) \
        if config.cache_teacher or len(teachers) > 1 else None
    objective = distillation_objective(loss, teacher.module, cache)
    started = time.perf_counter()
    history = fit(student.module, train, data.val, config, objective, seed=ctx.seed, extra=loss,
                  checkpoint_dir=ctx.work_dir, description=f"distill {config.teacher} → {config.student}",
                  show_progress=ctx.show_progress, world=ctx.world)
    record = distill_record(config.student, {
        **_evaluate(student, data, started, history), "labelled_examples": len(data.train),
        "transfer_set_size": len(train), "losses": [spec.kind for spec in config.losses]}, history.epochs)
    if ctx.world.is_main:
        student.save(ctx.path(config.student))
        clear_checkpoint(ctx.work_dir)
        if cache is not None and config.teacher_cache_dir is None:
            shutil.rmtree(cache.directory.parent)
    result = ModelArtifact(role=config.student, weights=ctx.ref(config.student), metrics=record.figures.to_json())
    return StageOutput(artifact=artifact.with_model(result), metrics=record.to_json())


def _teacher_cache(teachers: list[TaskModel], source: ModelArtifact, train: Examples, loss: CombinedLoss,
                   config: DistillStage, ctx: StageContext) -> TeacherOutputCache:
    """The teacher-output cache for this stage: rank 0 builds it (or finds it), then every process maps it."""

    def open_or_build() -> TeacherOutputCache:
        try:
            return TeacherOutputCache.open_or_build(
                [t.module for t in teachers], list(source.member_weights) or [1.0], train, loss.teacher_layers(),
                config.teacher_cache_dir or ctx.work_dir / "teacher-outputs")
        except StorageError as exc:
            if config.teacher_cache_dir is None:
                raise
            raise StorageError(f"{exc} (distill.teacher_cache_dir)") from None

    cache = open_or_build() if ctx.world.is_main else None
    ctx.world.barrier()
    return cache if cache is not None else open_or_build()


def _transfer_set(data: TaskData, config: DistillStage, seed: int) -> Examples:
    """The training set, plus Tang et al.'s augmented sentences (unlabelled: the teacher labels them)."""
    if config.augment is None:
        return data.train  # check_recipe: augment only with text data
    mask = mask_token_of(data.tokenizer, config.augment)
    extra = augment_texts(data.texts.train.texts, config.augment, seed=seed, mask_token=mask)
    augmented = text_examples(data.tokenizer, extra, np.full(len(extra), UNLABELLED), data.signature.max_length)
    return TextExamples(encoded=data.train.encoded + augmented.encoded,
                        labels=torch.cat([data.train.labels, augmented.labels]), pad_id=data.train.pad_id)


def _hard_label_objective(model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor,
                          _idx: np.ndarray) -> torch.Tensor:
    return hard_loss(call_logits(model, inputs), labels)


def _target_objective(model: nn.Module, inputs: dict[str, torch.Tensor], _labels: torch.Tensor, idx: np.ndarray,
                      *, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the training set's own class probabilities (a distilled set's soft labels)."""
    return target_cross_entropy(call_logits(model, inputs), targets[torch.from_numpy(np.asarray(idx))])


def _evaluate(model: TaskModel, data: TaskData, started: float, history: TrainHistory | None) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        **evaluation_metrics(model, data),
        "params": model.params,
        "train_seconds": time.perf_counter() - started,
    }
    if history is not None:
        metrics.update(epochs_run=history.epochs_run, best_epoch=history.best_epoch,
                       resumed_from_epoch=history.resumed_from_epoch, stopped_early=history.stopped_early)
    return metrics


def _ensemble_probs(members: list[TaskModel], weights: list[float], examples: Examples) -> torch.Tensor:
    """Weighted average of the members' class probabilities."""
    return sum(w * predict_logits(m.module, examples).softmax(-1) for m, w in zip(members, weights, strict=True))


def _ensemble_accuracy(members: list[TaskModel], weights: list[float], examples: Examples) -> float:
    probs = _ensemble_probs(members, weights, examples)
    return (probs.argmax(-1) == examples.labels).sum().item() / len(examples)


def _member_weights(ensemble: EnsembleConfig | None, val_accuracies: list[float]) -> list[float]:
    if ensemble is None:
        return [1.0]
    if ensemble.weighting == "uniform":
        raw = [1.0] * ensemble.members
    elif ensemble.weighting == "accuracy":
        raw = val_accuracies
    else:
        raw = list(ensemble.weighting)  # as many as members (EnsembleConfig)
    return [w / sum(raw) for w in raw]


def _member_name(member: int) -> str:
    return "teacher" if member == 0 else f"teacher-{member}"


def teacher_task_data(recipe: Recipe | RecipeView, seed: int) -> TaskData:
    """The recipe's data tokenized as the teacher stage does: the recipe's tokenizer, or a pretrained
    teacher's own when the recipe names none (its remote code trusted only if the teacher's spec says so)."""
    pretrained = getattr(recipe.teacher.model, "pretrained", None)
    tokenizer = recipe.tokenizer
    if tokenizer is None and pretrained is not None:
        tokenizer = TokenizerConfig(pretrained=pretrained)
    return prepare_task_data(recipe.data, seed, tokenizer_config=tokenizer,
                             trust_remote_code=bool(getattr(recipe.teacher.model, "trust_remote_code", False)))
