"""An ONNX teacher whose scored output comes from a Sigmoid answers with per-label probabilities: they are turned
into their logits (``log(p / (1 - p))``, clipped), as a Softmax teacher's probabilities are into log-probabilities
(``edgekd.models.onnx_teacher.as_logits``). Read as logits, a label the teacher was sure of (0.99) taught the
student sigmoid(0.99) = 0.73, and every probability scored as a positive label."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import edgekd
from edgekd.config.recipe import load_recipe
from edgekd.data.task_data import prepare_task_data
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.models.onnx_teacher import score_activation

LABELS = ("a", "b", "c")


class _Scores(nn.Module):
    """A fixed linear scorer of 1 × 4 × 4 images, ending in a sigmoid (or not)."""

    def __init__(self, outputs: int, sigmoid: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(16, outputs)
        with torch.no_grad():
            self.linear.weight.mul_(8.0)  # confident scores: many probabilities near 0 or 1
        self.sigmoid = sigmoid

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.logits(images)
        return torch.sigmoid(logits).reshape(-1, logits.shape[-1]) if self.sigmoid else logits


def _export(module: nn.Module, path: Path) -> Path:
    torch.onnx.export(module.eval(), (torch.rand(2, 1, 4, 4),), str(path), input_names=["input"],
                      output_names=["scores"], dynamic_axes={"input": {0: "batch"}, "scores": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def _run(tmp_path: Path, module: _Scores, labels: np.ndarray, class_names: np.ndarray | None) -> dict[str, Any]:
    """The ONNX file of ``module`` as the teacher of an MLP student on images labelled ``labels``; the run's
    stage metrics, and the data as the run splits it."""
    images = np.random.default_rng(0).random((240, 1, 4, 4), dtype=np.float32) - 0.5
    arrays = {"inputs": images, "labels": labels(module, images)}
    np.savez(tmp_path / "set.npz", **arrays, **({"class_names": class_names} if class_names is not None else {}))
    _export(module, tmp_path / "teacher.onnx")
    recipe = {"name": "sigmoid-teacher", "seed": 0, "device": "host-cpu", "threads": 1,
              "data": {"source": "npz", "path": "set.npz"},
              "teacher": {"model": {"arch": "onnx", "path": "teacher.onnx"}},
              "student": {"model": {"arch": "mlp", "hidden": [16]}},
              "stages": [{"stage": "teacher"}, {"stage": "distill", "epochs": 3, "lr": 0.01,
                                                 "teacher_cache_dir": str(tmp_path / "cache")}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    edgekd.run(tmp_path / "recipe.yaml", out=tmp_path / "run")
    metrics = {record["stage"]: record["metrics"] for record in edgekd.open_run(tmp_path / "run").stages}
    return {"metrics": metrics, "data": prepare_task_data(load_recipe(tmp_path / "recipe.yaml").data, 0)}


def _cached(tmp_path: Path) -> np.ndarray:
    (directory,) = [path for path in (tmp_path / "cache").iterdir() if (path / "cache.json").is_file()]
    return np.asarray(TeacherOutputCache(directory).logits)


def _expected(module: _Scores, data: Any, width: int) -> np.ndarray:
    """The module's logits on the training split, in the cache's row order."""
    expected = np.zeros((len(data.train), width), dtype=np.float32)
    for index, inputs, _labels in data.train.batches(64, shuffle=False):
        with torch.no_grad():
            expected[np.asarray(index)] = module.logits(inputs["input"]).numpy()
    return expected


def _multi_hot(module: _Scores, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return (module.logits(torch.from_numpy(images)) > 0).numpy().astype(np.int64)


def test_a_multi_label_teacher_ending_in_sigmoid_teaches_its_logits(tmp_path: Path) -> None:
    module = _Scores(len(LABELS), sigmoid=True)
    assert score_activation(_export(module, tmp_path / "probe.onnx"), "scores") == "sigmoid"
    run = _run(tmp_path, module, _multi_hot, np.asarray(LABELS))
    expected = _expected(module, run["data"], len(LABELS))
    cached = _cached(tmp_path)
    inside = np.abs(expected) < 15  # beyond, float32's sigmoid saturates and the logit is clipped
    assert inside.mean() > 0.9
    np.testing.assert_allclose(cached[inside], expected[inside], atol=2e-3, rtol=1e-3)
    assert np.abs(cached).max() <= 16.2  # clipped, not infinite
    teacher, student = run["metrics"]["teacher"]["teacher"], run["metrics"]["distill"]["student"]
    assert teacher["micro_f1"] == pytest.approx(1.0)  # its labels are its own: read as logits, every p > 0 was 'yes'
    assert student["micro_f1"] > 0.5


def test_a_binary_teacher_with_one_sigmoid_score_is_the_second_classs_logit(tmp_path: Path) -> None:
    module = _Scores(1, sigmoid=True)

    def second_class(scores: _Scores, images: np.ndarray) -> np.ndarray:
        return _multi_hot(scores, images)[:, 0]

    run = _run(tmp_path, module, second_class, None)
    logit = _expected(module, run["data"], 1)
    cached = _cached(tmp_path)
    assert cached.shape == (len(run["data"].train), 2)
    inside = np.abs(logit[:, 0]) < 15
    np.testing.assert_allclose(cached[inside, 1] - cached[inside, 0], logit[inside, 0], atol=2e-3, rtol=1e-3)
    assert run["metrics"]["teacher"]["teacher"]["accuracy"] == pytest.approx(1.0)


def test_a_teacher_answering_logits_or_softmax_is_read_as_before(tmp_path: Path) -> None:
    """Logits pass unchanged (no activation found); a Softmax is found in the graph."""
    assert score_activation(_export(_Scores(3, sigmoid=False), tmp_path / "logits.onnx"), "scores") is None

    class _Softmax(_Scores):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.logits(images), dim=-1)

    assert score_activation(_export(_Softmax(3, sigmoid=False), tmp_path / "softmax.onnx"), "scores") == "softmax"
