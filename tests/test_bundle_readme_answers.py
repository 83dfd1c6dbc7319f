"""The bundle README's examples answer as the model's task does: an app developer who copies the Python example
and feeds it the test sentences gets the test figures the manifest states (micro-F1 of the sigmoid labels, MSE of
the values, token accuracy of the per-word tags), and the Kotlin example feeds a text model int64 token ids and
its mask, one tensor per graph input, and reads the answer of its task."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.export.bundle_readme import render_readme
from edgekd.task_heads import postprocessing
from tests.test_tasks import _tsv
from tests.test_token_classification import tagged_data

EXAMPLE = 'sentence = "an example sentence"'


def _bundle(tmp_path: Path, data: dict[str, Any]) -> Path:
    """A tiny BERT trained on ``data`` and distilled into a tinier one, exported, profiled and bundled."""
    device = tmp_path / "short.yaml"
    device.write_text(yaml.safe_dump({
        "name": "short", "description": "this CPU, 32-token inputs", "threads": 1,
        "inputs": {"batch": 1, "sequence_length": 32, "image_size": None},
        "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}, "precision": "fp32", "isa": "detect"}))
    recipe = {"name": "answers", "seed": 0, "threads": 1, "device": str(device), "data": data,
              "tokenizer": {"vocab_size": 120, "max_length": 32},
              "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}},
              "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}},
              "stages": [{"stage": "teacher", "epochs": 6, "batch_size": 16, "lr": 0.005},
                         {"stage": "distill", "epochs": 6, "batch_size": 16, "lr": 0.008},
                         {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 1, "runs": 10},
                         {"stage": "bundle"}]}
    edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run")
    return tmp_path / "run" / "bundle"


def _readme_answers(bundle: Path, sentences: list[str]) -> list[str]:
    """What the README's Python example prints for each sentence, run in the bundle directory."""
    readme = (bundle / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.count(EXAMPLE) == 1
    code = code.replace(EXAMPLE, "sentence = SENTENCE")
    printed: list[str] = []
    here = Path.cwd()
    os.chdir(bundle)
    try:
        for sentence in sentences:
            exec(compile(code, "README.md", "exec"),  # noqa: S102 - the README's own example, as a user runs it
                 {"SENTENCE": sentence, "print": lambda *args: printed.append(" ".join(map(str, args)))})
    finally:
        os.chdir(here)
    assert len(printed) == len(sentences)
    return printed


def _column(path: str, index: int) -> list[str]:
    return [line.split("\t")[index] for line in Path(path).read_text().splitlines()[1:]]


def test_the_multi_label_example_prints_the_labels_whose_sigmoid_clears_the_threshold(tmp_path: Path) -> None:
    data = _tsv(tmp_path, "multi", train=300)
    bundle = _bundle(tmp_path, data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    answers = [set(eval(line)) for line in _readme_answers(bundle, _column(data["test"], 0))]  # noqa: S307 - a list
    gold = [set(filter(None, label.split(","))) for label in _column(data["test"], 1)]
    hits = sum(len(a & g) for a, g in zip(answers, gold, strict=True))
    wrong = sum(len(a - g) + len(g - a) for a, g in zip(answers, gold, strict=True))
    assert {len(a) for a in answers} != {1}  # label sets, not one arg-max each
    assert 2 * hits / (2 * hits + wrong) == pytest.approx(manifest["metrics"]["micro_f1"])


def test_the_regression_example_prints_the_value(tmp_path: Path) -> None:
    data = _tsv(tmp_path, "regression", train=300)
    bundle = _bundle(tmp_path, data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    values = [eval(line)["label"] for line in _readme_answers(bundle, _column(data["test"], 0))]  # noqa: S307
    target = np.array([float(v) for v in _column(data["test"], 1)])
    assert np.mean((np.array(values) - target) ** 2) == pytest.approx(manifest["metrics"]["mse"], rel=1e-4)
    assert "- Test mse " in (bundle / "README.md").read_text()


def test_the_token_classification_example_prints_a_tag_per_word(tmp_path: Path) -> None:
    data = tagged_data(tmp_path)
    bundle = _bundle(tmp_path, data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    sentences, tags = _column(data["test"], 0), _column(data["test"], 1)
    right = total = 0
    for line, sentence, gold in zip(_readme_answers(bundle, sentences), sentences, tags, strict=True):
        pairs = [pair.rsplit("/", 1) for pair in line.split(" ")]
        assert [word for word, _ in pairs] == sentence.split(" ")  # every word once, in order
        right += sum(tag == want for (_, tag), want in zip(pairs, gold.split(" "), strict=True))
        total += len(pairs)
    assert right / total == pytest.approx(manifest["metrics"]["token_accuracy"])


def _text_manifest(task: str, inputs: tuple[str, ...]) -> dict[str, Any]:
    classes = ("B-LOC", "O") if task == "token_classification" else ("a", "b", "c")
    return {
        "name": "m", "edgekd_version": "0", "device": {"name": "d"},
        "model": {"file": "model.ort", "format": "ort", "opset": 17, "onnxruntime": "1.20.0"},
        "latency": {"p50_ms": 1.0, "p90_ms": 2.0, "basis": "measured"},
        "inputs": [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in inputs],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(classes)]}],
        "labels": list(classes) if task != "regression" else ["label"], "accuracy": {"test": None},
        "preprocessing": {"kind": "text", "max_length": 48, "pad_id": 0, "strip": True},
        "tokenizer": {"directory": "tokenizer", "files": ["tokenizer.json"]},
        "postprocessing": {"output": "logits", **postprocessing(task, classes)},
    }


@pytest.mark.parametrize(("task", "returns", "reads"), [
    ("single_label", "String", "val best = logits.indices.maxByOrNull { logits[it] }!!\n"
                               "            return LABELS[best]"),
    ("multi_label", "List<String>", "kotlin.math.exp(-logits[i])) > 0.5f"),
    ("regression", "FloatArray", "return (result[0].value as Array<FloatArray>)[0]"),
    ("token_classification", "List<String>", "(result[0].value as Array<Array<FloatArray>>)[0]"),
])
def test_the_kotlin_example_of_a_text_model_feeds_every_input_as_int64(task: str, returns: str, reads: str) -> None:
    readme = render_readme(_text_manifest(task, ("input_ids", "attention_mask", "token_type_ids")))
    kotlin = readme.split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert "import java.nio.LongBuffer" in kotlin and "FloatBuffer" not in kotlin
    assert f"fun classify(ids: LongArray, length: Int): {returns} {{" in kotlin and reads in kotlin
    assert '"input_ids" to ids,' in kotlin
    assert '"attention_mask" to LongArray(ids.size) { i -> if (i < length) 1L else 0L },' in kotlin
    assert '"token_type_ids" to LongArray(ids.size))' in kotlin
    assert "padded with 0 or cut to 48" in kotlin and "leading and trailing whitespace removed" in kotlin
    assert kotlin.count("{") == kotlin.count("}")


def test_a_text_bundle_says_to_strip_whitespace_as_training_did(tmp_path: Path) -> None:
    """The data loaders strip every text (SST-2's sentences end with a space); a byte-level BPE reads a trailing
    space as a token of its own, so an app feeding the raw sentence got other ids than training (another
    answer). The manifest says so, and the README's examples strip."""
    from edgekd.data.config import TextFileData
    from edgekd.export.manifest import preprocessing
    from tests.test_byo_text_inputs import _byte_level_tokenizer

    pre = preprocessing(TextFileData(source="tsv", train=tmp_path / "t.tsv", test=tmp_path / "t.tsv"),
                        {"kind": "text", "max_length": 48, "pad_id": 0}, [])
    assert pre["strip"] is True and "remove leading and trailing whitespace" in pre["note"]
    readme = render_readme({**_text_manifest("single_label", ("input_ids", "attention_mask")), "preprocessing": pre})
    assert "Remove leading and trailing whitespace (training did), then tokenize" in readme
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.index("sentence = sentence.strip()") < code.index("encoded = tokenizer([sentence]")
    from transformers import AutoTokenizer

    bpe = AutoTokenizer.from_pretrained(_byte_level_tokenizer(tmp_path / "bpe", ["a dull story ", "great film"],
                                                              eos_token="<|endoftext|>"))
    assert bpe("a dull story ")["input_ids"] != bpe("a dull story")["input_ids"]  # why it matters
