"""The ``profile`` stage of causal language models: generation timed on the device's prompt and length.

Every exported model generates ``device.generation.new_tokens`` tokens greedily after the same
``prompt_tokens``-long prompt from the validation text, over onnxruntime with its KV cache
(:class:`~edgekd.profile.generate.CachedGenerator`). After the stage's ``warmup`` untimed generations,
each model generates ``runs`` times, interleaved (one generation each per round), so their figures
compare models timed side
by side on a noisy machine. Figures per model: time to first token (the prompt call), per-token
p50/p90 latency over every later call, tokens per second, the resident memory its session and
generation adds to a fresh process, and the file size. On a device with a ``reference`` figure, times are scaled by
the measured host→device speed ratio (estimates). The judged model (the student) is checked against
the budget with ``budget.ms_per_token`` (else ``p90_ms``) as its per-token p90 limit, and its
per-token speed-up over each other model is the ratio of their median per-token latencies, per round.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.config.device import DeviceProfile
from edgekd.data.lm_data import device_prompt, prepare_lm_data
from edgekd.errors import ConfigError
from edgekd.models.causal_lm import load_tokenizer
from edgekd.profile.budget import judge_generation, judged_role
from edgekd.profile.config import ProfileStage
from edgekd.profile.cpu import detect_cpu, resolve_threads
from edgekd.profile.generate import (
    CachedGenerator,
    Generation,
    PerTokenSpeedup,
    generation_figures,
    generation_memory_mb,
    interleaved_generations,
)
from edgekd.profile.record import profile_record
from edgekd.profile.speed_ratio import speed_ratio


def run_causal_lm_profile(config: ProfileStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Time generation for every exported model; judge the student's per-token latency, size and memory."""
    profiled = [role for role, m in artifact.models.items() if m.onnx is not None]
    judged = judged_role(profiled)
    shape = ctx.device.generation
    model_dir = ctx.resolve(artifact.get(judged).weights)
    tokenizer = load_tokenizer(model_dir)
    prompt = device_prompt(prepare_lm_data(ctx.recipe.data, None, tokenizer=tokenizer).validation,
                           shape.prompt_tokens)
    threads = resolve_threads(ctx.device)
    generators, memory = {}, {}
    for role in profiled:
        path = ctx.resolve(artifact.get(role).onnx)
        _check_fits(path, role, shape.prompt_tokens + shape.new_tokens)
        generators[role] = CachedGenerator(path, threads=threads)
        memory[role] = generation_memory_mb(path, len(prompt), shape.new_tokens, threads)
    runs = interleaved_generations(generators, prompt, shape.new_tokens, warmup=max(config.warmup, 1),
                                   runs=config.runs)
    factor, estimate = device_factor(ctx.device)
    metrics: dict[str, Any] = {"generation": shape.model_dump(), "runs": config.runs, "threads": threads,
                               "cpu": detect_cpu().to_json()}
    for role in profiled:
        path = ctx.resolve(artifact.get(role).onnx)
        figures = generation_figures(runs[role], factor) | {
            "peak_memory_mb": memory[role], "size_mb": path.stat().st_size / 2**20, "estimate": estimate}
        metrics[role] = figures
        if role == judged:
            verdict = judge_generation(figures, ctx.device).model_copy(update={"judged": role})
            metrics["budget"] = verdict.to_json()
            figures = figures | {"budget_verdict": verdict.verdict}
            metrics[role]["speedup"] = {other: per_token_speedup(runs[other], runs[role])
                                        for other in profiled if other != role}
        artifact = artifact.with_model(artifact.get(role).updated(**figures))
    return StageOutput(artifact=artifact, metrics=profile_record(metrics).to_json())


def _check_fits(path: Path, role: str, positions: int) -> None:
    """Refuse a device prompt plus new tokens longer than the model's context (one line)."""
    import onnx

    from edgekd.export.causal_lm_onnx import CONTEXT_KEY

    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    context = int(meta.get(CONTEXT_KEY, positions))
    if positions > context:
        raise ConfigError(f"device generation: prompt_tokens + new_tokens = {positions} exceeds the {role}'s "
                          f"context of {context} tokens; shorten generation.prompt_tokens or new_tokens")


def device_factor(device: DeviceProfile) -> tuple[float, bool]:
    """The host→device time factor (1 on a measured device) and whether times are estimates."""
    if device.reference is None:
        return 1.0, False
    return speed_ratio(device.reference).ratio, True


def per_token_speedup(before: list[Generation], after: list[Generation]) -> dict[str, float]:
    """How many times faster per token ``after`` is than ``before``: median and range over the runs of the
    ratio of their median per-token latencies (medians: one stalled step does not decide a round)."""
    ratios = np.array([np.median(b.seconds[1:]) / np.median(a.seconds[1:])
                       for b, a in zip(before, after, strict=True)])
    return PerTokenSpeedup(ratio=float(np.median(ratios)), low=float(ratios.min()), high=float(ratios.max()),
                           runs=int(ratios.size)).to_json()
