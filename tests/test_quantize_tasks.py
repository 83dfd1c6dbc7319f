"""The quantize stage for every task: multi-label, regression, token classification and causal LMs.

Gates compare each variant with FP32 by the task's primary metric and a task-fit agreement
(:mod:`edgekd.quantize.quality`); a causal LM's KV-cache decoder is quantized to dynamic INT8 and kept
only when the per-token speed-up measured in the run clears ``min_speedup`` (or FP32 misses the size
budget INT8 fits) within ``loss_tolerance`` (:mod:`edgekd.quantize.causal_lm`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.token_tags import IGNORE
from edgekd.errors import ExportError
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.quality import split_scores, worse_by
from edgekd.task_heads import PRIMARY_METRIC, task_metrics
from edgekd.workflow import Run

RNG_SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- quality figures by task


def _outputs(task: str, rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, np.ndarray, list]:
    """Random outputs of ``task`` with labels, as (outputs, labels, batches of two)."""
    if task == "single_label":
        outputs, labels = rng.normal(size=(n, 5)), rng.integers(0, 5, n)
    elif task == "multi_label":
        outputs, labels = rng.normal(size=(n, 4)), (rng.random((n, 4)) < 0.4).astype(np.float32)
    elif task == "regression":
        outputs, labels = rng.normal(size=(n, 1)), rng.normal(size=n).astype(np.float32)
    else:
        outputs, labels = rng.normal(size=(n, 7, 3)), rng.integers(0, 3, (n, 7))
        labels[:, -2:] = IGNORE
    outputs = outputs.astype(np.float32)
    half = n // 2
    batches = [({"x": np.zeros(half)}, labels[:half]), ({"x": np.zeros(n - half)}, labels[half:])]
    return outputs, labels, batches


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("task", list(PRIMARY_METRIC))
def test_scores_are_the_task_metrics_and_agreement_with_itself_is_full(task: str, seed: int) -> None:
    outputs, labels, batches = _outputs(task, np.random.default_rng(seed))
    scores = split_scores(outputs, outputs, batches)
    expected = task_metrics(torch.from_numpy(outputs), torch.from_numpy(labels))
    assert scores.metrics == pytest.approx(expected) and next(iter(scores.metrics)) == PRIMARY_METRIC[task]
    assert scores.agreement == 1.0


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_changed_answers_lower_agreement_by_their_share(seed: int) -> None:
    rng = np.random.default_rng(seed)
    changed = rng.choice(40, size=int(rng.integers(1, 12)), replace=False)
    outputs, _, batches = _outputs("single_label", rng)
    other = outputs.copy()
    other[changed] = -other[changed] - 10 * np.eye(5, dtype=np.float32)[outputs[changed].argmax(1)]  # new arg-max
    assert split_scores(other, outputs, batches).agreement == pytest.approx(1 - len(changed) / 40)
    outputs, _, batches = _outputs("multi_label", rng)
    other = outputs.copy()
    other[changed, 0] = -other[changed, 0]  # one label of each changed row flips side of the threshold
    assert split_scores(other, outputs, batches).agreement == pytest.approx(1 - len(changed) / 40)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_regression_agreement_is_one_minus_the_relative_prediction_change(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outputs, labels, batches = _outputs("regression", rng)
    scale = float(rng.uniform(0.001, 0.3))
    noise = rng.normal(size=outputs.shape).astype(np.float32)
    changed = outputs + scale * noise * np.linalg.norm(outputs - outputs.mean()) / np.linalg.norm(noise)
    scores = split_scores(changed, outputs, batches)
    assert scores.agreement == pytest.approx(1 - scale, rel=1e-4)
    assert scores.metrics["mse"] == pytest.approx(float(np.mean((changed[:, 0] - labels) ** 2)), rel=1e-5)


def test_token_agreement_counts_real_tokens_only_and_nan_is_wrong() -> None:
    outputs, labels, _ = _outputs("token_classification", np.random.default_rng(0), n=4)
    mask = (labels != IGNORE).astype(np.int64)
    batches = [({"attention_mask": mask}, labels)]
    other = outputs.copy()
    other[:, -2:] = -other[:, -2:]  # the padding positions disagree: they do not count
    assert split_scores(other, outputs, batches).agreement == 1.0
    other[0, 0] = np.nan  # one real token broken: wrong and disagreeing
    scores = split_scores(other, outputs, batches)
    assert scores.agreement == pytest.approx(1 - 1 / mask.sum())
    right = split_scores(outputs, outputs, batches).metrics["token_accuracy"] * mask.sum()
    was_right = outputs[0, 0].argmax() == labels[0, 0]
    assert scores.metrics["token_accuracy"] * mask.sum() == pytest.approx(right - was_right)


@pytest.mark.parametrize(("metric", "reference", "value", "worse"), [
    ("accuracy", 0.9, 0.88, 0.02), ("micro_f1", 0.7, 0.75, -0.05), ("token_accuracy", 0.8, 0.8, 0.0),
    ("mse", 0.5, 0.55, 0.1), ("mse", 0.5, 0.4, -0.2), ("val_loss", 1.3, 1.32, 0.02), ("val_loss", 1.3, 1.2, -0.1),
])
def test_worse_by_follows_the_metrics_direction(metric: str, reference: float, value: float, worse: float) -> None:
    assert worse_by(metric, reference, value) == pytest.approx(worse)
    assert math.isnan(worse_by(metric, reference, float("nan")))


# --------------------------------------------------------------------------- the stage on classifier tasks


def _npz(tmp: Path, task: str, seed: int = 0) -> Path:
    """Tabular-like 1×4×4 inputs whose targets are functions of them: 3 labels (multi-label) or a value."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(360, 1, 4, 4)).astype(np.float32)
    flat = inputs.reshape(len(inputs), -1)
    if task == "multi_label":
        labels = np.stack([flat[:, 0] > 0, flat[:, 5] + flat[:, 6] > 0, flat[:, 10] > 0.5], 1).astype(np.float32)
    else:
        labels = (flat[:, :4].sum(1) - flat[:, 8]).astype(np.float32)
    np.savez(tmp / f"{task}.npz", inputs=inputs, labels=labels)
    return tmp / f"{task}.npz"


def _npz_run(tmp: Path, task: str, quantize: dict[str, Any]) -> Run:
    training = {"epochs": 12, "batch_size": 32, "lr": 0.01}
    recipe = {"name": f"q-{task}", "threads": 1,
              "data": {"source": "npz", "path": str(_npz(tmp, task)), "val_fraction": 0.2, "test_fraction": 0.25},
              "teacher": {"model": {"arch": "mlp", "hidden": [32]}},
              "student": {"model": {"arch": "mlp", "hidden": [16]}},
              "stages": [{"stage": "teacher", **training}, {"stage": "export"},
                         {"stage": "quantize", "roles": ["teacher"], "warmup": 2, "runs": 20, "rounds": 3,
                          "calibration_samples": 64, **quantize}, {"stage": "report"}]}
    return edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp / "run")


def _check_decision_follows_figures(record: dict[str, Any], config: QuantizeStage, metric: str) -> None:
    """The kept variant is one the gates allow and whose speed-up clears min_speedup (else fp32)."""
    fp32 = record["variants"]["fp32"]

    def allowed(v: dict[str, Any]) -> bool:
        return (worse_by(metric, fp32[f"val_{metric}"], v[f"val_{metric}"]) <= config.tolerance + 1e-9
                and v["val_agreement"] >= config.agreement)

    paying = [name for name, v in record["variants"].items() if v["precision"] != "fp32" and allowed(v)
              and v["speedup"]["low"] is not None and v["speedup"]["low"] >= config.min_speedup]
    if paying:
        assert record["decision"] in paying, record["reason"]
    else:  # no size budget binds on host-cpu for models this small
        assert record["decision"] == "fp32", record["reason"]


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_quantize_stage_gates_multi_label_and_regression_by_their_metric(tmp_path: Path, task: str) -> None:
    result = _npz_run(tmp_path, task, {})
    record = result.stages[2].metrics["teacher"]
    metric = PRIMARY_METRIC[task]
    static = record["variants"]["int8-static-minmax"]
    assert static["metric"] == metric and set(static["metrics"]) >= {metric}
    fp32 = record["variants"]["fp32"]
    assert static["val_agreement"] >= 0.9 and fp32["val_agreement"] == 1.0
    assert abs(worse_by(metric, fp32[metric], static[metric])) < 0.2
    _check_decision_follows_figures(record, QuantizeStage(stage="quantize"), metric)
    kept = record["variants"][record["decision"]]
    teacher = result.report()["teacher"]
    assert teacher["precision"] == record["decision"] and teacher[metric] == pytest.approx(kept[metric])
    model = result.artifact.get("teacher")
    assert model.metrics[f"fp32_{metric}"] == pytest.approx(fp32[metric]) and teacher["task"] == task
    assert model.onnx == kept["path"] and (result.run_dir / model.onnx).is_file()
    if task == "regression":
        assert teacher["accuracy"] is None and teacher["pearson"] == pytest.approx(kept["metrics"]["pearson"])


def test_a_strict_gate_keeps_fp32_and_says_why(tmp_path: Path) -> None:
    result = _npz_run(tmp_path, "regression", {"modes": ["auto"], "agreement": 1.0, "tolerance": 0.0, "max_retries": 0})
    record = result.stages[2].metrics["teacher"]
    assert record["decision"] == "fp32"
    assert "changes its predictions by" in record["reason"] or "raises validation MSE by" in record["reason"]
    with pytest.raises(ExportError, match=r"int8-static-minmax changes its predictions by [0-9.]+% of their spread "
                       r"on the validation split \(< agreement 1\) after excluding"):
        _npz_run(tmp_path, "regression", {"modes": ["static"], "agreement": 1.0, "max_retries": 0})
