"""An ONNX file as the teacher (``arch: onnx``): distilled from like the PyTorch model it was exported from.

A digits MLP and a tiny BERT text classifier are trained and exported by edgekd itself; a second
recipe names the exported ``teacher.onnx`` as its teacher. The teacher-output cache holds exactly
what onnxruntime computes, the teacher's test accuracy is the PyTorch teacher's, and the student
distilled from it lands within a few points of the one distilled from the PyTorch teacher. Files
and recipes that cannot work are refused by ``edgekd validate`` in one line naming the key, exit 2.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from typer.testing import CliRunner

import edgekd
from edgekd import Distill, Pipeline, Teacher
from edgekd.cli import app
from edgekd.config.recipe import load_recipe
from edgekd.data.task_data import prepare_task_data
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.errors import ConfigError
from edgekd.models.task_model import TaskModel
from tests.test_text_pipeline import _write_tsv

DIGITS = {"source": "sklearn", "name": "digits", "limit": 600}
TEACHER_STAGE = {"stage": "teacher", "epochs": 8, "lr": 0.01}
DISTILL_STAGE = {"stage": "distill", "epochs": 8, "lr": 0.01}


def _write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe))
    return path


def _metrics(run: Path) -> dict[str, dict[str, Any]]:
    return {record["stage"]: record["metrics"] for record in edgekd.open_run(run).stages}


@pytest.fixture(scope="module")
def digits_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A PyTorch MLP teacher trained and distilled, then its exported ONNX file as the teacher of the same recipe."""
    folder = tmp_path_factory.mktemp("onnx-teacher-digits")
    base = {"seed": 0, "device": "host-cpu", "threads": 1, "data": DIGITS,
            "student": {"model": {"arch": "mlp", "hidden": [16]}}}
    torch_recipe = _write(folder / "torch.yaml", {
        **base, "name": "torch-teacher", "teacher": {"model": {"arch": "mlp", "hidden": [64]}},
        "stages": [TEACHER_STAGE, DISTILL_STAGE, {"stage": "export", "target": "onnx-fp32"}]})
    edgekd.run(torch_recipe, out=folder / "torch-run")
    shutil.copy(folder / "torch-run" / "03-export" / "teacher.onnx", folder / "teacher.onnx")
    onnx_recipe = _write(folder / "onnx.yaml", {
        **base, "name": "onnx-teacher", "teacher": {"model": {"arch": "onnx", "path": "teacher.onnx"}},
        "stages": [TEACHER_STAGE, {**DISTILL_STAGE, "teacher_cache_dir": str(folder / "cache")},
                   {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 1, "runs": 10}]})
    edgekd.run(onnx_recipe, out=folder / "onnx-run")
    return folder, folder / "torch-run", folder / "onnx-run"


def _cached_logits(cache_root: Path) -> np.ndarray:
    (directory,) = [path for path in cache_root.iterdir() if (path / "cache.json").is_file()]
    return np.asarray(TeacherOutputCache(directory).logits)


def test_the_cached_teacher_logits_are_onnxruntimes_outputs(digits_runs: tuple[Path, Path, Path]) -> None:
    folder, _, onnx_run = digits_runs
    teacher = TaskModel.load(edgekd.open_run(onnx_run).model_dir("teacher"))
    data = prepare_task_data(load_recipe(folder / "onnx.yaml").data, 0)
    session = ort.InferenceSession(str(folder / "teacher.onnx"), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    expected = np.zeros((len(data.train), 10), dtype=np.float32)
    for idx, inputs, _labels in data.train.batches(64, shuffle=False):
        expected[np.asarray(idx)] = session.run(None, {name: inputs["input"].numpy()})[0]
    np.testing.assert_allclose(_cached_logits(folder / "cache"), expected, atol=1e-5)
    graph = onnx.load(str(folder / "teacher.onnx")).graph
    assert teacher.params == sum(int(np.prod(tensor.dims)) for tensor in graph.initializer)


def test_onnx_teacher_scores_and_teaches_like_the_pytorch_teacher(digits_runs: tuple[Path, Path, Path]) -> None:
    folder, torch_run, onnx_run = digits_runs
    torch_metrics, onnx_metrics = _metrics(torch_run), _metrics(onnx_run)
    torch_teacher, onnx_teacher = torch_metrics["teacher"]["teacher"], onnx_metrics["teacher"]["teacher"]
    assert onnx_teacher["accuracy"] == pytest.approx(torch_teacher["accuracy"], abs=1e-9)
    assert onnx_teacher["params"] == torch_teacher["params"]
    assert onnx_teacher["onnx"]["path"] == str(folder / "teacher.onnx")
    assert onnx_teacher["onnx"]["inputs"] == ["input"] and onnx_teacher["onnx"]["output"] == "logits"
    assert "epochs_run" not in onnx_teacher  # evaluated, never trained
    torch_student, onnx_student = torch_metrics["distill"]["student"], onnx_metrics["distill"]["student"]
    assert abs(onnx_student["accuracy"] - torch_student["accuracy"]) <= 0.03
    assert onnx_student["accuracy"] > 0.3  # 10 classes: chance is 0.1
    # the teacher is not exported again: its own file (copied into the teacher stage) is profiled beside the student
    assert "teacher" not in onnx_metrics["export"] and "student" in onnx_metrics["export"]
    profile = onnx_metrics["profile"]
    assert profile["teacher"]["p50_ms"] > 0 and "speedup" in profile["student"]  # the student timed against it


def test_a_changed_onnx_file_reruns_the_teacher_stage(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, _, _ = digits_runs
    shutil.copy(folder / "teacher.onnx", tmp_path / "teacher.onnx")
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["stages"] = [TEACHER_STAGE]
    path = _write(tmp_path / "r.yaml", recipe)
    edgekd.run(path, out=tmp_path / "run")
    model = onnx.load(str(tmp_path / "teacher.onnx"))
    bias = next(t for t in model.graph.initializer if len(t.dims) == 1 and t.dims[0] == 10)
    values = onnx.numpy_helper.to_array(bias).copy()
    values[0] += 5.0  # class 0 is now favoured: a different teacher
    bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(tmp_path / "teacher.onnx"))
    assert [step.status for step in edgekd.plan(path, out=tmp_path / "run")] == ["re-runs"]
    with pytest.raises(ConfigError, match=r"teacher.model.path: '.*teacher.onnx' changed since the teacher stage "
                                          r"read it \(its SHA-256 differs\); re-run the teacher stage$"):
        TaskModel.load(edgekd.open_run(tmp_path / "run").model_dir("teacher"))


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny BERT teacher trained on a TSV and exported, then the ONNX file with its saved tokenizer as teacher."""
    folder = tmp_path_factory.mktemp("onnx-teacher-text")
    _write_tsv(folder / "train.tsv", 400, seed=1)
    _write_tsv(folder / "dev.tsv", 80, seed=2)
    training = {"epochs": 5, "batch_size": 16, "lr": 0.003, "warmup_ratio": 0.1}
    base = {"seed": 0, "device": "host-cpu", "threads": 1,
            "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 80},
            "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}}}
    stages = [{"stage": "teacher", **training}, {"stage": "distill", **training}]
    torch_recipe = _write(folder / "torch.yaml", {
        **base, "name": "bert-teacher", "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 2, "hidden": 32, "heads": 2, "ffn": 64}},
        "stages": [*stages, {"stage": "export", "target": "onnx-fp32"}]})
    edgekd.run(torch_recipe, out=folder / "torch-run")
    shutil.copy(folder / "torch-run" / "03-export" / "teacher.onnx", folder / "teacher.onnx")
    tokenizer = folder / "tokenizer"
    TaskModel.load(edgekd.open_run(folder / "torch-run").model_dir("teacher")).tokenizer.save_pretrained(tokenizer)
    onnx_recipe = _write(folder / "onnx.yaml", {
        **base, "name": "onnx-bert-teacher", "tokenizer": {"pretrained": "tokenizer", "max_length": 32},
        "teacher": {"model": {"arch": "onnx", "path": "teacher.onnx"}},
        "stages": [stages[0], {**stages[1], "teacher_cache_dir": str(folder / "cache")}]})
    edgekd.run(onnx_recipe, out=folder / "onnx-run")
    return folder, folder / "torch-run", folder / "onnx-run"


def test_text_onnx_teacher_feeds_its_graph_inputs_and_teaches_like_pytorch(text_runs: tuple[Path, Path, Path]) -> None:
    folder, torch_run, onnx_run = text_runs
    torch_metrics, onnx_metrics = _metrics(torch_run), _metrics(onnx_run)
    assert onnx_metrics["teacher"]["teacher"]["accuracy"] == pytest.approx(
        torch_metrics["teacher"]["teacher"]["accuracy"], abs=1e-9)
    assert onnx_metrics["teacher"]["teacher"]["onnx"]["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    # the graph's weights, not the exporter's constants (BERT's int64 position ids, scalars)
    assert onnx_metrics["teacher"]["teacher"]["params"] == torch_metrics["teacher"]["teacher"]["params"]
    assert abs(onnx_metrics["distill"]["student"]["accuracy"] - torch_metrics["distill"]["student"]["accuracy"]) <= 0.05
    data = prepare_task_data(load_recipe(folder / "onnx.yaml").data, 0,
                             tokenizer=TaskModel.load(edgekd.open_run(onnx_run).model_dir("teacher")).tokenizer)
    session = ort.InferenceSession(str(folder / "teacher.onnx"), providers=["CPUExecutionProvider"])
    expected = np.zeros((len(data.train), 2), dtype=np.float32)
    for idx, inputs, _labels in data.train.batches(64, shuffle=False):
        expected[np.asarray(idx)] = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    np.testing.assert_allclose(_cached_logits(folder / "cache"), expected, atol=1e-5)


def test_a_python_pipeline_takes_the_onnx_file_as_its_teacher(digits_runs: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    folder, _, onnx_run = digits_runs
    pipeline = Pipeline(name="py-onnx-teacher", data=DIGITS, teacher=folder / "teacher.onnx",
                        student={"arch": "mlp", "hidden": [16]}, threads=1,
                        stages=[Teacher(epochs=1), Distill(epochs=8, lr=0.01)])
    assert pipeline.recipe.teacher.model.arch == "onnx"
    pipeline.run(out=tmp_path / "run")
    teacher = _metrics(tmp_path / "run")["teacher"]["teacher"]
    assert teacher["accuracy"] == _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]


# ---- refusals: edgekd validate, one line naming the key, exit 2 ---------------------------------------------------

def _validate(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(path)])
    return result.exit_code, result.output.strip()


def _refusal(folder: Path, tmp_path: Path, teacher: dict[str, Any], **changes: Any) -> str:
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"] = {"model": teacher}
    for key, value in changes.items():
        recipe[key] = value
    for name in ("teacher.onnx", "tokenizer", "train.tsv", "dev.tsv"):
        if (folder / name).exists() and not (tmp_path / name).exists():
            (shutil.copytree if (folder / name).is_dir() else shutil.copy)(folder / name, tmp_path / name)
    code, output = _validate(_write(tmp_path / "recipe.yaml", recipe))
    assert code == 2, output
    assert len(output.splitlines()) == 1, output
    return output


def test_an_fp16_graph_onnxruntime_converted_is_taken_though_onnx_checker_objects(
        digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """onnxruntime's float16 converter (keep_io_types) leaves its input casts out of topological order: onnxruntime
    runs the graph, profile and bundle took it, but the teacher refused it ('Nodes in a graph must be topologically
    sorted', cut before the node's name)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    half = convert_float_to_float16(onnx.load(str(digits_runs[0] / "teacher.onnx")), keep_io_types=True)
    onnx.save(half, str(tmp_path / "teacher.onnx"))
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(str(tmp_path / "teacher.onnx"))
    recipe = yaml.safe_load((digits_runs[0] / "onnx.yaml").read_text())
    code, output = _validate(_write(tmp_path / "recipe.yaml", recipe))
    assert code == 0, output


def test_a_missing_file_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = _refusal(digits_runs[0], tmp_path, {"arch": "onnx", "path": "nowhere.onnx"})
    assert "teacher.model.path" in out and "model file not found" in out


def test_a_file_that_is_not_onnx_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    (tmp_path / "fake.onnx").write_bytes(b"this is not a protobuf\x00\xff")
    out = _refusal(digits_runs[0], tmp_path, {"arch": "onnx", "path": "fake.onnx"})
    assert "teacher.model.path" in out and "not a readable ONNX model" in out


def test_a_missing_external_data_file_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    model = onnx.load(str(digits_runs[0] / "teacher.onnx"))
    onnx.save_model(model, str(tmp_path / "split.onnx"), save_as_external_data=True, location="split.data",
                    size_threshold=0)
    (tmp_path / "split.data").unlink()
    out = _refusal(digits_runs[0], tmp_path, {"arch": "onnx", "path": "split.onnx"})
    assert "teacher.model.path" in out and "external data file 'split.data' not found" in out


def test_an_output_of_other_class_count_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The digits graph cut to its first 3 logits: the same inputs, 3 classes where the data has 10."""
    model = onnx.load(str(digits_runs[0] / "teacher.onnx"))
    graph = model.graph
    old = graph.output[0].name
    starts, ends, axes = (onnx.numpy_helper.from_array(np.array([v], dtype=np.int64), n)
                          for v, n in ((0, "s"), (3, "e"), (1, "a")))
    graph.initializer.extend([starts, ends, axes])
    for node in graph.node:
        node.output[:] = [f"{o}_full" if o == old else o for o in node.output]
    graph.node.append(onnx.helper.make_node("Slice", [f"{old}_full", "s", "e", "a"], [old]))
    graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3
    onnx.save(model, str(tmp_path / "three.onnx"))
    out = _refusal(digits_runs[0], tmp_path, {"arch": "onnx", "path": "three.onnx"})
    assert out.endswith("teacher.model.path: 'three.onnx': its output 'logits' is [batch, 3]; expected logits "
                        "['batch', 10] (10 classes in the data)") or "expected logits ['batch', 10]" in out


def test_an_image_input_of_another_shape_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """A valid graph over 3 × 8 × 8 images (flatten, one matrix product), given the digits' 1 × 8 × 8."""
    weights = onnx.numpy_helper.from_array(np.ones((192, 10), dtype=np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Flatten", ["x"], ["flat"]), onnx.helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "rgb", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])], [weights])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "rgb.onnx"))
    out = _refusal(digits_runs[0], tmp_path, {"arch": "onnx", "path": "rgb.onnx"})
    assert "teacher.model.path" in out and "graph input 'x' is tensor(float) [N, 3, 8, 8]" in out
    assert "the data's inputs are float ['batch', 1, 8, 8]" in out


def test_graph_inputs_the_tokenizer_does_not_give_are_refused(text_runs: tuple[Path, Path, Path],
                                                               tmp_path: Path) -> None:
    model = onnx.load(str(text_runs[0] / "teacher.onnx"))
    for node in model.graph.node:
        node.input[:] = ["ids" if name == "input_ids" else name for name in node.input]
    model.graph.input[0].name = "ids"
    onnx.save(model, str(tmp_path / "renamed.onnx"))
    out = _refusal(text_runs[0], tmp_path, {"arch": "onnx", "path": "renamed.onnx"})
    assert "teacher.model.path" in out and "input 'ids'" in out and "input_ids" in out


def test_a_student_starting_from_the_onnx_teachers_embeddings_is_refused(text_runs: tuple[Path, Path, Path],
                                                                         tmp_path: Path) -> None:
    recipe = yaml.safe_load((text_runs[0] / "onnx.yaml").read_text())
    student = {**recipe["student"]["model"], "embeddings": "teacher"}
    out = _refusal(text_runs[0], tmp_path, recipe["teacher"]["model"], student={"model": student})
    assert "student.model.embeddings" in out and "exposes only its outputs" in out


def test_rows_longer_than_the_teachers_positions_are_refused(text_runs: tuple[Path, Path, Path],
                                                            tmp_path: Path) -> None:
    """The BERT teacher has 512 positions: a tokenizer max_length of 600 would fail mid-distillation."""
    out = _refusal(text_runs[0], tmp_path, {"arch": "onnx", "path": "teacher.onnx"},
                   tokenizer={"pretrained": "tokenizer", "max_length": 600})
    assert "teacher.model.path" in out and "onnxruntime fails on the data's inputs (input_ids [1, 600]" in out


def test_text_without_the_teachers_tokenizer_is_refused(text_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = _refusal(text_runs[0], tmp_path, {"arch": "onnx", "path": "teacher.onnx"},
                   tokenizer={"vocab_size": 200, "max_length": 32})
    assert "tokenizer.pretrained" in out and "ONNX teacher" in out


def test_a_tokenizer_larger_than_the_teachers_embedding_is_refused(text_runs: tuple[Path, Path, Path],
                                                                   tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(text_runs[0] / "tokenizer"))
    tokenizer.add_tokens([f"extra{i}" for i in range(100)])
    tokenizer.save_pretrained(str(tmp_path / "bigger"))
    out = _refusal(text_runs[0], tmp_path, {"arch": "onnx", "path": "teacher.onnx"},
                   tokenizer={"pretrained": "bigger", "max_length": 32})
    rows = len(tokenizer) - 100  # the teacher's own tokenizer: one embedding row per token
    assert "tokenizer.pretrained: " in out and f"bigger' has {len(tokenizer)} tokens, but the input_ids of " in out
    assert f"teacher.onnx' index an embedding of {rows} rows (ids from {rows} on fail in onnxruntime)" in out, out


@pytest.mark.parametrize("loss", ["hidden", "attention"])
def test_a_loss_reading_internals_is_refused(text_runs: tuple[Path, Path, Path], tmp_path: Path, loss: str) -> None:
    recipe = yaml.safe_load((text_runs[0] / "onnx.yaml").read_text())
    recipe["stages"][1]["losses"] = [{"kind": loss}]
    out = _refusal(text_runs[0], tmp_path, recipe["teacher"]["model"], stages=recipe["stages"])
    assert "stages[1].losses[0].kind" in out and "'onnx' teacher does not have" in out


@pytest.mark.parametrize(("change", "key"), [
    ({"ensemble": {"members": 2}}, "teacher.ensemble"),
    ({"weights": "w.safetensors"}, "teacher.weights"),
])
def test_an_ensemble_or_weights_of_an_onnx_teacher_are_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path,
                                                               change: dict[str, Any], key: str) -> None:
    recipe = yaml.safe_load((digits_runs[0] / "onnx.yaml").read_text())
    recipe["teacher"].update(change)
    shutil.copy(digits_runs[0] / "teacher.onnx", tmp_path / "teacher.onnx")
    code, output = _validate(_write(tmp_path / "recipe.yaml", recipe))
    assert code == 2 and len(output.splitlines()) == 1 and f"{key}:" in output, output


@pytest.mark.parametrize(("stage", "words"), [
    ({"stage": "prune", "role": "teacher", "ratio": 0.5}, "has nothing structured pruning"),
    ({"stage": "factorize", "role": "teacher"}, "cannot be factorized"),
])
def test_pruning_or_factorizing_an_onnx_teacher_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path,
                                                          stage: dict[str, Any], words: str) -> None:
    recipe = yaml.safe_load((digits_runs[0] / "onnx.yaml").read_text())
    recipe["stages"] = [TEACHER_STAGE, stage]
    shutil.copy(digits_runs[0] / "teacher.onnx", tmp_path / "teacher.onnx")
    code, output = _validate(_write(tmp_path / "recipe.yaml", recipe))
    assert code == 2 and len(output.splitlines()) == 1 and words in output and "stages[1]" in output, output


def test_an_onnx_student_is_refused(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    recipe = yaml.safe_load((digits_runs[0] / "onnx.yaml").read_text())
    recipe["student"] = {"model": {"arch": "onnx", "path": "teacher.onnx"}}
    shutil.copy(digits_runs[0] / "teacher.onnx", tmp_path / "teacher.onnx")
    code, output = _validate(_write(tmp_path / "recipe.yaml", recipe))
    assert code == 2 and "student.model.arch" in output and "teacher only" in output, output


def test_the_teacher_record_reads_back_typed(digits_runs: tuple[Path, Path, Path]) -> None:
    from edgekd.distill.record import read_teacher_record

    record_path = digits_runs[2] / "01-teacher" / "stage.json"
    record = read_teacher_record(json.loads(record_path.read_text()))
    assert record.teacher.onnx is not None and len(record.teacher.onnx.sha256) == 64


def test_a_live_onnx_teacher_teaches_as_its_cached_outputs_do(digits_runs: tuple[Path, Path, Path],
                                                             tmp_path: Path) -> None:
    """``cache_teacher: false``: onnxruntime runs on every training batch; the student is the cached run's."""
    folder, _, onnx_run = digits_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(folder / "teacher.onnx")
    recipe["stages"] = [TEACHER_STAGE, {**DISTILL_STAGE, "cache_teacher": False}]
    edgekd.run(_write(tmp_path / "live.yaml", recipe), out=tmp_path / "run")
    live = _metrics(tmp_path / "run")["distill"]["student"]["accuracy"]
    assert live == pytest.approx(_metrics(onnx_run)["distill"]["student"]["accuracy"], abs=0.02)


@pytest.mark.slow
def test_a_budget_search_distils_its_candidates_from_the_onnx_teacher(digits_runs: tuple[Path, Path, Path],
                                                                     tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The search's candidate runs evaluate the same file (no teacher.weights for a fixed teacher)."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    folder, _, onnx_run = digits_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(folder / "teacher.onnx")
    recipe["stages"] = [TEACHER_STAGE, {
        "stage": "search", "space": {"hidden": [[16], [32]]}, "prune": [0.0], "precision": ["fp32"], "top_k": 1,
        "distill": {"epochs": 8, "lr": 0.01}, "table": {"warmup": 3, "runs": 20, "rounds": 1}, "confirm_runs": 30}]
    edgekd.run(_write(tmp_path / "search.yaml", recipe), out=tmp_path / "run")
    chosen = _metrics(tmp_path / "run")["search"]["search"]["chosen"]
    assert chosen["label"].startswith("mlp hidden=") and chosen["accuracy"] > 0.3  # 10 classes: chance is 0.1


@pytest.mark.parametrize("task", ["multi_label", pytest.param("regression", marks=pytest.mark.slow),
                                  pytest.param("token_classification", marks=pytest.mark.slow)])
def test_an_onnx_teacher_of_another_task_scores_as_its_pytorch_model(task: str, tmp_path: Path) -> None:
    """Multi-label ([batch, labels] logits, sigmoid targets), regression ([batch, 1] values) and token
    classification ([batch, sequence, tags] logits) teachers."""
    from tests.test_tasks import _tsv
    from tests.test_token_classification import tagged_data

    data = tagged_data(tmp_path, task=task) if task == "token_classification" else {**_tsv(tmp_path, task),
                                                                                    "task": task}
    training = {"epochs": 3, "batch_size": 16, "lr": 0.003}
    base = {"seed": 0, "device": "host-cpu", "threads": 1, "data": data,
            "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}}}
    edgekd.run(_write(tmp_path / "torch.yaml", {
        **base, "name": "torch-task", "tokenizer": {"vocab_size": 100, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}},
        "stages": [{"stage": "teacher", **training}, {"stage": "export", "target": "onnx-fp32"}]}), out=tmp_path / "a")
    TaskModel.load(edgekd.open_run(tmp_path / "a").model_dir("teacher")).tokenizer.save_pretrained(tmp_path / "tok")
    edgekd.run(_write(tmp_path / "onnx.yaml", {
        **base, "name": "onnx-task", "tokenizer": {"pretrained": str(tmp_path / "tok"), "max_length": 32},
        "teacher": {"model": {"arch": "onnx", "path": str(tmp_path / "a" / "02-export" / "teacher.onnx")}},
        "stages": [{"stage": "teacher"}, {"stage": "distill", **training}]}), out=tmp_path / "b")
    torch_teacher = _metrics(tmp_path / "a")["teacher"]["teacher"]
    onnx_metrics = _metrics(tmp_path / "b")
    figure = {"multi_label": "micro_f1", "regression": "pearson", "token_classification": "token_accuracy"}[task]
    assert onnx_metrics["teacher"]["teacher"][figure] == pytest.approx(torch_teacher[figure], abs=1e-6)
    assert onnx_metrics["distill"]["student"][figure] is not None


def _fixed(source: Path, target: Path, axis: int, size: int) -> Path:
    """``source`` with axis ``axis`` of every graph input fixed to ``size`` (as exported for a static runtime)."""
    model = onnx.load(str(source))
    for value in model.graph.input:
        value.type.tensor_type.shape.dim[axis].dim_value = size
    onnx.save(model, str(target))
    return target


def test_a_graph_of_fixed_batch_runs_on_chunks_of_it(digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, _, onnx_run = digits_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(_fixed(folder / "teacher.onnx", tmp_path / "one.onnx", 0, 1))
    recipe["stages"] = [TEACHER_STAGE]
    edgekd.run(_write(tmp_path / "r.yaml", recipe), out=tmp_path / "run")
    accuracy = _metrics(tmp_path / "run")["teacher"]["teacher"]["accuracy"]
    assert accuracy == _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]


def _hidden_first(source: Path, target: Path) -> Path:
    """``source`` returning its first hidden layer's activations before its logits, renamed ``scores``."""
    model = onnx.load(str(source))
    graph = model.graph
    (logits,) = graph.output
    relu = next(node for node in graph.node if node.op_type == "Relu").output[0]
    for node in graph.node:
        node.output[:] = ["scores" if name == logits.name else name for name in node.output]
    logits.name = "scores"
    del graph.output[:]
    graph.output.extend([onnx.helper.make_tensor_value_info(relu, onnx.TensorProto.FLOAT, ["batch", None]),
                         logits])
    onnx.save(model, str(target))
    return target


def test_a_graph_returning_hidden_states_before_its_logits_is_read_at_its_logits(
        digits_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """No output named ``logits``; the first is [batch, 64] hidden states: the [batch, 10] one is read."""
    folder, _, onnx_run = digits_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(_hidden_first(folder / "teacher.onnx", tmp_path / "hidden.onnx"))
    recipe["stages"] = [TEACHER_STAGE]
    edgekd.run(_write(tmp_path / "r.yaml", recipe), out=tmp_path / "run")
    teacher = _metrics(tmp_path / "run")["teacher"]["teacher"]
    assert teacher["onnx"]["output"] == "scores"
    assert teacher["accuracy"] == _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]


def _decoy_first(source: Path, target: Path) -> Path:
    """``source`` with its logits renamed ``scores`` and, first among its outputs, their negation ``decoy``: two
    outputs of the logits' shape, the first not the logits."""
    model = onnx.load(str(source))
    graph = model.graph
    (logits,) = graph.output
    for node in graph.node:
        node.output[:] = ["scores" if name == logits.name else name for name in node.output]
    logits.name = "scores"
    graph.node.append(onnx.helper.make_node("Neg", ["scores"], ["decoy"]))
    decoy = onnx.helper.make_tensor_value_info("decoy", onnx.TensorProto.FLOAT, ["batch", 10])
    graph.output.insert(0, decoy)
    onnx.save(model, str(target))
    return target


def test_a_graph_with_two_outputs_of_the_logits_shape_reads_the_one_the_recipe_names(
        digits_runs: tuple[Path, Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, _, onnx_run = digits_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    path = _decoy_first(folder / "teacher.onnx", tmp_path / "decoy.onnx")
    recipe["teacher"]["model"]["path"] = str(path)
    recipe["stages"] = [TEACHER_STAGE]
    with caplog.at_level("WARNING", logger="edgekd.models.onnx_teacher"):
        edgekd.run(_write(tmp_path / "first.yaml", recipe), out=tmp_path / "first")
    assert _metrics(tmp_path / "first")["teacher"]["teacher"]["onnx"]["output"] == "decoy"
    assert "outputs 'scores' fit the logits ['batch', 10] too; reading 'decoy' (the first) as the logits: set " \
           "teacher.model.output to read another" in caplog.text
    recipe["teacher"]["model"]["output"] = "scores"
    edgekd.run(_write(tmp_path / "named.yaml", recipe), out=tmp_path / "named")
    teacher = _metrics(tmp_path / "named")["teacher"]["teacher"]
    assert teacher["onnx"]["output"] == "scores"
    assert teacher["accuracy"] == _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]
    out = _refusal(folder, tmp_path, {"arch": "onnx", "path": str(path), "output": "probabilities"})
    assert "teacher.model.output" in out
    assert "'probabilities' is not an output of the graph (its outputs: 'decoy', 'scores')" in out


def test_a_graph_of_fixed_sequence_gets_padded_rows(text_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, _, onnx_run = text_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(_fixed(folder / "teacher.onnx", tmp_path / "fixed.onnx", 1, 40))
    recipe["tokenizer"]["pretrained"] = str(folder / "tokenizer")
    recipe["data"].update(train=str(folder / "train.tsv"), test=str(folder / "dev.tsv"))
    recipe["stages"] = [recipe["stages"][0]]
    edgekd.run(_write(tmp_path / "r.yaml", recipe), out=tmp_path / "run")
    accuracy = _metrics(tmp_path / "run")["teacher"]["teacher"]["accuracy"]
    assert accuracy == _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]
    recipe["tokenizer"]["max_length"] = 64
    code, output = _validate(_write(tmp_path / "long.yaml", recipe))
    assert code == 2 and output.endswith("its inputs are fixed to 40 tokens, but the tokenizer's rows reach "
                                         "max_length 64; set tokenizer.max_length to at most 40"), output


def _int32_inputs(source: Path, target: Path) -> Path:
    """``source`` taking int32 token ids (cast to int64 inside the graph), as some mobile exports do."""
    model = onnx.load(str(source))
    graph = model.graph
    for value in graph.input:
        for node in graph.node:
            node.input[:] = [f"{name}_int64" if name == value.name else name for name in node.input]
        graph.node.insert(0, onnx.helper.make_node("Cast", [value.name], [f"{value.name}_int64"],
                                                   to=onnx.TensorProto.INT64))
        value.type.tensor_type.elem_type = onnx.TensorProto.INT32
    onnx.checker.check_model(model)
    onnx.save(model, str(target))
    return target


def test_a_graph_of_int32_token_ids_is_fed_int32(text_runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    folder, _, onnx_run = text_runs
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(_int32_inputs(folder / "teacher.onnx", tmp_path / "int32.onnx"))
    recipe["tokenizer"]["pretrained"] = str(folder / "tokenizer")
    recipe["data"].update(train=str(folder / "train.tsv"), test=str(folder / "dev.tsv"))
    recipe["stages"] = [recipe["stages"][0]]
    edgekd.run(_write(tmp_path / "r.yaml", recipe), out=tmp_path / "run")
    assert _metrics(tmp_path / "run")["teacher"]["teacher"]["accuracy"] == \
        _metrics(onnx_run)["teacher"]["teacher"]["accuracy"]


def test_a_graph_fixed_shorter_than_the_devices_sequence_is_refused(text_runs: tuple[Path, Path, Path],
                                                                    tmp_path: Path) -> None:
    """The profiler would time a teacher fixed to 40 tokens at 40, the student at the device's 128: the speed-up
    would compare different inputs. Refused by validate (and dry runs) like a BERT with too few positions."""
    folder = text_runs[0]
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(_fixed(folder / "teacher.onnx", tmp_path / "fixed.onnx", 1, 40))
    recipe["tokenizer"]["pretrained"] = str(folder / "tokenizer")
    recipe["data"].update(train=str(folder / "train.tsv"), test=str(folder / "dev.tsv"))
    recipe["stages"] = [*recipe["stages"], {"stage": "export"}, {"stage": "profile", "runs": 10}]
    path = _write(tmp_path / "r.yaml", recipe)
    for command in (["validate", str(path)], ["run", "--dry-run", str(path), "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        assert ("teacher.model: it takes at most 40 tokens, but device 'host-cpu' feeds inputs.sequence_length 128"
                in " ".join(result.output.split())), result.output
    device = tmp_path / "seq40.yaml"
    device.write_text(yaml.safe_dump({"name": "seq40", "threads": 1, "inputs": {"batch": 1, "sequence_length": 40},
                                      "budget": {"p90_ms": 20, "size_mb": 50, "peak_memory_mb": 500}}))
    fits = CliRunner().invoke(app, ["validate", str(path), "--device", str(device)])
    assert fits.exit_code == 0, fits.output
    recipe["stages"] = recipe["stages"][:2]  # nothing timed on the device: its length does not matter
    code, output = _validate(_write(tmp_path / "untimed.yaml", recipe))
    assert code == 0, output


def test_a_dynamic_graph_with_fewer_positions_than_the_device_feeds_is_refused(text_runs: tuple[Path, Path, Path],
                                                                                tmp_path: Path) -> None:
    """The exported BERT teacher takes any length up to its 512 positions: a device feeding 600 tokens failed in
    onnxruntime at the profile stage, after training. Validate finds the longest row it runs on."""
    folder = text_runs[0]
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(folder / "teacher.onnx")
    recipe["tokenizer"]["pretrained"] = str(folder / "tokenizer")
    recipe["data"].update(train=str(folder / "train.tsv"), test=str(folder / "dev.tsv"))
    recipe["stages"] = [*recipe["stages"], {"stage": "export"}, {"stage": "profile", "runs": 10}]
    path = _write(tmp_path / "r.yaml", recipe)
    for length, code in ((600, 2), (512, 0)):
        device = tmp_path / f"seq{length}.yaml"
        device.write_text(yaml.safe_dump({"name": f"seq{length}", "threads": 1, "budget": {
            "p90_ms": 20, "size_mb": 50, "peak_memory_mb": 500}, "inputs": {"batch": 1, "sequence_length": length}}))
        result = CliRunner().invoke(app, ["validate", str(path), "--device", str(device)])
        assert result.exit_code == code, result.output
    assert ("teacher.model: it takes at most 512 tokens, but device 'seq600' feeds inputs.sequence_length 600"
            in " ".join(CliRunner().invoke(app, ["validate", str(path), "--device",
                                                 str(tmp_path / "seq600.yaml")]).output.split()))


def test_an_onnx_teacher_answering_with_probabilities_teaches_their_logarithm(digits_runs: tuple[Path, Path, Path],
                                                                               tmp_path: Path) -> None:
    """A graph ending in Softmax (scikit-learn-onnx classifiers, many apps' exports) was read as logits: its
    probabilities, divided by the temperature, softened into near-uniform targets. Their logarithm is the logits up
    to a per-row constant: the cached targets are the logits' log-softmax and the student learns as from logits."""
    folder, _, onnx_run = digits_runs
    model = onnx.load(str(folder / "teacher.onnx"))
    logits = model.graph.output[0]
    model.graph.node.append(onnx.helper.make_node("Softmax", [logits.name], ["probabilities"], axis=-1))
    probabilities = onnx.helper.make_tensor_value_info("probabilities", logits.type.tensor_type.elem_type,
                                                       [d.dim_param or d.dim_value for d in
                                                        logits.type.tensor_type.shape.dim])
    del model.graph.output[:]
    model.graph.output.append(probabilities)
    onnx.save(model, str(tmp_path / "softmax.onnx"))
    recipe = yaml.safe_load((folder / "onnx.yaml").read_text())
    recipe["teacher"]["model"]["path"] = str(tmp_path / "softmax.onnx")
    recipe["stages"] = [TEACHER_STAGE, {**DISTILL_STAGE, "teacher_cache_dir": str(tmp_path / "cache")}]
    edgekd.run(_write(tmp_path / "softmax.yaml", recipe), out=tmp_path / "run")

    original = _cached_logits(folder / "cache")
    shifted = original - original.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    np.testing.assert_allclose(_cached_logits(tmp_path / "cache"), log_softmax, atol=1e-4)
    metrics, reference = _metrics(tmp_path / "run"), _metrics(onnx_run)
    assert metrics["teacher"]["teacher"]["accuracy"] == reference["teacher"]["teacher"]["accuracy"]
    assert metrics["distill"]["student"]["accuracy"] == pytest.approx(reference["distill"]["student"]["accuracy"],
                                                                      abs=0.02)
