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
    for sentence in sentences:
        printed += _run_readme_python(bundle, code, {"SENTENCE": sentence})[0]
    assert len(printed) == len(sentences)
    return printed


def _run_readme_python(bundle: Path, code: str, names: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """What ``code`` (the README's Python example) prints, run in the bundle directory given ``names``, and the
    names it leaves."""
    printed: list[str] = []
    scope = {**names, "print": lambda *args: printed.append(" ".join(map(str, args)))}
    here = Path.cwd()
    os.chdir(bundle)
    try:
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example, as a user runs it
    finally:
        os.chdir(here)
    return printed, scope


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
        "outputs": [{"name": "logits", "dtype": "float32",  # the graph's: the README reads by its rank
                     "shape": ["batch", "sequence", len(classes)] if task == "token_classification"
                     else ["batch", len(classes)]}],
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
@pytest.mark.parametrize(("dtype", "array", "buffer", "one"), [("int64", "LongArray", "LongBuffer", "1L"),
                                                               ("int32", "IntArray", "IntBuffer", "1")])
def test_the_kotlin_example_of_a_text_model_feeds_every_input_at_its_dtype(
        task: str, returns: str, reads: str, dtype: str, array: str, buffer: str, one: str) -> None:
    """An int32 graph was fed LongBuffer (int64) tensors, which onnxruntime refuses."""
    manifest = _text_manifest(task, ("input_ids", "attention_mask", "token_type_ids"))
    for tensor in manifest["inputs"]:
        tensor["dtype"] = dtype
    kotlin = render_readme(manifest).split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert f"import java.nio.{buffer}\n\n" in kotlin and kotlin.count("Buffer") == 2  # imported, wrapped: only it
    assert f"fun classify(ids: {array}, length: Int): {returns} {{" in kotlin and reads in kotlin
    assert '"input_ids" to tensor(ids),' in kotlin
    assert f'"attention_mask" to tensor({array}(ids.size) {{ i -> if (i < length) {one} else 0{one[1:]} }}),' in kotlin
    assert f'"token_type_ids" to tensor({array}(ids.size)))' in kotlin
    assert f"fun tensor(values: {array}): OnnxTensor =" in kotlin and f"{buffer}.wrap(values)" in kotlin
    assert "padded with 0 or cut to 48" in kotlin and "leading and trailing whitespace removed" in kotlin
    assert "from the bundled tokenizer (tokenizer/)" in kotlin
    assert kotlin.count("{") == kotlin.count("}") and kotlin.count("(") == kotlin.count(")")


def _text_graph(path: Path, dtype: str) -> Path:
    """A text classifier of three ``dtype`` inputs (token ids, attention mask, token type ids): the masked mean of
    the tokens' and segments' embeddings, times a matrix, gives 2 logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    element = {"int64": TensorProto.INT64, "int32": TensorProto.INT32}[dtype]
    names = ("input_ids", "attention_mask", "token_type_ids")
    weights = {"words": (40, 4), "segments": (2, 4), "head": (4, 2)}  # 40 rows: the profile feeds ids below 32
    graph = helper.make_graph(
        [helper.make_node("Gather", ["words", "input_ids"], ["tokens"]),
         helper.make_node("Gather", ["segments", "token_type_ids"], ["types"]),
         helper.make_node("Add", ["tokens", "types"], ["embedded"]),
         helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
         helper.make_node("Unsqueeze", ["mask", "last"], ["column"]),
         helper.make_node("Mul", ["embedded", "column"], ["masked"]),
         helper.make_node("ReduceMean", ["masked"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "head"], ["logits"])],
        "text", [helper.make_tensor_value_info(name, element, ["batch", "sequence"]) for name in names],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [*(numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
           for name, shape in weights.items()), numpy_helper.from_array(np.array([-1], np.int64), "last")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("preprocessing", [None, "kind: text\nmax_length: 16\npad_id: 0\n"], ids=["bare", "text"])
def test_the_python_example_of_a_user_s_text_graph_feeds_every_input_and_answers_as_onnxruntime(
        dtype: str, preprocessing: str | None, tmp_path: Path) -> None:
    """A user's text ONNX of several inputs: the README's Python fed only the first ('Required inputs
    (['attention_mask']) are missing'), and the README pointed to a tokenizer/ folder the bundle does not have."""
    model = _text_graph(tmp_path / "text.onnx", dtype)
    options = []
    if preprocessing:
        (tmp_path / "pre.yaml").write_text(preprocessing)
        options = ["--preprocessing", tmp_path / "pre.yaml"]
    readme, feeds = _bundle_runs_its_readme(model, tmp_path, *options)
    assert "tokenizer/" not in readme and not (tmp_path / "app" / "bundle" / "tokenizer").exists()
    assert "PLACEHOLDER: your text's token ids" in readme
    assert {name: (array.dtype.name, array.shape) for name, array in feeds.items()} == {
        name: (dtype, (1, 16 if preprocessing else 128)) for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()


def test_the_examples_of_a_graph_of_several_float_inputs_feed_each(tmp_path: Path) -> None:
    """Python and Kotlin fed only the first of two float inputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "y"], ["both"], axis=1), helper.make_node("MatMul", ["both", "w"], ["out"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
                helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(rng.normal(size=(10, 2)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "two.onnx"))
    readme, feeds = _bundle_runs_its_readme(tmp_path / "two.onnx", tmp_path)
    assert {name: array.shape for name, array in feeds.items()} == {"x": (1, 6), "y": (1, 4)}
    kotlin = readme.split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert "fun classify(x: FloatArray, y: FloatArray): String {" in kotlin
    assert '"x" to OnnxTensor.createTensor(env, FloatBuffer.wrap(x), longArrayOf(1, 6)),\n' in kotlin
    assert '"y" to OnnxTensor.createTensor(env, FloatBuffer.wrap(y), longArrayOf(1, 4)))' in kotlin


@pytest.mark.parametrize(("dtypes", "arguments", "imports"), [
    (("float32", "float64"), "input_1: FloatArray, input_fun: DoubleArray", ["DoubleBuffer", "FloatBuffer"]),
    (("uint8",), "input_1: ByteArray", ["ByteBuffer"]),
    (("float32", "bfloat16"), "input_1: FloatArray", ["FloatBuffer"]),
])
def test_the_kotlin_example_of_a_model_of_the_users_own_values_takes_each_input_at_its_dtype(
        dtypes: tuple[str, ...], arguments: str, imports: list[str]) -> None:
    """A graph of inputs of several types, or of one byte input, got a FloatBuffer of its first input only; each input
    is now an argument of its own array type, named after it as Kotlin allows."""
    names = ["1", "fun"][:len(dtypes)]
    manifest = {**_text_manifest("single_label", ()), "preprocessing": None, "tokenizer": None,
                "inputs": [{"name": name, "dtype": dtype, "shape": ["batch", 4]}
                           for name, dtype in zip(names, dtypes, strict=True)]}
    kotlin = render_readme(manifest).split("```kotlin\n", 1)[1].split("```", 1)[0]
    assert f"fun classify({arguments}): String {{" in kotlin
    assert [line.removeprefix("import java.nio.") for line in kotlin.splitlines()
            if line.startswith("import java.nio.")] == imports
    if "uint8" in dtypes:
        assert "ByteBuffer.wrap(input_1), longArrayOf(1, 4), ai.onnxruntime.OnnxJavaType.UINT8)" in kotlin
    if "bfloat16" in dtypes:
        assert "\"fun\" to TODO(\"input 'fun' (bfloat16): build its tensor as in training\")" in kotlin
    assert kotlin.count("{") == kotlin.count("}") and kotlin.count("(") == kotlin.count(")")


def _bundle_runs_its_readme(model: Path, tmp_path: Path, *options: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Bundle ``model`` (classes neg and pos) and run its README's Python: the README and the feeds it built, on
    which onnxruntime answers what it printed."""
    import onnxruntime as ort

    from tests.reliability import cli

    (tmp_path / "labels.txt").write_text("neg\npos\n")
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app", "--runs", "10", "--warmup", "0",
                  "--labels", tmp_path / "labels.txt", *options)
    assert outcome.exit_code == 0, outcome.output
    readme = (tmp_path / "app" / "bundle" / "README.md").read_text()
    (printed,), scope = _run_readme_python(tmp_path / "app" / "bundle",
                                           readme.split("```python\n", 1)[1].split("```", 1)[0], {})
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, scope["feeds"])[0][0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert printed == f"{['neg', 'pos'][int(probabilities.argmax())]} {probabilities.max():.4f}"
    return readme, scope["feeds"]


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
