"""The ONNX files users bring, as ``edgekd quantize --eval`` and ``edgekd bundle`` read their answers.

A binary classifier answering with one score per example (``[batch, 1]``: a sigmoid's probability, or a logit
trained with ``BCEWithLogitsLoss``) was refused by ``quantize --eval`` and by ``bundle --labels`` (two labels for
"1 class"), and bundled without labels its README took the softmax of the one score (always 1.0, always the first
class). A bundle without labels printed ``manifest["labels"][best]`` of an empty list (an IndexError), and graph or
label names holding quotes broke the README's code. Each model is a linear layer of known weights, so the right
answers are known exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.export.code_literals import kotlin_string
from tests.reliability import assert_user_error, cli

#: The README's placeholder input line of a graph without preprocessing, replaced by a real example.
PLACEHOLDER = "x = np.zeros((1, 4), dtype=np.float32)  # your input here, preprocessed as in training"


def _features(count: int = 300) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(count, 4)).astype(np.float32)


def _binary_labels(x: np.ndarray) -> np.ndarray:
    """The class the binary models below compute: 2·x0 + x1 − 0.6 > 0."""
    return (2 * x[:, 0] + x[:, 1] - 0.6 > 0).astype(np.int64)


def _export(model: nn.Module, path: Path, *, input_name: str = "x", output_name: str = "score") -> Path:
    torch.onnx.export(model.eval(), (torch.zeros(1, 4),), str(path), input_names=[input_name],
                      output_names=[output_name], dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                      dynamo=False)
    return path


def _binary_model(directory: Path, *, sigmoid: bool) -> Path:
    """One score per example of the second class: its logit ``2·x0 + x1 − 0.6``, or that logit's sigmoid."""
    linear = nn.Linear(4, 1)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[2.0, 1.0, 0.0, 0.0]]))
        linear.bias.fill_(-0.6)
    layers = nn.Sequential(linear, nn.Sigmoid()) if sigmoid else nn.Sequential(linear)
    return _export(layers, directory / ("sigmoid.onnx" if sigmoid else "logit.onnx"))


def _three_classes(directory: Path, **names: str) -> Path:
    """Logits of three classes: x0, x1 and x2."""
    linear = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.eye(3, 4))
    return _export(linear, directory / "three.onnx", **names)


def _readme_prints(bundle: Path, rows: np.ndarray) -> list[str]:
    """What the README's Python example prints for each row, run on the bundle's files as a user runs it."""
    code = (bundle / "README.md").read_text().split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count(PLACEHOLDER) == 1, code
    code = (code.replace(PLACEHOLDER, "x = ROW[None]")
            .replace('ort.InferenceSession("', f'ort.InferenceSession("{bundle}/')
            .replace('open("manifest.json")', f'open("{bundle}/manifest.json")'))
    printed: list[str] = []
    for row in rows:
        exec(compile(code, "README.md", "exec"),  # noqa: S102 - the README's own example
             {"ROW": row, "print": lambda *args: printed.append(" ".join(map(str, args)))})
    return printed


def _labels_file(path: Path, *names: str) -> Path:
    path.write_text("".join(f"{name}\n" for name in names))
    return path


@pytest.mark.parametrize("sigmoid", [True, False], ids=["sigmoid", "logit"])
def test_quantize_eval_scores_a_binary_classifier_answering_with_one_score(sigmoid: bool, tmp_path: Path) -> None:
    """Read with the wrong threshold (a probability as a logit: every example above 0), the accuracy is the share of
    the second class; read right, every answer is the labels' own."""
    model = _binary_model(tmp_path, sigmoid=sigmoid)
    x = _features()
    np.savez(tmp_path / "eval.npz", x=x, y=_binary_labels(x))
    np.savez(tmp_path / "calib.npz", x=x[:128])
    outcome = cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q", "--eval", tmp_path / "eval.npz",
                  "--calibration", tmp_path / "calib.npz", "--runs", "20", "--rounds", "2", "--json")
    assert outcome.exit_code == 0, outcome.output
    variants = json.loads(outcome.output)["variants"]
    assert 0.2 < _binary_labels(x).mean() < 0.8
    assert variants["fp32"]["accuracy"] == 1.0 and variants["fp32"]["agreement"] == 1.0
    assert all(v["accuracy"] > 0.9 for v in variants.values())

    np.savez(tmp_path / "three.npz", x=x, y=np.arange(len(x)) % 3)
    assert_user_error(cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q2", "--eval",
                          tmp_path / "three.npz"), "three.npz", "label 2", "classes 0..1", "one score per example")


@pytest.mark.parametrize("sigmoid", [True, False], ids=["sigmoid", "logit"])
def test_a_bundled_binary_classifier_answers_with_its_labels(sigmoid: bool, tmp_path: Path) -> None:
    model = _binary_model(tmp_path, sigmoid=sigmoid)
    labels = _labels_file(tmp_path / "labels.txt", "negative", "positive")
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app", "--labels", labels, "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    bundle = tmp_path / "app" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    post = manifest["postprocessing"]
    assert post["kind"] == ("binary_probability" if sigmoid else "binary_logit") and post["threshold"] == 0.5
    x = _features(40)
    printed = _readme_prints(bundle, x)
    assert [line.split()[0] for line in printed] == [("negative", "positive")[c] for c in _binary_labels(x)]
    kotlin = (bundle / "README.md").read_text().split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert "val best = if (" in kotlin and "return LABELS[best]" in kotlin

    three = _labels_file(tmp_path / "three.txt", "a", "b", "c")
    assert_user_error(cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app3", "--labels", three),
                      "three.txt", "3 labels", "one score per example", "expected two lines")


def test_a_bundle_without_labels_prints_class_indices_and_a_bare_score_as_it_is(tmp_path: Path) -> None:
    x = _features(30)
    three = _three_classes(tmp_path)
    assert cli("bundle", three, "-d", "host-cpu", "-o", tmp_path / "three", "--runs", "10").exit_code == 0
    printed = _readme_prints(tmp_path / "three" / "bundle", x)
    assert [int(line.split()[0]) for line in printed] == list(x[:, :3].argmax(1))
    kotlin = (tmp_path / "three" / "bundle" / "README.md").read_text().split("```kotlin\n", 1)[1]
    assert "return best.toString()" in kotlin and "LABELS[" not in kotlin

    logit = _binary_model(tmp_path, sigmoid=False)  # without labels, one value may be a regression's: as it is
    assert cli("bundle", logit, "-d", "host-cpu", "-o", tmp_path / "logit", "--runs", "10").exit_code == 0
    manifest = json.loads((tmp_path / "logit" / "bundle" / "manifest.json").read_text())
    assert manifest["postprocessing"]["kind"] == "score"
    values = [json.loads(line)[0] for line in _readme_prints(tmp_path / "logit" / "bundle", x)]
    np.testing.assert_allclose(values, 2 * x[:, 0] + x[:, 1] - 0.6, rtol=1e-5, atol=1e-5)


def test_names_with_quotes_and_dollars_stay_strings_in_the_readme_code(tmp_path: Path) -> None:
    model = _three_classes(tmp_path, input_name='x "in" $1', output_name="it's \"p\"")
    labels = _labels_file(tmp_path / "labels.txt", 'a "quoted" one', "dollar $x", "back\\slash")
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app", "--labels", labels, "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    bundle = tmp_path / "app" / "bundle"
    readme = (bundle / "README.md").read_text()
    x = _features(12)
    printed = _readme_prints(bundle, x)
    classes = ('a "quoted" one', "dollar $x", "back\\slash")
    assert [line.rsplit(" ", 1)[0] for line in printed] == [classes[c] for c in x[:, :3].argmax(1)]
    kotlin = readme.split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert 'arrayOf("a \\"quoted\\" one", "dollar \\$x", "back\\\\slash")' in kotlin
    assert 'mapOf("x \\"in\\" \\$1" to tensor), setOf("it\'s \\"p\\"")' in kotlin


def test_kotlin_string_literals_escape_what_kotlin_would_read() -> None:
    assert kotlin_string('a"b') == '"a\\"b"'
    assert kotlin_string("${x}") == '"\\${x}"'
    assert kotlin_string("tab\tnew\nline\x00é") == '"tab\\tnew\\nline\\u0000é"'
