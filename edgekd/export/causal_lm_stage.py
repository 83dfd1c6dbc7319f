"""The ``export`` stage of a causal language model: ONNX with a KV cache, checked step by step.

Each model with weights is exported in Optimum's text-generation-with-past layout
(:mod:`edgekd.export.causal_lm_onnx`). The parity check feeds real validation text: a batch of
prefixes with an empty cache, then several single-token steps each reusing the cache the previous
call returned, and compares every call's logits with PyTorch's logits for the whole sequence at
those positions, so a wrong position or cache slot cannot pass; then a prompt of the device's
``generation.prompt_tokens`` (the prompt the profile stage and the app start from, within the context and the text)
and one cached step after it, so a graph that fixed the prompt length while it was traced is refused here in one
line naming both lengths, not by onnxruntime at profile. The graph is optimized at the export
target's level and written (like every export, :func:`~edgekd.export.onnx_export.write_checked`) only
once it passes. With an ``ort`` target it is also converted to ``.ort`` and checked on a prompt call
and a cached call.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.lm_data import prepare_lm_data
from edgekd.errors import ExportError, first_line, is_out_of_memory
from edgekd.export import hf_exporter
from edgekd.export.backends import Exporter, Trace, exporters_for, graph_opset, write_first
from edgekd.export.causal_lm_onnx import causal_lm_onnx, context_metadata
from edgekd.export.config import ExportStage, ExportTarget, load_export_target
from edgekd.export.guard import describe, export_failures
from edgekd.export.ort_format import OrtModel, convert_to_ort
from edgekd.export.parity import OutputDiffs, ParityResult
from edgekd.export.record import export_record
from edgekd.models.causal_lm import CausalLM, context_length
from edgekd.profile.generate import CachedGenerator

#: Parity check: validation sequences, their prefix length and the cached steps after it (fewer for a
#: model with a shorter context or a shorter validation text).
PARITY_ROWS, PARITY_PREFIX, PARITY_STEPS = 4, 12, 6


def run_causal_lm_export(config: ExportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Export every model that has weights with its KV cache, and check it against PyTorch."""
    target = load_export_target(config.target)
    exported: dict[str, dict[str, Any]] = {}
    for role, model_artifact in artifact.models.items():
        if model_artifact.weights is None:
            continue
        model = CausalLM.load(ctx.resolve(model_artifact.weights))
        data = prepare_lm_data(ctx.recipe.data, None, tokenizer=model.tokenizer)
        rows, prefix = parity_rows(data.validation, context_length(model.module))
        prompt = prompt_row(data.validation, context_length(model.module), ctx.device.generation.prompt_tokens)
        path = ctx.path(f"{role}.onnx")
        cached = export_cached(model.module, rows, prefix, path, target, prompt=prompt)
        size_mb, parity = cached.size_mb, cached.parity
        exported[role] = {"path": ctx.ref(f"{role}.onnx"), "size_mb": size_mb, "opset": cached.opset,
                          "parity": parity.to_json(), "kv_cache": True, "exporter": cached.exporter,
                          "optimization_level": target.optimization_level,
                          "checked_prompts": sorted({prefix, *([prompt[1]] if prompt is not None else [])})}
        ort_figures = {}
        if target.format == "ort":
            converted = convert_cached_to_ort(path, target, rows[0, :prefix + 1].numpy())
            exported[role]["ort"] = converted.to_json()
            ort_figures["deploy_files"] = converted.deploy_files(ctx.ref, f"{role}.onnx" if target.keep_onnx else None)
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ctx.ref(f"{role}.onnx"), size_mb=size_mb, parity_max_abs_diff=parity.max_abs_diff,
            opset=cached.opset, **ort_figures))
    return StageOutput(artifact=artifact, metrics=export_record(target, exported).to_json())


@dataclass(frozen=True)
class CachedExport:
    """A KV-cache graph written by :func:`export_cached`: its size (MiB), parity, opset and the exporter that made
    it (:mod:`edgekd.export.backends`)."""

    size_mb: float
    parity: ParityResult
    opset: int
    exporter: Exporter


def export_cached(model: torch.nn.Module, rows: torch.Tensor, prefix: int, path: Path,
                  target: ExportTarget, *, prompt: tuple[torch.Tensor, int] | None = None) -> CachedExport:
    """Write ``model`` to ``path`` as a KV-cache graph optimized for ``target``, only once it matches PyTorch on
    ``rows`` (:func:`cached_parity`: ``prefix`` tokens, then one cached step per call) and, given ``prompt`` (a
    row and its prompt length, :func:`prompt_row`), on that row's prompt and the cached step after it, traced by
    the first exporter that gets there (:func:`edgekd.export.backends.write_first`). Any failure is one
    :class:`ExportError` line (:mod:`edgekd.export.guard`)."""
    traces: dict[Exporter, Trace] = {"torchscript": lambda: causal_lm_onnx(model, target.opset),
                                     "transformers": lambda: hf_exporter.causal_lm_onnx(model, target.opset)}

    def parity(tmp: Path) -> ParityResult:
        generator = CachedGenerator(tmp)
        try:
            result = cached_parity(model, generator, rows, prefix, target)
        except Exception as exc:  # onnxruntime cannot run the graph: this exporter's failure, the next one may pass
            if is_out_of_memory(exc):
                raise
            raise ExportError(f"{path}: onnxruntime failed over a {prefix}-token prefix and cached steps: "
                              f"{type(exc).__name__}: {first_line(exc)}") from exc
        if result.passed and prompt is not None and prompt[1] != prefix:
            _check_prompt(model, generator, *prompt, prefix, target, path)
        return result

    with export_failures(model, path):
        graph, size_mb, parity_result, exporter = write_first(
            path, target, {name: traces[name] for name in exporters_for(model)}, parity,
            metadata=context_metadata(model), what=f" over a prefix and {rows.shape[1] - prefix} cached steps")
    return CachedExport(size_mb, parity_result, graph_opset(graph), exporter)


def prompt_row(validation: torch.Tensor, context: int, prompt_tokens: int) -> tuple[torch.Tensor, int] | None:
    """One row of validation text: a prompt of the device's ``prompt_tokens`` (fewer when the model's ``context``
    or the text is shorter) and one token to take as a cached step after it; with its prompt length (None when
    the text has fewer than 2 tokens)."""
    length = min(prompt_tokens, context - 1, validation.numel() - 1)
    return (validation[None, :length + 1], length) if length >= 1 else None


def _check_prompt(model: torch.nn.Module, generator: CachedGenerator, row: torch.Tensor, length: int, prefix: int,
                  target: ExportTarget, path: Path) -> None:
    """Refuse in one line a graph that fails, or disagrees with PyTorch, on a ``length``-token prompt and the cached
    step after it (it passed on a ``prefix``-token one)."""
    where = (f"{describe(model)}'s KV-cache graph, checked on a {prefix}-token prompt, {{}} on the device's "
             f"{length}-token prompt (generation.prompt_tokens, which the profile stage feeds)")
    fix = ("its graph fixed the prompt length while it was traced; choose another model or a device whose "
           f"generation.prompt_tokens is {prefix}")
    try:
        result = cached_parity(model, generator, row, length, target)
    except Exception as exc:  # onnxruntime cannot run the graph at this length
        if is_out_of_memory(exc):
            raise
        raise ExportError(f"{path}: {where.format('does not run')}: {type(exc).__name__}: {first_line(exc)}; "
                          f"{fix}") from None
    if not result.passed:
        raise ExportError(f"{path}: {where.format('disagrees with PyTorch')}: max |torch - onnxruntime| = "
                          f"{result.max_abs_diff:.3g} exceeds {result.tolerance_text()}; {fix}")


def export_with_cache(model: torch.nn.Module, rows: torch.Tensor, prefix: int, path: Path,
                      target: ExportTarget) -> tuple[float, ParityResult]:
    """:func:`export_cached`'s size (MiB) and parity."""
    exported = export_cached(model, rows, prefix, path, target)
    return exported.size_mb, exported.parity


def convert_cached_to_ort(path: Path, target: ExportTarget, ids: np.ndarray, out_dir: Path | None = None) -> OrtModel:
    """``path`` (a KV-cache graph) converted to ``.ort`` and checked on a prompt call (``ids`` but the last)
    and a cached call (the last id after that prompt's cache)."""
    generator = CachedGenerator(path)
    prompt = ids[None, :-1].astype(np.int64)
    _, cache = generator.step(prompt, generator.empty_cache(1))
    feeds = [generator.feed(prompt, generator.empty_cache(1)), generator.feed(ids[None, -1:].astype(np.int64), cache)]
    return convert_to_ort(path, target, feeds, out_dir=out_dir)


def parity_rows(ids: torch.Tensor, context: int) -> tuple[torch.Tensor, int]:
    """``PARITY_ROWS`` sequences of validation text spread over it, and their prefix length: a prefix plus
    cached steps within the model's ``context`` and the text."""
    length = min(PARITY_PREFIX + PARITY_STEPS, context, ids.numel())
    if length < 2:
        raise ExportError(f"the validation text has {ids.numel()} tokens; the parity check needs at least 2")
    prefix = min(PARITY_PREFIX, length // 2)
    starts = np.linspace(0, ids.numel() - length, PARITY_ROWS).astype(int)
    return torch.stack([ids[start:start + length] for start in starts]), prefix


@torch.no_grad()
def cached_parity(model: torch.nn.Module, generator: CachedGenerator, rows: torch.Tensor, prefix: int,
                  target: ExportTarget) -> ParityResult:
    """PyTorch's logits for ``rows`` against the ONNX model's: ``prefix`` tokens in one call, then one per call."""
    reference = model.eval()(input_ids=rows).logits.float().numpy()
    diffs = OutputDiffs()
    logits, cache = generator.step(rows[:, :prefix].numpy(), generator.empty_cache(len(rows)))
    diffs.add(0, reference[:, :prefix], logits)
    for position in range(prefix, rows.shape[1]):
        logits, cache = generator.step(rows[:, position:position + 1].numpy(), cache)
        diffs.add(0, reference[:, position:position + 1], logits)
    return diffs.result(len(rows), target.parity_atol, target.parity_rtol)
