"""transformers' own ONNX exporter as edgekd's second exporter (edgekd.export.backends, edgekd.export.hf_exporter).

Mixture-of-experts models (whose routing torch's TorchScript exporter cannot export) go through transformers'
exporter, and any Hugging Face model whose TorchScript export fails falls back to it; either graph passes the same
parity gate (padded batches with non-trivial attention masks, another sequence length), keeps edgekd's input names
and cache layout, and runs through quantize and bundle like any other.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import ExportError
from edgekd.export import onnx_export
from edgekd.export.backends import exporters_for
from edgekd.export.causal_lm_stage import export_cached
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.record import read_export_record
from edgekd.profile.generate import CachedGenerator

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
runner = CliRunner()
VOCAB = 60
MIXTRAL = {"model_type": "mixtral", "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 48, "num_local_experts": 4,
           "num_experts_per_tok": 2, "max_position_embeddings": 64, "pad_token_id": 0}


def _model(kind: str, config: dict[str, Any]) -> torch.nn.Module:
    import transformers

    auto = {"sequence": transformers.AutoModelForSequenceClassification,
            "causal_lm": transformers.AutoModelForCausalLM}[kind]
    torch.manual_seed(0)
    labels = {"num_labels": 3} if kind == "sequence" else {}
    settings = {key: value for key, value in config.items() if key != "model_type"}
    built = transformers.AutoConfig.for_model(config["model_type"], **settings, **labels)
    return auto.from_config(built, attn_implementation="eager").eval()


def _padded(rows: int = 6, longest: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    """Right-padded ids of lengths 2..longest (non-trivial attention masks)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(2, longest, rows).long()
    ids = torch.randint(4, VOCAB, (rows, longest), generator=generator)
    mask = (torch.arange(longest)[None] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _onnx_logits(path: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {name: tensor.numpy() for name, tensor in batch.items()})[0]


def test_exporters_are_tried_by_kind_of_model() -> None:
    """A plain module: TorchScript only; a dense Hugging Face model: TorchScript, then transformers'; a
    mixture-of-experts one: transformers' first (TorchScript has no export of its routing)."""
    assert exporters_for(torch.nn.Linear(2, 2)) == ("torchscript",)
    dense = {**MIXTRAL, "model_type": "llama"}
    dense.pop("num_local_experts"), dense.pop("num_experts_per_tok")
    assert exporters_for(_model("sequence", dense)) == ("torchscript", "transformers")
    assert exporters_for(_model("sequence", MIXTRAL)) == ("transformers", "torchscript")


@pytest.mark.slow
def test_moe_classifier_exports_with_parity_on_padded_batches_and_other_lengths(tmp_path: Path) -> None:
    model = _model("sequence", MIXTRAL)
    sample = _padded()
    result = export_onnx(model, sample, tmp_path / "moe.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes={name: {1: "sequence"} for name in sample})
    assert result.exporter == "transformers" and result.parity.passed and result.opset >= 18
    assert result.input_names == ("input_ids", "attention_mask") and result.output_names == ("logits",)
    assert result.input_shapes == {"input_ids": ("batch", "sequence"), "attention_mask": ("batch", "sequence")}
    # another batch size and length than traced, padded: the graph is PyTorch's to float precision
    other = _padded(rows=3, longest=7, seed=1)
    with torch.no_grad():
        expected = model(**other).logits.numpy()
    np.testing.assert_allclose(_onnx_logits(tmp_path / "moe.onnx", other), expected, atol=1e-5)
    # left-padded, the mask matters (right padding is after the pooled last token, which a causal model never
    # attends from): the graph follows it as PyTorch does, so a mask in a wrong slot could not pass
    left = {name: tensor.flip(1) for name, tensor in other.items()}
    with torch.no_grad():
        expected = model(**left).logits.numpy()
    np.testing.assert_allclose(_onnx_logits(tmp_path / "moe.onnx", left), expected, atol=1e-5)
    unmasked = {**left, "attention_mask": torch.ones_like(left["attention_mask"])}
    assert np.abs(_onnx_logits(tmp_path / "moe.onnx", unmasked) - expected).max() > 1e-3


def test_a_failed_torchscript_export_falls_back_and_both_failing_is_one_line(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A dense model whose TorchScript export fails is exported by transformers' exporter, with the input names
    TorchScript gives; when both fail the error is one line with both reasons and no file is left."""
    model = _model("sequence", {**MIXTRAL, "model_type": "qwen2", "num_local_experts": None})
    sample, target = _padded(), load_export_target("onnx-fp32")
    reference = export_onnx(model, sample, tmp_path / "ts.onnx", target)
    assert reference.exporter == "torchscript"

    def refuse(*_args: Any, **_kwargs: Any) -> bytes:
        raise ExportError(f"{tmp_path / 'hf.onnx'}: cannot export it to ONNX opset 17: an op torch lacks")

    monkeypatch.setattr(onnx_export, "_torch_export", refuse)
    fallback = export_onnx(model, sample, tmp_path / "hf.onnx", target)
    assert fallback.exporter == "transformers" and fallback.parity.passed
    assert fallback.input_names == reference.input_names and fallback.output_names == reference.output_names
    np.testing.assert_allclose(_onnx_logits(tmp_path / "hf.onnx", sample), _onnx_logits(tmp_path / "ts.onnx", sample),
                               atol=1e-5)

    from edgekd.export import hf_exporter

    def broken(*_args: Any, **_kwargs: Any) -> bytes:
        raise RuntimeError("Dynamic control flow is not supported\nsecond line")

    monkeypatch.setattr(hf_exporter, "classifier_onnx", broken)
    with pytest.raises(ExportError) as caught:
        export_onnx(model, sample, tmp_path / "none.onnx", target)
    message = str(caught.value)
    assert "\n" not in message and "an op torch lacks" in message
    assert "transformers' exporter also failed" in message and "Dynamic control flow is not supported" in message
    assert not (tmp_path / "none.onnx").exists()


@pytest.mark.slow
def test_moe_causal_lm_exports_in_optimums_cache_layout_and_generates_as_transformers(tmp_path: Path) -> None:
    model = _model("causal_lm", MIXTRAL)
    rows = _padded(rows=4, longest=14)["input_ids"].clamp(min=4)
    exported = export_cached(model, rows, 7, tmp_path / "lm.onnx", load_export_target("onnx-fp32"))
    assert exported.exporter == "transformers" and exported.parity.passed and exported.opset >= 18
    graph = onnx.load(str(tmp_path / "lm.onnx"))
    layers = MIXTRAL["num_hidden_layers"]
    assert [value.name for value in graph.graph.input] == ["input_ids", "attention_mask", *(
        f"past_key_values.{i}.{part}" for i in range(layers) for part in ("key", "value"))]
    assert [value.name for value in graph.graph.output] == ["logits", *(
        f"present.{i}.{part}" for i in range(layers) for part in ("key", "value"))]
    past = graph.graph.input[2].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in past] == ["batch", MIXTRAL["num_key_value_heads"], "past", 8]
    prompt = [5, 9, 13, 17]
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert CachedGenerator(tmp_path / "lm.onnx").generate(prompt, 10).tokens == expected[0, len(prompt):].tolist()


def _run(tmp: Path, recipe: dict[str, Any]) -> Path:
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp / "run")])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def _stage_json(run_dir: Path, name: str) -> dict[str, Any]:
    return json.loads(next(run_dir.glob(f"*-{name}")).joinpath("stage.json").read_text())


@pytest.mark.slow
def test_moe_classifier_teacher_runs_through_export_quantize_and_bundle(tmp_path: Path) -> None:
    from tests import hf_families

    (tmp_path / "data").mkdir()
    files = hf_families.sentiment_files(tmp_path / "data")
    root = files["root"]
    moe = {key: value for key, value in MIXTRAL.items() if key not in ("vocab_size", "pad_token_id")}
    moe["max_position_embeddings"] = 128  # the device profile's sequence length
    recipe = {"name": "moe-cls", "seed": 0, "threads": 1,
              "data": {"source": "tsv", "train": str(root / "train.tsv"), "test": str(root / "dev.tsv"),
                       "val_examples": 60},
              "tokenizer": {"pretrained": str(root / "tokenizer"), "max_length": 32},
              "teacher": {"model": {"arch": "hf", "config": moe}},
              "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}},
              "stages": [{"stage": "teacher", "epochs": 3, "batch_size": 16, "lr": 0.003}, {"stage": "export"},
                         {"stage": "quantize", "roles": ["teacher"], "warmup": 1, "runs": 10, "rounds": 2},
                         {"stage": "profile", "warmup": 1, "runs": 10}, {"stage": "bundle"}]}
    run_dir = _run(tmp_path, recipe)
    exported = read_export_record(_stage_json(run_dir, "export")).models["teacher"]
    assert exported.exporter == "transformers" and exported.parity.passed
    assert exported.input_names == ["input_ids", "attention_mask"]
    quantized = _stage_json(run_dir, "quantize")["metrics"]["teacher"]
    assert quantized["decision"] in quantized["variants"] and len(quantized["variants"]) > 1
    int8 = next(name for name in quantized["variants"] if "int8" in name)
    assert quantized["variants"][int8]["size_mb"] < quantized["variants"]["fp32"]["size_mb"]
    bundle = run_dir / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert "input_ids" in json.dumps(manifest)


@pytest.mark.slow
def test_moe_causal_lm_runs_through_export_quantize_and_its_bundle_generates(tmp_path: Path) -> None:
    from tests.test_causal_lm_pipeline import DEVICE, _corpus
    from tests.test_quantize_tasks import assert_readme_generates_as_edgekd

    (tmp_path / "tiny-gen.yaml").write_text(yaml.safe_dump(DEVICE))
    moe = {key: value for key, value in MIXTRAL.items() if key not in ("vocab_size", "pad_token_id")}
    recipe = {"name": "moe-lm", "seed": 0, "threads": 1, "device": str(tmp_path / "tiny-gen.yaml"),
              "data": {"source": "corpus", "path": str(_corpus(tmp_path / "corpus.txt")), "context": 32},
              "teacher": {"model": {"arch": "hf", "config": moe}},
              "student": {"model": {"arch": "hf", "config": {"model_type": "gpt2", "n_embd": 24, "n_layer": 1,
                                                             "n_head": 2}}},
              "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 3e-3}, {"stage": "export"},
                         {"stage": "quantize", "roles": ["teacher"], "rounds": 2}, {"stage": "profile"},
                         {"stage": "bundle"}]}
    run_dir = _run(tmp_path, recipe)
    exported = read_export_record(_stage_json(run_dir, "export")).models["teacher"]
    assert exported.exporter == "transformers" and exported.kv_cache and exported.parity.passed
    quantized = _stage_json(run_dir, "quantize")["metrics"]["teacher"]
    int8 = next(name for name in quantized["variants"] if "int8" in name)
    assert quantized["variants"][int8]["next_token_agreement"] > 0.5
    # the bundle's README loop generates what edgekd's own loop over the bundled graph does
    assert_readme_generates_as_edgekd(run_dir / "bundle")


LONGFORMER = {"model_type": "longformer", "vocab_size": 160, "hidden_size": 32, "num_hidden_layers": 2,
              "num_attention_heads": 2, "intermediate_size": 48, "attention_window": [4, 4],
              "max_position_embeddings": 130, "pad_token_id": 1}


def test_a_failed_trace_prints_nothing_its_partial_graph_goes_to_the_debug_log(
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """torch.export prints the graph it traced to stderr when tracing fails (a Longformer's: 1,700 lines, before
    edgekd's one-line error, also under --json): it goes to the debug log."""
    import logging

    from edgekd.export import hf_exporter

    ids = torch.randint(3, 150, (4, 32), generator=torch.Generator().manual_seed(0))
    sample = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with caplog.at_level(logging.DEBUG, logger="edgekd"), pytest.raises(Exception, match="data-dependent"):
        hf_exporter.classifier_onnx(_model("sequence", LONGFORMER), sample, {k: {1: "sequence"} for k in sample},
                                    "logits", 17)
    printed = capfd.readouterr()
    assert "def forward" not in printed.err + printed.out
    assert any("printed to stderr" in message and "def forward" in message for message in caplog.messages)
