"""A trained model's test and validation figures, by the data's task (see :mod:`edgekd.task_heads`).

Single-label models keep the figures every report and gate reads: ``accuracy`` and ``val_accuracy``.
Multi-label and regression models add ``task``, ``primary_metric`` and each test metric of their task
(``micro_f1``, ``macro_f1``, ``subset_accuracy``; ``mse``, ``pearson``, ``spearman``) with the primary one
on the validation split as ``val_<metric>``; their ``accuracy`` is the subset accuracy (multi-label: every
label of a row right) and None for regression, which has no classes. Token classification models add
``token_accuracy`` (their ``accuracy``) and, for BIO tags, ``entity_micro_f1``, ``entity_precision`` and
``entity_recall``.
"""

from __future__ import annotations

from typing import Any

from edgekd.data.task_data import TaskData
from edgekd.distill.trainer import task_scores
from edgekd.models.task_model import TaskModel
from edgekd.task_heads import PRIMARY_METRIC, task_of

#: The figure reported as ``accuracy`` by task (none for regression).
ACCURACY_OF = {"multi_label": "subset_accuracy", "token_classification": "token_accuracy"}


def evaluation_metrics(model: TaskModel, data: TaskData) -> dict[str, Any]:
    """``model``'s figures on ``data``'s test and validation splits (see the module docstring)."""
    test = task_scores(model.module, data.test, data.class_names)
    val = task_scores(model.module, data.val, data.class_names)
    return model_figures(task_of(data.test.labels), test, val)


def model_figures(task: str, test: dict[str, float], val: dict[str, float]) -> dict[str, Any]:
    """A model's figures from its ``task``'s metrics on the test and validation splits (the module docstring's
    keys); the quantize stage records its kept variant's with them."""
    if task == "single_label":
        return {"accuracy": test["accuracy"], "val_accuracy": val["accuracy"]}
    primary = PRIMARY_METRIC[task]
    return {"task": task, "primary_metric": primary, **test, f"val_{primary}": val[primary],
            "accuracy": test.get(ACCURACY_OF.get(task, "")), "val_accuracy": val.get(ACCURACY_OF.get(task, ""))}
