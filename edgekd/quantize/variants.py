"""Building the candidate models of one FP32 ONNX model, each checked on the validation split.

Candidates: ``fp32`` (the exported file), ``fp32-optimized`` (the graph optimized for
quantization), ``int8-dynamic`` (plus ``int8-dynamic-fused`` for a transformer: quantized from the
fused graph), ``int8-static-<method>`` per calibration method, and ``fp16`` (FP16 weights).

Accuracy-aware: a quantized candidate whose validation accuracy drops more than ``tolerance``
below FP32, or that agrees with FP32 on fewer than ``agreement`` of the validation inputs, is
quantized again with the nodes that add the most error (:mod:`edgekd.quantize.sensitivity`)
left in FP32: 1, 2, 4, ... of them, for at most ``max_retries`` retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.profile.bench import Speedup
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.evaluate import predict, score
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.graph import PreparedGraphs, prepare_graphs
from edgekd.quantize.isa import expand_modes
from edgekd.quantize.quantizers import (
    WEIGHTED_OPS,
    Int8Options,
    fp16_weights,
    quantize_dynamic_int8,
    quantize_static_int8,
    weighted_nodes,
)
from edgekd.quantize.sensitivity import rank_nodes

log = logging.getLogger(__name__)

#: Calibration batches the sensitivity ranking runs (it needs the error's shape, not its exact size).
SENSITIVITY_BATCHES = 4


@dataclass(frozen=True)
class Variant:
    """One candidate model and what is known about it; ``p50_ms``/``size_mb`` are set once timed."""

    name: str
    precision: str
    path: Path
    val_accuracy: float | None
    val_agreement: float | None
    accuracy: float | None
    agreement: float | None
    """Accuracy and agreement with FP32 on the validation and test splits; None when there is no labelled data."""
    excluded_nodes: tuple[str, ...] = ()
    retries: int = 0
    p50_ms: float | None = None
    size_mb: float | None = None
    speedup: Speedup | None = None
    """How many times faster than FP32, paired over the interleaved timing rounds (set once timed)."""

    def timed(self, p50_ms: float, size_mb: float, speedup: Speedup) -> Variant:
        """A copy with its measured latency, size and speed-up over FP32."""
        return replace(self, p50_ms=p50_ms, size_mb=size_mb, speedup=speedup)

    def to_json(self) -> dict[str, Any]:
        """The figures the stage records per variant (``path`` as given: callers make it run-relative)."""
        return {"precision": self.precision, "path": str(self.path), "p50_ms": self.p50_ms, "size_mb": self.size_mb,
                "accuracy": self.accuracy, "agreement": self.agreement, "val_accuracy": self.val_accuracy,
                "val_agreement": self.val_agreement, "excluded_nodes": list(self.excluded_nodes),
                "retries": self.retries, "speedup": self.speedup.to_json() if self.speedup else None}


@dataclass(frozen=True)
class Reference:
    """The FP32 model's predictions, which every candidate is compared with."""

    val: np.ndarray
    test: np.ndarray
    val_accuracy: float | None


def within_gates(variant: Variant, fp32_val_accuracy: float | None, config: QuantizeStage) -> bool:
    """Within the accuracy tolerance of FP32 and the agreement gate, on the validation split.

    Without labelled data (no figures: ``edgekd quantize`` without ``--eval``) there is nothing to gate on.
    """
    if variant.val_accuracy is None or variant.val_agreement is None or fp32_val_accuracy is None:
        return True
    return (fp32_val_accuracy - variant.val_accuracy <= config.tolerance + 1e-9
            and variant.val_agreement >= config.agreement)


class VariantBuilder:
    """Builds and checks the candidates of one model; see the module docstring."""

    def __init__(self, config: QuantizeStage, options: Int8Options, data: QuantData, threads: int) -> None:
        self.config, self.options, self.data, self.threads = config, options, data, threads

    def build(self, source: Path, out_dir: Path, stem: str, *, precision: str) -> tuple[PreparedGraphs, list[Variant]]:
        """Every candidate of ``source``, written to ``out_dir`` as ``<stem>.<variant>.onnx``."""
        graphs = prepare_graphs(source, out_dir, stem)
        reference = self.reference(source)
        variants = [self.evaluate("fp32", "fp32", source, reference),
                    self.evaluate("fp32-optimized", "fp32", graphs.optimized, reference)]
        def target(name: str) -> Path:
            return out_dir / f"{stem}.{name}.onnx"

        pre = graphs.preprocessed
        for mode in expand_modes(self.config.modes, transformer=graphs.transformer, precision=precision,
                                 calibrated=bool(self.data.calibration)):
            if mode == "dynamic":
                sources = {"int8-dynamic": pre} | ({"int8-dynamic-fused": graphs.fused} if graphs.fused else {})
                for name, graph in sources.items():
                    make = partial(quantize_dynamic_int8, graph, target(name), self.options)
                    variants.append(self._accuracy_aware(name, graph, make, reference))
            elif mode == "static":
                for method in self.config.calibration_methods:
                    name = f"int8-static-{method}"
                    make = partial(quantize_static_int8, pre, target(name), self.options, self.data.calibration, method,
                                   op_types=sorted(WEIGHTED_OPS) if graphs.transformer else None)
                    variants.append(self._accuracy_aware(name, pre, make, reference))
            else:
                half = fp16_weights(graphs.optimized, target("fp16"))
                variants.append(self.evaluate("fp16", "fp16", half, reference))
        return graphs, variants

    def reference(self, source: Path) -> Reference:
        """FP32 predictions of ``source`` on the validation and test splits (none without labelled data)."""
        if not self.data.val:
            return Reference(val=np.empty(0), test=np.empty(0), val_accuracy=None)
        val = predict(source, self.data.val, self.threads)
        test = predict(source, self.data.test, self.threads)
        return Reference(val=val, test=test, val_accuracy=score(val, self.data.val, val).accuracy)

    def evaluate(self, name: str, precision: str, path: Path, reference: Reference,
                 excluded: Sequence[str] = (), retries: int = 0) -> Variant:
        """Scores of the model at ``path`` on both splits, against ``reference`` (None without labelled data)."""
        if not self.data.val:
            return Variant(name=name, precision=precision, path=path, val_accuracy=None, val_agreement=None,
                           accuracy=None, agreement=None, excluded_nodes=tuple(excluded), retries=retries)
        val = score(predict(path, self.data.val, self.threads), self.data.val, reference.val)
        test = score(predict(path, self.data.test, self.threads), self.data.test, reference.test)
        return Variant(name=name, precision=precision, path=path, val_accuracy=val.accuracy,
                       val_agreement=val.agreement, accuracy=test.accuracy, agreement=test.agreement,
                       excluded_nodes=tuple(excluded), retries=retries)

    def _accuracy_aware(self, name: str, graph: Path, make: Callable[[Sequence[str]], Path],
                        reference: Reference) -> Variant:
        """Quantize with ``make(excluded)``; while out of tolerance, exclude more of the most sensitive nodes."""
        variant = self.evaluate(name, "int8", make(()), reference)
        ranked: list[str] | None = None
        for retry in range(1, self.config.max_retries + 1):
            if within_gates(variant, reference.val_accuracy, self.config):
                break
            if ranked is None:
                candidates = weighted_nodes(graph)
                feeds = (self.data.calibration or tuple(feed for feed, _ in self.data.val))[:SENSITIVITY_BATCHES]
                ranked = [node for node, _ in rank_nodes(graph, variant.path, candidates, feeds, self.threads)]
            if not ranked:  # nothing quantized that could be left out
                break
            excluded = ranked[: min(len(ranked), 2 ** (retry - 1))]
            log.info("%s: val accuracy %.4f (fp32 %.4f), agreement %.4f; retry %d excluding %d node(s)",
                     name, variant.val_accuracy, reference.val_accuracy, variant.val_agreement, retry, len(excluded))
            variant = self.evaluate(name, "int8", make(excluded), reference, excluded, retry)
            if len(excluded) == len(ranked):
                break
        return variant
