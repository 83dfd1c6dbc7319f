"""The latency table of a causal-LM search: each candidate decoder timed per generated token.

A candidate is built with random weights (latency does not depend on them) for the corpus's vocabulary
and context, exported with its KV cache as the export stage does (the search's export target, its
optimization level, parity checked on a prefix and cached steps) and, for ``int8``, quantized as the
causal-LM quantize stage does (dynamic INT8 with the device ISA's settings). The candidates then generate
the device's ``generation.new_tokens`` after a ``prompt_tokens``-long prompt on onnxruntime with the
device's threads, interleaved (one generation each per round, after ``table.warmup`` untimed ones; ``table.runs``
rounds), as the profile stage times a causal LM. An entry's ``p50_ms``/``p90_ms`` are per generated token
(the prompt call excluded), scaled by the device's speed ratio on a ``reference`` device; its size is the
file's and its peak memory what a fresh process adds by generating with it. ``macs`` are the multiply-
accumulates of one token through the matmuls (every linear layer and the output layer; embedding lookups
and attention over the cache excluded); ``params`` the model's parameters.

The table is cached like the classifier's (:mod:`edgekd.search.table`) under a key that holds the
vocabulary and context, the device profile but its budget (so the generation shape and threads), this
CPU, the versions, the export target, the INT8 settings and the timing settings.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.config.device import DeviceProfile
from edgekd.export.causal_lm_stage import export_with_cache, parity_rows
from edgekd.export.config import load_export_target
from edgekd.models.causal_lm import causal_lm_from_spec
from edgekd.profile.causal_lm_stage import device_factor
from edgekd.profile.cpu import resolve_threads
from edgekd.profile.generate import CachedGenerator, generation_figures, generation_memory_mb, interleaved_generations
from edgekd.quantize.model import int8_options
from edgekd.quantize.quantizers import quantize_dynamic_int8
from edgekd.search.config import SearchStage
from edgekd.search.record import Entry
from edgekd.search.space import Candidate
from edgekd.search.table import TIME_FORMAT, LatencyTable, cached_table, table_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LMFamily:
    """What every candidate of a causal-LM search shares: the tokenizer (its vocabulary) and the context."""

    tokenizer: Any
    context: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (the ``arch`` names the table's cache file)."""
        return {"arch": "causal-lm", "vocab_size": len(self.tokenizer), "context": self.context}


def lm_latency_table(grid: list[Candidate], family: LMFamily, device: DeviceProfile, stage: SearchStage, *,
                     fresh: bool = False) -> LatencyTable:
    """The per-token table of ``grid``: cached entries, the missing ones measured now (and cached); ``fresh``:
    all measured now."""
    return cached_table(grid, table_key(family, device, stage), device,  # type: ignore[arg-type]
                        lambda missing: _measure(missing, family, device, stage), fresh=fresh)


def random_decoder(spec: Any, family: LMFamily) -> nn.Module:
    """The structure's decoder with random weights (seeded) for the family's vocabulary and context."""
    torch.manual_seed(0)
    return causal_lm_from_spec(spec, family.tokenizer, family.context, "search candidate").eval()


def matmul_macs(model: nn.Module) -> int:
    """Multiply-accumulates of one token through ``model``'s linear layers (the output layer included)."""
    from transformers.pytorch_utils import Conv1D

    return sum(module.weight.numel() for module in model.modules() if isinstance(module, nn.Linear | Conv1D))


def _measure(missing: list[Candidate], family: LMFamily, device: DeviceProfile,
             stage: SearchStage) -> dict[str, Entry]:
    """Build, export and time ``missing`` per token (interleaved, so a slow spell falls on all alike)."""
    target = load_export_target(stage.target)
    by_structure: dict[str, list[Candidate]] = {}
    for candidate in missing:
        by_structure.setdefault(candidate.structure.key, []).append(candidate)
    ids = torch.randint(len(family.tokenizer), (4 * family.context,), generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="edgekd-lm-latency-table-") as tmp:
        files: dict[str, Path] = {}
        counts: dict[str, tuple[int, int]] = {}
        for index, group in enumerate(by_structure.values(), start=1):
            structure = group[0].structure
            log.info("latency table: exporting %d/%d: %s", index, len(by_structure), structure.label)
            model = random_decoder(structure.model_spec(), family)
            rows, prefix = parity_rows(ids, family.context)
            fp32 = Path(tmp) / f"{structure.key}.fp32.onnx"
            export_with_cache(model, rows, prefix, fp32, target)
            counts[structure.key] = (matmul_macs(model), sum(p.numel() for p in model.parameters()))
            for candidate in group:
                files[candidate.key] = fp32 if candidate.precision == "fp32" else quantize_dynamic_int8(
                    fp32, Path(tmp) / f"{structure.key}.int8.onnx", int8_options(stage.quantize, device))
        prompt = [i % len(family.tokenizer) for i in range(device.generation.prompt_tokens)]
        timed = time_decoders(files, device, prompt, warmup=stage.table.warmup, runs=stage.table.runs)
    now = time.strftime(TIME_FORMAT)
    entries = {}
    for c in missing:
        figures = timed[c.key]
        macs, params = counts[c.structure.key]
        entries[c.key] = Entry(key=c.key, label=c.label, precision=c.precision, p50_ms=figures["per_token_p50_ms"],
                               p90_ms=figures["per_token_p90_ms"], size_mb=figures["size_mb"],
                               peak_memory_mb=figures["peak_memory_mb"], host_p90_ms=figures["host_per_token_p90_ms"],
                               estimate=figures["estimate"], macs=macs, params=params, measured_at=now)
    return entries


def time_decoders(files: dict[str, Path], device: DeviceProfile, prompt: list[int], *, warmup: int,
                  runs: int) -> dict[str, dict[str, Any]]:
    """Generation figures of KV-cache ONNX decoders by name, timed side by side on the device's generation shape.

    Each generates ``device.generation.new_tokens`` after ``prompt`` with the device's threads: ``warmup``
    (at least 1) untimed generations, then ``runs`` interleaved rounds. Figures: those of
    :func:`~edgekd.profile.generate.generation_figures` (scaled to the device on a ``reference`` device), the
    host's own per-token p90, the file's size, the memory a fresh process adds by generating, ``estimate``.
    """
    shape, threads = device.generation, resolve_threads(device)
    generators = {name: CachedGenerator(path, threads=threads) for name, path in files.items()}
    timed = interleaved_generations(generators, prompt, shape.new_tokens, warmup=max(warmup, 1), runs=runs)
    factor, estimate = device_factor(device)
    return {name: generation_figures(timed[name], factor) | {
        "host_per_token_p90_ms": generation_figures(timed[name])["per_token_p90_ms"],
        "size_mb": path.stat().st_size / 2**20, "estimate": estimate,
        "peak_memory_mb": generation_memory_mb(path, len(prompt), shape.new_tokens, threads)}
        for name, path in files.items()}
