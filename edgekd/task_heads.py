"""What each task makes of a model's outputs: its training loss, its distillation targets, its metrics.

The task is read from the label tensor (see :mod:`edgekd.data.label_kind` for the encodings):

==============  ======================  ===============  ==========================================  ==========
task            labels                  hard loss        metrics (primary first)                     output
==============  ======================  ===============  ==========================================  ==========
single_label    int64 ``[N]``           cross-entropy    accuracy                                    softmax
multi_label     float32 ``[N, C]`` 0/1  BCE with logits  micro_f1, macro_f1, subset_accuracy         sigmoid > ½
regression      float32 ``[N]``         MSE              mse (lower is better), pearson, spearman    identity
token_class.    int64 ``[N, T]``        CE per token     token_accuracy, entity_micro_f1 (BIO tags)  softmax
==============  ======================  ===============  ==========================================  ==========

Token classification (``token_classification``) has logits ``[N, T, C]`` and a tag per sub-token
(:data:`~edgekd.data.token_tags.IGNORE` where none: continuation sub-tokens, special tokens, padding); only
the tagged positions count in its losses and metrics. With BIO tag names (``O``, ``B-X``, ``I-X``) its
metrics add entity-level micro precision, recall and F1 (:mod:`edgekd.tag_spans`).

Distillation targets: softened teacher logits (KL at temperature T, × T²) for single-label; the teacher's
sigmoid probabilities at temperature T (BCE, × T²) for multi-label; the teacher's values (MSE) for
regression; softened teacher logits at every tagged position for token classification.
:func:`selection_score` is the figure the training loop keeps its best epoch by (higher is better: the
regression score is −MSE).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from edgekd.data.config import TaskKind
from edgekd.data.token_tags import IGNORE
from edgekd.distill.losses.base import labelled_cross_entropy
from edgekd.model_metrics import ModelFigures
from edgekd.tag_spans import entity_scores, is_bio

#: The metric each task is judged by (``report.json``, gates); regression's is lower-is-better.
PRIMARY_METRIC: dict[str, str] = {"single_label": "accuracy", "multi_label": "micro_f1", "regression": "mse",
                                  "token_classification": "token_accuracy"}
LOWER_IS_BETTER = frozenset({"mse"})
#: Each task's test metrics, primary first.
TASK_METRICS: dict[str, tuple[str, ...]] = {"single_label": ("accuracy",),
                                            "multi_label": ("micro_f1", "macro_f1", "subset_accuracy"),
                                            "regression": ("mse", "pearson", "spearman"),
                                            "token_classification": ("token_accuracy", "entity_micro_f1",
                                                                     "entity_precision", "entity_recall")}
#: A multi-label class is predicted when its sigmoid probability exceeds this.
THRESHOLD = 0.5


def task_of(labels: Tensor | np.ndarray) -> TaskKind:
    """The task a label tensor encodes: float ``[N, C]`` multi-label, float ``[N]`` regression, integer ``[N, T]``
    token classification, else single-label."""
    if labels.dtype in (torch.float32, torch.float64, np.float32, np.float64):
        return "multi_label" if labels.ndim == 2 else "regression"
    return "token_classification" if labels.ndim == 2 else "single_label"


def tagged(logits: Tensor, labels: Tensor, *others: Tensor) -> tuple[Tensor, ...]:
    """For token classification, the tagged positions only: ``[M, C]`` of ``logits`` (and of each of
    ``others``, shaped like it) and ``[M]`` of ``labels``; other tasks' tensors as they are."""
    if task_of(labels) != "token_classification":
        return (logits, labels, *others)
    keep = labels != IGNORE
    return (logits[keep], labels[keep], *(other[keep] for other in others))


def hard_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The supervised loss of ``logits`` ``[B, C]`` (token classification: ``[B, T, C]``) on ``labels``, by their
    task (see the module docstring).

    Single-label rows labelled ``UNLABELLED`` and untagged positions do not count; 0 when none is labelled.
    """
    task = task_of(labels)
    if task == "token_classification":
        return labelled_cross_entropy(*tagged(logits, labels))
    if task == "multi_label":
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
    if task == "regression":
        return F.mse_loss(logits.reshape(-1), labels.to(logits.dtype))
    return labelled_cross_entropy(logits, labels)


def target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` ``[B, C]`` against class probabilities ``targets`` ``[B, C]`` (soft labels)."""
    return -(targets.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def soft_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float, task: TaskKind,
              labels: Tensor | None = None) -> Tensor:
    """The distillation term: the student matches the teacher's targets for ``task`` (module docstring).

    Token classification reads the tagged positions off ``labels``; 0 when a batch has none.
    """
    t = temperature
    if task == "token_classification":
        assert labels is not None, "token classification distils the tagged positions of the labels"
        student_logits, _, teacher_logits = tagged(student_logits, labels, teacher_logits)
        if len(student_logits) == 0:
            return student_logits.sum()
        task = "single_label"
    if task == "regression":
        return F.mse_loss(student_logits, teacher_logits)
    if task == "multi_label":
        targets = torch.sigmoid(teacher_logits / t)
        return F.binary_cross_entropy_with_logits(student_logits / t, targets) * (t * t)
    return F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                    reduction="batchmean", log_target=True) * (t * t)


def task_metrics(logits: Tensor, labels: Tensor, class_names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every metric of the labels' task for ``logits`` ``[N, C]`` (``[N, T, C]``), primary first (see the module
    docstring); the entity figures of token classification need the tag names, ``class_names``."""
    task = task_of(labels)
    if task == "token_classification":
        return _token_metrics(logits.argmax(-1), labels, class_names)
    if task == "regression":
        return _regression_metrics(logits.reshape(-1).double().numpy(), labels.double().numpy())
    if task == "multi_label":
        return _multi_label_metrics((torch.sigmoid(logits) > THRESHOLD).numpy(), labels.numpy() > THRESHOLD)
    return {"accuracy": float((logits.argmax(-1) == labels).double().mean())}


def selection_score(logits: Tensor, labels: Tensor) -> float:
    """The primary metric as a higher-is-better figure (−MSE for regression), to keep the best epoch by."""
    name = PRIMARY_METRIC[task_of(labels)]
    value = task_metrics(logits, labels)[name]
    return -value if name in LOWER_IS_BETTER else value


def postprocessing(task: TaskKind, class_names: tuple[str, ...]) -> dict[str, Any]:
    """How an app turns the model's output into an answer (the bundle manifest's ``postprocessing``)."""
    if task == "regression":
        return {"task": task, "kind": "identity", "note": "one value per example (the model's output as is)",
                "value": class_names[0]}
    if task == "multi_label":
        return {"task": task, "kind": "sigmoid", "threshold": THRESHOLD, "labels": list(class_names),
                "note": f"logits, one per label: label i applies when sigmoid(logit i) > {THRESHOLD}"}
    if task == "token_classification":
        return {"task": task, "kind": "softmax", "per_token": True, "labels": list(class_names),
                "note": "logits [batch, sequence, tags], one row per sub-token: the arg-max is its tag; a word's tag "
                        "is its first sub-token's (locate words by the bundled tokenizer's offsets)"}
    return {"task": task, "kind": "softmax", "labels": list(class_names),
            "note": "logits, one per class: softmax gives probabilities, the arg-max is the class"}


def task_postprocessing(figures: ModelFigures, class_names: tuple[str, ...]) -> dict[str, Any]:
    """The bundle manifest's ``postprocessing`` and ``metrics`` for a model with these ``figures``;
    empty for a single-label model (the manifest's softmax default applies)."""
    if figures.task is None:
        return {}
    return {"postprocessing": postprocessing(figures.task, class_names),
            "metrics": figures.model_dump(include=set(TASK_METRICS[figures.task]), exclude_unset=True)}


def _regression_metrics(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    return {"mse": float(np.mean((predicted - target) ** 2)), "pearson": _correlation(predicted, target),
            "spearman": _correlation(_ranks(predicted), _ranks(target))}


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson's r; 0 when either side is constant (no linear relation can be read)."""
    a, b = a - a.mean(), b - b.mean()
    scale = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / scale) if scale > 0 else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks with ties given their average rank (as Spearman's rho needs)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values), dtype=np.float64)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def _token_metrics(predicted: Tensor, labels: Tensor, class_names: tuple[str, ...] | None) -> dict[str, float]:
    """Token accuracy over the tagged positions, and with BIO ``class_names`` the entity-level micro scores."""
    keep = labels != IGNORE
    figures = {"token_accuracy": float((predicted[keep] == labels[keep]).double().mean()) if keep.any() else 0.0}
    if class_names is not None and is_bio(class_names):
        names = np.asarray(class_names, dtype=object)
        rows = [(names[p[k].numpy()], names[t[k].numpy()]) for p, t, k in zip(predicted, labels, keep, strict=True)]
        figures.update(entity_scores((p for p, _ in rows), (t for _, t in rows)))
    return figures


def _multi_label_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = (predicted & truth).sum(0).astype(np.float64)
    fp = (predicted & ~truth).sum(0).astype(np.float64)
    fn = (~predicted & truth).sum(0).astype(np.float64)
    return {"micro_f1": _f1(tp.sum(), fp.sum(), fn.sum()),
            "macro_f1": float(np.mean([_f1(*counts) for counts in zip(tp, fp, fn, strict=True)])),
            "subset_accuracy": float((predicted == truth).all(1).mean())}


def _f1(tp: float, fp: float, fn: float) -> float:
    """F1 of one count triple; 1 when there is nothing to find and nothing was predicted."""
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0
