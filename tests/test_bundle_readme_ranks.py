"""The bundle README's code follows the graph's own input and output ranks, and calls no input a text's it cannot
know is one.

A graph made for one example (``pixels [1, 8, 8]`` → ``scores [10]``, no batch axis) was bundled with a Python
example that crashed on ``logits[0]`` (an IndexError on the scalar) and a Kotlin one casting the 1-D output to
``Array<FloatArray>``; an int64 input that is not a text (a category per example, ``category [N]``) was called
"your text's token ids" and built as a ``[1, size]`` tensor in Kotlin. Each README's Python example is run on the
bundled model with a real input and must print what onnxruntime answers on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from edgekd.export.readme_image import SCRIPT
from tests.reliability import cli
from tests.test_bundle_readme_answers import _run_readme_python


class _OneImage(nn.Module):
    """A classifier of one grey 8×8 image, ``[1, 8, 8]`` → ten scores ``[10]``: no batch axis."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x[None])).flatten())


class _Category(nn.Module):
    """Three class scores per example from one category index each: ``category [N]`` → ``[N, 3]``."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Embedding(5, 3)

    def forward(self, category: torch.Tensor) -> torch.Tensor:
        return self.table(category)


class _OneScore(nn.Module):
    """One logit per example, squeezed: ``[batch, 4]`` → ``[batch]``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)[:, 0]


class _Argmax(nn.Module):
    """No scores, only the class each example is (int64): ``[batch, 4]`` → ``[batch]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.argmax(1)


#: Each model: its example input, its input and output names, and the graph's dynamic axes.
_MODELS = {
    "no-batch-image": (_OneImage, torch.zeros(1, 8, 8), "pixels", "scores", {}),
    "batch-classes": (lambda: nn.Linear(4, 3), torch.zeros(2, 4), "x", "logits", {"x": {0: "batch"},
                                                                                  "logits": {0: "batch"}}),
    "category": (_Category, torch.zeros(2, dtype=torch.int64), "category", "logits", {"category": {0: "N"},
                                                                                     "logits": {0: "N"}}),
    "one-score": (_OneScore, torch.zeros(2, 4), "x", "score", {"x": {0: "batch"}, "score": {0: "batch"}}),
    "argmax": (_Argmax, torch.zeros(2, 4), "x", "label", {"x": {0: "batch"}, "label": {0: "batch"}}),
}


def _export(kind: str, directory: Path) -> Path:
    make, example, input_name, output_name, axes = _MODELS[kind]
    torch.manual_seed(0)
    path = directory / f"{kind}.onnx"
    torch.onnx.export(make().eval(), (example,), str(path), input_names=[input_name], output_names=[output_name],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    return path


def _bundle(model: Path, directory: Path, *options: str | Path) -> Path:
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", directory / "app", "--runs", "10", "--warmup", "0",
                  *options)
    assert outcome.exit_code == 0, outcome.output
    return directory / "app" / "bundle"


def _readme(bundle: Path, language: str) -> str:
    return (bundle / "README.md").read_text().split(f"```{language}\n", 1)[1].split("```", 1)[0]


def _printed(bundle: Path, given: np.ndarray) -> str:
    """What the README's Python example prints fed ``given`` (added to its placeholder: a wrong rank broadcasts to
    another shape, which onnxruntime refuses)."""
    code = _readme(bundle, "python")
    assert code.count("x = np.zeros(") == 1, code
    (printed,), scope = _run_readme_python(bundle, code.replace("x = np.zeros(", "x = GIVEN + np.zeros("),
                                           {"GIVEN": given})
    assert scope["x"].shape == given.shape
    return printed


def _answer(model: Path, given: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: given})[0]


def _class_and_probability(scores: np.ndarray) -> str:
    probabilities = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return f"{int(probabilities.argmax())} {probabilities.max():.4f}"


@pytest.mark.parametrize(("kind", "given", "cast"), [
    ("no-batch-image", np.random.default_rng(0).normal(size=(1, 8, 8)).astype(np.float32),
     "val logits = (result[0].value as FloatArray)\n"),
    ("batch-classes", np.random.default_rng(0).normal(size=(1, 4)).astype(np.float32),
     "val logits = (result[0].value as Array<FloatArray>)[0]\n"),
    ("category", np.array([3], dtype=np.int64), "val logits = (result[0].value as Array<FloatArray>)[0]\n"),
], ids=["no-batch-image", "batch-classes", "category"])
def test_the_python_example_prints_the_class_the_graph_answers_for_its_ranks(
        kind: str, given: np.ndarray, cast: str, tmp_path: Path) -> None:
    model = _export(kind, tmp_path)
    bundle = _bundle(model, tmp_path)
    scores = _answer(model, given)
    assert _printed(bundle, given) == _class_and_probability(scores if kind == "no-batch-image" else scores[0])
    kotlin = _readme(bundle, "kotlin")
    assert cast in kotlin
    shape = ", ".join(map(str, given.shape))
    assert f"longArrayOf({shape})" in kotlin


def test_an_integer_input_that_is_no_text_is_not_called_one(tmp_path: Path) -> None:
    """``category [N]``: the README says it does not know what the integers are; Kotlin takes them as a LongArray
    fed as a ``[1]`` tensor, not a text's ``[1, size]`` token ids."""
    readme = (_bundle(_export("category", tmp_path), tmp_path) / "README.md").read_text()
    assert "your text" not in readme and "token" not in readme.lower()
    assert ("x = np.zeros((1,), dtype=np.int64)  # PLACEHOLDER: this input's values, as in training (the bundle does "
            "not record what they mean)") in readme
    kotlin = readme.split("```kotlin\n", 1)[1]
    assert "fun classify(category: LongArray): String {" in kotlin
    assert '"category" to OnnxTensor.createTensor(env, LongBuffer.wrap(category), longArrayOf(1)))' in kotlin


@pytest.mark.parametrize("labels", [True, False], ids=["two-labels", "no-labels"])
def test_one_score_per_example_without_a_class_axis_is_read_as_one(labels: bool, tmp_path: Path) -> None:
    """An output ``[batch]``: with two labels a binary classifier's logit, without them a value as it is."""
    model = _export("one-score", tmp_path)
    options = []
    if labels:
        (tmp_path / "labels.txt").write_text("low\nhigh\n")
        options = ["--labels", tmp_path / "labels.txt"]
    bundle = _bundle(model, tmp_path, *options)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["postprocessing"]["kind"] == ("binary_logit" if labels else "score")
    kotlin = _readme(bundle, "kotlin")
    for row in np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32):
        score = float(_answer(model, row[None])[0])
        printed = _printed(bundle, row[None])
        if labels:
            assert printed.split()[0] == ("high" if score > 0 else "low")
        else:
            assert float(printed) == pytest.approx(score, rel=1e-5, abs=1e-6)
    if labels:
        assert "val logit = (result[0].value as FloatArray)[0]  // the second class's" in kotlin
    else:
        assert "fun classify(features: FloatArray): Float {" in kotlin
        assert "return (result[0].value as FloatArray)[0]  // the model's answer" in kotlin


def test_the_image_example_of_a_graph_without_a_batch_axis_feeds_it_one_image(tmp_path: Path) -> None:
    """With an image preprocessing, ``classify.py`` added a batch axis the graph does not have (a rank error)."""
    model = _export("no-batch-image", tmp_path)
    (tmp_path / "pre.yaml").write_text(yaml.safe_dump({
        "kind": "image", "layout": "NCHW", "channels": 1, "height": 8, "width": 8, "color": "grayscale",
        "pixel_range": [0, 255], "scale": 1 / 255, "mean": [0.5], "std": [0.25], "byte_scale": 1.0,
        "formula": "input[c][y][x] = (pixel[y][x] * scale - mean[c]) / std[c]"}))
    bundle = _bundle(model, tmp_path, "--preprocessing", tmp_path / "pre.yaml")
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "one.png")
    (bundle / SCRIPT).write_text(_readme(bundle, "python"))
    done = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "one.png")], cwd=bundle, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    scores = _answer(model, ((pixels / 255 - 0.5) / 0.25).astype(np.float32)[None])
    assert done.stdout.strip() == _class_and_probability(scores)


def test_an_integer_output_is_read_as_its_own_type(tmp_path: Path) -> None:
    """A graph answering with int64 class indices ``[batch]`` (no float scores): printed as it is, and Kotlin reads
    a LongArray (a FloatArray cast fails at run time)."""
    model = _export("argmax", tmp_path)
    bundle = _bundle(model, tmp_path)
    given = np.array([[0.1, 0.7, 0.3, 0.2]], dtype=np.float32)
    assert _printed(bundle, given) == "1"
    kotlin = _readme(bundle, "kotlin")
    assert "fun classify(features: FloatArray): Long {" in kotlin
    assert "return (result[0].value as LongArray)[0]  // the model's answer" in kotlin
