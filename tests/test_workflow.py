"""Pipelines as Python objects are recipes: the same validation, the same run, a YAML round trip, runs reopened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import edgekd
from edgekd import Distill, Export, Pipeline, Profile, Report, Teacher
from edgekd.cli.run import print_run
from edgekd.config.recipe import Recipe, load_recipe
from edgekd.console import out
from edgekd.errors import ConfigError, ModelError, StorageError
from edgekd.models.specs import CNNSpec


def _pipeline(**changes) -> Pipeline:
    parts = dict(
        name="objects",
        data={"source": "sklearn", "name": "digits", "limit": 600},
        teacher=CNNSpec(arch="cnn", channels=[16, 32], hidden=32),
        student={"arch": "cnn", "channels": [8], "hidden": 16},
        stages=[Teacher(epochs=2), Distill(epochs=2), Export(), Profile(warmup=2, runs=20), Report()],
        device="host-cpu",
    )
    parts.update(changes)
    return Pipeline(**parts)


def test_stage_objects_are_the_recipes_configs() -> None:
    assert Teacher(epochs=3).model_dump()["stage"] == "teacher"
    assert _pipeline().recipe.stage_names() == ["teacher", "distill", "export", "profile", "report"]


def test_yaml_round_trip_gives_the_same_recipe(tmp_path: Path) -> None:
    pipeline = _pipeline()
    path = tmp_path / "objects.yaml"
    pipeline.to_yaml(path)
    assert load_recipe(path) == pipeline.recipe
    assert Pipeline.from_yaml(path).recipe == pipeline.recipe


def test_yaml_text_round_trips_and_device_objects_and_long_names_are_one_line_errors() -> None:
    """Pipeline.from_yaml(pipeline.to_yaml()) read the text as a file name (OSError: File name too long), as did
    any name lookup of a long string; a DeviceProfile given to Pipeline was read as the profile's name by its
    str()."""
    pipeline = _pipeline()
    assert Pipeline.from_yaml(pipeline.to_yaml()).recipe == pipeline.recipe
    with pytest.raises(ConfigError, match=r"^Pipeline.from_yaml\(text\): key 'seed' appears twice"):
        Pipeline.from_yaml("seed: 1\nseed: 2\n")
    from edgekd.api import load_device  # edgekd.api is a submodule, an attribute of edgekd once imported

    device = load_device("host-cpu")
    with pytest.raises(ConfigError, match=r"^Pipeline\(...\): device: expected a profile name or a YAML path, got "
                                          r"DeviceProfile"):
        _pipeline(device=device)
    for name in ("x" * 300, "name: x\n" * 60):
        with pytest.raises(ConfigError, match="unknown pipeline") as raised:
            edgekd.validate(name)
        assert "\n" not in str(raised.value) and len(str(raised.value)) < 500


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"stages": [Teacher(epochs=2), {"stage": "distill", "lr": -1}]}, "Pipeline(...): stages[1].lr"),
    ({"student": {"arch": "cnn"}}, "student.model.channels: required key is missing"),
    ({"stages": [Teacher(), Distill(losses=[{"kind": "hidden"}])]}, "stages[1].losses[0].kind: loss 'hidden'"),
    ({"data": {"source": "sklearn", "name": "mnist"}}, "data.name"),
])
def test_mistakes_are_the_recipes_one_line_errors(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _pipeline(**changes).plan("unused")
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Teacher(epochs=0), "TeacherStage: epochs: Input should be greater than 0 (got 0)"),
    (lambda: Teacher(epoch=3), "TeacherStage: epoch: unknown key 'epoch' (did you mean 'epochs'?)"),
    (lambda: Distill(losses=[{"kind": "hintn"}]), "DistillStage: losses[0].kind: unknown value 'hintn' (did you "
                                                   "mean 'hinton'?)"),
], ids=["value", "key", "nested"])
def test_stage_objects_built_wrongly_are_one_line_errors(build: Any, message: str) -> None:
    """Python's stage objects raise the recipe's one-line error (pydantic's is several lines) — a ValueError too,
    as pydantic's was, so code catching that still does."""
    with pytest.raises(ConfigError) as raised:
        build()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_run_and_reopen_in_python(tmp_path: Path) -> None:
    pipeline = _pipeline()
    assert [p.status for p in pipeline.plan(tmp_path / "run")] == ["runs"] * 5
    result = pipeline.run(tmp_path / "run")
    assert [r.skipped for r in pipeline.run(tmp_path / "run").stages][:3] == [True, True, True]
    run = edgekd.open_run(tmp_path / "run")
    assert run.recipe == pipeline.recipe
    assert run.report()["student"]["accuracy"] == result.report()["student"]["accuracy"]
    typed = run.report_record()
    assert typed.figures("student").accuracy == result.report()["student"]["accuracy"]
    assert typed.device.name == "host-cpu" and typed.to_json() == run.report()
    assert typed.comparison.params_ratio == pytest.approx(
        typed.figures("student").params / typed.figures("teacher").params)
    student = run.load_model("student")
    images = torch.zeros(2, 1, 8, 8)
    assert student(images).shape == (2, 10)
    with pytest.raises(ConfigError, match="no saved 'assistant' model"):
        run.load_model("assistant")


def test_a_recipe_mapping_is_the_same_recipe_as_its_yaml_file(tmp_path: Path) -> None:
    pipeline = _pipeline()
    mapping = pipeline.recipe.model_dump(mode="json", exclude_unset=True)
    assert edgekd.validate(mapping) == pipeline.recipe
    assert [p.status for p in edgekd.plan(mapping, out=tmp_path / "run")] == ["runs"] * 5
    with pytest.raises(ConfigError, match=r"^recipe mapping: stages\[1\]\.lr: ") as raised:
        edgekd.validate({**mapping, "stages": [{"stage": "teacher"}, {"stage": "distill", "lr": -1}]})
    assert "\n" not in str(raised.value)
    with pytest.raises(TypeError, match="expected a built-in name, a YAML path, a mapping or a Recipe, got int"):
        edgekd.validate(42)
    with pytest.raises(TypeError, match=r"got Pipeline; a Pipeline's is pipeline\.recipe \(or call pipeline\.plan"):
        edgekd.validate(pipeline)


def test_a_recipe_object_is_checked_for_its_files_as_a_recipe_file_is(tmp_path: Path) -> None:
    """A Recipe given to plan/run skipped validate's file checks: plan listed a run whose teacher weights were gone."""
    weights = tmp_path / "teacher.safetensors"
    weights.write_bytes(b"checked when read")
    mapping = _pipeline().recipe.model_dump(mode="json", exclude_unset=True)
    recipe = edgekd.validate({**mapping, "teacher": {**mapping["teacher"], "weights": str(weights)}})
    weights.unlink()
    with pytest.raises(ModelError, match=r"teacher\.safetensors: weights file not found \(teacher\.weights\)"):
        edgekd.plan(recipe, out=tmp_path / "run")


def test_pipeline_run_takes_the_commands_budget_and_threads(tmp_path: Path) -> None:
    """Pipeline.run had no threads or budget_ms (a TypeError), which edgekd.run and `edgekd run` take."""
    pipeline = _pipeline(stages=[Teacher(epochs=1)])
    with pytest.raises(ConfigError, match=r"^--budget-ms: expected a number of milliseconds, got True"):
        pipeline.plan(tmp_path / "run", budget_ms=True)
    result = pipeline.run(tmp_path / "run", threads=1, budget_ms=50)
    assert [r.stage for r in result.stages] == ["teacher"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["device"]["budget"]["p90_ms"] == 50


def test_a_device_mapping_is_a_device_profile(tmp_path: Path) -> None:
    device = {"name": "phone", "threads": 1, "budget": {"p90_ms": 5, "size_mb": 5, "peak_memory_mb": 200}}
    assert [p.status for p in edgekd.plan(_pipeline().recipe, device=device, out=tmp_path / "run")] == ["runs"] * 5
    with pytest.raises(ConfigError, match=r"^device mapping: budget\.p90ms: unknown key 'p90ms'"):
        edgekd.plan(_pipeline().recipe, device={**device, "budget": {**device["budget"], "p90ms": 5}},
                    out=tmp_path / "run")
    with pytest.raises(TypeError, match="device: expected a built-in name, a YAML path, a mapping or a DeviceProfile"):
        edgekd.plan(_pipeline().recipe, device=3, out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^device mapping: name: required key is missing"):  # was: the recipe's
        edgekd.validate(_pipeline().recipe, device={})
    for budget in (True, "5"):  # True was a 1 ms budget
        with pytest.raises(ConfigError, match=r"^--budget-ms: expected a number of milliseconds, got "):
            edgekd.validate(_pipeline().recipe, budget_ms=budget)


def test_a_damaged_report_is_one_line_naming_the_file_and_field(tmp_path: Path) -> None:
    result = _pipeline(stages=[Teacher(epochs=1), Distill(epochs=1), Export(), Profile(warmup=1, runs=10),
                               Report()]).run(tmp_path / "run")
    path = result.report_path
    report = json.loads(path.read_text())
    # a regression run's report: no accuracy, so no accuracy ratio beside the latency ratio
    path.write_text(json.dumps({**report, "comparison": {**report["comparison"], "accuracy_ratio": None}}))
    with out.capture() as printed:
        print_run(result, as_json=False)
    latency = report["comparison"]["p50_latency_ratio"]
    assert f"student/teacher: p50 latency ratio {latency:.3f}\n" in printed.get()
    path.write_text(json.dumps({**report, "student": {**report["student"], "params": "many"}}))
    with pytest.raises(StorageError) as raised:
        edgekd.open_run(tmp_path / "run").report_record()
    assert str(raised.value).startswith(f"{path}: student.params: ") and "\n" not in str(raised.value)
    path.write_text(json.dumps({**report, "device": {**report["device"], "threads": 0}}))
    with pytest.raises(StorageError, match=r"report\.json: device\.threads"):
        result.report_record()
    assert result.report()["device"]["threads"] == 0  # the mapping is the file as it is, unchecked
    path.write_text(json.dumps(report)[:100])  # cut short
    with pytest.raises(StorageError, match=r"report\.json: not a JSON report \(.*\); rebuild it with edgekd report"):
        result.report_record()
    path.write_bytes(b"\x00\xde\xad")  # not even text
    with pytest.raises(StorageError, match=r"report\.json: not a JSON report"):
        result.report()
    path.unlink()
    with pytest.raises(ConfigError, match="not found; the recipe has no 'report' stage"):
        result.report_record()


def test_a_recipe_copied_with_invalid_values_is_validated_again(tmp_path: Path) -> None:
    """A Recipe is frozen, but pydantic's model_copy(update=...) makes one without validating: a teacher stage
    copied with epochs=-5 ran (and trained nothing) with exit 0, and a seed of 'abc' failed deep in scikit-learn."""
    recipe = _pipeline().recipe
    copied = recipe.model_copy(update={"stages": [recipe.stages[0].model_copy(update={"epochs": -5})]})
    with pytest.raises(ConfigError, match=r"^recipe 'objects': stages\[0\]\.epochs: Input should be greater than 0"):
        edgekd.run(copied, out=tmp_path / "run")
    with pytest.raises(ConfigError, match=r"^recipe 'objects': seed: "):
        edgekd.validate(recipe.model_copy(update={"seed": "abc"}))
    assert not (tmp_path / "run").exists()
    assert edgekd.validate(recipe) == recipe
    built = Recipe.model_validate({**recipe.model_dump(exclude={"stages"}), "stages": [Teacher(epochs=1)]})
    assert edgekd.validate(built) == built  # a stage object's defaulted 'stage' tag is kept


@pytest.mark.parametrize(("stages", "message"), [
    (Teacher(epochs=1), r"stages: expected a list of stages, got TeacherStage; write stages=\[TeacherStage\(...\)\]"),
    ([Teacher], r"stages\[0\]: the class TeacherStage, not a stage; call it \(TeacherStage\(...\)\)"),
], ids=["one-stage", "class"])
def test_stages_not_a_list_of_stage_objects_are_one_line(stages: Any, message: str) -> None:
    """A lone stage was read by pydantic as a list of its fields ('got ('epochs', 1)) (and 9 more problems)'); a
    stage class was 'stages[0].stage: required key is missing'."""
    with pytest.raises(ConfigError, match=r"^Pipeline\(...\): " + message + "$"):
        _pipeline(stages=stages)


@pytest.mark.parametrize("data", [Path("digits.npz"), "digits", None], ids=["path", "str", "none"])
def test_data_that_is_no_mapping_is_one_line(data: Any) -> None:
    """A Path given as data was read as an object's attributes: 'data.source: required key is missing'."""
    with pytest.raises(ConfigError, match=r"^Pipeline\(...\): data: expected a data mapping \({'source': ...}\) or "
                                          rf"the sets {{'train': ..., 'test': ...}}, got {type(data).__name__}$"):
        _pipeline(data=data)


def test_a_pretrained_teacher_named_from_the_working_directory_round_trips_and_its_run_reopens_anywhere(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """to_yaml() and the run record wrote every default, so a pretrained BERT's default sizes read back as given
    beside its checkpoint ('give either pretrained or sizes'): the YAML could not be read and the finished run could
    not be reported; and a checkpoint named relative to the working directory was recorded relative, so the run
    reopened from another directory looked for it there."""
    from transformers import BertConfig, BertForSequenceClassification

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(work / "my-bert")
    rows = [f"{'a good film' if i % 2 else 'a dull plot'} number {i}\t{i % 2}" for i in range(80)]
    for name in ("train.tsv", "test.tsv"):
        (work / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    pipeline = Pipeline(name="pretrained", data={"source": "tsv", "train": "train.tsv", "test": "test.tsv",
                                                 "val_examples": 20},
                        tokenizer={"vocab_size": 300, "max_length": 16},
                        teacher={"arch": "bert", "pretrained": "my-bert"},
                        student={"arch": "bert", "layers": 1, "hidden": 16, "heads": 2},
                        stages=[Teacher(epochs=1, batch_size=16), Report()])
    assert Pipeline.from_yaml(pipeline.to_yaml()).recipe == pipeline.recipe
    assert "layers" not in pipeline.to_yaml().split("student:")[0]  # the teacher's sizes are its checkpoint's
    pipeline.run(work / "runs" / "pretrained")
    recorded = json.loads((work / "runs" / "pretrained" / "run.json").read_text())["recipe"]
    assert recorded["teacher"]["model"] == {"arch": "bert", "pretrained": str(work / "my-bert")}
    monkeypatch.chdir(tmp_path)
    reopened = edgekd.open_run(work / "runs" / "pretrained")
    assert reopened.recipe == pipeline.recipe
    from edgekd.api import report

    assert {path.name for path in report(work / "runs" / "pretrained")} >= {"report.json", "report.md"}


def test_the_api_module_is_an_attribute_of_edgekd_after_a_plain_import() -> None:
    """The docs call `edgekd.api.bench(...)` after `import edgekd`; in a fresh interpreter that was an AttributeError
    until something imported edgekd.api."""
    import subprocess
    import sys

    code = "import edgekd; print(edgekd.api.pipelines.__name__, edgekd.workflow.open_run.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pipelines", "open_run"]


@pytest.mark.parametrize("arch", ["bert", "hf"])
def test_a_run_whose_checkpoint_was_moved_away_is_still_reported_and_reopened(tmp_path: Path, arch: str) -> None:
    """The run record was validated again as a new recipe: a pretrained checkpoint moved or deleted after the run
    ('is not a directory') made the finished run impossible to report or reopen. The record's checkpoints were
    checked when the run began; an arch: hf one's model type is recorded beside the recipe."""
    import shutil

    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from edgekd.api import report

    DistilBertForSequenceClassification(DistilBertConfig(vocab_size=300, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
                                        ).save_pretrained(tmp_path / "checkpoint")
    if arch == "bert":  # a BERT-layout family for arch: bert
        from transformers import BertConfig, BertForSequenceClassification

        BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32)
                                      ).save_pretrained(tmp_path / "checkpoint")
    rows = [f"{'a good film' if i % 2 else 'a dull plot'} number {i}\t{i % 2}" for i in range(80)]
    for name in ("train.tsv", "test.tsv"):
        (tmp_path / name).write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    pipeline = Pipeline(name="moved", data={"source": "tsv", "train": str(tmp_path / "train.tsv"),
                                            "test": str(tmp_path / "test.tsv"), "val_examples": 20},
                        tokenizer={"vocab_size": 300, "max_length": 16},
                        teacher={"arch": arch, "pretrained": str(tmp_path / "checkpoint")},
                        student={"arch": "bilstm", "embedding_dim": 8, "hidden": 8},
                        stages=[Teacher(epochs=1, batch_size=16), Report()])
    pipeline.run(tmp_path / "run")
    shutil.move(tmp_path / "checkpoint", tmp_path / "elsewhere")
    reopened = edgekd.open_run(tmp_path / "run")
    assert reopened.recipe.teacher.model.pretrained == str(tmp_path / "checkpoint")
    if arch == "hf":
        assert reopened.recipe.teacher.model.model_type == "distilbert"
    assert {path.name for path in report(tmp_path / "run")} >= {"report.json", "report.md"}
    assert isinstance(reopened.load_model("teacher"), torch.nn.Module)  # the run's own copy of the trained teacher
    with pytest.raises(ConfigError, match=r"teacher.model: '.*checkpoint' is not a directory"):
        pipeline.run(tmp_path / "run")  # a new run still needs the checkpoint, and says so before anything runs
