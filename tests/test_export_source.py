"""``edgekd export SOURCE`` for PyTorch sources, and the API mirroring every CLI command's defaults.

Sources are tiny random Hugging Face classifiers saved with ``save_pretrained`` (and one put in a local
hub cache), and the factories of :mod:`tests.user_modules`. Exported graphs are checked here against
PyTorch on padded batches, independently of the exporter's own parity gate.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgekd import api
from edgekd.cli import app
from edgekd.export.source import default_out
from edgekd.rundir import LOCK_FILE
from tests import hf_families
from tests.reliability import assert_user_error, cli
from tests.user_modules import bag_of_words, small_cnn

ROOT = Path(__file__).resolve().parents[1]


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _padded(vocab: int, rows: int = 5, width: int = 11, seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (rows, width), generator=generator)
    mask = (torch.arange(width)[None] < torch.tensor([11, 7, 4, 2, 9])[:rows, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2"])
def test_a_text_model_directory_exports_with_padding_honoured(family: str, tmp_path: Path) -> None:
    model = hf_families.build(family, num_labels=3)
    model.save_pretrained(tmp_path / family)
    outcome = cli("export", tmp_path / family, "-o", tmp_path / "out", "--runs", "10", "--warmup", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output[outcome.output.index("{"):])
    assert record["kind"] == "huggingface" and record["onnx"]["parity"]["passed"]
    assert record["profile"]["p50_ms"] > 0 and Path(record["path"]) == tmp_path / "out" / "model.ort"
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == family
    session = _session(tmp_path / "out" / "model.onnx")
    names = [i.name for i in session.get_inputs()]
    assert ("token_type_ids" in names) == (family == "bert")  # only the inputs the model takes
    batch = _padded(hf_families.VOCAB)
    with torch.no_grad():
        expected = model(**{k: v for k, v in batch.items() if k in names}).logits.numpy()
    got = session.run(None, {name: batch[name].numpy() for name in names})[0]
    error = np.abs(got - expected).max()
    assert error < 1e-5
    for row, length in enumerate(batch["attention_mask"].sum(1).tolist()):  # a padded row = the row alone
        alone = session.run(None, {name: batch[name][row:row + 1, :length].numpy() for name in names})[0]
        np.testing.assert_allclose(got[row:row + 1], alone, atol=1e-5)


def test_an_image_model_directory_exports_at_its_config_size(tmp_path: Path) -> None:
    model = hf_families.build("vit", num_labels=4)
    model.save_pretrained(tmp_path / "vit")
    result = api.export(tmp_path / "vit", out=tmp_path / "out", target="onnx-fp32", runs=10, warmup=1)
    assert result.ort is None and result.path == tmp_path / "out" / "model.onnx"
    assert result.profile.input_shapes == {"pixel_values": [1, 1, 8, 8]}
    images = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = model(pixel_values=images).logits.numpy()
    np.testing.assert_allclose(_session(result.path).run(None, {"pixel_values": images.numpy()})[0], expected,
                               atol=1e-4)


def test_a_run_model_directory_exports_at_the_image_shape_it_was_trained_on(tmp_path: Path) -> None:
    """A ResNet's config has no image size: a run's model directory of one trained on 8×8 digits was exported with
    a static 224×224 input it cannot have been trained on, and profiled at it."""
    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import HFSpec
    from edgekd.models.task_model import build_task_model

    hf_families.save("resnet", tmp_path / "resnet", num_labels=10)
    model = build_task_model(HFSpec(arch="hf", pretrained=str(tmp_path / "resnet")),
                             InputSignature(kind="image", image_shape=(1, 8, 8)), tuple("0123456789"))
    model.save(tmp_path / "run-student")
    result = api.export(tmp_path / "run-student", out=tmp_path / "out", target="onnx-fp32", runs=10, warmup=1)
    assert result.profile.input_shapes == {"pixel_values": [1, 1, 8, 8]}
    images = torch.rand(6, 1, 8, 8)
    with torch.no_grad():
        expected = model.module.eval()(pixel_values=images).logits.numpy()
    np.testing.assert_allclose(_session(result.path).run(None, {"pixel_values": images.numpy()})[0], expected,
                               atol=1e-4)


def test_a_factory_exports_its_module_and_the_api_defaults_to_runs_export(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(7)
    result = api.export("tests.user_modules:small_cnn", kwargs={"width": 8}, input_shape=(1, 8, 8), runs=10,
                        warmup=1)
    assert result.path == Path("runs/export/small_cnn/model.ort") == default_out("tests.user_modules:small_cnn") / (
        "model.ort")
    torch.manual_seed(7)
    reference = small_cnn(width=8).eval()  # the factory called with the same seed: the same weights
    images = torch.rand(9, 1, 8, 8)
    with torch.no_grad():
        expected = reference(images).numpy()
    onnx_path = tmp_path / "runs/export/small_cnn/model.onnx"
    np.testing.assert_allclose(_session(onnx_path).run(None, {"input": images.numpy()})[0], expected, atol=1e-5)


def test_a_text_factory_exports_from_a_sample_npz_with_a_dynamic_sequence(tmp_path: Path) -> None:
    batch = _padded(60)
    np.savez(tmp_path / "sample.npz", input_ids=batch["input_ids"].numpy(), attention_mask=batch["attention_mask"]
             .numpy())
    torch.manual_seed(2)
    outcome = cli("export", "tests.user_modules:bag_of_words", "--kwargs", '{"vocab": 60}', "--sample",
                  tmp_path / "sample.npz", "-t", "onnx-fp32", "-o", tmp_path / "out", "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    assert "parity with PyTorch" in outcome.output and "p90" in outcome.output
    torch.manual_seed(2)
    reference = bag_of_words(vocab=60).eval()
    longer = _padded(60, width=23, seed=4)  # another sequence length than the sample's
    with torch.no_grad():
        expected = reference(longer["input_ids"], longer["attention_mask"]).numpy()
    got = _session(tmp_path / "out" / "model.onnx").run(
        None, {"input_ids": longer["input_ids"].numpy(), "attention_mask": longer["attention_mask"].numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _hub_cache(root: Path, repo: str) -> Path:
    """A local Hugging Face hub cache holding ``repo`` (as a download would leave it)."""
    revision = "0" * 40
    snapshot = root / "hub" / f"models--{repo.replace('/', '--')}" / "snapshots" / revision
    hf_families.build("bert", num_labels=2).save_pretrained(snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    return root


def test_a_hub_id_is_read_from_the_local_cache_only(tmp_path: Path) -> None:
    home = _hub_cache(tmp_path / "hf", "someone/tiny-bert")
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "0", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "edgekd", "export", "-t", "onnx-fp32", "--runs", "10", "--warmup", "1"]
    done = subprocess.run([*command, "someone/tiny-bert", "-o", str(tmp_path / "out")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "parity with PyTorch" in done.stdout and (tmp_path / "out" / "model.onnx").is_file()
    missing = subprocess.run([*command, "someone/not-cached"], env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "someone/not-cached: cannot read a Hugging Face config as a hub id (read from the local cache only)" in (
        " ".join(missing.stderr.split()))


def _npz(tmp: Path, **arrays: Any) -> Path:
    np.savez(tmp / "s.npz", **arrays)
    return tmp / "s.npz"


FACTORY = "tests.user_modules:small_cnn"
#: (id, arguments after ``export`` given tmp, fragments of the one-line error)
BAD_SOURCES: list[tuple[str, Any, tuple[str, ...]]] = [
    ("dir-without-config", lambda tmp: [tmp], ("cannot read a Hugging Face config as a directory",)),
    ("not-a-source", lambda tmp: ["no such thing!"], ("not a model file, a Hugging Face directory, a hub id",)),
    ("factory-does-not-import", lambda tmp: ["nowhere_pkg.nets:cnn", "--input-shape", "1,8,8"],
     ("nowhere_pkg.nets:cnn", "cannot import 'nowhere_pkg.nets'", "PYTHONPATH")),
    ("factory-attribute-missing", lambda tmp: ["tests.user_modules:absent", "--input-shape", "1,8,8"],
     ("has no attribute 'absent'",)),
    ("factory-not-callable", lambda tmp: ["tests.user_modules:NOT_CALLABLE", "--input-shape", "1,8,8"],
     ("not callable",)),
    ("factory-raises", lambda tmp: ["tests.user_modules:raises", "--input-shape", "1,8,8"],
     ("raised RuntimeError: no weights for width 8",)),
    ("factory-not-a-module", lambda tmp: ["tests.user_modules:not_a_module", "--input-shape", "1,8,8"],
     ("returned dict; expected a torch.nn.Module",)),
    ("unknown-kwarg", lambda tmp: [FACTORY, "--kwargs", '{"depth": 3}', "--input-shape", "1,8,8"],
     ("raised TypeError", "depth")),
    ("kwargs-not-json", lambda tmp: [FACTORY, "--kwargs", "{width: 8}", "--input-shape", "1,8,8"],
     ("--kwargs: not JSON",)),
    ("kwargs-not-object", lambda tmp: [FACTORY, "--kwargs", "[8]", "--input-shape", "1,8,8"],
     ("--kwargs: expected a JSON object", "list")),
    ("bad-input-shape", lambda tmp: [FACTORY, "--input-shape", "1,x,8"], ("--input-shape: '1,x,8'", "1,8,8")),
    ("no-input", lambda tmp: [FACTORY], ("give the input as --input-shape", "--sample")),
    ("input-disagrees", lambda tmp: [FACTORY, "--input-shape", "3,8,8"],
     ("the module fails on the given input (input [4, 3, 8, 8])",)),
    ("sample-missing", lambda tmp: [FACTORY, "--sample", tmp / "absent.npz"], ("absent.npz", "file not found")),
    ("sample-wrong-keys", lambda tmp: [FACTORY, "--sample", _npz(tmp, a=np.zeros((2, 1, 8, 8), np.float32),
                                                                 b=np.zeros(2))], ("s.npz", "arrays a, b")),
    ("sample-int-images", lambda tmp: [FACTORY, "--sample", _npz(tmp, x=np.zeros((2, 1, 8, 8), np.int64))],
     ("s.npz", "'x' is torch.int64", "expected a float batch")),
    ("sample-ids-1d", lambda tmp: ["tests.user_modules:bag_of_words", "--sample", _npz(tmp, input_ids=np.ones(4, int))],
     ("s.npz", "'input_ids' [4]", "[batch, tokens]")),
    ("kwargs-for-hf", lambda tmp: [_saved_bert(tmp), "--kwargs", "{}"], ("apply to a 'package.module:factory'",)),
    ("weights-unlike-config", lambda tmp: [_relabelled_bert(tmp)],  # was: internal error: RuntimeError
     ("bert: cannot load the model (its weights do not fit its config.json", "classifier.weight is [3, ",
      "in the weights but [2, ", "save_pretrained")),
    ("kwargs-for-onnx", lambda tmp: [_onnx(tmp), "--input-shape", "1,8,8"], ("apply to a 'package.module:factory'",)),
    ("missing-onnx", lambda tmp: [tmp / "absent.onnx"], ("absent.onnx", "model file not found")),
]


def _saved_bert(tmp: Path) -> Path:
    hf_families.build("bert").save_pretrained(tmp / "bert")
    return tmp / "bert"


def _relabelled_bert(tmp: Path) -> Path:
    """A saved classifier whose config.json was edited to 2 labels after its 3-label head was saved."""
    path = _saved_bert(tmp)
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {str(i): f"L{i}" for i in range(2)}
    config["label2id"] = {f"L{i}": i for i in range(2)}
    (path / "config.json").write_text(json.dumps(config))
    return path


def _onnx(tmp: Path) -> Path:
    (tmp / "m.onnx").write_bytes(b"not checked: the options are refused first")
    return tmp / "m.onnx"


@pytest.mark.parametrize(("arguments", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in BAD_SOURCES])
def test_bad_sources_exit_2_with_one_line(arguments: Any, fragments: tuple[str, ...], tmp_path: Path) -> None:
    outcome = cli("export", *arguments(tmp_path), "-o", tmp_path / "out")
    assert_user_error(outcome, *fragments)
    assert not (tmp_path / "out").exists()


#: CLI parameter → API parameter, where the names differ.
RENAMED = {"out_dir": "out", "eval_file": "eval", "names": "devices"}
RENAMED_IN = {"profile": {"model": "onnx_path"}, "export": {"source": "model"}}
#: What only the CLI has: display options, and quantize's settings (the API takes them as one ``settings``).
CLI_ONLY = {"as_json", "quiet", "dry_run"}
SETTINGS = {"modes", "min_speedup", "runs", "rounds"}


def _api_function(name: str) -> Any:
    if name == "distill_data":
        from edgekd.dataset_distill.api import distill_data

        return distill_data
    return {"devices_calibrate": api.calibrate, "pipelines_list": api.pipelines, "demo": api.run}.get(
        name, getattr(api, name, None))


def _commands() -> list[Any]:
    from edgekd.cli import devices_app, pipelines_app

    found = [*app.registered_commands, *devices_app.registered_commands, *pipelines_app.registered_commands]
    return [pytest.param(c.callback, id=c.callback.__name__) for c in found
            if c.callback.__name__ not in ("devices_list", "devices_show")]  # they print catalog entries


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, Path) else value


@pytest.mark.parametrize("command", _commands())
def test_every_command_has_an_api_function_with_the_same_defaults(command: Any) -> None:
    name = command.__name__
    function = _api_function(name)
    assert function is not None, f"edgekd {name}: no API function"
    api_parameters = inspect.signature(function).parameters
    for option, parameter in inspect.signature(command).parameters.items():
        settings = name == "quantize" and option in SETTINGS
        if option in CLI_ONLY or settings or (name == "demo" and option == "out_dir"):
            continue
        twin = RENAMED_IN.get(name, {}).get(option, RENAMED.get(option, option))
        assert twin in api_parameters, f"edgekd {name} --{option}: the API function has no '{twin}'"
        if parameter.default is inspect.Parameter.empty:
            continue
        expected = api_parameters[twin].default
        assert _plain(parameter.default) == _plain(expected), (
            f"edgekd {name} --{option}: CLI default {parameter.default!r}, API {expected!r}")


@pytest.mark.parametrize(("source", "folder"), [
    ("pkg.nets:small_cnn", "small_cnn"), ("pkg.nets:Builders.tiny", "tiny"), ("owner/tiny-bert", "owner--tiny-bert"),
    ("tiny-bert.v2", "tiny-bert.v2"),
])
def test_default_folders_name_the_source(source: str, folder: str) -> None:
    assert default_out(source) == Path("runs/export") / folder


def test_export_writes_to_the_same_default_folder_from_the_cli_and_the_api(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert inspect.signature(api.export).parameters["out"].default is None
    for source in ("tests.user_modules:small_cnn", "tests.user_modules:dict_mlp"):
        torch.manual_seed(0)
        api_result = api.export(source, input_shape=(1, 8, 8), target="onnx-fp32", runs=10, warmup=1)
        api_bytes = api_result.path.read_bytes()
        api_result.path.unlink()
        torch.manual_seed(0)
        assert cli("export", source, "--input-shape", "1,8,8", "-t", "onnx-fp32", "--runs", "10").exit_code == 0
        assert api_result.path.read_bytes() == api_bytes  # the same file, in the same default folder
        assert api_result.path.parent == Path("runs/export") / source.split(":")[1]


def test_an_onnx_file_still_converts_beside_itself_and_prints_json(tmp_path: Path) -> None:
    torch.manual_seed(0)
    first = api.export("tests.user_modules:small_cnn", input_shape=(1, 8, 8), target="onnx-fp32",
                       out=tmp_path / "cnn", runs=10, warmup=1)
    outcome = cli("export", first.path, "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output[outcome.output.index("{"):])
    assert Path(record["path"]) == tmp_path / "cnn" / "model.ort" and record["parity"]["passed"]
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(_session(Path(record["path"])).run(None, {"input": images})[0],
                               _session(first.path).run(None, {"input": images})[0], atol=1e-5)


@pytest.mark.parametrize("family, positions", [("roberta", 10), ("roberta", 40), ("bert", 10), ("gpt2", 12)])
def test_a_model_with_fewer_positions_than_the_device_sequence_exports_at_its_own_length(
        family: str, positions: int, tmp_path: Path) -> None:
    """The sample is cut to the positions the model takes: RoBERTa numbers positions after its padding id,
    so 10 rows take 8 tokens (a 10-token sample was an IndexError)."""
    from edgekd.models.hf import usable_positions

    model = hf_families.build(family, max_position_embeddings=positions)
    usable = usable_positions(model)
    assert usable == (positions - 2 if family == "roberta" else positions)
    with torch.no_grad():
        model(input_ids=torch.ones(1, usable, dtype=torch.long))  # the full usable length runs
    model.save_pretrained(tmp_path / family)
    outcome = cli("export", tmp_path / family, "-o", tmp_path / "out", "--runs", "10", "--warmup", "1", "--json",
                  "-t", "onnx-fp32")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output[outcome.output.index("{"):])
    assert record["onnx"]["parity"]["passed"]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_decoder_classifier_without_a_padding_id_exports_padded_with_one_note(family: str, tmp_path: Path) -> None:
    """GPT-2/Llama configs name no pad_token_id; their classifiers refuse batches of more than one row without one
    (they find each row's last token by it), so the export failed."""
    hf_families.build(family, num_labels=2, pad_token_id=None).save_pretrained(tmp_path / family)
    outcome = cli("export", tmp_path / family, "-o", tmp_path / "out", "--target", "onnx-fp32", "--runs", "10",
                  "--warmup", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output[outcome.output.index("{"):])
    assert record["onnx"]["parity"]["passed"]
    end = hf_families.TEXT[family]["eos_token_id"]
    assert f"the config has no pad_token_id: rows are padded with the config's end-of-text id {end}" in \
        " ".join(record["notes"])
    assert json.loads((tmp_path / "out" / "config.json").read_text())["pad_token_id"] == end


def test_a_causal_language_model_directory_is_refused_not_given_a_random_head(tmp_path: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **{**hf_families.TEXT["llama"], "pad_token_id": None})
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "lm")
    assert_user_error(cli("export", tmp_path / "lm", "-o", tmp_path / "out", "--runs", "10"),
                      "a causal language model (LlamaForCausalLM); edgekd export takes classifiers")


#: Tiny sequence classifiers of families the export sweep found unexportable (edgekd.models.export_support).
UNEXPORTABLE = {
    "longformer": {"vocab_size": 160, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                   "intermediate_size": 48, "attention_window": [4, 4], "max_position_embeddings": 130,
                   "pad_token_id": 1},
    "funnel": {"vocab_size": 160, "d_model": 32, "n_head": 2, "d_head": 16, "d_inner": 48, "block_sizes": [1, 1],
               "pad_token_id": 0},
}


@pytest.mark.parametrize("family", UNEXPORTABLE)
def test_a_family_known_unexportable_is_refused_before_tracing_as_validate_refuses_it(family: str,
                                                                                      tmp_path: Path) -> None:
    """It was traced, written and failed in onnxruntime's words (a Longformer after torch.export's 1,700-line
    dump of its graph on stderr, also under --json)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.for_model(family, num_labels=2, **UNEXPORTABLE[family])
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / family)
    for json_flag in ((), ("--json",)):
        outcome = cli("export", tmp_path / family, "-o", tmp_path / "out", "--target", "onnx-fp32", *json_flag)
        assert_user_error(outcome, f"{tmp_path / family}: '{family}' models cannot be exported to ONNX",
                          "fails in onnxruntime on other batch sizes or lengths", "choose another family")
    assert not (tmp_path / "out").exists()


def test_a_model_whose_own_forward_fails_on_the_example_input_is_refused_as_such(tmp_path: Path) -> None:
    """An EfficientNet narrowed by width_coefficient keeps hidden_dim 2560 for a last conv of 128 channels: its own
    forward pass fails, which was reported as both exporters failing to export it."""
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model("efficientnet", num_labels=2, image_size=32, num_channels=1, width_coefficient=0.1,
                                  depth_coefficient=0.1)
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "efficientnet")
    outcome = cli("export", tmp_path / "efficientnet", "-o", tmp_path / "out", "--target", "onnx-fp32")
    assert_user_error(outcome, "not exported: the forward pass of EfficientNetForImageClassification (model_type "
                      "'efficientnet') itself fails on the example input {'pixel_values': [",
                      ", 1, 32, 32]}: RuntimeError: running_mean should contain 128 elements not 2560")
    assert "exporter" not in outcome.output and [p.name for p in (tmp_path / "out").iterdir()] == [LOCK_FILE]


@pytest.mark.parametrize("factory", ["float64_cnn", "compiled_cnn"])
def test_a_float64_or_compiled_factory_module_exports_in_float32(factory: str, tmp_path: Path) -> None:
    """A float64 module failed on the float32 sample ('mat1 and mat2 must have the same dtype'), a torch.compile'd
    one in the tracer; both export as a run exports them: the module itself, in float32, parity-checked."""
    torch.manual_seed(3)
    outcome = cli("export", f"tests.user_modules:{factory}", "--input-shape", "1,8,8", "-t", "onnx-fp32", "-o",
                  tmp_path / "out", "--runs", "10", "--warmup", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    torch.manual_seed(3)
    reference = small_cnn(width=4).eval()  # the factory's module, seeded alike: the same weights in float32
    images = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        expected = reference(images).numpy()
    np.testing.assert_allclose(_session(tmp_path / "out" / "model.onnx").run(None, {"input": images.numpy()})[0],
                               expected, atol=1e-4)


def test_a_torchscript_factory_module_is_refused_in_one_line(tmp_path: Path) -> None:
    """Tracing a TorchScript module failed naming the object's address ('<__torch__... object at 0x...>')."""
    outcome = cli("export", "tests.user_modules:scripted_cnn", "--input-shape", "1,8,8", "-o", tmp_path / "out")
    assert_user_error(outcome, "tests.user_modules:scripted_cnn: the module is TorchScript (RecursiveScriptModule)")
    assert "0x" not in outcome.output


def test_a_pytorch_export_claims_its_directory_and_replaces_only_its_own_files(tmp_path: Path) -> None:
    out = tmp_path / "cnn"
    for target in ("ort-mobile", "onnx-fp32"):  # a re-export replaces the earlier one's files, its .ort included
        torch.manual_seed(0)
        api.export("tests.user_modules:small_cnn", input_shape=(1, 8, 8), target=target, out=out, runs=10, warmup=1)
    record = json.loads((out / "export.json").read_text())
    assert record["command"] == "export" and record["target"] == "onnx-fp32" and record["onnx"]["parity"]["passed"]
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["export.json", "model.onnx"]
    assert sorted(record["files"]) == ["model.onnx"] and record["profile"]["p50_ms"] > 0
    cli("export", out / "model.onnx")  # converting its ONNX beside itself keeps both records
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "export.json", "model.export.json", "model.onnx", "model.ort", "model.required_operators.config"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "model.onnx").write_text("a model of mine")
    outcome = cli("export", "tests.user_modules:small_cnn", "--input-shape", "1,8,8", "-o", mine)
    assert outcome.exit_code == 2 and "not empty and not an edgekd run directory" in outcome.output
    assert (mine / "model.onnx").read_text() == "a model of mine"
