"""Quantizing one ONNX model end to end: build the candidates, gate them, time them, decide."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.errors import ExportError
from edgekd.profile.bench import benchmark, paired_speedup
from edgekd.profile.cpu import detect_cpu, device_isa, host_threads, resolve_threads
from edgekd.quantize.config import QuantizeSettings, QuantizeStage
from edgekd.quantize.decision import Decision, decide
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.graph import PreparedGraphs
from edgekd.quantize.isa import int8_settings, isa_label
from edgekd.quantize.quality import agreement_text
from edgekd.quantize.quantizers import Int8Options
from edgekd.quantize.variants import Variant, VariantBuilder, within_gates


@dataclass(frozen=True)
class QuantizeResult:
    """Every candidate of one model with its figures, and the decision taken on them."""

    graphs: PreparedGraphs
    variants: tuple[Variant, ...]
    decision: Decision
    options: Int8Options
    calibration_examples: int

    @property
    def kept(self) -> Variant:
        """The candidate the decision keeps."""
        return next(v for v in self.variants if v.name == self.decision.kept)

    @property
    def fp32(self) -> Variant:
        """The FP32 model as exported."""
        return next(v for v in self.variants if v.name == "fp32")

    @property
    def static_int8(self) -> bool:
        """Whether a static INT8 candidate was calibrated."""
        return any(v.name.startswith("int8-static") for v in self.variants)

    def to_json(self, ref: Callable[[Path], str | None] = str) -> dict[str, Any]:
        """Variants by name (file paths through ``ref``; None: not kept), the decision, INT8 settings, fusions and
        how many examples calibrated static INT8 (None when no static candidate was made)."""
        return {
            "variants": {v.name: {**v.to_json(), "path": ref(v.path)} for v in self.variants},
            "decision": self.decision.kept,
            "reason": self.decision.reason,
            "int8_settings": self.options.settings.to_json(),
            "transformer": self.graphs.transformer,
            "fusions": self.graphs.fusions,
            "calibration_examples": self.calibration_examples if self.static_int8 else None,
        }


def int8_options(config: QuantizeSettings, device: DeviceProfile) -> Int8Options:
    """The INT8 options for ``device``'s instruction set and the recipe's choices."""
    return Int8Options(settings=int8_settings(device_isa(device)), per_channel=config.per_channel,
                       symmetric_activations=config.symmetric_activations,
                       symmetric_weights=config.symmetric_weights)


def builder_for(config: QuantizeStage, device: DeviceProfile, data: QuantData) -> VariantBuilder:
    """A variant builder evaluating with the device's thread count and quantizing for its ISA."""
    return VariantBuilder(config, int8_options(config, device), data, host_threads(resolve_threads(device)))


def gate_failure(variants: Sequence[Variant], config: QuantizeStage, *, label: str) -> str | None:
    """The message for the first variant below the agreement gate (after its retries), or None."""
    for variant in variants:
        # NaN (no validation inputs agree or none ran) fails; None (no labelled data: nothing gated) passes
        if variant.val_agreement is not None and not variant.val_agreement >= config.agreement:
            shortfall = agreement_text(variant.metric, variant.val_agreement, config.agreement)
            return (f"{label}: {variant.name} {shortfall} after excluding {len(variant.excluded_nodes)} node(s); "
                    "raise max_retries, lower agreement, or drop that mode from modes")
    return None


def build_checked(builder: VariantBuilder, source: Path, out_dir: Path, stem: str, *, precision: str,
                  label: str) -> tuple[PreparedGraphs, list[Variant]]:
    """The candidates of ``source``; one that misses the agreement gate raises :class:`ExportError`.

    ``label`` names the model in the error, which is raised before any timing.
    """
    graphs, variants = builder.build(source, out_dir, stem, precision=precision)
    failure = gate_failure(variants, builder.config, label=label)
    if failure is not None:
        raise ExportError(failure)
    return graphs, variants


def time_variants(variants: Sequence[Variant], device: DeviceProfile, config: QuantizeStage) -> list[Variant]:
    """Every candidate timed under ``device``, interleaved with the others in one run; speed-ups paired with fp32's."""
    results = benchmark([v.path for v in variants], device, warmup=config.warmup, runs=config.runs,
                        rounds=config.rounds)
    fp32 = next(r for v, r in zip(variants, results, strict=True) if v.name == "fp32")
    return [v.timed(r.p50_ms, r.size_mb, paired_speedup(fp32, r)) for v, r in zip(variants, results, strict=True)]


def decide_for(variants: Sequence[Variant], config: QuantizeStage, device: DeviceProfile) -> Decision:
    """The decision on timed ``variants`` under the recipe's gates and the device's size budget."""
    fp32 = next(v for v in variants if v.name == "fp32")
    return decide(variants, eligible=lambda v: within_gates(v, fp32.val_score, config),
                  min_speedup=config.min_speedup, size_budget_mb=device.budget.size_mb,
                  cpu_label=isa_label(detect_cpu().isa), tolerance=config.tolerance, agreement=config.agreement)


def quantize_model(source: Path, out_dir: Path, stem: str, data: QuantData, config: QuantizeStage,
                   device: DeviceProfile, *, label: str, strict: bool | None = None) -> QuantizeResult:
    """Build, gate, time and decide for one model (see :mod:`edgekd.quantize.variants` and ``decision``).

    ``strict``: a variant below the agreement gate after its retries stops with an :class:`ExportError`
    (a recipe should be changed); otherwise it is timed with the others and the decision says why it
    was not kept. By default strict only when ``config.modes`` names the variants (the recipe asked for
    them); with ``auto``, edgekd chose what to try, so a miss keeps another variant (FP32 at worst).
    """
    if strict is None:
        strict = "auto" not in config.modes
    builder = builder_for(config, device, data)
    if strict:
        graphs, variants = build_checked(builder, source, out_dir, stem, precision=device.precision, label=label)
    else:
        graphs, variants = builder.build(source, out_dir, stem, precision=device.precision)
    timed = time_variants(variants, device, config)
    return QuantizeResult(graphs=graphs, variants=tuple(timed), decision=decide_for(timed, config, device),
                          options=builder.options, calibration_examples=data.calibration_examples)
