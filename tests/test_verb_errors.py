"""Every verb that reads a model, a device or data refuses bad input with exit code 2 and one line.

(Bad model files and ``.npz`` files of ``quantize`` are in test_onnx_verbs.py, bad ``export`` sources in
test_export_source.py, bad Python data in test_memory_data.py.) Here: device profiles whose input
shapes disagree with the graph, device names that name nothing, and ``.npz`` data files a recipe reads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from edgekd.catalog import find
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from tests.reliability import assert_user_error, cli
from tests.user_modules import small_cnn

VERBS = ["profile", "bench", "quantize", "bundle", "export"]


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small CNN exported with a static 1 × 8 × 8 input (a dynamic batch)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    export_onnx(small_cnn(width=4).eval(), torch.rand(4, 1, 8, 8), path, load_export_target("onnx-fp32"))
    return path


def _arguments(verb: str, model: Path, device: str | Path, tmp: Path) -> list[str | Path]:
    out = {"profile": [], "bench": ["--out", tmp / "b"], "export": ["--out", tmp / "e"],
           "quantize": ["--out", tmp / "q"], "bundle": ["--out", tmp / "a"]}[verb]
    return [verb, model, "--device", device, *out, *(["--runs", "10"] if verb != "export" else [])]


def _device(tmp: Path, **inputs: object) -> Path:
    profile = yaml.safe_load(find("devices", "host-cpu").read_text())
    profile["inputs"].update(inputs)
    profile["name"] = "odd"
    path = tmp / "odd.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


@pytest.mark.parametrize("size", [4, 16])
@pytest.mark.parametrize("verb", VERBS)
def test_a_device_image_size_that_disagrees_with_the_graph_is_one_line(verb: str, size: int, cnn_onnx: Path,
                                                                       tmp_path: Path) -> None:
    device = _device(tmp_path, image_size=size)
    outcome = cli(*_arguments(verb, cnn_onnx, device, tmp_path))
    assert_user_error(outcome, "input 'input' has static shape", f"image_size={size}")


@pytest.mark.parametrize(("device", "fragments"), [
    ("nowhere-phone", ("nowhere-phone", "host-cpu")),
    ("missing/phone.yaml", ("missing/phone.yaml",)),
], ids=["unknown-name", "missing-file"])
@pytest.mark.parametrize("verb", VERBS)
def test_a_device_that_names_nothing_is_one_line(verb: str, device: str, fragments: tuple[str, ...], cnn_onnx: Path,
                                                 tmp_path: Path) -> None:
    assert_user_error(cli(*_arguments(verb, cnn_onnx, device, tmp_path)), *fragments)


@pytest.mark.parametrize(("arrays", "fragments"), [
    ({"x": np.zeros((40, 1, 8, 8), np.float32), "y": np.zeros(40, np.int64)},
     ("data.npz", "missing array 'inputs', 'labels'", "got x, y")),
    ({"inputs": np.zeros((40, 64), np.float32), "labels": np.zeros(40, np.int64)},
     ("data.npz", "expected 'inputs' N × C × H × W", "(40, 64)")),
    ({"inputs": np.zeros((40, 1, 8, 8), np.float32), "labels": np.zeros(39, np.int64)},
     ("data.npz", "labels' of N entries", "(39,)")),
    ({"inputs": np.zeros((40, 1, 8, 8), np.float32), "labels": np.full(40, -1, np.int64)},
     ("data.npz", "'labels' must be class indices")),
    ({"inputs": np.zeros((40, 1, 8, 8), np.float32), "labels": np.full(40, np.nan, np.float32)},
     ("data.npz", "'labels' must be finite numbers")),
], ids=["wrong-keys", "wrong-rank", "counts-differ", "negative-labels", "nan-labels"])  # 0.5 is a regression target
def test_a_recipe_reading_a_bad_npz_is_one_line(arrays: dict[str, np.ndarray], fragments: tuple[str, ...],
                                                tmp_path: Path) -> None:
    np.savez(tmp_path / "data.npz", **arrays)
    recipe = {"name": "npz", "device": "host-cpu", "threads": 1,
              "data": {"source": "npz", "path": str(tmp_path / "data.npz")},
              "teacher": {"model": {"arch": "module", "factory": "tests.user_modules:small_cnn"}},
              "student": {"model": {"arch": "module", "factory": "tests.user_modules:small_cnn"}},
              "stages": [{"stage": "teacher", "epochs": 1}]}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert_user_error(cli("run", tmp_path / "r.yaml", "--out", tmp_path / "run", "-q"), *fragments, logged=True)


@pytest.mark.parametrize(("verb", "settings", "fragment"), [
    ("profile", {"runs": "ten"}, "runs: Input should be a valid integer"),
    ("profile", {"runs": 0}, "runs: Input should be greater than or equal to 10 (got 0)"),
    ("bench", {"rounds": 0}, "rounds: Input should be greater than or equal to 1 (got 0)"),
    ("bundle", {"warmup": -1}, "warmup: Input should be greater than or equal to 0 (got -1)"),
    ("export", {"runs": 2.5}, "runs: Input should be a valid integer"),
])
def test_python_api_timing_arguments_are_one_line_config_errors(verb: str, settings: dict, fragment: str,
                                                                cnn_onnx: Path, tmp_path: Path) -> None:
    """The API functions passed their timing arguments unchecked: a string failed in the profiler with TypeError
    ('<' not supported between str and int) and runs=0 with a bare ValueError, both not edgekd's errors."""
    from edgekd import api
    from edgekd.errors import ConfigError

    call = {"profile": lambda: api.profile(cnn_onnx, **settings),
            "bench": lambda: api.bench([cnn_onnx], out=tmp_path / "b", **settings),
            "bundle": lambda: api.bundle(cnn_onnx, device="host-cpu", out=tmp_path / "a", **settings),
            "export": lambda: api.export(cnn_onnx, out=tmp_path / "e", **settings)}[verb]
    with pytest.raises(ConfigError, match="^timing arguments: ") as raised:
        call()
    assert fragment in str(raised.value) and "\n" not in str(raised.value)
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()


def test_python_bench_takes_one_path_as_one_model_and_refuses_none(cnn_onnx: Path, tmp_path: Path) -> None:
    """bench(models=...) given one path iterated its characters ('c: given more than once'); given [] it crashed
    (ValueError: max() arg is an empty sequence)."""
    from edgekd import api
    from edgekd.errors import ConfigError

    record = api.bench(str(cnn_onnx), out=tmp_path / "b", runs=10, rounds=1)
    assert [model.name for model in record.models] == ["cnn.onnx"]
    with pytest.raises(ConfigError, match="bench: no models given"):
        api.bench([], out=tmp_path / "b2")


def test_python_calibrate_takes_one_name_as_one_device() -> None:
    """calibrate("raspberry-pi-4") iterated the name's letters ('unknown device 'r'')."""
    from edgekd import api
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match="device 'host-cpu' has no reference figure"):
        api.calibrate("host-cpu")


@pytest.mark.parametrize("shape", ["1,8,x", "", (1.0, 8, 8), ("1", 8, 8), (0, 8, 8), (True, 8), 8, []])
def test_python_export_input_shape_is_checked_as_the_cli_checks_it(shape: object, tmp_path: Path) -> None:
    """A factory's input_shape went to torch.rand unchecked: a TypeError, or a size 0 blamed on the module."""
    from edgekd import api
    from edgekd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^input_shape: .*; expected positive sizes separated by commas"):
        api.export("tests.user_modules:small_cnn", input_shape=shape, out=tmp_path / "e")  # type: ignore[arg-type]
    assert not (tmp_path / "e").exists()


def test_python_export_takes_the_clis_input_shape_text(tmp_path: Path) -> None:
    from edgekd import api

    result = api.export("tests.user_modules:small_cnn", input_shape="1, 8,8", target="onnx-fp32", out=tmp_path / "e",
                        runs=10, warmup=1)
    assert result.profile.input_shapes == {"input": [1, 1, 8, 8]}
