"""The real demo pipeline end to end through the CLI: teacher → student → ONNX → profile → report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli import app
from tests.conftest import demo_recipe_dict, shrink
from tests.test_report import check_bundle

runner = CliRunner()


def _check_report(run_dir: Path, min_accuracy_ratio: float) -> dict:
    report = json.loads((run_dir / "report.json").read_text())
    for role in ("teacher", "student"):
        figures = report[role]
        for key in ("accuracy", "params", "size_mb", "p50_ms", "p90_ms", "p99_ms", "peak_memory_mb"):
            assert isinstance(figures[key], (int, float)), (role, key, figures[key])
        assert 0 < figures["p50_ms"] <= figures["p90_ms"] <= figures["p99_ms"]
        assert figures["size_mb"] == pytest.approx(
            (run_dir / "03-export" / f"{role}.onnx").stat().st_size / 2**20, rel=1e-6)
        assert figures["parity_max_abs_diff"] < 1e-4
    assert report["student"]["params"] * 10 < report["teacher"]["params"]
    assert report["student"]["accuracy"] >= min_accuracy_ratio * report["teacher"]["accuracy"]
    assert report["budget"]["verdict"] in ("pass", "fail")
    assert report["budget"]["limits"] == report["device"]["budget"]
    passed = all(check["passed"] for check in report["budget"]["checks"])
    assert report["budget"]["verdict"] == ("pass" if passed else "fail")
    assert report["cpu"]["brand"] and isinstance(report["cpu"]["isa"], list)
    recipe_stages = [s["stage"] for s in report["recipe"]["stages"]]
    assert [s["stage"] for s in report["stages"]] == recipe_stages[: recipe_stages.index("report")]
    markdown = (run_dir / "report.md").read_text()
    assert "| accuracy (test) |" in markdown and "Verdict: **" in markdown
    assert (run_dir / "accuracy_vs_latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "report.html").read_text().startswith("<!DOCTYPE html>")
    if "bundle" in recipe_stages:
        assert check_bundle(run_dir / "bundle")["model"]["format"] == "ort"
        assert (run_dir / "bundle.zip").is_file()
    return report


def test_reduced_demo_via_cli(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(shrink(demo_recipe_dict(), teacher_epochs=6, distill_epochs=12))
    result = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    assert "p50 latency ratio" in result.output
    report = _check_report(tmp_path / "run", min_accuracy_ratio=0.9)
    assert report["student"]["accuracy"] > 0.85
    # A second run skips every cached stage and reports the same figures.
    again = runner.invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "-q"])
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped (cached)") == 4
    rerun = json.loads((tmp_path / "run" / "report.json").read_text())
    for role in ("teacher", "student"):
        assert rerun[role] == report[role]


def test_profile_command_json_contract(write_recipe, tmp_path: Path) -> None:
    recipe = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=1)
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("teacher", "export")]
    assert runner.invoke(app, ["run", str(write_recipe(recipe)), "--out", str(tmp_path / "run"), "-q"]).exit_code == 0
    model = tmp_path / "run" / "02-export" / "teacher.onnx"
    result = runner.invoke(app, ["profile", str(model), "--device", "host-cpu", "--json", "--runs", "20"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert {"p50_ms", "p90_ms", "p99_ms", "size_mb", "threads", "estimate"} <= set(figures)
    assert figures["estimate"] is False
    assert figures["size_mb"] == pytest.approx(model.stat().st_size / 2**20, rel=1e-6)


def test_profile_command_rejects_a_corrupt_model(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not really a protobuf")
    result = runner.invoke(app, ["profile", str(broken), "--json"])
    assert result.exit_code == 2
    assert "broken.onnx" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_full_demo_meets_accuracy_goal(tmp_path: Path) -> None:
    """The shipped demo, as `make demo` runs it: student ≥ 97% of the teacher's accuracy, in a subprocess."""
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "edgekd", "demo", "--out", str(tmp_path / "demo"), "-q"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    _check_report(tmp_path / "demo", min_accuracy_ratio=0.97)
