"""The ``quantize`` stage of causal language models: dynamic INT8 of the KV-cache decoder, kept where it pays.

Each model in ``roles`` gets ``<role>.int8-dynamic.onnx``: onnxruntime's dynamic quantization of the
exported KV-cache graph (weights INT8 offline, activations at run time, the device ISA's settings from
:func:`edgekd.quantize.model.int8_options`; static INT8 would need calibration feeds with caches). Both
graphs are then measured in this run:

- quality over onnxruntime on up to ``loss_windows`` ``data.context``-long windows of the validation text,
  one call per window with an empty cache: the validation loss (nats per token), its perplexity, the
  next-token top-1 accuracy, and the INT8 graph's top-1 agreement with FP32 (the share of positions
  whose most likely next token is FP32's) and its largest logit difference;
- speed: greedy generation of the device's ``generation.new_tokens`` after its ``prompt_tokens``-long
  prompt (validation text, as the profile stage does), FP32 and INT8 timed in ``rounds`` interleaved
  rounds after a warm-up generation each; the per-token speed-up is paired over the rounds (geometric
  mean of the per-round ratios of median per-token latency, with its interval) and given with its
  range (:func:`edgekd.profile.causal_lm_stage.per_token_speedup`).

The decision is :func:`edgekd.quantize.decision.decide`'s: INT8 is eligible when its validation loss is at
most ``loss_tolerance`` above FP32's, and kept when its speed-up interval clears ``min_speedup`` (or FP32
misses the device's size budget and INT8 fits it); otherwise FP32 stays and the reason says why. A kept
INT8 graph becomes the model's ONNX file (the profile and bundle stages then use it); when the export
target ships ``.ort``, the INT8 graph is converted too and the bundle ships that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.config.device import DeviceProfile
from edgekd.data.lm_data import device_prompt, prepare_lm_data
from edgekd.errors import DataError, ModelError
from edgekd.export.causal_lm_stage import convert_cached_to_ort
from edgekd.export.parity import one_line
from edgekd.export.record import recorded_target
from edgekd.models.causal_lm import load_tokenizer
from edgekd.profile.bench import paired_ratio
from edgekd.profile.causal_lm_stage import per_token_speedup
from edgekd.profile.cpu import detect_cpu, device_isa, resolve_threads
from edgekd.profile.generate import CachedGenerator, Generation, generation_figures, interleaved_generations
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.decision import Decision, decide
from edgekd.quantize.exported import exported_model
from edgekd.quantize.isa import isa_label
from edgekd.quantize.model import int8_options
from edgekd.quantize.quality import worse_by
from edgekd.quantize.quantizers import quantize_dynamic_int8
from edgekd.quantize.record import quantize_record
from edgekd.quantize.variants import Variant

#: The gated metric of a causal LM (validation loss, nats per token; lower is better).
METRIC = "val_loss"
INT8 = "int8-dynamic"


def run_causal_lm_quantize(config: QuantizeStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Quantize each role's KV-cache decoder and keep INT8 where it pays (see the module docstring)."""
    metrics: dict[str, Any] = {"cpu": detect_cpu().to_json(), "device_isa": device_isa(ctx.device),
                               "generation": ctx.device.generation.model_dump(), "rounds": config.rounds}
    for role in config.roles:
        model = exported_model(artifact, role)
        source = ctx.resolve(model.onnx)
        data = prepare_lm_data(ctx.recipe.data, None, tokenizer=load_tokenizer(ctx.resolve(model.weights)))
        windows = validation_windows(data.validation.numpy(), data.context, config.loss_windows)
        prompt = device_prompt(data.validation, ctx.device.generation.prompt_tokens)
        options = int8_options(config, ctx.device)
        int8 = quantize_dynamic_int8(source, ctx.work_dir / f"{role}.{INT8}.onnx", options)
        judged = judge_int8(source, int8, windows, prompt, ctx.device, config)
        ctx.log.info("%s: %s", role, judged.decision.reason)
        kept = judged.kept
        ref = {"fp32": model.onnx, INT8: ctx.ref(int8.name)}
        metrics[role] = judged.record(ref) | {
            "int8_settings": options.settings.to_json(), "windows": len(windows), "prompt_tokens": len(prompt)}
        artifact = artifact.with_model(model.updated(
            onnx=ref[kept.name], precision=kept.name, quantization_reason=judged.decision.reason,
            size_mb=kept.size_mb, quantization_speedup=kept.speedup.ratio if kept.speedup else None,
            quantization_loss_change=judged.quality[kept.name]["val_loss"] - judged.quality["fp32"]["val_loss"],
            **(shipped_files(model, int8, windows[0], ctx) if kept.name != "fp32" else {})))
    return StageOutput(artifact=artifact, metrics=quantize_record(metrics).to_json())


@dataclass(frozen=True)
class JudgedInt8:
    """Both graphs of one model measured in one run (quality, interleaved generation timing) and the decision."""

    variants: list[Variant]
    quality: dict[str, dict[str, float]]
    timing: dict[str, list[Generation]]
    decision: Decision

    @property
    def kept(self) -> Variant:
        """The variant the decision keeps."""
        return next(v for v in self.variants if v.name == self.decision.kept)

    def record(self, ref: dict[str, str]) -> dict[str, Any]:
        """The stage's figures (:func:`lm_record`), each graph named by ``ref[variant]``."""
        return lm_record(self.variants, self.quality, self.timing, self.decision, ref)


def judge_int8(fp32: Path, int8: Path, windows: np.ndarray, prompt: list[int], device: DeviceProfile,
               config: QuantizeStage) -> JudgedInt8:
    """Measure the FP32 and INT8 KV-cache graphs on ``windows`` and by greedy generation after ``prompt`` on
    ``device``'s threads, and decide which to keep by ``config``'s rules (see the module docstring)."""
    threads = resolve_threads(device)
    models = {"fp32": fp32, INT8: int8}
    quality = compare_quality(fp32, int8, windows, threads)
    timing = time_generation(models, prompt, device, config.rounds, threads)
    variants = lm_variants(models, quality, timing)
    decision = decide(variants, eligible=partial(loss_within, fp32=variants[0], tolerance=config.loss_tolerance),
                      min_speedup=config.min_speedup, size_budget_mb=device.budget.size_mb,
                      cpu_label=isa_label(detect_cpu().isa), tolerance=config.loss_tolerance)
    return JudgedInt8(variants, quality, timing, decision)


def shipped_files(exported: ModelArtifact, int8: Path, ids: np.ndarray, ctx: StageContext) -> dict[str, Any]:
    """The kept INT8 graph's ``deploy_files``: converted to ``.ort`` (checked on a prompt and a cached call over
    ``ids``) when the export target shipped ``.ort``, else none (the bundle then ships the ONNX file)."""
    if "ort" not in (exported.deploy_files or {}):
        return {"deploy_files": None}
    export = next(r for r in reversed(ctx.previous) if r["stage"] == "export")
    target = recorded_target(export)
    converted = convert_cached_to_ort(int8, target, ids)
    return {"deploy_files": converted.deploy_files(ctx.ref, int8.name if target.keep_onnx else None)}


def validation_windows(ids: np.ndarray, context: int, count: int) -> np.ndarray:
    """Up to ``count`` non-overlapping ``context + 1``-token windows of ``ids``, spread evenly over it
    (each: ``context`` inputs and their next tokens)."""
    starts = np.arange(0, ids.size - context, context)
    if starts.size == 0:
        raise DataError(f"the validation text has {ids.size} tokens, fewer than one window of data.context "
                         f"{context} + 1; give more text or lower data.context")
    chosen = starts[np.unique(np.linspace(0, starts.size - 1, min(count, starts.size)).round().astype(int))]
    return np.stack([ids[start:start + context + 1] for start in chosen]).astype(np.int64)


def window_logits(model: Path, windows: np.ndarray, threads: int) -> np.ndarray:
    """The model's logits ``[windows, context, vocab]``: one call per window with an empty cache."""
    try:
        generator = CachedGenerator(model, threads=threads)
        return np.stack([generator.step(row[None, :-1], generator.empty_cache(1))[0][0] for row in windows])
    except Exception as exc:
        raise ModelError(f"{model}: onnxruntime failed on the validation windows: {one_line(exc)}") from exc


def compare_quality(fp32: Path, int8: Path, windows: np.ndarray, threads: int) -> dict[str, dict[str, float]]:
    """Per graph (``fp32``, ``int8-dynamic``): validation loss, perplexity and next-token accuracy on ``windows``;
    for INT8 also its top-1 agreement with FP32 and the largest logit difference."""
    targets = windows[:, 1:]
    reference = window_logits(fp32, windows, threads)
    figures = {}
    for name, path in (("fp32", fp32), (INT8, int8)):
        logits = reference if name == "fp32" else window_logits(path, windows, threads)
        loss = next_token_loss(logits, targets)
        figures[name] = {"val_loss": loss, "perplexity": math.exp(loss) if math.isfinite(loss) else math.inf,
                         "next_token_accuracy": float((logits.argmax(-1) == targets).mean()),
                         "next_token_agreement": float((logits.argmax(-1) == reference.argmax(-1)).mean()),
                         "max_abs_logit_diff": float(np.abs(logits - reference).max())}
    return figures


def next_token_loss(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy (nats) of ``logits`` ``[..., vocab]`` against the ``targets`` ids; NaN when not finite."""
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    top = flat.max(-1, keepdims=True)
    log_z = np.log(np.exp(flat - top).sum(-1)) + top[:, 0]
    loss = float(np.mean(log_z - flat[np.arange(len(flat)), targets.reshape(-1)]))
    return loss if math.isfinite(loss) else math.nan


def time_generation(models: dict[str, Path], prompt: list[int], device: DeviceProfile, rounds: int,
                    threads: int) -> dict[str, list[Generation]]:
    """Greedy generations of the device's length by every model, interleaved over ``rounds`` after a warm-up each."""
    new_tokens = device.generation.new_tokens
    try:
        generators = {name: CachedGenerator(path, threads=threads) for name, path in models.items()}
        runs = interleaved_generations(generators, prompt, new_tokens, warmup=1, runs=rounds)
    except Exception as exc:
        raise ModelError(f"generating with {', '.join(map(str, models.values()))} failed: {one_line(exc)}") from exc
    return runs


def lm_variants(models: dict[str, Path], quality: dict[str, dict[str, float]],
                timing: dict[str, list[Generation]]) -> list[Variant]:
    """The graphs as timed :class:`Variant` s the decision reads: validation loss, per-token p50, size, speed-up."""
    variants = []
    for name, path in models.items():
        variant = Variant(name=name, precision=name.split("-")[0], path=path, val_metrics=quality[name],
                          val_agreement=quality[name]["next_token_agreement"], metrics=None, agreement=None,
                          metric=METRIC)
        variants.append(variant.timed(generation_figures(timing[name])["per_token_p50_ms"],
                                      path.stat().st_size / 2**20,
                                      paired_ratio(round_medians(timing["fp32"]), round_medians(timing[name]))))
    return variants


def round_medians(runs: list[Generation]) -> list[float]:
    """Each timed generation's median per-token latency (ms; the prompt call excluded), one per round, for
    :func:`~edgekd.profile.bench.paired_ratio`."""
    return [float(np.median(run.seconds[1:])) * 1e3 for run in runs]


def loss_within(variant: Variant, fp32: Variant, tolerance: float) -> bool:
    """Whether ``variant``'s validation loss is at most ``tolerance`` (nats per token) above FP32's (NaN: no)."""
    return worse_by(METRIC, fp32.val_score, variant.val_score) <= tolerance + 1e-12


def lm_record(variants: list[Variant], quality: dict[str, dict[str, float]], timing: dict[str, list[Generation]],
              decision: Decision, ref: dict[str, str]) -> dict[str, Any]:
    """The stage's figures of one model: each graph's quality, generation timing, size and speed-up, the decision."""
    fp32_tokens = timing["fp32"][0].tokens
    record: dict[str, Any] = {"variants": {}, "decision": decision.kept, "reason": decision.reason}
    for variant in variants:
        tokens = timing[variant.name][0].tokens
        record["variants"][variant.name] = {
            "precision": variant.precision, "path": ref[variant.name], "size_mb": variant.size_mb,
            **quality[variant.name], **generation_figures(timing[variant.name]),
            "greedy_tokens_as_fp32": float(np.mean(np.equal(tokens, fp32_tokens))),
            "speedup": variant.speedup.to_json() if variant.speedup else None,
            **({"speedup_range": per_token_speedup(timing["fp32"], timing[variant.name])}
               if variant.name != "fp32" else {})}
    record["loss_change"] = quality[INT8]["val_loss"] - quality["fp32"]["val_loss"]
    return record
