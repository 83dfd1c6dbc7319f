"""The ``teacher`` and ``distill`` stages of a causal language model (a ``data.source: corpus`` recipe).

``teacher`` trains the teacher on next-token prediction over the corpus's training windows
(:class:`~edgekd.data.lm_data.TokenWindows`), from sizes or starting from a ``pretrained`` checkpoint
(which then brings its own tokenizer unless the recipe names one). ``distill`` trains the student with
the recipe's weighted generation losses
(:data:`~edgekd.distill.losses.registry.GENERATION_LOSSES`: token-level KD on the corpus, Kim & Rush's
sequence-level KD on the teacher's cached continuations, GKD on the student's own samples); the teacher
runs beside the student on each batch.
Both keep the epoch with the lowest validation loss (nats per token on the held-out text) and
record it with its perplexity.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.data.config import TokenizerConfig
from edgekd.data.lm_data import LMData, prepare_lm_data
from edgekd.distill.config import DistillStage, TeacherStage
from edgekd.distill.losses.base import WeightedLoss
from edgekd.distill.losses.registry import build_loss
from edgekd.distill.losses.sequence_level import SequenceKD
from edgekd.distill.on_policy import OnPolicyDistillation
from edgekd.distill.outputs import ModelInfo, ModelOutputs
from edgekd.distill.record import distill_record, teacher_record
from edgekd.distill.sequence_kd import (
    ContinuationWindows,
    TokenBatch,
    cached_continuations,
    choose_prompts,
    continuation_cache_key,
    continuation_loss,
    stop_ids,
)
from edgekd.distill.trainer import TrainHistory, Validation, clear_checkpoint, fit
from edgekd.models.call import eval_mode
from edgekd.models.causal_lm import CausalLM, causal_lm_from_spec, context_length, validation_loss
from edgekd.models.weights import load_weights


def run_causal_lm_teacher(config: TeacherStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Train the recipe's teacher LM on the corpus (its ``pretrained`` weights, if any, are the start), or load
    and evaluate ``teacher.weights`` (a teacher trained before, shared between runs) without training."""
    recipe = ctx.recipe
    pretrained = recipe.teacher.model.pretrained
    tokenizer = recipe.tokenizer or (TokenizerConfig(pretrained=pretrained) if pretrained is not None else None)
    data = prepare_lm_data(recipe.data, tokenizer)
    torch.manual_seed(ctx.seed)
    model = CausalLM(causal_lm_from_spec(recipe.teacher.model, data.tokenizer, data.context, "teacher.model"),
                     data.tokenizer)
    started = time.perf_counter()
    history = None
    if recipe.teacher.weight_files:
        load_weights(model.module, recipe.teacher.weight_files[0])
    else:
        history = fit(model.module, data.windows(), loss_validation(data), config, next_token_cross_entropy,
                      seed=ctx.seed, checkpoint_dir=ctx.work_dir, description="teacher",
                      show_progress=ctx.show_progress, world=ctx.world)
    record = teacher_record(_evaluate(model, data, started, history), history=history.epochs if history else [])
    if ctx.world.is_main:
        model.save(ctx.path("teacher"))
        clear_checkpoint(ctx.work_dir)
    teacher = ModelArtifact(role="teacher", weights=ctx.ref("teacher"), metrics=record.teacher.to_json())
    return StageOutput(artifact=artifact.with_model(teacher), metrics=record.to_json())


def run_causal_lm_distill(config: DistillStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Distil ``config.student`` from ``config.teacher`` with the weighted generation ``config.losses``."""
    teacher = CausalLM.load(ctx.resolve(artifact.get(config.teacher).weights))
    data = prepare_lm_data(ctx.recipe.data, None, tokenizer=teacher.tokenizer)
    torch.manual_seed(ctx.seed)
    spec = getattr(ctx.recipe, config.student).model
    student = CausalLM(causal_lm_from_spec(spec, data.tokenizer, data.context, f"{config.student}.model"),
                       data.tokenizer)
    teacher.module.to(ctx.world.device).eval()
    cache_dir = config.teacher_cache_dir or ctx.work_dir / "teacher-continuations"
    objective = GenerationObjective(config.losses, student.module, teacher.module, data, cache_dir, ctx.seed,
                                    where=ctx.where)
    started = time.perf_counter()
    history = fit(student.module, data.windows(), loss_validation(data), config, objective, seed=ctx.seed,
                  extra=objective.losses, checkpoint_dir=ctx.work_dir,
                  description=f"distill {config.teacher} → {config.student}", show_progress=ctx.show_progress,
                  world=ctx.world)
    figures = _evaluate(student, data, started, history) | {"losses": [loss.kind for loss in config.losses]}
    continuation = objective.continuation_losses(student.module, list(config.losses))
    if continuation:
        figures["teacher_continuation_loss"] = continuation
    record = distill_record(config.student, figures, history.epochs)
    if ctx.world.is_main:
        student.save(ctx.path(config.student))
        clear_checkpoint(ctx.work_dir)
        if config.teacher_cache_dir is None:
            shutil.rmtree(cache_dir, ignore_errors=True)
    result = ModelArtifact(role=config.student, weights=ctx.ref(config.student), metrics=record.figures.to_json())
    return StageOutput(artifact=artifact.with_model(result), metrics=record.to_json())


class GenerationObjective:
    """The distill stage's training objective for causal LMs: ``Σ weight · loss`` over the recipe's
    generation losses, each on the batches its config names (``batches``): the corpus windows of the
    step (``token_kl``), windows of the teacher's cached continuations (``sequence_kd``) or the
    student's own samples (``on_policy``). Extra batches are drawn with a generator seeded from the
    batch's ordered window indices: they differ from epoch to epoch (the windows are reshuffled) and are
    the same when a run resumes, so a resumed run draws what an uninterrupted one would. Logits are
    compared over the tokenizer's vocabulary (checkpoints may pad their embedding rows beyond it)."""

    def __init__(self, losses: Sequence[WeightedLoss], student: nn.Module, teacher: nn.Module, data: LMData,
                 cache_dir: Path, seed: int, where: str) -> None:
        info = ModelInfo.of(student), ModelInfo.of(teacher)
        self.configs = list(losses)
        self.losses = nn.ModuleList(build_loss(loss, *info) for loss in losses)
        self.teacher, self.data, self.seed, self.vocab = teacher, data, seed, len(data.tokenizer)
        self.sources: dict[int, Any] = {}
        for index, loss in enumerate(losses):
            key = f"{where}.losses[{index}]"
            batches = getattr(loss, "batches", "corpus")
            if batches == "teacher_outputs":
                self.sources[index] = _teacher_windows(loss, teacher, data, cache_dir, seed, key)
            elif batches == "student_samples":
                self.sources[index] = OnPolicyDistillation(
                    beta=loss.beta, temperature=loss.temperature, sample_temperature=loss.sample_temperature,
                    student_fraction=loss.student_fraction, prompt_tokens=loss.prompt_tokens,
                    new_tokens=loss.new_tokens, where=key, vocab=self.vocab)
                self.sources[index].check_fits(student, teacher)

    def __call__(self, model: nn.Module, inputs: dict[str, Tensor], targets: Tensor, idx: Any) -> Tensor:
        digest = hashlib.sha256(np.asarray([self.seed, *np.asarray(idx).tolist()], np.int64).tobytes()).digest()
        generator = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)
        every = torch.ones_like(targets, dtype=torch.bool)
        corpus = TokenBatch(inputs=inputs["input_ids"], targets=targets, mask=every)
        total = torch.zeros((), device=targets.device)
        for index, (config, loss) in enumerate(zip(self.configs, self.losses, strict=True)):
            batch = self._batch(index, model, corpus, generator)
            student = ModelOutputs(logits=model(input_ids=batch.inputs).logits[..., :self.vocab])
            with torch.no_grad():
                teacher = ModelOutputs(logits=self.teacher(input_ids=batch.inputs).logits[..., :self.vocab]
                                       if loss.reads_teacher_logits else student.logits)
            total = total + config.weight * loss(student, teacher, batch.targets, batch.mask)
        return total

    def continuation_losses(self, model: nn.Module, configs: list[Any]) -> dict[str, float]:
        """The student's loss (nats/token) on each ``sequence_kd`` loss's teacher continuations, by loss index."""
        return {f"losses[{index}]": continuation_loss(model, source.sequences, configs[index].prompt_tokens,
                                                      stop_ids(self.teacher))
                for index, source in self.sources.items() if isinstance(source, ContinuationWindows)
                and source.sequences.shape[1] - 1 <= context_length(model)}

    def _batch(self, index: int, model: nn.Module, corpus: TokenBatch, generator: torch.Generator) -> TokenBatch:
        """The batch loss ``index`` trains on this step."""
        source, size = self.sources.get(index), len(corpus.targets)
        if source is None:
            return corpus
        if isinstance(source, OnPolicyDistillation):
            with eval_mode(model):
                batch = source.batch(model, self.data.train, size, generator)
        else:
            batch = source.sample(size, generator)
        device = corpus.targets.device
        return TokenBatch(inputs=batch.inputs.to(device), targets=batch.targets.to(device), mask=batch.mask.to(device))


def _teacher_windows(config: SequenceKD, teacher: nn.Module, data: LMData, cache_dir: Path, seed: int,
                     where: str) -> ContinuationWindows:
    """Training windows over the teacher's continuations of ``config.prompts`` corpus prompts (generated once)."""
    prompts = choose_prompts(data.train, config.prompts, config.prompt_tokens, seed=seed, where=where)
    settings = {"prompts": config.prompts, "prompt_tokens": config.prompt_tokens, "new_tokens": config.new_tokens,
                "beams": config.beams, "seed": seed, "vocab": len(data.tokenizer),
                "prompt_ids_sha256": hashlib.sha256(prompts.numpy().tobytes()).hexdigest()}
    key = continuation_cache_key(teacher.state_dict(), settings)
    sequences = cached_continuations(cache_dir, key, teacher, prompts, config.new_tokens, num_beams=config.beams,
                                     where=where, vocab=len(data.tokenizer))
    return ContinuationWindows(sequences, config.prompt_tokens, data.context, stop_ids(teacher))


def next_token_cross_entropy(model: nn.Module, inputs: dict[str, Tensor], targets: Tensor, _idx: Any) -> Tensor:
    """Cross-entropy of the model's next-token logits against the corpus's next tokens."""
    return F.cross_entropy(model(**inputs).logits.flatten(0, 1), targets.flatten())


def loss_validation(data: LMData) -> Validation:
    """Epochs are judged by the validation text's loss (nats per token; lower is better)."""
    return Validation("val_loss", lambda model: validation_loss(model, data.validation, data.context),
                      lower_is_better=True)


def _evaluate(model: CausalLM, data: LMData, started: float, history: TrainHistory | None) -> dict[str, Any]:
    """The kept epoch's validation loss and perplexity, the model's size and how training went (if it trained)."""
    loss = validation_loss(model.module, data.validation, data.context)
    metrics = {"task": "causal_lm", "val_loss": loss, "perplexity": math.exp(loss), "params": model.params,
               "vocab_size": len(model.tokenizer), "context": data.context,
               "train_tokens": data.train.numel(), "validation_tokens": data.validation.numel(),
               "train_seconds": time.perf_counter() - started}
    if history is not None:
        metrics.update(epochs_run=history.epochs_run, best_epoch=history.best_epoch,
                       resumed_from_epoch=history.resumed_from_epoch, stopped_early=history.stopped_early)
    return metrics
