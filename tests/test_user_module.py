"""A user's own nn.Module as teacher and student: by import path in a recipe, as an object in Python.

The modules are real small networks in :mod:`tests.user_modules`; runs go through every stage on
scikit-learn's digits, a run directory is reloaded in a fresh process with identical outputs and
nothing unpickled, and each kind of broken module is refused in one line before anything trains.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

import edgekd
from edgekd import Distill, Export, Pipeline, Prune, Quantize, Report, Teacher
from edgekd.cli import app
from edgekd.data.config import SklearnData
from edgekd.data.datasets import load_dataset
from edgekd.errors import ConfigError
from tests.user_modules import small_cnn

ROOT = Path(__file__).resolve().parents[1]
DIGITS = {"source": "sklearn", "name": "digits", "limit": 600}
CNN = "tests.user_modules:small_cnn"


def _test_images(count: int = 32) -> torch.Tensor:
    return load_dataset(SklearnData(**DIGITS), 0).x_test[:count]


def _recipe(teacher: dict, student: dict, stages: list[dict], name: str = "own-module") -> dict:
    return {"name": name, "seed": 0, "device": "host-cpu", "threads": 1, "data": DIGITS,
            "teacher": {"model": teacher}, "student": {"model": student}, "stages": stages}


FAST_STAGES = [{"stage": "teacher", "epochs": 4, "lr": 0.02}, {"stage": "distill", "epochs": 4, "lr": 0.02}]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recipe naming the modules by import path, run through distill, prune, export, profile, bundle."""
    directory = tmp_path_factory.mktemp("own-module")
    stages = [*FAST_STAGES, {"stage": "prune", "ratio": 0.5, "targets": ["channels"],
                                        "recovery": {"epochs": 3, "lr": 0.01}},
              {"stage": "export", "target": "ort-mobile"}, {"stage": "profile", "warmup": 2, "runs": 20},
              {"stage": "bundle"}]
    recipe = _recipe({"arch": "module", "factory": CNN, "kwargs": {"width": 16}},
                     {"arch": "module", "factory": CNN, "kwargs": {"width": 8}}, stages)
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    edgekd.run(path, out=directory / "run")
    return directory / "run"


def test_recipe_run_trains_prunes_exports_and_bundles_the_users_module(recipe_run: Path) -> None:
    run = edgekd.open_run(recipe_run)
    metrics = {record["stage"]: record["metrics"] for record in run.stages}
    assert metrics["teacher"]["teacher"]["accuracy"] > 0.7  # 10 classes: chance is 0.1
    prune = metrics["prune"]["student"]
    assert prune["accuracy"] > 0.5
    assert prune["params_ratio"] < 0.6 and prune["params"] < prune["before"]["params"]
    export = metrics["export"]
    assert export["student"]["parity"]["passed"] and export["teacher"]["parity"]["passed"]
    bundle = json.loads((recipe_run / "bundle" / "manifest.json").read_text())
    assert bundle["inputs"][0]["shape"] == ["batch", 1, 8, 8] and bundle["outputs"][0]["shape"] == ["batch", 10]
    manifest = json.loads((run.model_dir("student") / "edgekd_model.json").read_text())
    assert manifest["spec"]["factory"] == CNN and manifest["spec"]["kwargs"] == {"width": 8}
    assert manifest["spec"]["shapes"]["features.0"][1] < 8  # the pruned width is recorded


def test_run_directory_reloads_in_a_fresh_process_with_identical_outputs(recipe_run: Path, tmp_path: Path) -> None:
    images = _test_images()
    np.save(tmp_path / "x.npy", images.numpy())
    script = (
        "import pickle, sys, numpy as np, torch\n"
        "def refuse(*a, **k): raise AssertionError('unpickling attempted')\n"
        "pickle.load = pickle.loads = torch.load = refuse\n"
        "import edgekd\n"
        "from safetensors.torch import save_file\n"
        f"run = edgekd.open_run({str(recipe_run)!r})\n"
        "for role in ('teacher', 'student'):\n"
        "    model = run.load_model(role).eval()\n"
        f"    x = torch.from_numpy(np.load({str(tmp_path / 'x.npy')!r})).clone()\n"
        "    with torch.no_grad():\n"
        f"        np.save({str(tmp_path)!r} + f'/{{role}}.npy', model(x).numpy())\n"
        f"    save_file(model.state_dict(), {str(tmp_path)!r} + f'/{{role}}.safetensors')\n"
        "print(type(model).__module__, type(model).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["tests.user_modules", "SmallCNN"]
    run = edgekd.open_run(recipe_run)
    for role in ("teacher", "student"):
        model = run.load_model(role).eval()
        rebuilt = load_file(str(tmp_path / f"{role}.safetensors"))
        assert rebuilt.keys() == model.state_dict().keys()
        assert all(torch.equal(rebuilt[name], value) for name, value in model.state_dict().items())
        with torch.no_grad():
            here = model(images).numpy()
        there = np.load(tmp_path / f"{role}.npy")
        # the same weights and graph; kernels may round the last bit differently across processes
        np.testing.assert_allclose(there, here, rtol=1e-5, atol=1e-5)
        assert np.array_equal(there.argmax(1), here.argmax(1))


def test_pipeline_objects_run_and_say_they_cannot_be_reloaded_elsewhere(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(1)
    teacher = small_cnn(width=12)
    pipeline = Pipeline(name="objects", data=DIGITS, teacher=teacher, student="tests.user_modules:dict_mlp",
                        stages=[Teacher(epochs=8, lr=0.02), Distill(epochs=6, lr=0.02), Export(),
                                Quantize(modes=["static"], tolerance=0.5, agreement=0.5, roles=["student"]),
                                Report()], threads=1)
    assert sum("cannot be reloaded in a new one" in r.message for r in caplog.records) == 1
    with pytest.raises(ConfigError, match=r"to_yaml\(\): teacher: .*SmallCNN.* not serializable") as raised:
        pipeline.to_yaml()
    assert "\n" not in str(raised.value)
    result = pipeline.run(tmp_path / "run")
    report = result.report()
    assert report["teacher"]["accuracy"] > 0.7 and report["student"]["accuracy"] > 0.5
    reloaded = edgekd.open_run(tmp_path / "run").load_model("teacher")  # this process keeps the object
    quantize = next(r for r in edgekd.open_run(tmp_path / "run").stages if r["stage"] == "quantize")["metrics"]
    assert quantize["student"]["decision"] in quantize["student"]["variants"]  # variants built, measured, one kept
    assert type(reloaded).__name__ == "SmallCNN" and reloaded is not teacher
    assert not torch.equal(reloaded.head.weight, teacher.head.weight)  # the run trained a copy, not the user's object


def test_teacher_weights_saved_from_the_users_own_module_are_loaded(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(3)
    trained = small_cnn(width=4)
    save_file(trained.state_dict(), str(tmp_path / "mine.safetensors"))  # the user's keys, no edgekd prefix
    pipeline = Pipeline(name="weights", data=DIGITS, teacher={"model": {"arch": "module", "factory": CNN,
                        "kwargs": {"width": 4}}, "weights": str(tmp_path / "mine.safetensors")},
                        student=CNN, stages=[Teacher()], threads=1)
    pipeline.run(tmp_path / "run")
    loaded = edgekd.open_run(tmp_path / "run").load_model("teacher")
    assert all(torch.equal(loaded.state_dict()[name], value) for name, value in trained.state_dict().items())


def test_objects_fingerprint_by_initial_weights() -> None:
    torch.manual_seed(0)
    first, second = small_cnn(), small_cnn()
    stages = [Teacher(epochs=1)]
    spec = [Pipeline(data=DIGITS, teacher=m, student=CNN, stages=stages).recipe.teacher.model.instance
            for m in (first, second, first)]
    assert spec[0] == spec[2] != spec[1]
    assert spec[0].startswith("tests.user_modules.SmallCNN@sha256:")


@pytest.mark.parametrize(("make", "fragment"), [
    ("on_meta_device", "holds tensors on the 'meta' device (shapes without data)"),  # was NotImplementedError
    ("torch_quantized", "holds torch-quantized layers, e.g. 1 (torch.ao.nn.quantized"),  # was AttributeError
])
def test_objects_edgekd_cannot_train_are_refused_naming_their_role(make: str, fragment: str) -> None:
    import tests.user_modules as modules

    with pytest.raises(ConfigError, match="^Pipeline\\(\\.\\.\\.\\): student: the module ") as raised:
        Pipeline(data=DIGITS, teacher=CNN, student=getattr(modules, make)(), stages=[Teacher(epochs=1)])
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_factory_kwargs_that_are_not_json_values_are_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"student\.model\.kwargs\.width: input was not a valid JSON value "
                                          r"\(got tensor\(8\)\)"):
        Pipeline(data=DIGITS, teacher=CNN, stages=[Teacher(epochs=1), Distill(epochs=1)],
                 student={"arch": "module", "factory": CNN, "kwargs": {"width": torch.tensor(8)}})


def test_objects_differing_only_in_an_attribute_are_two_models() -> None:
    from tests.user_modules import Activated

    stages = [Teacher(epochs=1)]
    keys = [Pipeline(data=DIGITS, teacher=Activated(name), student=CNN, stages=stages).recipe.teacher.model.instance
            for name in ("relu", "tanh", "relu")]
    assert keys[0] == keys[2] != keys[1]


def test_a_module_with_tied_weights_trains_saves_and_reloads_tied(tmp_path: Path) -> None:
    tied = {"arch": "module", "factory": "tests.user_modules:tied_head"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(tied, tied, FAST_STAGES)))
    edgekd.run(path, out=tmp_path / "run")
    run = edgekd.open_run(tmp_path / "run")
    student = run.load_model("student")
    assert student.decode.weight is student.encode.weight  # tied again by the factory, one tensor on disk
    saved = load_file(str(next((tmp_path / "run").glob("02-distill/student/*.safetensors"))))
    assert sum(name.endswith(("encode.weight", "decode.weight")) for name in saved) == 1
    labels = torch.as_tensor(load_dataset(SklearnData(**DIGITS), 0).y_test[:32])
    with torch.no_grad():
        assert (student.eval()(_test_images()).argmax(1) == labels).float().mean() > 0.5


@pytest.mark.parametrize("order", [("prune", "factorize"), ("factorize", "prune")])
def test_a_module_pruned_and_factorized_reloads_as_it_was_exported(order: tuple[str, ...], tmp_path: Path) -> None:
    """A factorized module recorded its factor pairs' own layers (``1.0``, ``1.1``) as shapes to rebuild, which no
    module its factory builds has: every stage after factorize, and open_run().load_model(), failed."""
    import onnxruntime as ort

    module = {"arch": "module", "factory": "tests.user_modules:mlp", "kwargs": {"hidden": 48}}
    compress = {"prune": {"stage": "prune", "ratio": 0.5, "targets": ["channels"]},
                "factorize": {"stage": "factorize", "param_ratio": 0.5}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(module, module, [*FAST_STAGES, *(compress[s] for s in order),
                                                            {"stage": "export"}])))
    edgekd.run(path, out=tmp_path / "run")
    student = edgekd.open_run(tmp_path / "run").load_model("student").eval()
    assert student[1].__class__.__name__ == "LowRankLinear" and student[1][1].out_features == 24  # pruned, factorized
    images = _test_images()
    session = ort.InferenceSession(str(tmp_path / "run" / "05-export" / "student.onnx"))
    with torch.no_grad():
        expected = student(images).numpy()
    assert abs(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0] - expected).max() < 1e-4


def test_a_1d_conv_module_is_pruned_and_reloads_as_it_was_exported(tmp_path: Path) -> None:
    """Conv1d and BatchNorm1d were kept whole (only 2-d convs and batch norms were rebuilt from a run directory):
    a 1-d CNN passed through the prune stage unpruned, with a warning."""
    import onnxruntime as ort

    conv1d = {"arch": "module", "factory": "tests.user_modules:rows_conv1d", "kwargs": {"width": 16}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(conv1d, conv1d, [*FAST_STAGES, {"stage": "prune", "ratio": 0.5,
                                                                           "targets": ["channels"]},
                                                            {"stage": "export"}])))
    edgekd.run(path, out=tmp_path / "run")
    student = edgekd.open_run(tmp_path / "run").load_model("student").eval()
    assert [layer.num_features for layer in student.features if isinstance(layer, torch.nn.BatchNorm1d)] == [8, 8]
    images = _test_images()
    session = ort.InferenceSession(str(tmp_path / "run" / "04-export" / "student.onnx"))
    with torch.no_grad():
        expected = student(images).numpy()
    assert abs(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0] - expected).max() < 1e-4


def test_a_module_holding_a_layer_under_two_names_is_pruned_and_reloads(tmp_path: Path) -> None:
    """self.classifier = self.head: after pruning, the rebuilt module replaced the layer under one name only, and the
    export stage could not load the prune stage's weights ('module.classifier.bias' missing)."""
    aliased = {"arch": "module", "factory": "tests.user_modules:aliased_head"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(aliased, aliased, [*FAST_STAGES, {"stage": "prune", "ratio": 0.5,
                                                                             "targets": ["channels"]},
                                                              {"stage": "export"}])))
    edgekd.run(path, out=tmp_path / "run")
    student = edgekd.open_run(tmp_path / "run").load_model("student")
    assert student.classifier is student.head and student.hidden.out_features == 16


def test_a_batchnorm_module_trains_when_the_last_batch_holds_one_example(tmp_path: Path) -> None:
    from edgekd.data.task_data import prepare_task_data

    train = len(prepare_task_data(SklearnData(**DIGITS), 0).train)
    bn = {"arch": "module", "factory": "tests.user_modules:batchnorm_mlp"}
    stages = [{"stage": "teacher", "epochs": 2, "lr": 0.02, "batch_size": train - 1},
              {"stage": "distill", "epochs": 2, "lr": 0.02, "batch_size": train - 1}]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(bn, bn, stages)))
    edgekd.run(path, out=tmp_path / "run")
    assert edgekd.open_run(tmp_path / "run").stages[1]["metrics"]["student"]["accuracy"] > 0.1


def test_a_pipeline_given_import_paths_round_trips_through_yaml(tmp_path: Path) -> None:
    pipeline = Pipeline(data=DIGITS, teacher=CNN, student={"arch": "module", "factory": CNN, "kwargs": {"width": 4}},
                        stages=[Teacher(epochs=1), Distill(epochs=1)])
    path = tmp_path / "recipe.yaml"
    pipeline.to_yaml(path)
    assert Pipeline.from_yaml(path).recipe == pipeline.recipe


REFUSALS = [
    ("tests.no_such_module:factory", {}, "teacher.model.factory", "cannot import 'tests.no_such_module'"),
    ("tests.user_modules:missing", {}, "teacher.model.factory", "has no attribute 'missing'"),
    ("tests.user_modules:NOT_CALLABLE", {}, "teacher.model.factory", "is a int, not callable"),
    ("tests.user_modules:raises", {"width": 3}, "teacher.model.factory", "RuntimeError: no weights for width 3"),
    ("tests.user_modules:small_cnn", {"depth": 3}, "teacher.model.factory", "unexpected keyword argument 'depth'"),
    ("tests.user_modules:not_a_module", {}, "teacher.model.factory", "returned dict; expected a torch.nn.Module"),
    ("tests.user_modules:wrong_classes", {}, "teacher.model.factory", "shape [2, 3]"),
    ("tests.user_modules:no_logits", {}, "teacher.model.factory", "holding 'logits'"),
    ("tests.user_modules:integer_logits", {}, "teacher.model.factory", "returns torch.int64 logits; expected "
     "floating-point scores"),
    ("tests.user_modules:auxiliary_in_training", {}, "teacher.model.factory", "in training mode, the module "
     "returned tuple"),
    ("tests.user_modules:wrong_input", {}, "teacher.model.factory", "fails on the data's inputs (input [2, 1, 8, 8])"),
    ("tests.user_modules:no_parameters", {}, "teacher.model.factory", "Sequential has no trainable parameters"),
    ("tests.user_modules:frozen", {}, "teacher.model.factory", "SmallCNN has no trainable parameters"),
    ("tests.user_modules:on_meta_device", {}, "teacher.model.factory", "holds tensors on the 'meta' device"),
    ("tests.user_modules:torch_quantized", {}, "teacher.model.factory", "holds torch-quantized layers, e.g. 1 ("),
    ("tests/user_modules.py", {}, "teacher.model.factory", "expected an import path 'package.module:factory'"),
    ("tests.user_modules", {}, "teacher.model.factory", "the callable's name; not a file path) (got"),
]


@pytest.mark.parametrize(("factory", "kwargs", "key", "fragment"), REFUSALS)
def test_broken_modules_are_refused_in_one_line_before_training(
        factory: str, kwargs: dict, key: str, fragment: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    recipe = _recipe({"arch": "module", "factory": factory, "kwargs": kwargs}, {"arch": "module", "factory": CNN},
                     FAST_STAGES)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for command in (["validate", str(path)], ["run", str(path), "--out", str(tmp_path / "run")]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert key in message and " ".join(fragment.split()) in message, message
        assert "Traceback" not in result.output
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").glob("01-teacher/teacher"))


def test_a_module_without_an_onnx_export_is_refused_before_training_when_the_recipe_exports(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    recipe = _recipe({"arch": "module", "factory": "tests.user_modules:not_exportable"},
                     {"arch": "module", "factory": CNN}, [*FAST_STAGES, {"stage": "export"}])
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({**recipe, "stages": FAST_STAGES}))  # nothing exported: nothing to refuse
    assert CliRunner().invoke(app, ["validate", str(path)]).exit_code == 0
    path.write_text(yaml.safe_dump(recipe))  # the same module, now exported: checked again, in the same process
    result = CliRunner().invoke(app, ["validate", str(path)])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "teacher.model.factory: the recipe exports the model, but the module does not export to ONNX" in message
    assert "aten::histc" in message
    # no export stage, but a prune stage timing the student's ONNX export after each step: checked too
    pruned = _recipe({"arch": "module", "factory": CNN},
                     {"arch": "module", "factory": "tests.user_modules:not_exportable"},
                     [*FAST_STAGES, {"stage": "prune", "ratio": 0.5, "targets": ["channels"]}])
    path.write_text(yaml.safe_dump(pruned))
    result = CliRunner().invoke(app, ["validate", str(path)])
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "student.model.factory: the prune stage times each step's ONNX export, but the module does not export " \
           "to ONNX" in message


@pytest.mark.parametrize("student", ["rows_attention", "normalises_in_place"])
def test_modules_once_refused_as_not_exportable_export_with_parity(student: str, tmp_path: Path) -> None:
    """Both were refused as 'does not export to ONNX': nn.TransformerEncoder took torch's fused fast path under
    no_grad, which the exporter has no symbolic for; a module normalising its input in place changed the batch
    the parity check then gave onnxruntime."""
    result = Pipeline(data=DIGITS, teacher=CNN, student=f"tests.user_modules:{student}",
                      stages=[Teacher(epochs=1), Distill(epochs=1), Export()]).run(tmp_path / "run")
    parity = {record.stage: record.metrics for record in result.stages}["export"]["student"]["parity"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-4


@pytest.mark.parametrize(("student", "loss"), [(CNN, "hidden"), (CNN, "attention"), ("tests.user_modules:dict_mlp",
                                                                                       "hidden")])
def test_hidden_and_attention_losses_are_refused_for_a_module(student: str, loss: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Pipeline(data=DIGITS, teacher=CNN, student=student,
                 stages=[Teacher(epochs=1), Distill(losses=[{"kind": loss}])]).plan("unused")
    message = str(raised.value)
    assert "stages[1].losses[0].kind" in message and "'module'" in message and "\n" not in message


def test_a_module_returning_probabilities_is_refused_and_log_probabilities_are_taken() -> None:
    """A module ending in softmax trained on cross-entropy of its probabilities, silently (0.54 accuracy against 0.71
    for the same module without it)."""
    probabilities = {"arch": "module", "factory": "tests.user_modules:softmax_mlp"}
    with pytest.raises(ConfigError) as raised:
        Pipeline(data=DIGITS, teacher=probabilities, student=CNN, stages=[Teacher(epochs=1)]).plan("unused")
    message = str(raised.value)
    assert "teacher.model.factory: the module returns probabilities (every row non-negative, summing to 1)" in message
    assert "return the scores before the softmax" in message and "\n" not in message
    logs = {**probabilities, "kwargs": {"log": True}}
    Pipeline(data=DIGITS, teacher=logs, student=CNN, stages=[Teacher(epochs=1)]).plan("unused")


def test_an_object_from_another_process_is_refused_with_its_key(tmp_path: Path) -> None:
    spec = {"arch": "module", "instance": "mypkg.Net@sha256:0123456789abcdef"}
    with pytest.raises(ConfigError, match=r"teacher\.model\.instance: .* another process") as raised:
        Pipeline(data=DIGITS, teacher=spec, student=CNN, stages=[Teacher(epochs=1)]).plan(tmp_path)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(("student", "fragment"), [
    ("scaled_cnn", "layer '1' (Scale) cannot be pruned"),
    ("fixed_flatten_cnn", "(_FixedFlatten)"),  # the tutorial CNN: x.view(-1, 16 * 4 * 4)
    ("tied_hidden", "'b.weight' and 'c.weight' are one parameter"),  # was silently untied by pruning
])
def test_a_module_the_prune_stage_cannot_prune_is_refused_before_training(student: str, fragment: str,
                                                                          tmp_path: Path) -> None:
    """Both were refused (the second as a bare IndexError) by the prune stage, after teacher and student trained."""
    pipeline = Pipeline(data=DIGITS, teacher=CNN, student=f"tests.user_modules:{student}",
                        stages=[Teacher(epochs=1), Distill(epochs=1), Prune(ratio=0.5, targets=["channels"])],
                        threads=1)
    with pytest.raises(ConfigError) as raised:
        pipeline.run(tmp_path / "run")
    message = str(raised.value)
    assert "stages[2]: student.model: " in message and fragment in message and "\n" not in message, message
    assert not (tmp_path / "run" / "01-teacher").exists()


def _compressed(student: str, stage: Any, logger: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
                ) -> dict[str, Any]:
    """Run teacher, distill and the compression ``stage`` on the ``student`` factory, capturing ``logger``'s
    warnings; the stage's figures of the student."""
    pipeline = Pipeline(data=DIGITS, teacher=CNN, student=f"tests.user_modules:{student}",
                        stages=[Teacher(epochs=1), Distill(epochs=1), stage], threads=1)
    with caplog.at_level("WARNING", logger=logger):
        pipeline.run(tmp_path / "run")
    record = next(s for s in edgekd.open_run(tmp_path / "run").stages if s["stage"] == stage.stage)
    return record["metrics"]["student"]


def test_a_module_pruning_can_remove_nothing_from_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    figures = _compressed("rows_gru", Prune(ratio=0.5, targets=["channels"]), "edgekd.prune.user_module", tmp_path,
                          caplog)
    assert "prune: nothing in the module (_RowsGRU) was removed: its layers are coupled to ones kept whole, e.g. " \
           "gru (GRU)" in caplog.text
    assert figures["params_ratio"] == 1.0


@pytest.mark.parametrize(("factory", "suggested"), [("groupnorm_cnn", False), ("rows_gru", False),
                                                     ("groupnorm_mlp", True)])
def test_the_prune_warning_suggests_factorize_only_where_factorize_changes_the_module(
        factory: str, suggested: bool, caplog: pytest.LogCaptureFixture) -> None:
    """It suggested factorize to modules whose only linear layer is the classifier, where factorize changes
    nothing."""
    from edgekd.data.examples import InputSignature
    from edgekd.models.user_module import probe_inputs, wrap
    from edgekd.prune.config import PruneStage
    from edgekd.prune.structured import trial_prune
    from tests import user_modules

    model = wrap(getattr(user_modules, factory)(), "image")
    with caplog.at_level("WARNING", logger="edgekd.prune.user_module"):
        trial_prune(model, probe_inputs(InputSignature(kind="image", image_shape=(1, 8, 8))),
                    PruneStage(ratio=0.5, targets=["channels"]))
    assert "prune: nothing in the module" in caplog.text
    assert ("(drop the prune stage, or try factorize)" in caplog.text) == suggested, caplog.text
    assert suggested or "(drop the prune stage)" in caplog.text


@pytest.mark.parametrize(("student", "factorize", "fragments"), [
    ("groupnorm_cnn", {}, ("the module (_GroupNormCNN) has no layer factorize rewrites, so the stage would change "
                           "nothing", "but the classifier ('head')", "drop the factorize stage")),
    ("mlp", {"param_ratio": 0.9}, ("no layer of the module (Sequential) gets smaller by factorize",
                                   "'1', '3' keep more than max_size_ratio 0.8 of their weights at param_ratio 0.9")),
])
def test_a_factorize_stage_that_would_leave_a_module_as_it_was_is_refused_before_training(
        student: str, factorize: dict, fragments: tuple[str, ...], tmp_path: Path) -> None:
    """The stage ran, reported params 770 -> 770 and layers [], and said nothing."""
    from edgekd import Factorize

    pipeline = Pipeline(data=DIGITS, teacher=CNN, student=f"tests.user_modules:{student}",
                        stages=[Teacher(epochs=1), Distill(epochs=1), Factorize(**factorize)], threads=1)
    with pytest.raises(ConfigError) as raised:
        pipeline.run(tmp_path / "run")
    message = str(raised.value)
    assert "stages[2]: student.model: " in message and "\n" not in message, message
    assert all(fragment in message for fragment in fragments), message
    assert not (tmp_path / "run" / "01-teacher").exists()


def test_a_factorize_stage_whose_ranks_keep_every_layer_dense_warns_and_records_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """At an energy the trained weights keep near full rank nothing is factorized, which validate cannot know."""
    from edgekd import Factorize

    figures = _compressed("mlp", Factorize(energy=0.99999), "edgekd", tmp_path, caplog)
    assert "factorize: no layer of the student was factorized: at energy 0.99999 no factor pair of its 2 layer(s) " \
           "(module.1, module.3) is at most max_size_ratio 0.8 of the dense weights" in caplog.text
    assert figures["params_ratio"] == 1.0 and figures["unchanged"].startswith("at energy 0.99999 no factor pair")


@pytest.mark.parametrize(("factory", "kwargs"), [
    (CNN, {"width": 16}), (CNN, {"width": 8}), (CNN, {"width": 12}),
    ("tests.user_modules:rows_conv1d", {"width": 16}),  # Conv1d + BatchNorm1d were kept whole: nothing pruned
    ("tests.user_modules:layernorm_mlp", {"hidden": 32}),  # LayerNorm was kept whole, so were the Linears it feeds
    ("tests.user_modules:class_prior_mlp", {"hidden": 32}),  # the module itself was taken for the output layer
    ("tests.user_modules:scaled_mlp", {"hidden": 32}),  # containers' per-unit scales, kept whole, failed the run
])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_prune_of_a_module_keeps_outputs_and_rebuilds_from_the_recorded_shapes(factory: str, kwargs: dict,
                                                                              ratio: float, tmp_path: Path) -> None:
    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import ModuleSpec
    from edgekd.models.task_model import TaskModel, build_task_model
    from edgekd.prune.config import PruneStage
    from edgekd.prune.structured import prune_step

    torch.manual_seed(0)
    signature = InputSignature(kind="image", image_shape=(1, 8, 8))
    classes = tuple(str(i) for i in range(10))
    model = build_task_model(ModuleSpec(arch="module", factory=factory, kwargs=kwargs), signature, classes)
    before = model.params
    inputs = {"input": _test_images(8)}
    prune_step(model, PruneStage(stage="prune", ratio=ratio, targets=["channels"]), ratio, inputs)
    assert model.params < before * (1 - ratio / 2)
    with torch.no_grad():
        pruned = model.module.eval()(**inputs)
    assert pruned.shape == (8, 10)
    model.save(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(TaskModel.load(tmp_path / "pruned").module(**inputs), pruned)


def test_per_unit_parameters_of_containers_are_pruned_with_their_units_and_restored(tmp_path: Path) -> None:
    """A block's layer scale and the model's own scale follow the hidden units they multiply: each keeps the values
    of the units kept, Torch-Pruning's "unwrapped parameters" warning does not reach the user, and the run
    directory's spec records their shapes."""
    import warnings

    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import ModuleSpec
    from edgekd.models.task_model import build_task_model
    from edgekd.models.user_module import unwrap
    from edgekd.prune.config import PruneStage
    from edgekd.prune.structured import prune_step

    torch.manual_seed(0)
    model = build_task_model(ModuleSpec(arch="module", factory="tests.user_modules:scaled_mlp"),
                             InputSignature(kind="image", image_shape=(1, 8, 8)), tuple("0123456789"))
    module = unwrap(model.module)
    bias, gamma, scale = (module.block.linear.bias.detach().clone(), module.block.gamma.detach().clone(),
                          module.scale.detach().clone())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prune_step(model, PruneStage(stage="prune", ratio=0.5, targets=["channels"]), 0.5, {"input": _test_images(4)})
    assert not [w for w in caught if "nwrapped" in str(w.message)]
    module = unwrap(model.module)
    kept = [int((bias == value).nonzero()) for value in module.block.linear.bias.detach()]  # the units kept
    assert len(kept) == 16 and module.block.gamma.shape == (1, 16) and module.scale.shape == (16,)
    assert torch.equal(module.block.gamma.detach(), gamma[:, kept]) and torch.equal(module.scale.detach(), scale[kept])
    assert model.spec["shapes"]["block.gamma"] == [1, 16] and model.spec["shapes"]["scale"] == [16]


def test_a_text_module_has_its_embedding_width_pruned_and_rebuilt(tmp_path: Path) -> None:
    """A residual addition couples the embedding's width to the hidden layer's outputs: an Embedding was kept
    whole, so nothing was pruned."""
    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import ModuleSpec
    from edgekd.models.task_model import TaskModel, build_task_model
    from edgekd.models.user_module import unwrap
    from edgekd.prune.config import PruneStage
    from edgekd.prune.structured import prune_step

    torch.manual_seed(0)
    signature = InputSignature(kind="text", vocab_size=256, max_length=16)
    model = build_task_model(ModuleSpec(arch="module", factory="tests.user_modules:bag_of_words",
                                        kwargs={"dim": 32, "residual": True}), signature, ("neg", "pos"))
    inputs = model.example_inputs(4)
    prune_step(model, PruneStage(stage="prune", ratio=0.5, targets=["channels"]), 0.5, inputs)
    embed = unwrap(model.module).embed
    assert embed.embedding_dim == 16 and embed.num_embeddings == 256
    with torch.no_grad():
        pruned = model.module.eval()(**inputs)
    model.save(tmp_path / "pruned")
    with torch.no_grad():
        assert torch.equal(TaskModel.load(tmp_path / "pruned").module(**inputs), pruned)


def test_a_text_module_takes_the_inputs_its_forward_names(tmp_path: Path) -> None:
    from tests.test_text_pipeline import _write_tsv

    _write_tsv(tmp_path / "train.tsv", 400, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 80, seed=2)
    data = {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv"),
            "val_examples": 80}
    words = "tests.user_modules:bag_of_words"
    pipeline = Pipeline(name="text-module", data=data, tokenizer={"vocab_size": 200, "max_length": 32},
                        teacher={"arch": "module", "factory": words, "kwargs": {"dim": 32}},
                        student={"arch": "module", "factory": words, "kwargs": {"dim": 8}},
                        stages=[Teacher(epochs=8, lr=0.05), Distill(epochs=8, lr=0.05), Export()], threads=1)
    pipeline.run(tmp_path / "run")
    run = edgekd.open_run(tmp_path / "run")
    metrics = {record["stage"]: record["metrics"] for record in run.stages}
    assert metrics["teacher"]["teacher"]["accuracy"] > 0.8  # one sentiment word decides the label
    assert metrics["distill"]["student"]["accuracy"] > 0.7
    assert metrics["export"]["student"]["parity"]["passed"]


def test_a_text_module_smaller_than_the_tokenizer_is_refused_before_the_teacher_trains(tmp_path: Path) -> None:
    """A student module embedding fewer token ids than the tokenizer gives passed validate (it was tried on 8 ids)
    and failed in the distill stage, after the teacher trained. A WordPiece trained on the data has at most its
    vocab_size tokens: a module as large as the tokenizer the run trains is taken."""
    from edgekd.data.config import TokenizerConfig
    from edgekd.data.tokenizer import load_or_train_tokenizer
    from tests.test_text_pipeline import _write_tsv

    _write_tsv(tmp_path / "train.tsv", 400, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 80, seed=2)
    data = {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv"),
            "val_examples": 80}
    tokenizer = {"vocab_size": 200, "max_length": 32}
    texts = [line.split("\t")[0] for line in (tmp_path / "train.tsv").read_text().splitlines()[1:]]
    trained = len(load_or_train_tokenizer(TokenizerConfig(**tokenizer), texts))
    assert 50 < trained < 200  # the data has fewer distinct words than vocab_size allows

    def recipe(vocab: int) -> dict:
        return {"name": "text-module", "data": data, "tokenizer": tokenizer, "threads": 1,
                "teacher": {"model": {"arch": "module", "factory": "tests.user_modules:bag_of_words"}},
                "student": {"model": {"arch": "module", "factory": "tests.user_modules:bag_of_words",
                                      "kwargs": {"vocab": vocab}}},
                "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}]}

    says = rf"student\.model\.factory: the module fails on the data's inputs .*token ids up to {trained - 1}, "
    with pytest.raises(ConfigError, match=says + "the tokenizer's last.*IndexError") as raised:
        edgekd.validate(recipe(50))
    assert "\n" not in str(raised.value)
    edgekd.validate(recipe(trained))  # exactly the tokenizer the run trains


def test_modules_in_float64_or_half_or_wrapped_for_parallelism_or_compiled_train_and_export(tmp_path: Path) -> None:
    """A float64 or half module failed on the data's float32 images ('Input type (float) and bias type (double)'),
    and a torch.compile'd one could not be exported ('FX to torch.jit.trace a dynamo-optimized function'): the user's
    own module is taken out of DataParallel/torch.compile and trained in float32."""
    torch.manual_seed(0)
    teacher = torch.nn.DataParallel(small_cnn(width=8).double())
    student = torch.compile(small_cnn(width=4).half())
    pipeline = Pipeline(name="dtypes", data=DIGITS, teacher=teacher, student=student,
                        stages=[Teacher(epochs=4, lr=0.02), Distill(epochs=4, lr=0.02), Export(), Report()], threads=1)
    report = pipeline.run(tmp_path / "run").report()
    assert report["teacher"]["accuracy"] > 0.5 and report["student"]["accuracy"] > 0.3  # 10 classes: chance is 0.1
    run = edgekd.open_run(tmp_path / "run")
    for role in ("teacher", "student"):
        model = run.load_model(role)
        assert type(model).__name__ == "SmallCNN"
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        assert len(list(tmp_path.glob(f"run/*-export/{role}.onnx"))) == 1


def test_a_torchscript_module_is_refused_when_the_recipe_exports(tmp_path: Path) -> None:
    """Exporting a TorchScript module failed naming the object's address ('Tried to trace <__torch__.SmallCNN object
    at 0x…> but it is not part of the active trace'), a different line every run."""
    scripted = torch.jit.script(small_cnn(width=4))
    pipeline = Pipeline(name="scripted", data=DIGITS, teacher=CNN, student=scripted,
                        stages=[Teacher(epochs=1), Distill(epochs=1), Export()], threads=1)
    with pytest.raises(ConfigError, match=r"student.model.factory: the recipe exports the model, but the module is "
                                          r"TorchScript \(RecursiveScriptModule\)") as raised:
        pipeline.run(tmp_path / "run")
    assert "0x" not in str(raised.value)


OWN_MODULE = '''
from torch import nn


def tiny_mlp(hidden=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
'''


def test_a_module_in_the_current_directory_is_found_as_python_m_finds_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The console script does not put the working directory on sys.path: a recipe naming the user's module beside
    it failed with "cannot import". It is looked for there after sys.path, so an installed package still wins."""
    from typer.testing import CliRunner

    project = tmp_path / "project"
    project.mkdir()
    (project / "edgekd_own_nets.py").write_text(OWN_MODULE)
    (project / "yaml.py").write_text(OWN_MODULE)  # not imported: the installed PyYAML comes first
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(project))])
    monkeypatch.delitem(sys.modules, "edgekd_own_nets", raising=False)
    try:
        mlp = {"arch": "module", "factory": "edgekd_own_nets:tiny_mlp", "kwargs": {"hidden": 8}}
        (project / "own.yaml").write_text(yaml.safe_dump(_recipe(mlp, mlp, FAST_STAGES)))
        found = CliRunner().invoke(app, ["validate", "own.yaml"])
        assert found.exit_code == 0, found.output
        assert sys.path[-1] == str(project)
        shadowed = {**mlp, "factory": "yaml:tiny_mlp"}
        (project / "shadowed.yaml").write_text(yaml.safe_dump(_recipe(shadowed, mlp, FAST_STAGES)))
        refused = CliRunner().invoke(app, ["validate", "shadowed.yaml"])
        assert refused.exit_code == 2, refused.output
        assert "teacher.model.factory: 'yaml' has no attribute 'tiny_mlp'" in " ".join(refused.output.split())
    finally:
        sys.modules.pop("edgekd_own_nets", None)
