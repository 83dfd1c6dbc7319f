"""The mobile bundle's pieces: reproducible zip, manifest hashes, README for app developers, stage order.

A real bundle (from a pipeline run, with an .ort model checked in onnxruntime) is tested in
tests/test_report.py and tests/test_demo_end_to_end.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError, StorageError
from edgekd.export.bundle import ZIP_EPOCH, write_bundle
from edgekd.export.bundle_readme import render_readme
from edgekd.stages import check_recipe
from tests.conftest import demo_recipe_dict


def _manifest(**changes: object) -> dict:
    manifest = {
        "schema_version": 1, "name": "demo-student", "edgekd_version": "0.1.0",
        "model": {"file": "model.ort", "format": "ort", "opset": 17, "onnx_file": "model.onnx",
                  "required_operators": "model.required_operators.config", "onnxruntime": "1.20.0"},
        "inputs": [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", 10]}],
        "labels": [str(i) for i in range(10)],
        "preprocessing": {"kind": "image", "layout": "NCHW", "channels": 1, "height": 8, "width": 8,
                          "color": "grayscale", "pixel_range": [0, 16], "scale": 0.0625, "mean": [0.0],
                          "std": [1.0], "formula": "x = pixel * scale", "byte_scale": 16 / 255},
        "postprocessing": {"output": "logits", "kind": "logits", "note": "argmax indexes labels"},
        "tokenizer": None,
        "device": {"name": "phone", "description": "a phone."},
        "latency": {"p50_ms": 1.0, "p90_ms": 1.5, "p99_ms": 2.0, "estimate": True, "basis": "estimate: ..."},
        "budget": {"verdict": "pass"},
        "accuracy": {"test": 0.97},
    }
    manifest.update(changes)
    return manifest


def _sources(tmp_path: Path) -> dict[str, Path]:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    files = {"model.ort": b"ort bytes", "model.onnx": onnx.helper.make_model(graph).SerializeToString(),
             "model.required_operators.config": b"ops\n", "tokenizer/vocab.txt": b"[PAD]\n"}
    sources = {}
    for name, data in files.items():
        path = tmp_path / "src" / name.replace("/", "_")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sources[name] = path
    return sources


def test_bundle_files_are_hashed_and_the_zip_is_reproducible(tmp_path: Path) -> None:
    sources = _sources(tmp_path)
    manifest = write_bundle(tmp_path / "bundle", tmp_path / "bundle.zip", sources, _manifest(), render_readme)
    bundle = tmp_path / "bundle"
    on_disk = json.loads((bundle / "manifest.json").read_text())
    assert on_disk == manifest
    assert sorted(on_disk["files"]) == ["README.md", "model.onnx", "model.ort", "model.required_operators.config",
                                        "tokenizer/vocab.txt"]
    for name, entry in on_disk["files"].items():
        data = (bundle / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert bundle.stat().st_mode & 0o777 == 0o755

    first = (tmp_path / "bundle.zip").read_bytes()
    for path in sources.values():  # new mtimes must not change the archive
        os.utime(path, (1_000_000_000, 1_000_000_000))
    write_bundle(tmp_path / "bundle", tmp_path / "bundle.zip", sources, _manifest(), render_readme)
    assert (tmp_path / "bundle.zip").read_bytes() == first
    with zipfile.ZipFile(tmp_path / "bundle.zip") as archive:
        names = archive.namelist()
        assert names == sorted(names) and all(n.startswith("demo-student/") for n in names)
        assert {info.date_time for info in archive.infolist()} == {ZIP_EPOCH}
        assert archive.read("demo-student/manifest.json") == (bundle / "manifest.json").read_bytes()


def _bundle_files(directory: Path) -> dict[str, bytes]:
    """The bundle directory's files and the zip in ``directory``, by path."""
    files = {path.relative_to(directory).as_posix(): path.read_bytes()
             for path in (directory / "bundle").rglob("*") if path.is_file()}
    return {**files, "bundle.zip": (directory / "bundle.zip").read_bytes()}


def test_a_bundle_that_fails_while_zipping_leaves_the_earlier_directory_and_zip_together(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new directory was renamed over the earlier one before the zip was written: a full disk while zipping left
    the new bundle/ beside the earlier bundle.zip."""
    sources = _sources(tmp_path)
    write_bundle(tmp_path / "bundle", tmp_path / "bundle.zip", sources, _manifest(), render_readme)
    earlier = _bundle_files(tmp_path)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(zipfile.ZipFile, "writestr", full)
    with pytest.raises(StorageError, match="no space left"):
        write_bundle(tmp_path / "bundle", tmp_path / "bundle.zip", sources, _manifest(accuracy={"test": 0.5}),
                     render_readme)
    assert _bundle_files(tmp_path) == earlier
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bundle", "bundle.zip", "src"]  # no temporaries


def test_readme_shows_android_and_python_use_of_an_image_model() -> None:
    readme = render_readme(_manifest())
    assert "```kotlin" in readme and "```python" in readme
    assert 'context.assets.open("model.ort")' in readme and "longArrayOf(1, 1, 8, 8)" in readme
    assert "(bytes[i] * 0.06274509803921569f * 0.0625f - mean[i / plane]) / std[i / plane]" in readme  # 0..16
    assert "val mean = floatArrayOf(0.0f)" in readme and "val std = floatArrayOf(1.0f)" in readme
    assert "val plane = 64" in readme
    assert "p90 1.500 ms (estimate: ...)" in readme  # the latency and whether it is an estimate
    assert "| `model.required_operators.config` |" in readme


def test_readme_of_a_text_model_names_its_tokenizer() -> None:
    manifest = _manifest(
        inputs=[{"name": n, "dtype": "int64", "shape": ["batch", "sequence"]}
                for n in ("input_ids", "attention_mask", "token_type_ids")],
        preprocessing={"kind": "text", "max_length": 64, "pad_id": 0},
        tokenizer={"directory": "tokenizer", "files": ["tokenizer.json", "vocab.txt"]},
        labels=["negative", "positive"],
    )
    readme = render_readme(manifest)
    assert 'AutoTokenizer.from_pretrained("tokenizer")' in readme and "max_length=64" in readme
    assert "| `tokenizer/` |" in readme and "padding or truncating to 64 tokens" in readme


def test_bundle_needs_a_profile_stage_before_it() -> None:
    recipe = demo_recipe_dict()
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] != "profile"]
    loaded = validate_model(recipe, Recipe, source="r.yaml")
    with pytest.raises(ConfigError, match=r"r.yaml: stages\[3\].stage: 'bundle' needs a 'profile' stage before it"):
        check_recipe(loaded, "r.yaml")


def _linear_graph(path: Path, before: str | None = None, after: str | None = None) -> Path:
    """A [N, 64] → [N, 10] ONNX graph: ``before`` (e.g. Log) on the input, a MatMul, ``after`` (e.g. Softmax)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32), "W")
    nodes = [helper.make_node(before, ["input"], ["x"])] if before else []
    nodes.append(helper.make_node("MatMul", ["x" if before else "input", "W"], ["m" if after else "scores"]))
    if after:
        nodes.append(helper.make_node(after, ["m"], ["scores"]))
    graph = helper.make_graph(nodes, "linear", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 10])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_graph_of_non_negative_inputs_bundles_with_a_parity_check_on_numbers(tmp_path: Path) -> None:
    """A log-feature graph answered NaN to the Gaussian parity inputs on both sides, and NaN never matches: bundle and
    export refused a faithful conversion. It is checked on the inputs' absolute values."""
    from tests.reliability import cli

    outcome = cli("bundle", _linear_graph(tmp_path / "log_features.onnx", before="Log"), "--device", "host-cpu",
                  "--runs", "10", "--out", tmp_path / "b")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] == record["parity"]["max_abs_diff"]  # no NaN
    assert record["profile"]["model"] == "bundle/model.ort"  # the file shipped, not the deleted scratch copy timed
    assert (tmp_path / "b" / record["profile"]["model"]).is_file()


def test_a_graph_ending_in_softmax_is_described_and_read_as_probabilities(tmp_path: Path) -> None:
    """The manifest called its output logits and the README applied softmax again to print the probability."""
    from tests.reliability import cli

    (tmp_path / "labels.txt").write_text("\n".join(f"digit {i}" for i in range(10)) + "\n")
    outcome = cli("bundle", _linear_graph(tmp_path / "probs.onnx", after="Softmax"), "--device", "host-cpu",
                  "--labels", tmp_path / "labels.txt", "--runs", "10", "--out", tmp_path / "b")
    assert outcome.exit_code == 0, outcome.output
    post = json.loads((tmp_path / "b" / "bundle" / "manifest.json").read_text())["postprocessing"]
    assert post["kind"] == "probabilities" and post["output"] == "scores"
    readme = (tmp_path / "b" / "bundle" / "README.md").read_text()
    assert "probabilities = logits[0]  # the graph ends in a softmax" in readme and "np.exp(logits" not in readme
    plain = cli("bundle", _linear_graph(tmp_path / "logits.onnx"), "--device", "host-cpu", "--runs", "10", "--out",
                tmp_path / "c")
    assert plain.exit_code == 0, plain.output
    assert json.loads((tmp_path / "c" / "bundle" / "manifest.json").read_text())["postprocessing"]["kind"] == "logits"


def test_a_runs_bundle_gives_the_size_latency_and_verdict_of_the_ort_file_it_ships(tmp_path: Path) -> None:
    """The manifest said model.ort but gave the profiled ONNX file's size, latency and verdict: a size limit
    between the two files read 'pass' in the run and 'fail' from edgekd bundle of the same model."""
    import edgekd
    from tests.reliability import tiny_recipe

    recipe = tiny_recipe(distill_epochs=2)
    for stage in recipe["stages"]:
        if stage["stage"] == "export":
            stage["target"] = "ort-mobile"
    result = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run")
    manifest = json.loads((result.run_dir / "bundle" / "manifest.json").read_text())
    assert manifest["model"]["file"] == "model.ort"
    shipped_mb = (result.run_dir / "bundle" / "model.ort").stat().st_size / 2**20
    size_check = next(check for check in manifest["budget"]["checks"] if check["name"] == "model_size")
    assert size_check["value"] == pytest.approx(shipped_mb, abs=1e-4)
    profiled_mb = result.artifact.get("student").metrics["size_mb"]  # the ONNX file the profile stage timed
    assert abs(profiled_mb - shipped_mb) > 1e-3
