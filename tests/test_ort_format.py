"""ONNX → .ort conversion with onnxruntime's tool: parity gate, portable operator config, `edgekd export`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnxruntime.tools.reduced_build_config_parser import parse_config
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.digest import file_digest
from edgekd.errors import ConfigError, ExportError
from edgekd.export import ort_format
from edgekd.export.config import ExportTarget, load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.ort_format import convert_to_ort, random_feeds
from edgekd.export.parity import ParityResult

runner = CliRunner()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small conv-relu-pool-linear image classifier exported to ONNX (basic optimizations)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 10)).eval()
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    export_onnx(model, torch.randn(5, 1, 8, 8), path, ExportTarget(name="test"))
    return path


def test_ort_model_matches_onnx_and_its_operator_config_is_portable(onnx_model: Path, tmp_path: Path) -> None:
    target = load_export_target("ort-mobile")
    result = convert_to_ort(onnx_model, target, random_feeds(onnx_model), out_dir=tmp_path)
    assert result.path == tmp_path / "small.ort" and result.parity.passed and result.parity.samples == 8
    feed = {"input": np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)}
    expected = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    actual = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(actual, expected, atol=1e-4)

    config = result.operators_config.read_text()
    assert str(tmp_path) not in config and str(onnx_model.parent) not in config  # no absolute paths
    assert config.startswith("# Operators required by small.ort")
    operators, _ = parse_config(str(result.operators_config))  # what ORT's minimal build reads
    assert "MaxPool" in {op for opsets in operators["ai.onnx"].values() for op in opsets}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.ort", "small.required_operators.config"]


def test_failed_parity_writes_nothing(onnx_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = ParityResult(max_abs_diff=0.5, mean_abs_diff=0.1, atol=1e-4, rtol=1e-4, reference_max_abs=10.0,
                           passed=False, samples=8, argmax_agreement=0.5)
    monkeypatch.setattr(ort_format, "check_file_parity", lambda *args, **kwargs: failing)
    with pytest.raises(ExportError, match=r"small.ort: parity check failed: max \|onnx - ort\| = 0.5 exceeds "
                       r"the tolerance 0.0011 \(parity_atol 0.0001 \+ parity_rtol 0.0001 × largest \|output\| 10\)"):
        convert_to_ort(onnx_model, load_export_target("ort-mobile"), random_feeds(onnx_model), out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_export_command_writes_ort_files(onnx_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", str(onnx_model), "--target", "ort-mobile", "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "small.export.json", "small.onnx", "small.ort", "small.required_operators.config"]  # keep_onnx: a copy
    assert "parity with small.onnx" in result.output and "copied the ONNX model to" in result.output
    record = json.loads((tmp_path / "m" / "small.export.json").read_text())
    assert record["command"] == "export" and record["target"] == "ort-mobile" and record["parity"]["passed"]
    assert sorted(record["files"]) == ["small.onnx", "small.ort", "small.required_operators.config"]
    assert record["files"]["small.onnx"]["sha256"] == file_digest(onnx_model)


def test_export_replaces_its_own_files_and_refuses_the_users(onnx_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    for _ in range(2):  # a re-run replaces what the first run wrote
        result = runner.invoke(app, ["export", str(onnx_model), "--out", str(out)])
        assert result.exit_code == 0, result.output
    (out / "small.required_operators.config").write_text("# edited by hand\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "small.onnx").write_bytes(b"another model of mine")
    (mine / "small.ort").write_text("my notes")
    for directory, names in ((out, "'small.required_operators.config'"), (mine, "'small.onnx', 'small.ort'")):
        before = {p.name: p.read_bytes() for p in directory.iterdir()}
        result = runner.invoke(app, ["export", str(onnx_model), "--out", str(directory)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert f"{directory.name}: holds {names}, which edgekd export would replace but did not write" in \
            " ".join(result.output.split())
        assert {p.name: p.read_bytes() for p in directory.iterdir()} == before  # nothing written or replaced


def test_export_with_another_target_deletes_what_only_the_earlier_one_wrote(onnx_model: Path, tmp_path: Path) -> None:
    lean = tmp_path / "lean.yaml"
    lean.write_text("name: lean\nformat: ort\nkeep_onnx: false\nreduced_operator_config: false\n")
    copy = tmp_path / "model" / "small.onnx"  # exported beside itself: the default --out
    copy.parent.mkdir()
    copy.write_bytes(onnx_model.read_bytes())
    assert runner.invoke(app, ["export", str(copy)]).exit_code == 0
    assert (copy.parent / "small.required_operators.config").is_file()
    result = runner.invoke(app, ["export", str(copy), "--target", str(lean)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in copy.parent.iterdir()) == ["small.export.json", "small.onnx", "small.ort"]


@pytest.mark.parametrize(("args", "message"), [
    (["--target", "onnx-fp32"], "has format 'onnx'"),
    (["--target", "ort-mobil"], "did you mean 'ort-mobile'"),
])
def test_export_command_rejects_bad_targets(onnx_model: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["export", str(onnx_model), *args, "--out", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_export_command_rejects_a_corrupt_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not an onnx model")
    result = runner.invoke(app, ["export", str(broken), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "broken.onnx" in result.output and "Traceback" not in result.output


def test_ort_only_fields_need_format_ort(tmp_path: Path) -> None:
    preset = tmp_path / "mine.yaml"
    preset.write_text("name: mine\nformat: onnx\nkeep_onnx: false\n")
    with pytest.raises(ConfigError, match=r"mine.yaml: keep_onnx: only for format 'ort'"):
        load_export_target(preset)
    assert ExportTarget.model_validate(ExportTarget(name="x").model_dump()).format == "onnx"  # dumps round-trip


def test_parity_tolerances_must_be_finite(tmp_path: Path) -> None:
    preset = tmp_path / "loose.yaml"
    preset.write_text("name: loose\nparity_rtol: .inf\n")
    with pytest.raises(ConfigError, match=r"loose.yaml: parity_rtol: .*finite number"):
        load_export_target(preset)
