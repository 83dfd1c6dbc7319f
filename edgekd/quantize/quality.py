"""How good a variant's outputs are for the model's task, and how closely they follow FP32's.

Every gate of :mod:`edgekd.quantize` reads two figures per split, both driven by the task the labels
encode (:func:`edgekd.task_heads.task_of`):

- the task's metrics (:func:`edgekd.task_heads.task_metrics`), the primary one
  (:data:`~edgekd.task_heads.PRIMARY_METRIC`) gated against FP32's within the stage's ``tolerance``;
- an *agreement* with FP32's outputs, in [0, 1], gated by the stage's ``agreement``:

  ====================  ==================================================================================
  single_label          share of inputs whose arg-max class is FP32's
  multi_label           share of inputs whose thresholded label set (sigmoid > ½) is FP32's
  regression            1 − the relative prediction change, ‖variant − fp32‖ / ‖fp32 − mean(fp32)‖
                        (the change measured against the spread of FP32's predictions), at least 0
  token_classification  share of real tokens (attention mask 1) whose arg-max tag is FP32's
  ====================  ==================================================================================

How much worse a metric got (:func:`worse_by`): an absolute drop for higher-is-better metrics
(accuracy, F1: 0.01 is one point), a relative increase for MSE (0.01 is 1% higher: its scale is the
targets'), an absolute increase for a causal LM's validation loss (nats per token: 0.01 is 1% more
perplexity). An output with NaN or infinity is never right and never agrees: its example (token)
answers wrong, and a regression's MSE is then NaN, which fails every gate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from edgekd.data.token_tags import IGNORE
from edgekd.quantize.feeds import LabelledBatch
from edgekd.task_heads import LOWER_IS_BETTER, PRIMARY_METRIC, THRESHOLD, task_metrics, task_of

#: Lower-is-better metrics whose tolerance is a relative increase (their scale is the data's).
RELATIVE = frozenset({"mse"})
#: Lower-is-better metrics beyond the classifier tasks': a causal LM's validation loss (nats per token).
LOSS_METRICS = frozenset({"val_loss"})
#: How metrics are named in sentences.
_SPOKEN = {"mse": "MSE", "micro_f1": "micro-F1", "token_accuracy": "token accuracy", "val_loss": "loss"}


@dataclass(frozen=True)
class SplitScores:
    """The task's metrics on one split (primary first) and the agreement with the reference model's outputs."""

    metrics: dict[str, float]
    agreement: float

    @property
    def primary(self) -> float:
        """The task's primary metric."""
        return next(iter(self.metrics.values()))


def primary_metric(batches: Sequence[LabelledBatch]) -> str:
    """The primary metric of the task ``batches``' labels encode."""
    return PRIMARY_METRIC[task_of(batches[0][1])]


def split_scores(outputs: np.ndarray, reference: np.ndarray, batches: Sequence[LabelledBatch],
                 class_names: tuple[str, ...] | None = None) -> SplitScores:
    """The task metrics of ``outputs`` (the first model output over every example of ``batches``) on their
    labels, and their agreement with ``reference`` (FP32's outputs); see the module docstring."""
    labels = np.concatenate([labels for _, labels in batches])
    task = task_of(labels)
    spoiled = _wrong_where_broken(outputs, labels, task)
    metrics = task_metrics(torch.from_numpy(spoiled), torch.from_numpy(labels), class_names)
    return SplitScores(metrics=metrics, agreement=agreement(outputs, reference, task, _real_tokens(batches, labels)))


def agreement(outputs: np.ndarray, reference: np.ndarray, task: str, real: np.ndarray | None = None) -> float:
    """How closely ``outputs`` follow ``reference`` for ``task`` (module docstring); ``real`` marks the
    positions that count for token classification."""
    if task == "regression":
        out, ref = outputs.reshape(-1).astype(np.float64), reference.reshape(-1).astype(np.float64)
        if not (np.isfinite(out).all() and np.isfinite(ref).all()):
            return 0.0
        spread = np.linalg.norm(ref - ref.mean())
        change = np.linalg.norm(out - ref) / spread if spread > 0 else float(np.linalg.norm(out - ref) > 0)
        return float(max(0.0, 1.0 - change))
    finite = np.isfinite(outputs).all(-1) & np.isfinite(reference).all(-1)
    if task == "multi_label":
        same = ((outputs > 0) == (reference > 0)).all(-1)  # sigmoid(x) > ½ exactly when x > 0
    else:
        same = outputs.argmax(-1) == reference.argmax(-1)
    same &= finite
    if task == "token_classification":
        mask = real if real is not None else np.ones(same.shape, bool)
        return float(same[mask].mean()) if mask.any() else 0.0
    return float(same.mean()) if same.size else 0.0


def lower_is_better(metric: str) -> bool:
    """True for metrics that improve downwards: MSE and a causal LM's validation loss."""
    return metric in LOWER_IS_BETTER or metric in LOSS_METRICS


def worse_by(metric: str, reference: float, value: float) -> float:
    """How much worse ``value`` is than ``reference`` on ``metric``, in the units its tolerance is given in
    (module docstring); negative when better, NaN when either is NaN."""
    if metric in RELATIVE:
        return (value - reference) / reference if reference > 0 else value - reference
    return value - reference if lower_is_better(metric) else reference - value


def change_text(metric: str, reference: float | None, value: float | None) -> str:
    """``validation accuracy +0.5 pt``, ``validation MSE +3.1%``, ``validation loss +0.0040 nats/token``."""
    if reference is None or value is None:
        return f"{_spoken(metric)} not measured (no labelled data)"
    drop = worse_by(metric, reference, value)
    return f"validation {_spoken(metric)} {_amount(metric, drop if lower_is_better(metric) else -drop, signed=True)}"


def loss_text(metric: str, reference: float, value: float, tolerance: float) -> str:
    """``loses 8.0 pt validation accuracy (tolerance 1 pt)``, ``raises validation MSE by 12.0% (tolerance 1%)``."""
    amount, limit = _amount(metric, worse_by(metric, reference, value)), _amount(metric, tolerance)
    if lower_is_better(metric):
        return f"raises validation {_spoken(metric)} by {amount} (tolerance {limit})"
    return f"loses {amount} validation {_spoken(metric)} (tolerance {limit})"


def agreement_text(metric: str, agreement: float, required: float | None = None) -> str:
    """How a variant agreed with FP32, in the words of its task (the primary ``metric`` names it), and, given the
    ``required`` agreement it fell short of, that gate. Figures are cut to two decimals toward the failing side, so a
    shortfall never reads as the gate itself (98.992% is 98.99%, not 99.0%)."""
    if metric in RELATIVE:
        gate = "" if required is None else f" (more than the {100 * (1 - required):g}% allowed)"
        return f"changes its predictions by {_percent(1 - agreement, math.ceil)} of their spread on the validation " \
               f"split{gate}"
    what = "tokens" if metric == "token_accuracy" else "inputs"
    gate = "" if required is None else f" (below the {100 * required:g}% required)"
    return f"agrees with fp32 on {_percent(agreement, math.floor)} of validation {what}{gate}"


def _percent(share: float, cut: Callable[[float], int]) -> str:
    """``share`` as a percentage of two decimals, ``cut`` (floor or ceil) rather than rounded; NaN as it is."""
    return f"{share:.0%}" if math.isnan(share) else f"{cut(10_000 * share) / 100:.2f}%"


def _spoken(metric: str) -> str:
    return _SPOKEN.get(metric, metric.replace("_", " "))


def _amount(metric: str, value: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    if metric in LOSS_METRICS:
        text = f"{value:{sign}.4f} nats/token"
    else:
        text = f"{100 * value:{sign}.1f}{'%' if metric in RELATIVE else ' pt'}"
    return text.replace("-", "−")


def _wrong_where_broken(outputs: np.ndarray, labels: np.ndarray, task: str) -> np.ndarray:
    """``outputs`` with every non-finite example (token) replaced by a wrong answer (module docstring)."""
    if task == "regression":
        return outputs.astype(np.float32)
    broken = ~np.isfinite(outputs).all(-1)
    if not broken.any():
        return outputs
    if task == "multi_label":
        wrong = np.where(labels > THRESHOLD, -1.0, 1.0)
    else:  # a logit row whose arg-max is any class but the label
        classes = outputs.shape[-1]
        wrong = -np.eye(classes, dtype=outputs.dtype)[np.clip(labels, 0, classes - 1)]
    return np.where(broken[..., None], wrong, outputs).astype(outputs.dtype)


def _real_tokens(batches: Sequence[LabelledBatch], labels: np.ndarray) -> np.ndarray | None:
    """Token classification's real (unpadded) positions: the feeds' attention masks, else the tagged positions."""
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        return None
    if all("attention_mask" in feed for feed, _ in batches):
        return np.concatenate([feed["attention_mask"] for feed, _ in batches]).astype(bool)
    return labels != IGNORE
