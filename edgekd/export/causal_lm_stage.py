"""The ``export`` stage of a causal language model: ONNX with a KV cache, checked step by step.

Each model with weights is exported in Optimum's text-generation-with-past layout
(:mod:`edgekd.export.causal_lm_onnx`). The parity check feeds real validation text: a batch of
prefixes with an empty cache, then several single-token steps each reusing the cache the previous
call returned, and compares every call's logits with PyTorch's logits for the whole sequence at
those positions, so a wrong position or cache slot cannot pass. With an ``ort`` target the graph is
also converted to ``.ort`` and checked on a prompt call and a cached call.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from edgekd.artifacts import Artifact, StageContext, StageOutput
from edgekd.data.lm_data import prepare_lm_data
from edgekd.errors import ExportError
from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.export.config import ExportStage, ExportTarget, load_export_target
from edgekd.export.ort_format import OrtModel, convert_to_ort
from edgekd.export.parity import OutputDiffs, ParityResult
from edgekd.models.causal_lm import CausalLM
from edgekd.profile.generate import CachedGenerator

#: Parity check: validation sequences, their prefix length and the cached steps after it.
PARITY_ROWS, PARITY_PREFIX, PARITY_STEPS = 4, 12, 6


def run_causal_lm_export(config: ExportStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Export every model that has weights with its KV cache, and check it against PyTorch."""
    target = load_export_target(config.target)
    metrics = {"target": target.model_dump(mode="json")}
    for role, model_artifact in artifact.models.items():
        if model_artifact.weights is None:
            continue
        model = CausalLM.load(ctx.resolve(model_artifact.weights))
        data = prepare_lm_data(ctx.recipe.data, None, tokenizer=model.tokenizer)
        path = export_causal_lm(model.module, ctx.path(f"{role}.onnx"), opset=target.opset)
        rows = _parity_rows(data.validation)
        parity = cached_parity(model.module, CachedGenerator(path), rows, target)
        if not parity.passed:
            path.unlink()
            raise ExportError(f"{ctx.ref(f'{role}.onnx')}: parity check failed: max |torch - onnx| = "
                              f"{parity.max_abs_diff:.3g} exceeds {parity.tolerance_text()} over a prefix and "
                              f"{PARITY_STEPS} cached steps (export target '{target.name}')")
        metrics[role] = {"path": ctx.ref(f"{role}.onnx"), "size_mb": path.stat().st_size / 2**20, "opset": target.opset,
                         "parity": parity.to_json(), "kv_cache": True}
        ort_figures = {}
        if target.format == "ort":
            converted = convert_cached_to_ort(path, target, rows[0, :PARITY_PREFIX + 1].numpy())
            metrics[role]["ort"] = converted.to_json()
            ort_figures["deploy_files"] = converted.deploy_files(ctx.ref, f"{role}.onnx" if target.keep_onnx else None)
        artifact = artifact.with_model(model_artifact.updated(
            onnx=ctx.ref(f"{role}.onnx"), size_mb=metrics[role]["size_mb"], parity_max_abs_diff=parity.max_abs_diff,
            opset=target.opset, **ort_figures))
    return StageOutput(artifact=artifact, metrics=metrics)


def convert_cached_to_ort(path: Path, target: ExportTarget, ids: np.ndarray, out_dir: Path | None = None) -> OrtModel:
    """``path`` (a KV-cache graph) converted to ``.ort`` and checked on a prompt call (``ids`` but the last)
    and a cached call (the last id after that prompt's cache)."""
    generator = CachedGenerator(path)
    prompt = ids[None, :-1].astype(np.int64)
    _, cache = generator.step(prompt, generator.empty_cache(1))
    feeds = [generator.feed(prompt, generator.empty_cache(1)), generator.feed(ids[None, -1:].astype(np.int64), cache)]
    return convert_to_ort(path, target, feeds, out_dir=out_dir)


def _parity_rows(ids: torch.Tensor) -> torch.Tensor:
    """``PARITY_ROWS`` sequences of validation text, spread over it, each prefix + steps long."""
    length = PARITY_PREFIX + PARITY_STEPS
    if ids.numel() < length:
        raise ExportError(f"the validation text has {ids.numel()} tokens; the parity check needs {length}")
    starts = np.linspace(0, ids.numel() - length, PARITY_ROWS).astype(int)
    return torch.stack([ids[start:start + length] for start in starts])


@torch.no_grad()
def cached_parity(model: torch.nn.Module, generator: CachedGenerator, rows: torch.Tensor,
                  target: ExportTarget) -> ParityResult:
    """PyTorch's logits for ``rows`` against the ONNX model's: the prefix in one call, then one token per call."""
    reference = model.eval()(input_ids=rows).logits.float().numpy()
    diffs = OutputDiffs()
    logits, cache = generator.step(rows[:, :PARITY_PREFIX].numpy(), generator.empty_cache(len(rows)))
    diffs.add(0, reference[:, :PARITY_PREFIX], logits)
    for position in range(PARITY_PREFIX, rows.shape[1]):
        logits, cache = generator.step(rows[:, position:position + 1].numpy(), cache)
        diffs.add(0, reference[:, position:position + 1], logits)
    return diffs.result(len(rows), target.parity_atol, target.parity_rtol)
