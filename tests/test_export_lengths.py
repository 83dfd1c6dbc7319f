"""The export stage runs each graph at the input shapes the later stages feed, not only at the traced one.

A graph that fixed its sequence length while it was traced used to pass the parity gate (which varies the batch
size only) and fail later in onnxruntime; it is now refused at export in one line naming the lengths, while an
ordinary BERT student passes and records the lengths it was checked at.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd import Distill, Export, Pipeline, Teacher
from edgekd.config.device import InputShape
from edgekd.errors import EdgekdError, ExportError
from edgekd.export.config import ExportTarget
from edgekd.export.onnx_export import export_onnx
from edgekd.pipeline import load_run
from edgekd.run_plan import plan_run
from tests.test_text_pipeline import text_data  # noqa: F401  (fixture)

DEVICE_LENGTH = InputShape().sequence_length  # host-cpu's, which the quantize, profile and bundle stages feed


class SlicedPositions(nn.Module):
    """Token plus position embeddings, averaged over the mask: the position table is sliced by the length read as
    a Python int, which tracing turns into a constant, so the graph runs only at the traced length."""

    def __init__(self, vocab: int = 256, dim: int = 16, positions: int = 512, classes: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.positions = nn.Parameter(torch.randn(positions, dim) * 0.02)
        self.classifier = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = int(input_ids.shape[1])  # a Python int: a constant in the traced graph
        hidden = self.embed(input_ids) + self.positions[:length]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


class TracedPositions(SlicedPositions):
    """The same model with the length kept as a traced size: its graph runs at any length."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids) + self.positions[: input_ids.shape[1]]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return self.classifier((hidden * mask).sum(1) / mask.sum(1).clamp(min=1))


def sliced_positions(dim: int = 16) -> SlicedPositions:
    """The model whose graph runs only at its traced length (for ``arch: module``)."""
    return SlicedPositions(dim=dim)


def _lengths(shapes: list[dict[str, list[int]]]) -> set[int]:
    return {dims[1] for checked in shapes for name, dims in checked.items() if name == "input_ids"}


def test_a_module_that_runs_only_at_its_traced_length_is_refused_at_export(
        text_data: dict, tmp_path: Path) -> None:  # noqa: F811
    module = {"arch": "module", "factory": "tests.test_export_lengths:sliced_positions", "kwargs": {"dim": 16}}
    pipeline = Pipeline(name="fixed-length", data=text_data, tokenizer={"vocab_size": 200, "max_length": 32},
                        teacher=module, student=module, stages=[Teacher(epochs=1, lr=0.05), Export()], threads=1)
    with pytest.raises(EdgekdError) as raised:
        pipeline.run(tmp_path / "run")
    message = str(raised.value)
    assert "\n" not in message
    assert "teacher.onnx" in message and "SlicedPositions" in message
    traced = int(message.split("traced at ")[1].split(" tokens")[0])
    assert traced < DEVICE_LENGTH  # the test sentences' padded length
    assert f"does not run at {DEVICE_LENGTH} tokens (the device profile's sequence_length" in message
    assert f"only runs at {traced} tokens" in message
    assert not (tmp_path / "run" / "02-export").exists()  # nothing exported that later stages would trip over


def test_an_ordinary_bert_student_passes_and_records_the_lengths_checked(
        text_data: dict, tmp_path: Path) -> None:  # noqa: F811
    bert = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    Pipeline(name="bert-lengths", data=text_data, tokenizer={"vocab_size": 200, "max_length": 32},
             teacher=bert, student=bert, stages=[Teacher(epochs=1), Distill(epochs=1), Export()],
             threads=1).run(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "03-export" / "stage.json").read_text())["metrics"]
    for role in ("teacher", "student"):
        lengths = _lengths(record[role]["checked_shapes"])
        assert DEVICE_LENGTH in lengths
        assert len(lengths) >= 3  # the traced length, the device's and a second one
        assert record[role]["parity"]["passed"]
    # the export depends on the device's inputs (it is checked at them), not on the rest of the profile
    recipe, device, _ = load_run(tmp_path / "run")
    budget = device.budget.model_copy(update={"p90_ms": device.budget.p90_ms * 2})
    assert [plan.status for plan in plan_run(recipe, device.model_copy(update={"budget": budget}),
                                             tmp_path / "run")] == ["cached"] * 3
    shorter = device.model_copy(update={"inputs": device.inputs.model_copy(update={"sequence_length": 64})})
    assert [plan.describe() for plan in plan_run(recipe, shorter, tmp_path / "run")][1:] == [
        "02-distill  cached", f"03-export  re-runs: device profile.inputs.sequence_length changed {DEVICE_LENGTH} → 64"]


def test_the_check_compares_values_not_only_shapes_and_keeps_the_traced_length(tmp_path: Path) -> None:
    """Both modules trace; only the one with a traced size exports, checked at the traced, device and half
    lengths (with the ids below its vocabulary, as the profiler feeds them)."""
    torch.manual_seed(0)
    sample = {"input_ids": torch.randint(0, 256, (8, 20)), "attention_mask": torch.ones(8, 20, dtype=torch.long)}
    axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    target = ExportTarget(name="test")
    result = export_onnx(TracedPositions().eval(), sample, tmp_path / "ok.onnx", target, extra_dynamic_axes=axes,
                         shape=InputShape(sequence_length=48))
    assert _lengths([{k: list(v) for k, v in s.items()} for s in result.checked_shapes]) == {20, 48, 10}
    with pytest.raises(ExportError, match=r"traced at 20 tokens, does not run at 48 tokens"):
        export_onnx(SlicedPositions().eval(), sample, tmp_path / "bad.onnx", target, extra_dynamic_axes=axes,
                    shape=InputShape(sequence_length=48))
    assert not (tmp_path / "bad.onnx").exists()
    # at the traced length the device's inputs are the sample's own: the graph is checked at half of it too
    with pytest.raises(ExportError, match=r"traced at 20 tokens, does not run at 10 tokens \(a second length"):
        export_onnx(SlicedPositions().eval(), sample, tmp_path / "bad.onnx", target, extra_dynamic_axes=axes,
                    shape=InputShape(sequence_length=20))


def test_the_later_shapes_check_parses_the_graph_once_for_its_inputs_and_tables(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """specs_and_limits reads an exported text model's inputs and embedding rows as input_specs and token_id_limits
    do, from one parse of the file, and the later-shapes check parses the file once (it parsed it twice)."""
    import onnx

    from edgekd.export.later_shapes import check_later_shapes
    from edgekd.profile.inputs import input_specs, specs_and_limits, token_id_limits

    torch.manual_seed(0)
    model = TracedPositions().eval()
    sample = {"input_ids": torch.randint(0, 256, (8, 20)), "attention_mask": torch.ones(8, 20, dtype=torch.long)}
    axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    path = export_onnx(model, sample, tmp_path / "ok.onnx", ExportTarget(name="test"), extra_dynamic_axes=axes).path
    specs, limits = specs_and_limits(path)
    assert (specs, limits) == (input_specs(path), token_id_limits(path))
    assert [spec.name for spec in specs] == ["input_ids", "attention_mask"] and limits == {"input_ids": 256}

    loads = []
    load = onnx.load
    monkeypatch.setattr(onnx, "load", lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs))
    checked = check_later_shapes(model, path, sample, axes, InputShape(sequence_length=48), atol=1e-4)
    assert _lengths([{k: list(v) for k, v in s.items()} for s in checked]) == {48, 10}
    assert len(loads) == 1


def _scaled_when_long(base: nn.Module, threshold: int) -> nn.Module:
    """``base`` (a Hugging Face causal LM) whose logits are halved once the cache and new tokens together pass
    ``threshold``: a Python branch on the length, which tracing takes once and fixes in the graph."""

    class ScaledWhenLong(type(base)):  # type: ignore[misc, valid-type]
        def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - transformers' own signature
            out = super().forward(*args, **kwargs)
            mask = kwargs.get("attention_mask")  # the cache and the new tokens; a whole sequence comes without
            if int((mask if mask is not None else kwargs["input_ids"]).shape[1]) > threshold:
                out.logits = out.logits * 0.5
            return out

    model = ScaledWhenLong(base.config).eval()
    model.load_state_dict(base.state_dict())
    return model


def test_a_causal_lm_graph_is_checked_at_the_devices_prompt_length(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The step-wise check runs a 9-token prefix and cached steps; the profile stage starts from the device's
    prompt_tokens. A graph right on the first and wrong on the second is refused, naming both lengths."""
    from edgekd.export import causal_lm_stage
    from edgekd.export.causal_lm_stage import export_cached, parity_rows, prompt_row
    from tests.causal_lms import spread_causal_lm

    # TorchScript's graph alone: transformers' exporter, tried after a refusal, takes half a minute on 2 cores
    monkeypatch.setattr(causal_lm_stage, "exporters_for", lambda model: ("torchscript",))

    model = _scaled_when_long(spread_causal_lm("gpt2", 1, 32, 2, vocab=23, context=48), threshold=24)
    ids = torch.randint(0, 23, (200,), generator=torch.Generator().manual_seed(0))
    rows, prefix = parity_rows(ids, 48)
    assert rows.shape[1] <= 24  # the prefix and its cached steps stay below the branch: they pass
    export_cached(model, rows, prefix, tmp_path / "prefix-only.onnx", ExportTarget(name="test"))
    with pytest.raises(ExportError) as raised:
        export_cached(model, rows, prefix, tmp_path / "lm.onnx", ExportTarget(name="test"),
                      prompt=prompt_row(ids, 48, 32))
    message = str(raised.value)
    assert "\n" not in message and not (tmp_path / "lm.onnx").exists()
    assert f"checked on a {prefix}-token prompt, disagrees with PyTorch on the device's 32-token prompt" in message
    ok = export_cached(spread_causal_lm("gpt2", 1, 32, 2, vocab=23, context=48), rows, prefix,
                       tmp_path / "ok.onnx", ExportTarget(name="test"), prompt=prompt_row(ids, 48, 32))
    assert ok.parity.passed


def test_an_onnx_file_fixed_at_its_traced_length_is_refused_naming_the_devices_length(tmp_path: Path) -> None:
    """A file exported elsewhere (here without the device's shapes) has no PyTorch model to compare with: converting
    it to .ort runs it at the device's inputs first and refuses it in one line saying what to do."""
    from edgekd.export.config import load_export_target
    from edgekd.export.ort_format import export_file

    torch.manual_seed(0)
    sample = {"input_ids": torch.randint(0, 256, (8, 20)), "attention_mask": torch.ones(8, 20, dtype=torch.long)}
    axes = {"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}}
    fixed = export_onnx(SlicedPositions().eval(), sample, tmp_path / "fixed.onnx", ExportTarget(name="test"),
                        extra_dynamic_axes=axes).path  # the batch-only gate passes it
    with pytest.raises(ExportError) as raised:
        export_file(fixed, load_export_target("ort-mobile"), tmp_path / "out", shape=InputShape(sequence_length=48))
    message = str(raised.value)
    assert "\n" not in message and message.startswith(f"{fixed}: the graph does not run at 48 tokens")
    assert "give a device profile whose inputs.sequence_length it runs at" in message
    assert not any((tmp_path / "out").glob("*.ort"))  # nothing converted
