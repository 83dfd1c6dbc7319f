"""A model whose graph fixes its sequence length (an ONNX teacher exported at 48 tokens) is timed at that length,
not at the device's ``inputs.sequence_length``; the report says so, since its latency and the student's speed-up
over it then compare inputs of different lengths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

import edgekd
from tests.test_paths import wordpiece_tokenizer
from tests.test_text_pipeline import _write_tsv


def _text_teacher(path: Path, length: int) -> Path:
    """Mean-pooled word vectors into 2 classes, its input fixed at ``length`` tokens."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "vectors"),
               numpy_helper.from_array(rng.normal(size=(8, 2)).astype(np.float32), "w"),
               numpy_helper.from_array(np.zeros(2, np.float32), "b")]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["vectors", "input_ids"], ["embedded"]),
         helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["scores"]), helper.make_node("Add", ["scores", "b"], ["logits"])],
        "teacher", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", length])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_a_teacher_fixed_at_a_longer_sequence_is_reported_at_its_own_length(tmp_path: Path) -> None:
    _write_tsv(tmp_path / "train.tsv", 200, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 40, seed=2)
    _text_teacher(tmp_path / "teacher.onnx", length=48)
    wordpiece_tokenizer(tmp_path / "tokenizer")
    (tmp_path / "phone.yaml").write_text(yaml.safe_dump({
        "name": "short-phone", "threads": 1, "inputs": {"batch": 1, "sequence_length": 16},
        "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}}))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "name": "lengths", "device": "phone.yaml", "threads": 1,
        "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 20},
        "tokenizer": {"pretrained": "tokenizer", "max_length": 32},
        "teacher": {"model": {"arch": "onnx", "path": "teacher.onnx"}}, "student": {"model": {"arch": "textcnn"}},
        "stages": [{"stage": "teacher"}, {"stage": "distill", "epochs": 1}, {"stage": "export"},
                   {"stage": "profile", "warmup": 1, "runs": 10}, {"stage": "report"}]}))
    result = edgekd.run(recipe, out=tmp_path / "run")

    profile = next(record for record in edgekd.open_run(result.run_dir).stages if record["stage"] == "profile")
    shapes = {role: profile["metrics"][role]["input_shapes"] for role in ("teacher", "student")}
    assert shapes["teacher"] == {"input_ids": [1, 48]}
    assert {tuple(dims) for dims in shapes["student"].values()} == {(1, 16)}
    report = json.loads((result.run_dir / "report.json").read_text())
    assert ("The teacher was timed at 48 tokens (its graph fixes that length), not at the device's sequence_length "
            "16 ('short-phone'): its latency, and any speed-up over it, compare inputs of different lengths (export "
            "it with a dynamic sequence axis to time it at the device's length).") in report["warnings"]
    assert not any("The student was timed" in warning for warning in report["warnings"])
    assert "The teacher was timed at 48 tokens" in (result.run_dir / "report.md").read_text()


def _two_input_model(path: Path, length: int | str, extra: int) -> Path:
    """Word vectors of ``input_ids`` (``length`` tokens, a name when dynamic) mean-pooled, plus the pooled vectors
    of a second integer input ``bucket_ids`` of a fixed ``[batch, extra]``: ids too, but not a sequence."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(32, 8)).astype(np.float32), "vectors"),
               numpy_helper.from_array(rng.normal(size=(6, 8)).astype(np.float32), "buckets"),
               numpy_helper.from_array(rng.normal(size=(8, 2)).astype(np.float32), "w")]
    graph = helper.make_graph(
        [helper.make_node("Gather", ["vectors", "input_ids"], ["embedded"]),
         helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("Gather", ["buckets", "bucket_ids"], ["bucketed"]),
         helper.make_node("ReduceMean", ["bucketed"], ["bucket"], axes=[1], keepdims=0),
         helper.make_node("Add", ["pooled", "bucket"], ["summed"]),
         helper.make_node("MatMul", ["summed", "w"], ["logits"])],
        "two-inputs", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", length]),
                       helper.make_tensor_value_info("bucket_ids", TensorProto.INT64, ["batch", extra])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_extra_two_dimensional_input_is_not_read_as_a_sequence_length(tmp_path: Path) -> None:
    """A ``[batch, 4]`` input beside the token ids is timed at 4 columns, which are not tokens: the report warns only
    about a graph whose token ids are fixed at another length than the device's, and names that length alone."""
    from edgekd.config.device import DeviceProfile
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from edgekd.profile.inputs import input_specs, length_axes, token_id_limits
    from edgekd.profile.record import ProfileRecord
    from edgekd.profile.runner import profile_onnx
    from edgekd.report.build import _length_warnings

    device = validate_model({"name": "short-phone", "threads": 1, "inputs": {"sequence_length": 16},
                             "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}}, DeviceProfile,
                            source="test")
    _write_tsv(tmp_path / "train.tsv", 20, seed=1)
    text = {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "train.tsv")}
    recipe = validate_model({"name": "lengths", "data": text, "teacher": {"model": {"arch": "textcnn"}},
                             "student": {"model": {"arch": "textcnn"}}, "stages": [{"stage": "teacher"}]},
                            Recipe, source="test")
    dynamic = _two_input_model(tmp_path / "dynamic.onnx", "sequence", extra=4)
    fixed = _two_input_model(tmp_path / "fixed.onnx", 48, extra=4)
    assert length_axes(input_specs(dynamic), token_id_limits(dynamic)) == {"input_ids": 1}

    figures = {}
    for role, path in (("student", dynamic), ("teacher", fixed)):
        result = profile_onnx(path, device, warmup=1, runs=3)
        assert result.input_shapes["bucket_ids"] == [1, 4]
        figures[role] = {**result.model_dump(mode="json"), "macs": 1, "params": 1, "macs_by_op": {}}
    profile = ProfileRecord.model_validate(figures)
    assert profile.models["student"].sequence_length == 16 and profile.models["teacher"].sequence_length == 48
    assert _length_warnings(recipe, device, profile) == [
        "The teacher was timed at 48 tokens (its graph fixes that length), not at the device's sequence_length 16 "
        "('short-phone'): its latency, and any speed-up over it, compare inputs of different lengths (export it with "
        "a dynamic sequence axis to time it at the device's length)."]


def test_profile_and_bench_warn_of_a_graph_timed_at_another_length(tmp_path: Path) -> None:
    """The ``profile`` and ``bench`` verbs say so too: a user's file fixed at 48 tokens, timed for a device of 16."""
    from typer.testing import CliRunner

    from edgekd.cli import app

    (tmp_path / "phone.yaml").write_text(yaml.safe_dump({
        "name": "phone", "threads": 1, "inputs": {"batch": 1, "sequence_length": 16},
        "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}}))
    fixed = _two_input_model(tmp_path / "fixed.onnx", 48, extra=4)
    dynamic = _two_input_model(tmp_path / "dynamic.onnx", "sequence", extra=4)
    expected = ("was timed at 48 tokens (its graph fixes that length), not at the device's sequence_length 16 "
                "('phone'): its latency, and any speed-up over it, compare inputs of different lengths")
    runner = CliRunner()
    profiled = runner.invoke(app, ["profile", str(fixed), "-d", str(tmp_path / "phone.yaml"), "--runs", "10",
                                   "--warmup", "0", "--json"])
    assert profiled.exit_code == 0, profiled.output
    assert [w for w in json.loads(profiled.output)["warnings"] if "tokens" in w] == [
        f"{fixed} {expected} (export it with a dynamic sequence axis to time it at the device's length)."]
    quiet = runner.invoke(app, ["profile", str(dynamic), "-d", str(tmp_path / "phone.yaml"), "--runs", "10",
                                "--warmup", "0", "--json"])
    assert not [w for w in json.loads(quiet.output)["warnings"] if "tokens" in w]
    benched = runner.invoke(app, ["bench", str(dynamic), str(fixed), "-d", str(tmp_path / "phone.yaml"), "--out",
                                  str(tmp_path / "bench"), "--runs", "10", "--warmup", "0", "--rounds", "1"])
    assert benched.exit_code == 0, benched.output
    warnings = json.loads((tmp_path / "bench" / "bench.json").read_text())["warnings"]
    assert [w for w in warnings if "tokens" in w] == [
        f"fixed.onnx {expected} (export it with a dynamic sequence axis to time it at the device's length)."]


def test_a_teacher_fixed_at_a_batch_of_four_is_not_compared_per_batch_with_the_student(tmp_path: Path) -> None:
    """An ONNX teacher exported at batch 4 was timed and counted on four examples and the student on the device's
    one: the report gave p50 latency and MACs ratios (a 1.35x speed-up) as if like for like, with no warning, while
    edgekd profile and bench warned of the same file (probe 48/D2)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    torch.onnx.export(net, torch.zeros(4, 1, 8, 8), tmp_path / "static4.onnx", input_names=["input"],
                      output_names=["logits"], opset_version=17, dynamo=False)
    recipe = {"name": "static-teacher", "device": "host-cpu", "data": {"source": "sklearn", "name": "digits",
                                                                      "limit": 400},
              "teacher": {"model": {"arch": "onnx", "path": str(tmp_path / "static4.onnx")}},
              "student": {"model": {"arch": "mlp", "hidden": [16]}},
              "stages": [{"stage": "teacher"}, {"stage": "distill", "epochs": 1}, {"stage": "export"},
                         {"stage": "profile", "runs": 10, "warmup": 2}, {"stage": "report"}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    report = edgekd.run(tmp_path / "recipe.yaml", out=tmp_path / "run", show_progress=False).report()
    assert [w for w in report["warnings"] if "first axis" in w] == [
        "The teacher was timed on inputs input [4, 1, 8, 8]: its graph fixes their first axis, while the device "
        "profile feeds batches of 1, so its latency (and MACs) are not a batch of 1's (export it with a dynamic batch "
        "axis to compare it with models timed on the device's batch)"]
    comparison = report["comparison"]
    assert comparison["p50_latency_ratio"] is None and comparison["macs_ratio"] is None
    assert comparison["accuracy_ratio"] is not None and comparison["params_ratio"] is not None
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "latency ratio" not in markdown and "val loss ratio" not in markdown and "params ratio" in markdown
