"""The ``teacher`` and ``distill`` stages of a causal language model (a ``data.source: corpus`` recipe).

``teacher`` trains the teacher on next-token prediction over the corpus's training windows
(:class:`~edgekd.data.lm_data.TokenWindows`), or evaluates a ``pretrained`` one when the stage has no
epochs to run. ``distill`` trains the student with the recipe's weighted generation losses
(:data:`~edgekd.distill.losses.registry.GENERATION_LOSSES`); the teacher runs beside it on each batch.
Both keep the epoch with the lowest validation loss (nats per token on the held-out text) and
record it with its perplexity.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.data.lm_data import LMData, prepare_lm_data
from edgekd.distill.config import DistillStage, TeacherStage
from edgekd.distill.losses.registry import build_loss
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.distill.trainer import TrainHistory, Validation, clear_checkpoint, fit
from edgekd.models.causal_lm import CausalLM, causal_lm_from_spec, validation_loss


def run_causal_lm_teacher(config: TeacherStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Train the recipe's teacher LM on the corpus (its ``pretrained`` weights, if any, are the start)."""
    recipe = ctx.recipe
    data = prepare_lm_data(recipe.data, recipe.tokenizer)
    torch.manual_seed(ctx.seed)
    model = CausalLM(causal_lm_from_spec(recipe.teacher.model, data.tokenizer, data.context, "teacher.model"),
                     data.tokenizer)
    started = time.perf_counter()
    history = fit(model.module, data.windows(), _validation(data), config, _next_token_loss, seed=ctx.seed,
                  checkpoint_dir=ctx.work_dir, description="teacher", show_progress=ctx.show_progress,
                  world=ctx.world)
    metrics = _evaluate(model, data, started, history)
    if ctx.world.is_main:
        model.save(ctx.path("teacher"))
        clear_checkpoint(ctx.work_dir)
    teacher = ModelArtifact(role="teacher", weights=ctx.ref("teacher"), metrics=metrics)
    return StageOutput(artifact=artifact.with_model(teacher), metrics={"teacher": metrics, "history": history.epochs})


def run_causal_lm_distill(config: DistillStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Distil ``config.student`` from ``config.teacher`` with the weighted generation ``config.losses``."""
    teacher = CausalLM.load(ctx.resolve(artifact.get(config.teacher).weights))
    data = prepare_lm_data(ctx.recipe.data, None, tokenizer=teacher.tokenizer)
    torch.manual_seed(ctx.seed)
    spec = getattr(ctx.recipe, config.student).model
    student = CausalLM(causal_lm_from_spec(spec, data.tokenizer, data.context, f"{config.student}.model"),
                       data.tokenizer)
    teacher.module.to(ctx.world.device).eval()
    objective = GenerationObjective(config, student.module, teacher.module)
    started = time.perf_counter()
    history = fit(student.module, data.windows(), _validation(data), config, objective, seed=ctx.seed,
                  extra=objective.losses, checkpoint_dir=ctx.work_dir,
                  description=f"distill {config.teacher} → {config.student}", show_progress=ctx.show_progress,
                  world=ctx.world)
    metrics = _evaluate(student, data, started, history)
    metrics["losses"] = [loss.kind for loss in config.losses]
    if ctx.world.is_main:
        student.save(ctx.path(config.student))
        clear_checkpoint(ctx.work_dir)
    result = ModelArtifact(role=config.student, weights=ctx.ref(config.student), metrics=metrics)
    return StageOutput(artifact=artifact.with_model(result),
                       metrics={config.student: metrics, "history": history.epochs})


class GenerationObjective:
    """The distill stage's training objective for causal LMs: ``Σ weight · loss`` over the recipe's
    generation losses, each given the student's and the teacher's next-token logits on the batch."""

    def __init__(self, config: DistillStage, student: nn.Module, teacher: nn.Module) -> None:
        info = ModelInfo.of(student), ModelInfo.of(teacher)
        self.losses = nn.ModuleList(build_loss(loss, *info) for loss in config.losses)
        self.weights = [loss.weight for loss in config.losses]
        self.teacher = teacher

    def __call__(self, model: nn.Module, inputs: dict[str, Tensor], targets: Tensor, _idx: Any) -> Tensor:
        with torch.no_grad():
            teacher = ModelOutputs(logits=self.teacher(**inputs).logits)
        student = ModelOutputs(logits=model(**inputs).logits)
        return sum(weight * loss(student, teacher, targets) for weight, loss in zip(self.weights, self.losses,
                                                                                      strict=True))


def _next_token_loss(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor, _idx: Any) -> Tensor:
    """Cross-entropy of the model's next-token logits against the corpus's next tokens."""
    return F.cross_entropy(model(**inputs).logits.flatten(0, 1), targets.flatten())


def _validation(data: LMData) -> Validation:
    """Epochs are judged by the validation text's loss (nats per token; lower is better)."""
    return Validation("val_loss", lambda model: validation_loss(model, data.validation, data.context),
                      lower_is_better=True)


def _evaluate(model: CausalLM, data: LMData, started: float, history: TrainHistory) -> dict[str, Any]:
    """The kept epoch's validation loss and perplexity, the model's size and how training went."""
    loss = validation_loss(model.module, data.validation, data.context)
    return {"task": "causal_lm", "val_loss": loss, "perplexity": math.exp(loss), "params": model.params,
            "vocab_size": len(model.tokenizer), "context": data.context,
            "train_tokens": data.train.numel(), "validation_tokens": data.validation.numel(),
            "train_seconds": time.perf_counter() - started, "epochs_run": history.epochs_run,
            "best_epoch": history.best_epoch, "resumed_from_epoch": history.resumed_from_epoch,
            "stopped_early": history.stopped_early}
