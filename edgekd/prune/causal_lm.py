"""The ``prune``, ``factorize`` and ``hybrid`` stages of causal language models (a ``data.source: corpus`` recipe).

The stages run the classifier stages' schedules (:mod:`edgekd.prune.stage`) on an
:class:`LMCompression` job, which changes an ``AutoModelForCausalLM`` and judges it as a language model:

- pruning (any decoder :mod:`edgekd.models.families` describes: Llama-layout, GPT-2, GPT-NeoX, OPT, Phi-3 …)
  removes whole grouped-query KV groups (:mod:`edgekd.prune.kv_groups`) and gated or plain MLP channels
  (:mod:`edgekd.prune.gated_mlp`, :mod:`edgekd.prune.plain_mlp`), every layer alike; factorization replaces
  the attention and MLP projections (GPT-2's ``Conv1D`` layers too) by truncated-SVD factor pairs, never the
  output layer (``lm_head``; GPT-2's is tied to the input embeddings, whose ``embeddings: true`` factorization
  is then refused in one line);
- every step is judged by the validation loss (nats per token over the whole validation text, as the
  teacher and distill stages judge epochs) with its perplexity, the parameters and the MACs of one
  ``data.context``-long forward pass; its logits' shape is checked unchanged;
- recovery distils from the unpruned model (the role's model as the stage received it) with the
  recovery's generation losses (``token_kl`` when it names none) through the distill stage's own
  :class:`~edgekd.distill.causal_lm_stage.GenerationObjective`, keeping the epoch of lowest validation loss;
- measured steps are exported with their KV cache and checked step by step against PyTorch
  (:func:`~edgekd.export.causal_lm_stage.export_with_cache`), then timed together at the end: greedy
  generation of the device's ``generation`` prompt and new tokens, every step's graph interleaved over
  ``GENERATION_ROUNDS`` rounds (:func:`~edgekd.quantize.causal_lm.time_generation`); the per-token
  speed-up over step 0 is paired over the rounds, with its interval and range.

The pruned config (head counts, explicit ``head_dim``, ``intermediate_size``) and the factorized layers
(``config.edgekd_structure``) are saved with the model, so :meth:`edgekd.models.causal_lm.CausalLM.load`
reloads it and the export stage exports it.
"""

from __future__ import annotations

import copy
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.lm_data import LMData, device_prompt, prepare_lm_data
from edgekd.distill.causal_lm_stage import GenerationObjective, loss_validation, next_token_cross_entropy
from edgekd.distill.losses.token_kl import TokenKL
from edgekd.distill.trainer import fit
from edgekd.errors import ModelError
from edgekd.export.causal_lm_stage import export_with_cache, parity_rows
from edgekd.export.config import load_export_target
from edgekd.models.causal_lm import CausalLM, context_length, validation_loss
from edgekd.profile.bench import paired_ratio
from edgekd.profile.causal_lm_stage import per_token_speedup
from edgekd.profile.cpu import resolve_threads
from edgekd.profile.generate import PerTokenSpeedup, generation_figures
from edgekd.prune.config import CompressStage, HybridStage
from edgekd.prune.landing import Size
from edgekd.prune.lowrank import LayerRank, factorize_model
from edgekd.prune.measure import CHECK_TARGET
from edgekd.prune.record import LMCompressionRecord, LMStepRecord, schedule_fields
from edgekd.prune.structured import TAYLOR_BATCH_SIZE, TAYLOR_BATCHES, prune_decoder, sync_decoder_config
from edgekd.quantize.causal_lm import round_medians, time_generation

#: Interleaved rounds of greedy generation (one per step's graph each) timing the measured steps.
GENERATION_ROUNDS = 8


class LMSnapshot(LMStepRecord):
    """A causal LM's figures at one point of a compression schedule (as its stage record keeps them)."""

    @property
    def latency_ms(self) -> float | None:
        """The latency a hybrid stage's ``target_latency_ms`` is compared with: the per-token p50."""
        return self.per_token_p50_ms


class LMCompression:
    """One prune/factorize/hybrid stage's causal LM, its data and its unpruned copy (see the module docstring)."""

    snapshot_type = LMSnapshot

    def __init__(self, config: CompressStage, artifact: Artifact, ctx: StageContext) -> None:
        self.config, self.artifact, self.ctx = config, artifact, ctx
        self.source = artifact.get(config.role)
        self.model = CausalLM.load(ctx.resolve(self.source.weights))
        self.data: LMData = prepare_lm_data(ctx.recipe.data, None, tokenizer=self.model.tokenizer)
        self.window = self.data.validation[:min(self.data.context, context_length(self.model.module))][None]
        self.parity = parity_rows(self.data.validation, context_length(self.model.module))
        self.prompt = device_prompt(self.data.validation, ctx.device.generation.prompt_tokens)
        self.threads = resolve_threads(ctx.device)
        self.teacher = copy.deepcopy(self.model.module).eval() if config.recovery else None
        self.shape = self._logits_shape()
        self.snapshots: list[LMSnapshot] = []
        self.exports: dict[int, Path] = {}
        torch.manual_seed(ctx.seed)

    def measure(self, step: int, *, latency: bool = True, timed_now: bool = False) -> LMSnapshot:
        """Check the logits' shape (after step 0) and record the model's figures (``latency``: export it, parity
        checked, for the interleaved timing at the end; ``timed_now``: also time its generation now)."""
        if step and self._logits_shape() != self.shape:
            raise ModelError(f"stage '{self.config.stage}' step {step} changed the model's logits shape from "
                             f"{list(self.shape)} to {list(self._logits_shape())}")
        module = self.model.module
        loss = validation_loss(module, self.data.validation, self.data.context)
        shot = LMSnapshot(step=step, params=self.model.params, macs=self._macs(), val_loss=loss,
                          perplexity=math.exp(loss))
        if latency:
            path = self.exports[step] = self.ctx.path(f"check-{step}.onnx")
            rows, prefix = self.parity
            _, parity = export_with_cache(module, rows, prefix, path, load_export_target(CHECK_TARGET))
            shot = shot.model_copy(update={"parity_max_abs_diff": parity.max_abs_diff})
            if timed_now:
                shot = shot.model_copy(update=self._timed({step: path})[step])
        self.snapshots.append(shot)
        self.ctx.log.info("%s step %d: validation loss %.4f nats/token, params %d, MACs %d", self.config.stage,
                          step, loss, shot.params, shot.macs)
        return shot

    def size(self) -> Size:
        """The model's parameters and MACs now (one forward pass over a validation window)."""
        return Size(self.model.params, self._macs())

    def prune(self, ratio: float) -> None:
        """Remove ``ratio`` of the KV groups (``heads``) and gated-MLP channels (``ffn``) of every layer."""
        prune_config = self.config.prune if isinstance(self.config, HybridStage) else self.config
        module = self.model.module
        prune_decoder(module, prune_config, ratio, {"input_ids": self.window}, gradients=self._taylor_gradients)
        sync_decoder_config(module)

    def factorize(self) -> list[LayerRank]:
        """Factorize every linear layer but the output layer (and, with ``embeddings``, the untied input embeddings)."""
        config = self.config.factorize if isinstance(self.config, HybridStage) else self.config
        module = self.model.module
        output = module.get_output_embeddings()
        if config.embeddings and _tied(module):
            key = "factorize.embeddings" if isinstance(self.config, HybridStage) else "embeddings"
            raise ModelError(f"{self.ctx.where}.{key}: the {module.config.model_type} model's input embeddings are "
                             "tied to its output layer, which stays dense; set embeddings: false")
        head = next(name for name, layer in module.named_modules() if layer is output)
        decisions = factorize_model(module, config, skip=(head,))
        sync_decoder_config(module)
        return decisions

    def recover(self, step: int) -> None:
        """Distil the changed model from the unpruned one with the recovery's generation losses (no-op without
        ``recovery``)."""
        recovery = self.config.recovery
        if recovery is None or self.teacher is None:
            return
        losses = recovery.losses if "losses" in recovery.model_fields_set else [TokenKL(kind="token_kl")]
        objective = GenerationObjective(losses, self.model.module, self.teacher, self.data, self._cache_dir,
                                        self.ctx.seed, where=f"{self.ctx.where}.recovery")
        checkpoints = self.ctx.path(f"recovery-{step}")
        fit(self.model.module, self.data.windows(), loss_validation(self.data), recovery, objective,
            seed=self.ctx.seed + step, extra=objective.losses, checkpoint_dir=checkpoints,
            description=f"{self.config.stage} recovery {step}", show_progress=self.ctx.show_progress)
        shutil.rmtree(checkpoints, ignore_errors=True)

    def finish(self, outcome: dict[str, Any]) -> StageOutput:
        """Save the model directory, time the measured steps' generation together and report before/after
        (``outcome``: what the stage kind adds to its :class:`~edgekd.prune.record.LMCompressionRecord`)."""
        role = self.config.role
        self.model.save(self.ctx.path(role))
        shutil.rmtree(self._cache_dir, ignore_errors=True)
        timed = self._timed(self.exports) if self.exports else {}
        for path in self.exports.values():
            path.unlink()
        self.snapshots = [shot.model_copy(update=timed.get(shot.step, {})) for shot in self.snapshots]
        before, after = self.snapshots[0], self.snapshots[-1]
        record = LMCompressionRecord(
            **schedule_fields(self.snapshots),
            val_loss_change=after.val_loss - before.val_loss,
            generation=self.ctx.device.generation,
            **outcome,
        )
        kept = record.model_dump(include={"val_loss", "perplexity", "params", "macs", "params_ratio", "macs_ratio"})
        model = replace(self.source, weights=self.ctx.ref(role), onnx=None, metrics=self.source.metrics.merged(kept))
        return StageOutput(artifact=self.artifact.with_model(model), metrics={role: record.to_json()})

    @property
    def _cache_dir(self) -> Path:
        """Where ``sequence_kd`` recovery keeps the unpruned model's continuations (generated once per stage)."""
        return self.ctx.work_dir / "teacher-continuations"

    def _timed(self, exports: dict[int, Path]) -> dict[int, dict[str, Any]]:
        """Per step of ``exports``: its generation figures, timed interleaved with the others, and its per-token
        speed-up over the first of them."""
        timing = time_generation({str(step): path for step, path in exports.items()}, self.prompt, self.ctx.device,
                                 GENERATION_ROUNDS, self.threads)
        first = timing[str(min(exports))]
        figures = {}
        for step in exports:
            runs = timing[str(step)]
            measured = generation_figures(runs)
            figures[step] = {key: measured[key] for key in ("time_to_first_token_ms", "per_token_p50_ms",
                                                             "per_token_p90_ms", "tokens_per_second")}
            figures[step] |= {"speedup": paired_ratio(round_medians(first), round_medians(runs)),
                              "speedup_range": PerTokenSpeedup.model_validate(per_token_speedup(first, runs))}
        return figures

    @torch.no_grad()
    def _logits_shape(self) -> tuple[int, ...]:
        self.model.module.eval()
        return tuple(self.model.module(input_ids=self.window).logits.shape)

    @torch.no_grad()
    def _macs(self) -> int:
        self.model.module.eval()
        with FlopCounterMode(display=False) as counter:
            self.model.module(input_ids=self.window)
        return counter.get_total_flops() // 2

    def _taylor_gradients(self, module: nn.Module) -> None:
        """Gradients of the next-token loss on a few training batches (for Taylor importance)."""
        module.train()
        generator = torch.Generator().manual_seed(self.ctx.seed)
        batches = self.data.windows().batches(TAYLOR_BATCH_SIZE, shuffle=True, generator=generator)
        for _, (_, inputs, targets) in zip(range(TAYLOR_BATCHES), batches, strict=False):
            next_token_cross_entropy(module, inputs, targets, None).backward()
        module.eval()


def _tied(module: nn.Module) -> bool:
    """Whether the model's output layer shares its weight with the input embeddings."""
    embeddings, output = module.get_input_embeddings(), module.get_output_embeddings()
    return output is not None and isinstance(embeddings, nn.Embedding) and output.weight is embeddings.weight

