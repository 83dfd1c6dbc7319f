"""Building the candidate models of one FP32 ONNX model, each checked on the validation split.

Candidates: ``fp32`` (the exported file), ``fp32-optimized`` (the graph optimized for
quantization), ``int8-dynamic`` (plus ``int8-dynamic-fused`` for a transformer: quantized from the
fused graph), ``int8-static-<method>`` per calibration method, and ``fp16`` (FP16 weights).

Quality-aware, by the model's task (:mod:`edgekd.quantize.quality`): a quantized candidate whose
primary validation metric (accuracy, micro-F1, MSE, token accuracy) is more than ``tolerance`` worse
than FP32's, or whose agreement with FP32 on the validation split is below ``agreement``, is
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
from edgekd.quantize.evaluate import model_outputs
from edgekd.quantize.feeds import QuantData
from edgekd.quantize.graph import PreparedGraphs, prepare_graphs
from edgekd.quantize.isa import expand_modes
from edgekd.quantize.quality import SplitScores, primary_metric, split_scores, worse_by
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
    val_metrics: dict[str, float] | None
    val_agreement: float | None
    metrics: dict[str, float] | None
    agreement: float | None
    """The task's metrics (primary first) and the agreement with FP32 on the validation and test splits;
    None when there is no labelled data."""
    metric: str = "accuracy"
    """The primary metric, the one gated (:data:`edgekd.task_heads.PRIMARY_METRIC`, or ``val_loss``)."""
    excluded_nodes: tuple[str, ...] = ()
    retries: int = 0
    p50_ms: float | None = None
    size_mb: float | None = None
    speedup: Speedup | None = None
    """How many times faster than FP32, paired over the interleaved timing rounds (set once timed)."""

    @property
    def val_score(self) -> float | None:
        """The primary metric on the validation split (None without labelled data)."""
        return None if self.val_metrics is None else self.val_metrics[self.metric]

    @property
    def score(self) -> float | None:
        """The primary metric on the test split (None without labelled data)."""
        return None if self.metrics is None else self.metrics[self.metric]

    def timed(self, p50_ms: float, size_mb: float, speedup: Speedup) -> Variant:
        """A copy with its measured latency, size and speed-up over FP32."""
        return replace(self, p50_ms=p50_ms, size_mb=size_mb, speedup=speedup)

    def to_json(self) -> dict[str, Any]:
        """The figures the stage records per variant (``path`` as given: callers make it run-relative); the
        primary metric under its own name (``accuracy``, ``mse``...) and as ``val_<metric>``."""
        return {"precision": self.precision, "path": str(self.path), "p50_ms": self.p50_ms, "size_mb": self.size_mb,
                "metric": self.metric, self.metric: self.score, f"val_{self.metric}": self.val_score,
                "agreement": self.agreement, "val_agreement": self.val_agreement,
                **({"metrics": self.metrics} if self.metrics is not None and len(self.metrics) > 1 else {}),
                "excluded_nodes": list(self.excluded_nodes),
                "retries": self.retries, "speedup": self.speedup.to_json() if self.speedup else None}


@dataclass(frozen=True)
class Reference:
    """The FP32 model's outputs, which every candidate is compared with."""

    val: np.ndarray
    test: np.ndarray
    val_score: float | None


def within_gates(variant: Variant, fp32_val_score: float | None, config: QuantizeStage) -> bool:
    """Within the tolerance of FP32 on the primary metric, and the agreement gate, on the validation split.

    Without labelled data (no figures: ``edgekd quantize`` without ``--eval``) there is nothing to gate on.
    """
    if variant.val_score is None or variant.val_agreement is None or fp32_val_score is None:
        return True
    return (worse_by(variant.metric, fp32_val_score, variant.val_score) <= config.tolerance + 1e-9
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
                    variants.append(self._quality_aware(name, graph, make, reference))
            elif mode == "static":
                for method in self.config.calibration_methods:
                    name = f"int8-static-{method}"
                    make = partial(quantize_static_int8, pre, target(name), self.options, self.data.calibration, method,
                                   op_types=sorted(WEIGHTED_OPS) if graphs.transformer else None)
                    variants.append(self._quality_aware(name, pre, make, reference))
            else:
                half = fp16_weights(graphs.optimized, target("fp16"))
                variants.append(self.evaluate("fp16", "fp16", half, reference))
        return graphs, variants

    def reference(self, source: Path) -> Reference:
        """FP32 outputs of ``source`` on the validation and test splits (none without labelled data)."""
        if not self.data.val:
            return Reference(val=np.empty(0), test=np.empty(0), val_score=None)
        val = self._outputs(source, "val")
        test = self._outputs(source, "test")
        return Reference(val=val, test=test, val_score=self._scores(val, val, "val").primary)

    def evaluate(self, name: str, precision: str, path: Path, reference: Reference,
                 excluded: Sequence[str] = (), retries: int = 0) -> Variant:
        """Scores of the model at ``path`` on both splits, against ``reference`` (None without labelled data)."""
        if not self.data.val:
            return Variant(name=name, precision=precision, path=path, val_metrics=None, val_agreement=None,
                           metrics=None, agreement=None, excluded_nodes=tuple(excluded), retries=retries)
        val = self._scores(self._outputs(path, "val"), reference.val, "val")
        test = self._scores(self._outputs(path, "test"), reference.test, "test")
        return Variant(name=name, precision=precision, path=path, val_metrics=val.metrics,
                       val_agreement=val.agreement, metrics=test.metrics, agreement=test.agreement,
                       metric=primary_metric(self.data.val), excluded_nodes=tuple(excluded), retries=retries)

    def _outputs(self, path: Path, split: str) -> np.ndarray:
        return model_outputs(path, self.data.val if split == "val" else self.data.test, self.threads,
                             self.data.single_score, self.data.scores)

    def _scores(self, outputs: np.ndarray, reference: np.ndarray, split: str) -> SplitScores:
        batches = self.data.val if split == "val" else self.data.test
        return split_scores(outputs, reference, batches, self.data.class_names)

    def _quality_aware(self, name: str, graph: Path, make: Callable[[Sequence[str]], Path],
                        reference: Reference) -> Variant:
        """Quantize with ``make(excluded)``; while outside the gates, exclude more of the most sensitive nodes."""
        variant = self.evaluate(name, "int8", make(()), reference)
        ranked: list[str] | None = None
        for retry in range(1, self.config.max_retries + 1):
            if within_gates(variant, reference.val_score, self.config):
                break
            if ranked is None:
                candidates = weighted_nodes(graph)
                feeds = (self.data.calibration or tuple(feed for feed, _ in self.data.val))[:SENSITIVITY_BATCHES]
                ranked = [node for node, _ in rank_nodes(graph, variant.path, candidates, feeds, self.threads)]
            if not ranked:  # nothing quantized that could be left out
                break
            excluded = ranked[: min(len(ranked), 2 ** (retry - 1))]
            log.info("%s: val %s %.4f (fp32 %.4f), agreement %.4f; retry %d excluding %d node(s)", name, variant.metric,
                     variant.val_score, reference.val_score, variant.val_agreement, retry, len(excluded))
            variant = self.evaluate(name, "int8", make(excluded), reference, excluded, retry)
            if len(excluded) == len(ranked):
                break
        return variant
