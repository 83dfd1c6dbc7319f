"""The SST-2 distillation benchmark runs end to end in --quick mode and writes the promised JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2"


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_quick_benchmark_writes_every_model(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import kd_sst2
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    out = tmp_path / "kd.json"
    only = ["sst2-distilbert-style", "sst2-bilstm"]
    assert kd_sst2.main(["--data", str(SST2), "--out", str(out), "--work", str(tmp_path / "work"),
                         "--teachers", str(tmp_path / "teachers"), "--quick",
                         "--only", *only]) == 0
    result = json.loads(out.read_text())
    names = [m["name"] for m in result["models"]]
    assert names == ["teacher", "distilbert-style", "distilbert-style-hard", "bilstm", "bilstm-hard"]
    for model in result["models"]:
        assert {"params", "dev_accuracy", "dev_accuracy_std", "seeds", "onnx_p50_ms", "onnx_p90_ms", "size_mb",
                "accuracy_ratio", "speedup"} <= set(model)
        assert 0.0 <= model["dev_accuracy"] <= 1.0 and model["onnx_p50_ms"] > 0
    assert result["models"][0]["speedup"] == 1.0
    assert result["cpu"]["brand"]
    assert set(result["distillation_gain_over_hard_labels"]) == {"distilbert-style", "bilstm"}
