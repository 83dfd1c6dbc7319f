"""`edgekd bench` and the figures reports carry besides latency: MACs, the operator profile, fair interleaving."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.device import InputShape, load_device
from edgekd.export.config import ExportTarget
from edgekd.export.onnx_export import export_onnx
from edgekd.profile import bench
from edgekd.profile.macs import count_macs
from edgekd.profile.operators import aggregate_kernel_times
from edgekd.profile.timing import HostTiming
from edgekd.report.bench_record import BenchReport

runner = CliRunner()


def _export(model: nn.Module, path: Path, level: str = "basic") -> Path:
    export_onnx(model.eval(), torch.randn(3, 1, 8, 8), path, ExportTarget(name="t", optimization_level=level))
    return path


def _cnn(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(width * 16, 10))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("bench")
    return [_export(_cnn(16), root / "wide.onnx"), _export(_cnn(4), root / "narrow.onnx")]


def test_macs_are_counted_from_the_graph_whatever_the_fusions(tmp_path: Path) -> None:
    # conv: 8×8 outputs × 8 channels × (1 input channel × 3×3); linear: 8·16 inputs × 10 outputs
    expected = 8 * 8 * 8 * 9 + 8 * 16 * 10
    plain = _export(_cnn(8), tmp_path / "plain.onnx")
    fused = _export(_cnn(8), tmp_path / "fused.onnx", level="extended")  # FusedConv: a contrib operator
    for path in (plain, fused):
        counted = count_macs(path, InputShape(batch=1))
        assert counted.macs == expected, (path.name, counted)
    assert count_macs(fused, InputShape(batch=1)).macs_by_op.keys() == {"FusedConv", "Gemm"}
    assert count_macs(plain, InputShape(batch=4)).macs == 4 * expected  # per inference of the device's batch
    assert count_macs(plain, InputShape()).params == sum(p.numel() for p in _cnn(8).parameters())


class _Recurrent(nn.Module):
    def __init__(self, layer: type[nn.RNNBase], bidirectional: bool) -> None:
        super().__init__()
        self.layer = layer(8, 6, batch_first=True, bidirectional=bidirectional)
        self.head = nn.Linear(6 * (2 if bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer(x.flatten(1, 2))[0][:, -1])


@pytest.mark.parametrize(("layer", "gates"), [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_layers_count_every_gate_of_every_step(layer: type[nn.RNNBase], gates: int, bidirectional: bool,
                                                         tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _Recurrent(layer, bidirectional)
    path = _export(model, tmp_path / "rnn.onnx")  # [batch, 1, 8, 8] → 8 steps of 8 features
    directions = 2 if bidirectional else 1
    per_step = directions * gates * 6 * (8 + 6)
    counted = count_macs(path, InputShape(batch=2))
    assert counted.macs == 2 * (8 * per_step + 6 * directions * 3), counted
    assert layer.__name__ in counted.macs_by_op


def test_operator_times_skip_warmup_and_take_the_median_run() -> None:
    def run(ts: int) -> dict:
        return {"cat": "Session", "name": "model_run", "ts": ts, "dur": 50}

    def kernel(ts: int, name: str, op: str, dur: int) -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [run(0), kernel(1, "c1", "Conv", 1000),  # warm-up: ignored
              run(100), kernel(101, "c1", "Conv", 30), kernel(110, "c2", "Conv", 10), kernel(120, "g", "Gemm", 10),
              run(200), kernel(201, "c1", "Conv", 900), kernel(210, "c2", "Conv", 10), kernel(220, "g", "Gemm", 10),
              run(300), kernel(301, "c1", "Conv", 30), kernel(310, "c2", "Conv", 10), kernel(320, "g", "Gemm", 10)]
    conv, gemm = aggregate_kernel_times(events, warmup=1)
    assert (conv.op_type, conv.nodes, conv.ms_per_run) == ("Conv", 2, pytest.approx(0.040))  # median, not mean
    assert (gemm.op_type, gemm.nodes, gemm.ms_per_run) == ("Gemm", 1, pytest.approx(0.010))
    assert conv.share + gemm.share == pytest.approx(1.0)


def test_benchmark_interleaves_sessions_and_pools_their_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_time(path: Path, shape: object, *, threads: int, warmup: int, runs: int) -> HostTiming:
        calls.append(path.name)
        return HostTiming(times_ms=(1.0,) * runs if path.name == "a.onnx" else (2.0,) * runs, input_shapes={},
                          peak_memory_mb=float(len(calls)), size_mb=0.1, threads=threads, onnxruntime="x")

    monkeypatch.setattr(bench, "time_onnx", fake_time)
    a, b = bench.benchmark([Path("a.onnx"), Path("b.onnx")], load_device("host-cpu"), warmup=1, runs=10, rounds=4)
    assert calls == ["a.onnx", "b.onnx", "b.onnx", "a.onnx", "a.onnx", "b.onnx", "b.onnx", "a.onnx"]
    assert (a.runs, a.p50_ms, b.p50_ms) == (12, 1.0, 2.0)  # ceil(10 / 4) runs per round, pooled
    assert a.peak_memory_mb == 8.0 and len(b.times_ms) == 12  # the largest of its sessions


def test_bench_command_writes_a_side_by_side_report(models: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "bench"
    result = runner.invoke(app, ["bench", *map(str, models), "--device", "host-cpu", "--out", str(out),
                                 "--runs", "20", "--warmup", "2", "--rounds", "2"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "bench.json").read_text())
    assert [m["name"] for m in record["models"]] == ["wide.onnx", "narrow.onnx"]
    assert record["cpu"]["brand"] and record["settings"] == {"warmup": 2, "runs": 20, "rounds": 2,
                                                             "interleaved": True}
    wide, narrow = record["models"]
    for figures in (wide, narrow):
        assert 0 < figures["p50_ms"] <= figures["p90_ms"] and len(figures["times_ms"]) == 20
        assert figures["verdict"] in ("pass", "fail") and figures["operators"]
    assert wide["macs"] > narrow["macs"] > 0 and narrow["p50_vs_first"] == pytest.approx(
        narrow["p50_ms"] / wide["p50_ms"])
    typed = BenchReport.model_validate(record)  # bench.json is its typed record, read back whole
    assert typed.to_json() == record and typed.models[1].budget.verdict == narrow["verdict"]
    markdown = (out / "bench.md").read_text()
    assert "| p90 latency (ms) |" in markdown and "wide.onnx" in markdown and "narrow.onnx" in markdown
    html = (out / "bench.html").read_text()
    (image,) = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert base64.b64decode(image)[:8] == b"\x89PNG\r\n\x1a\n"
    again = runner.invoke(app, ["bench", str(models[1]), "--out", str(out), "--runs", "10", "--warmup", "1"])
    assert again.exit_code == 0, again.output  # an earlier bench's directory is replaced
    assert [m["name"] for m in json.loads((out / "bench.json").read_text())["models"]] == ["narrow.onnx"]


def test_bench_refuses_a_directory_of_the_users_files_before_any_timing(models: list[Path], tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[object] = []
    monkeypatch.setattr(bench, "bench_models", lambda *args, **kwargs: timed.append(args) or [])
    (tmp_path / "bench.md").write_text("my notes\n")
    result = runner.invoke(app, ["bench", str(models[0]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "not empty and not an edgekd run directory" in result.output, result.output
    assert "bench.json" in " ".join(result.output.split())
    assert timed == [] and (tmp_path / "bench.md").read_text() == "my notes\n"


def test_bench_command_rejects_a_model_given_twice(models: list[Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", str(models[0]), str(models[0]), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "given more than once" in result.output


def test_an_out_that_cannot_be_written_fails_before_any_timing(models: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    timed: list[object] = []
    monkeypatch.setattr(bench, "bench_models", lambda *args, **kwargs: timed.append(args) or [])
    (tmp_path / "taken").write_text("mine\n")
    result = runner.invoke(app, ["bench", str(models[0]), "--out", str(tmp_path / "taken" / "bench")])
    assert result.exit_code == 2 and "a part of its path is a file" in result.output, result.output
    assert timed == [] and (tmp_path / "taken").read_text() == "mine\n"
