"""Tests for edgekd.export: ONNX export, graph optimization, determinism and the parity gate."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekd.config.loading import load_yaml_model
from edgekd.errors import ExportError
from edgekd.export.config import ExportTarget
from edgekd.export.onnx_export import ExportResult, export_onnx
from edgekd.export.parity import check_file_parity, check_parity, parity_batches

EXPORTERS = Path(__file__).resolve().parent.parent / "exporters"
LEVELS = ["disabled", "basic", "extended", "all"]


class SmallCNN(nn.Module):
    """conv-bn-relu-pool-linear over 1×8×8 images, 10 classes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn(self.conv(x))))
        return self.fc(x.flatten(1))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    model = SmallCNN()
    # Non-trivial running statistics, so folding BN into the convolution is really exercised.
    model.bn.running_mean.uniform_(-0.5, 0.5)
    model.bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


MODELS = {"cnn": _cnn, "mlp": _mlp}


def _sample(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(42))


def _target(level: str = "basic", atol: float = 1e-4, rtol: float = 1e-4) -> ExportTarget:
    return ExportTarget(name="test", optimization_level=level, parity_atol=atol, parity_rtol=rtol)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_export_matches_torch_at_batch_1_and_7(tmp_path: Path, kind: str) -> None:
    model = MODELS[kind]()
    path = tmp_path / f"{kind}.onnx"
    result = export_onnx(model, _sample(), path, _target())

    assert isinstance(result, ExportResult) and result.path == path and path.is_file()
    assert result.parity.passed and result.parity.max_abs_diff < 1e-4
    assert result.parity.samples == 1 + 7
    assert result.opset == 17
    assert result.size_mb == pytest.approx(path.stat().st_size / 2**20)

    batch1, batch7 = parity_batches(_sample(), (1, 7), seed=3)
    for batch in (batch1, batch7):
        parity = check_parity(model, path, batch, atol=1e-4)
        assert parity.passed and parity.max_abs_diff < 1e-4
        assert parity.argmax_agreement == 1.0
        assert parity.samples == batch["input"].shape[0]


def test_dynamic_batch_axis_is_in_the_graph(tmp_path: Path) -> None:
    path = tmp_path / "cnn.onnx"
    result = export_onnx(_cnn(), _sample(), path, _target())

    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert result.input_names == ("input",) and result.output_names == ("logits",)
    assert result.input_shapes == {"input": ("batch", 1, 8, 8)}


def test_custom_input_and_output_names(tmp_path: Path) -> None:
    path = tmp_path / "mlp.onnx"
    result = export_onnx(_mlp(), _sample(), path, _target(), input_name="pixels", output_name="scores")
    assert result.input_shapes == {"pixels": ("batch", 1, 8, 8)}
    assert result.output_names == ("scores",)


@pytest.mark.parametrize("level", LEVELS)
def test_reexport_of_same_weights_is_byte_identical(tmp_path: Path, level: str) -> None:
    model = _cnn()
    first = export_onnx(model, _sample(), tmp_path / "a.onnx", _target(level))
    second = export_onnx(copy.deepcopy(model), _sample(), tmp_path / "b.onnx", _target(level))
    assert first.path.read_bytes() == second.path.read_bytes()


@pytest.mark.parametrize("level", LEVELS)
def test_each_optimization_level_loads_and_passes_parity(tmp_path: Path, level: str) -> None:
    model = _cnn()
    path = tmp_path / f"cnn-{level}.onnx"
    result = export_onnx(model, _sample(), path, _target(level))
    assert result.parity.passed and result.parity.argmax_agreement == 1.0

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.run(None, {"input": _sample(5).numpy()})[0].shape == (5, 10)
    assert check_parity(model, path, parity_batches(_sample(), (1, 7)), atol=1e-4).passed

    domains = {node.domain for node in onnx.load(str(path)).graph.node}
    if level in ("disabled", "basic"):
        assert domains <= {"", "ai.onnx"}, "disabled/basic must keep standard ONNX operators only"


def test_export_restores_training_mode(tmp_path: Path) -> None:
    model = _cnn().train()
    model.bn.eval()
    export_onnx(model, _sample(), tmp_path / "cnn.onnx", _target())
    assert model.training and model.conv.training and not model.bn.training


class _FFT(nn.Module):
    """A module the TorchScript exporter cannot export (no ONNX symbolic for aten::fft_fft)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft(x).real


def test_unexportable_module_raises_and_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out" / "fft.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(_FFT(), _sample(), path, _target())
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "fft" in message
    assert not path.exists()
    assert not path.parent.exists() or list(path.parent.iterdir()) == []


def test_failed_export_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportError):
        export_onnx(_FFT(), _sample(), path, _target())
    assert path.read_bytes() == b"previous"
    assert list(tmp_path.iterdir()) == [path]


def test_parity_gate_raises_naming_the_file(tmp_path: Path) -> None:
    model = _cnn()
    measured = export_onnx(model, _sample(), tmp_path / "probe.onnx", _target("disabled")).parity
    if measured.max_abs_diff == 0.0:
        pytest.skip("onnxruntime matches torch exactly here; a 1e-12 gate cannot fail")

    path = tmp_path / "gated" / "cnn.onnx"
    with pytest.raises(ExportError) as info:
        export_onnx(model, _sample(), path, _target("disabled", atol=1e-12, rtol=0.0))
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message and "1e-12" in message and "parity" in message
    assert f"{measured.max_abs_diff:.3g}" in message
    assert not path.exists() and list(path.parent.iterdir()) == []


class _Scaled(nn.Module):
    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor


def test_parity_tolerance_grows_with_the_outputs_scale(tmp_path: Path) -> None:
    # Logits of magnitude ~1e3, and an ONNX file that is off by a relative 1e-5: an absolute 1e-4
    # gate rejects it, 1e-4 of the largest |output| accepts it, 1e-6 does not.
    reference = _Scaled(_mlp(), 5000.0).eval()
    path = tmp_path / "scaled.onnx"
    export_onnx(_Scaled(_mlp(), 5000.0 * (1 + 1e-5)).eval(), _sample(), path, _target(atol=1.0))
    batches = parity_batches(_sample(), (1, 7))
    with torch.no_grad():
        largest = max(reference(b["input"]).abs().max().item() for b in batches)
    assert largest > 500

    absolute = check_parity(reference, path, batches, atol=1e-4)
    assert not absolute.passed and absolute.max_abs_diff == pytest.approx(1e-5 * largest, rel=0.01)
    relative = check_parity(reference, path, batches, atol=1e-4, rtol=1e-4)
    assert relative.passed and relative.reference_max_abs == pytest.approx(largest, rel=1e-6)
    assert relative.tolerance == pytest.approx(1e-4 + 1e-4 * largest, rel=1e-6)
    strict = check_parity(reference, path, batches, atol=1e-4, rtol=1e-6)
    assert not strict.passed
    assert strict.tolerance_text() == (f"the tolerance {1e-4 + 1e-6 * largest:.3g} (parity_atol 0.0001 + "
                                       f"parity_rtol 1e-06 × largest |output| {largest:.3g})")
    assert strict.to_json()["tolerance"] == pytest.approx(1e-4 + 1e-6 * largest, rel=1e-6)


def _two_output_graph(path: Path, small_factor: float) -> Path:
    """``x -> (1000 · x, small_factor · x)`` as an ONNX file."""
    from onnx import TensorProto, helper

    def const(name: str, value: float) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))

    graph = helper.make_graph(
        [const("k_big", 1000.0), const("k_small", small_factor),
         helper.make_node("Mul", ["x", "k_big"], ["big"]), helper.make_node("Mul", ["x", "k_small"], ["small"])],
        "two", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 4]) for name in ("big", "small")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_file_parity_holds_each_output_to_its_own_scale(tmp_path: Path) -> None:
    # The small output is off by 1%: the big output's scale (~2000) must not excuse it.
    reference = _two_output_graph(tmp_path / "reference.onnx", 1.0)
    candidate = _two_output_graph(tmp_path / "candidate.onnx", 1.01)
    x = np.random.default_rng(0).uniform(-2, 2, (5, 4)).astype(np.float32)
    x[0, 0] = np.inf  # non-finite reference values do not set the scale
    result = check_file_parity(reference, candidate, [{"x": x}], 1e-4, rtol=1e-4)
    largest_small = float(np.abs(x[np.isfinite(x)]).max())
    assert not result.passed
    assert result.reference_max_abs == pytest.approx(largest_small, rel=1e-6)
    assert result.max_abs_diff == pytest.approx(0.01 * largest_small, rel=1e-3)
    assert check_file_parity(reference, reference, [{"x": x}], 1e-4, rtol=1e-4).passed
    with pytest.raises(ValueError, match="at least one feed"):
        check_file_parity(reference, candidate, [], 1e-4)


class _TwoOutputs(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), x.sum(dim=(1, 2, 3))


def test_model_with_several_outputs_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "two.onnx"
    with pytest.raises(ExportError, match="single tensor"):
        export_onnx(_TwoOutputs(), _sample(), path, _target())
    assert not path.exists()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_check_parity_reports_a_fixed_batch_graph(tmp_path: Path) -> None:
    model = _mlp()
    path = tmp_path / "fixed.onnx"
    torch.onnx.export(model, (_sample(),), str(path), dynamo=False, input_names=["input"])
    with pytest.raises(ExportError, match="fixed.onnx"):
        check_parity(model, path, parity_batches(_sample(), (1, 7)), atol=1e-4)


def test_parity_batches_are_deterministic_and_distinct() -> None:
    first = parity_batches(_sample(), (1, 7))
    again = parity_batches(_sample(), (1, 7))
    assert [tuple(b["input"].shape) for b in first] == [(1, 1, 8, 8), (7, 1, 8, 8)]
    assert all(torch.equal(a["input"], b["input"]) for a, b in zip(first, again, strict=True))
    assert len({tuple(row.flatten().tolist()) for row in first[1]["input"]}) == 7
    tokens = parity_batches(torch.tensor([[3, 5, 7]]), (4,))[0]["input"]
    assert torch.equal(tokens, torch.tensor([[3, 5, 7]] * 4))


class _TinyTextModel(nn.Module):
    """Embedding + masked mean: two named integer inputs, a dynamic sequence axis."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1))


def test_named_inputs_with_dynamic_sequence_axis(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = _TinyTextModel()
    ids = torch.randint(1, 20, (4, 9))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    result = export_onnx(model, sample, tmp_path / "text.onnx", _target(), extra_dynamic_axes=axes)
    assert result.input_names == ("input_ids", "attention_mask")
    assert result.input_shapes["input_ids"] == ("batch", "sequence")
    short = {"input_ids": ids[:, :3], "attention_mask": torch.ones(4, 3, dtype=torch.long)}
    assert check_parity(model, tmp_path / "text.onnx", short, atol=1e-5).passed


def test_result_to_json_is_serializable(tmp_path: Path) -> None:
    result = export_onnx(_mlp(), _sample(), tmp_path / "mlp.onnx", _target())
    data = json.loads(json.dumps(result.to_json()))
    assert data["path"] == str(tmp_path / "mlp.onnx")
    assert data["input_shapes"] == {"input": ["batch", 1, 8, 8]}
    assert data["parity"]["passed"] is True and data["parity"]["samples"] == 8


@pytest.mark.parametrize("preset", sorted(EXPORTERS.glob("*.yaml")), ids=lambda p: p.stem)
def test_exporter_presets_validate(preset: Path) -> None:
    target = load_yaml_model(preset, ExportTarget)
    assert target.name == preset.stem


def test_onnx_fp32_preset_exports(tmp_path: Path) -> None:
    target = load_yaml_model(EXPORTERS / "onnx-fp32.yaml", ExportTarget)
    assert (target.format, target.opset) == ("onnx", 17)
    assert export_onnx(_cnn(), _sample(), tmp_path / "cnn.onnx", target).parity.passed


def test_whole_sample_is_checked_for_parity(tmp_path: Path) -> None:
    result = export_onnx(_mlp(), _sample(16), tmp_path / "mlp.onnx", _target())
    assert result.parity.samples == 1 + 7 + 16
    assert result.input_shapes == {"input": ("batch", 1, 8, 8)}
