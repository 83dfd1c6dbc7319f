"""The speculative decoding benchmark runs end to end in --quick mode and writes the promised JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.test_kd_benchmark import load_benchmark

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.slow  # ~15 s on a loaded machine: trains three tiny models
@pytest.mark.skipif(not CORPUS.is_file(), reason=f"Tiny Shakespeare not found at {CORPUS}")
def test_quick_benchmark_measures_both_drafts(tmp_path: Path) -> None:
    out = tmp_path / "speculative.json"
    assert load_benchmark("speculative").main(["--quick", "--out", str(out), "--work", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["cpu"]["brand"] and result["lossless"] is True
    assert set(result["models"]) == {"teacher", "corpus", "distilled"}
    vocabulary = 66  # Tiny Shakespeare's 65 characters and end-of-text
    for name, row in result["models"].items():
        assert row["validation_loss"] < math.log(vocabulary) and row["train_seconds"] > 0  # trained, not uniform
        if name != "teacher":
            record = row["speculative"]
            assert [entry["gamma"] for entry in record["gammas"]] == [1, 2, 4] and record["threads"] == 1
            assert all(entry["lossless"] and entry["speedup"] > 0 for entry in record["gammas"])
            assert 0 <= result["at_gamma_4"][name]["acceptance_rate"] <= 1
    assert result["models"]["teacher"]["params"] > result["models"]["corpus"]["params"]
    assert {path.name for path in tmp_path.glob("*.onnx")} == {"teacher.onnx", "corpus.onnx", "distilled.onnx"}
