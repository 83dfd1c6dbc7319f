"""The ``prune``, ``factorize`` and ``hybrid`` stages: physically smaller models, re-checked and measured.

Each stage loads its role's model directory, changes it (structured pruning, truncated-SVD
factorization, or LadaBERT's alternation of both with distillation recovery, Mao et al., 2020),
checks that the output shape is unchanged and that the ONNX export matches PyTorch, measures
accuracy, parameters, MACs and ONNX latency before and after (every step for ``hybrid``), and saves
the new model directory in place of the old one in the artifact. A causal language model (a
``data.source: corpus`` recipe) goes through :mod:`edgekd.prune.causal_lm` (judged by validation loss and
per-token generation time).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.config import is_corpus
from edgekd.data.task_data import TaskData, prepare_task_data
from edgekd.distill.objective import combined_loss, distillation_objective
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.distill.trainer import fit
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import CompressStage, FactorizeStage, HybridStage, PruneStage
from edgekd.prune.landing import Size, landing_ratio, sizes_met
from edgekd.prune.lowrank import LayerRank, factorize_task_model, nothing_factorized
from edgekd.prune.measure import (
    Snapshot,
    check_shape,
    count_macs,
    device_inputs,
    output_shape,
    snapshot,
    time_interleaved,
)
from edgekd.prune.record import CompressionRecord, schedule_fields
from edgekd.prune.resume import clear, resume, save_step, seed_step
from edgekd.prune.structured import TAYLOR_BATCH_SIZE, TAYLOR_BATCHES, prune_step
from edgekd.task_heads import hard_loss

if TYPE_CHECKING:
    from edgekd.prune.causal_lm import LMCompression, LMSnapshot

#: Where the recoveries' teacher outputs are kept, in the stage's working directory.
TEACHER_OUTPUTS = "teacher-outputs"


class _Compression:
    """One stage's model, data, teacher and checks, shared by the three stages."""

    snapshot_type = Snapshot

    def __init__(self, config: CompressStage, artifact: Artifact, ctx: StageContext) -> None:
        self.config, self.artifact, self.ctx = config, artifact, ctx
        self.source = artifact.get(config.role)
        self.model = TaskModel.load(ctx.resolve(self.source.weights))
        self.data: TaskData = prepare_task_data(ctx.recipe.data, ctx.seed, tokenizer=self.model.tokenizer)
        self.teacher = TaskModel.load(ctx.resolve(artifact.get("teacher").weights)) if config.recovery else None
        self.teacher_outputs: TeacherOutputCache | None = None
        self.inputs = device_inputs(self.model, ctx.device)
        self.shape = output_shape(self.model, self.inputs)
        self.snapshots: list[Snapshot] = []
        self.exports: dict[int, Path] = {}
        """The ONNX export of every step measured with latency, timed together by :meth:`finish`."""
        torch.manual_seed(ctx.seed)

    def measure(self, step: int, *, latency: bool = True, timed_now: bool = False) -> Snapshot:
        """Check the output shape (after step 0), then record the model's figures (``latency``: export it for
        the interleaved timing at the end; ``timed_now``: also time it now, for a latency target)."""
        if step:
            check_shape(self.shape, self.model, self.inputs, f"stage '{self.config.stage}' step {step}")
        if latency:
            self.exports[step] = self.ctx.path(f"check-{step}.onnx")
        shot = snapshot(self.model, self.data, self.ctx.device, step, onnx_path=self.exports.get(step),
                        timed_now=timed_now)
        self.snapshots.append(shot)
        p50 = "" if shot.onnx_p50_ms is None else f", p50 {shot.onnx_p50_ms:.3f} ms (timed alone)"
        self.ctx.log.info("%s step %d: %s %.4f, params %d, MACs %d%s", self.config.stage, step, shot.metric,
                          shot.score, shot.params, shot.macs, p50)
        return shot

    def size(self) -> Size:
        """The model's parameters and MACs now (at the device's input shape)."""
        return Size(self.model.params, count_macs(self.model, self.inputs))

    def prune(self, ratio: float) -> None:
        prune_config = self.config.prune if isinstance(self.config, HybridStage) else self.config
        prune_step(self.model, prune_config, ratio, self.inputs, gradients=self._taylor_gradients)

    def factorize(self) -> list[LayerRank]:
        """Factorize every linear layer but the classifier (see :func:`factorize_task_model`)."""
        factorize_config = self.config.factorize if isinstance(self.config, HybridStage) else self.config
        return factorize_task_model(self.model, factorize_config)

    def recover(self, step: int) -> None:
        """LadaBERT's recovery: a short distillation from the teacher (no-op without ``recovery``). The teacher's
        outputs the losses read are computed over the training set once, at the first recovery, and read back by
        every step's (:class:`~edgekd.distill.teacher_cache.TeacherOutputCache`, kept until the stage finishes)."""
        if self.config.recovery is None or self.teacher is None:
            return
        checkpoints = self.ctx.path(f"recovery-{step}")
        loss = combined_loss(self.config.recovery.losses, self.model.module, self.teacher.module)
        if self.teacher_outputs is None:
            self.teacher_outputs = TeacherOutputCache.open_or_build(
                [self.teacher.module], [1.0], self.data.train, loss.teacher_layers(), self.ctx.path(TEACHER_OUTPUTS))
        fit(self.model.module, self.data.train, self.data.val, self.config.recovery,
            distillation_objective(loss, self.teacher.module, self.teacher_outputs), seed=self.ctx.seed + step,
            extra=loss, checkpoint_dir=checkpoints, description=f"{self.config.stage} recovery {step}",
            show_progress=self.ctx.show_progress)
        shutil.rmtree(checkpoints, ignore_errors=True)

    def finish(self, outcome: dict[str, Any]) -> StageOutput:
        """Save the model directory, point the artifact at it and report before/after (``outcome``: what the
        stage kind adds to its :class:`~edgekd.prune.record.CompressionRecord`)."""
        role = self.config.role
        self.model.save(self.ctx.path(role))
        shutil.rmtree(self.ctx.path(TEACHER_OUTPUTS), ignore_errors=True)
        self.snapshots = time_interleaved(self.snapshots, self.exports, self.ctx.device)
        before, after = self.snapshots[0], self.snapshots[-1]
        record = CompressionRecord(
            **schedule_fields(self.snapshots),
            accuracy_ratio=after.accuracy / before.accuracy if before.accuracy and after.accuracy is not None
            else None,
            metric_ratio=after.score / before.score if before.score else None,
            **outcome,
        )
        kept = {**after.figures, **record.model_dump(include={"params", "macs", "params_ratio", "macs_ratio"})}
        model = replace(self.source, weights=self.ctx.ref(role), onnx=None, metrics=self.source.metrics.merged(kept))
        return StageOutput(artifact=self.artifact.with_model(model), metrics={role: record.to_json()})

    def _taylor_gradients(self, module: nn.Module) -> None:
        module.train()
        generator = torch.Generator().manual_seed(self.ctx.seed)
        batches = self.data.train.batches(TAYLOR_BATCH_SIZE, shuffle=True, generator=generator)
        for _, (_, inputs, labels) in zip(range(TAYLOR_BATCHES), batches, strict=False):
            hard_loss(call_logits(module, inputs), labels).backward()
        module.eval()


def compression(config: CompressStage, artifact: Artifact, ctx: StageContext) -> _Compression | LMCompression:
    """The job a stage runs its schedule on: a causal LM's (:class:`~edgekd.prune.causal_lm.LMCompression`) for a
    ``data.source: corpus`` recipe, else a classifier's."""
    if is_corpus(ctx.recipe.data):
        from edgekd.prune.causal_lm import LMCompression

        return LMCompression(config, artifact, ctx)
    return _Compression(config, artifact, ctx)


def run_prune(config: PruneStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Remove ``ratio`` of the heads/channels in ``steps`` equal geometric steps, recovering after each (an
    interrupted run resumes after its last finished step)."""
    job = compression(config, artifact, ctx)
    per_step = 1 - (1 - config.ratio) ** (1 / config.steps)
    if resume(job) is None:
        job.measure(0)
    for step in range(len(job.snapshots), config.steps + 1):
        seed_step(ctx.seed, step)
        job.prune(per_step)
        job.recover(step)
        job.measure(step, latency=step == config.steps)
        if step < config.steps:
            save_step(job, step, [])
    return _finished(job, {"ratio_per_step": per_step})


def run_factorize(config: FactorizeStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Factorize the linear layers by truncated SVD, then recover."""
    job = compression(config, artifact, ctx)
    job.measure(0)
    decisions = job.factorize()
    unchanged = nothing_factorized(decisions, config)
    if unchanged is not None:
        ctx.log.warning("factorize: no layer of the %s was factorized: %s; its size and speed are unchanged (drop "
                        "the factorize stage)", config.role, unchanged)
    job.recover(1)
    job.measure(1)
    return job.finish({"layers": [vars(d) for d in decisions], **({"unchanged": unchanged} if unchanged else {})})


def run_hybrid(config: HybridStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Prune, factorize and recover, step by step, until every target is met, ``max_steps`` have run or a step
    removes nothing more; the step that reaches a parameter or MAC target prunes only the share that lands on it
    (:mod:`edgekd.prune.landing`). A model that meets the targets already is kept as it is; a target missed is
    warned of and recorded (``shortfall``). An interrupted run resumes after its last finished step."""
    job = compression(config, artifact, ctx)
    ratios = resume(job)
    if ratios is None:
        seed_step(ctx.seed, 0)
        ratios = []
        job.measure(0, latency=config.measure_latency, timed_now=config.target_latency_ms is not None)
    base = job.snapshots[0]
    reached = _targets_met(config, base, job.snapshots[-1])
    if reached and len(job.snapshots) == 1:
        ctx.log.info("hybrid: the %s meets every target already; it is kept as it is", config.role)
    stalled = None
    while not reached and (step := len(job.snapshots)) <= config.max_steps:
        seed_step(ctx.seed, step)
        ratio = landing_ratio(job, config, Size(base.params, base.macs))
        if ratio < config.prune.ratio:
            ctx.log.info("hybrid step %d prunes %.3g of the units (not %g): enough to land on the target", step,
                         ratio, config.prune.ratio)
        job.prune(ratio)
        job.factorize()
        if _removed_nothing(job):
            stalled = step
            break
        ratios.append(ratio)
        job.recover(step)
        reached = _targets_met(config, base, job.measure(step, latency=config.measure_latency,
                                                         timed_now=config.target_latency_ms is not None))
        if not reached and step < config.max_steps:
            save_step(job, step, ratios)
    shortfall = None if reached else _shortfall(config, base, job.snapshots[-1], stalled)
    if shortfall is not None:
        ctx.log.warning("hybrid: %s", shortfall)
    return _finished(job, {"target_reached": reached, "steps_run": len(job.snapshots) - 1, "prune_ratios": ratios,
                           **({"shortfall": shortfall} if shortfall else {})})


def _finished(job: _Compression | LMCompression, outcome: dict[str, Any]) -> StageOutput:
    """The stage's output (:meth:`_Compression.finish`), the steps kept for a resumption removed once it is saved."""
    output = job.finish(outcome)
    clear(job.ctx)
    return output


def _removed_nothing(job: _Compression | LMCompression) -> bool:
    """Whether the model has the parameters and MACs of the last step measured (MACs, an export to count, only
    counted when the parameters are unchanged)."""
    last = job.snapshots[-1]
    return job.model.params == last.params and job.size() == Size(last.params, last.macs)


def _targets_met(config: HybridStage, base: Snapshot | LMSnapshot, now: Snapshot | LMSnapshot) -> bool:
    limit = config.target_latency_ms
    if limit is not None and (now.latency_ms is None or now.latency_ms > limit):
        return False
    return sizes_met(config, Size(base.params, base.macs), Size(now.params, now.macs))


def _shortfall(config: HybridStage, base: Snapshot | LMSnapshot, now: Snapshot | LMSnapshot,
               stalled: int | None) -> str:
    """Which targets ``now`` misses, by how much, and why the schedule stopped (``stalled``: the step that would
    have removed nothing more)."""
    missed = []
    if config.target_params_ratio is not None and now.params > config.target_params_ratio * base.params:
        missed.append(f"parameters {now.params / base.params:.3g} of the input model's "
                      f"(target {config.target_params_ratio:g})")
    if config.target_macs_ratio is not None and now.macs > config.target_macs_ratio * base.macs:
        missed.append(f"MACs {now.macs / base.macs:.3g} of the input model's (target {config.target_macs_ratio:g})")
    if config.target_latency_ms is not None and (now.latency_ms is None or now.latency_ms > config.target_latency_ms):
        timed = "not timed" if now.latency_ms is None else f"p50 {now.latency_ms:.3g} ms"
        missed.append(f"{timed} (target {config.target_latency_ms:g} ms)")
    why = (f"step {stalled} would remove nothing more (no unit left to prune, no layer left to factorize)"
           if stalled is not None else f"max_steps {config.max_steps} reached")
    return f"the {config.role} missed its target after {now.step} step(s), {why}: {'; '.join(missed)}"
