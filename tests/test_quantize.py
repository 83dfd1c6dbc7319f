"""The quantize stage: ISA-fit settings, accuracy-aware exclusion, the agreement gate, the decision, the pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

import edgekd
from edgekd.config.device import load_device
from edgekd.data.config import SklearnData, TextFileData, TokenizerConfig
from edgekd.data.task_data import prepare_task_data
from edgekd.errors import ConfigError, ExportError
from edgekd.models.task_model import TaskModel
from edgekd.pipeline import RunResult, damaged_stage
from edgekd.profile.bench import Speedup
from edgekd.profile.cpu import detect_cpu
from edgekd.quantize import variants as variants_module
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.decision import decide
from edgekd.quantize.evaluate import model_outputs
from edgekd.quantize.feeds import QuantData, dataset_feeds
from edgekd.quantize.isa import expand_modes, int8_settings, isa_label
from edgekd.quantize.model import build_checked, builder_for, decide_for, gate_failure, quantize_model
from edgekd.quantize.quantizers import fp16_weights, quantize_dynamic_int8, weighted_nodes
from edgekd.quantize.record import QuantizeRecord, read_quantize_record
from edgekd.quantize.sensitivity import rank_nodes
from edgekd.quantize.variants import Variant, within_gates
from tests.conftest import demo_recipe_dict

FAST_TIMING = {"warmup": 2, "runs": 20, "rounds": 2}


def _recipe(**quantize: object) -> dict:
    """A small digits recipe: a briefly trained teacher CNN, exported and quantized."""
    recipe = demo_recipe_dict()
    recipe["name"] = "quantize-test"
    recipe["teacher"]["model"] = {"arch": "cnn", "channels": [32, 128], "hidden": 128}
    recipe["stages"] = [
        {"stage": "teacher", "epochs": 4, "lr": 0.004},
        {"stage": "export", "target": "onnx-fp32"},
        {"stage": "quantize", "roles": ["teacher"], **FAST_TIMING, **quantize},
        {"stage": "report"},
    ]
    return recipe


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    """One pipeline run of :func:`_recipe`, shared by the tests that inspect a real model."""
    directory = tmp_path_factory.mktemp("quantize")
    path = directory / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe()))
    return edgekd.run(path, out=directory / "run")


@pytest.fixture(scope="module")
def exported(run) -> Path:
    return run.run_dir / "02-export" / "teacher.onnx"


@pytest.fixture(scope="module")
def data() -> QuantData:
    digits = SklearnData(**demo_recipe_dict()["data"])
    return QuantData.from_dataset(prepare_task_data(digits, 0), calibration_samples=128, eval_batch=1)


# --------------------------------------------------------------------------- settings and modes


def test_int8_settings_follow_the_instruction_set() -> None:
    vnni = int8_settings(["avx2", "avx512f", "avx512_vnni"])
    assert (vnni.activation_type, vnni.weight_type, vnni.reduce_range) == ("uint8", "int8", False)
    avx2 = int8_settings(["avx", "avx2", "fma"])
    assert avx2.weight_type == "int8" and avx2.reduce_range  # 7-bit weights: VPMADDUBSW saturation
    arm = int8_settings(["neon", "dotprod"])
    assert arm.weight_type == "int8" and not arm.reduce_range
    assert isa_label(["avx", "avx2"]) == "avx2-only"
    assert isa_label(["avx2", "avx512_vnni", "amx_int8"]) == "amx_int8, avx512_vnni"


def test_auto_mode_depends_on_model_kind_and_precision() -> None:
    assert expand_modes(["auto"], transformer=True, precision="fp32") == ["dynamic"]
    assert expand_modes(["auto"], transformer=False, precision="int8") == ["static"]
    assert expand_modes(["auto", "static", "fp16"], transformer=False, precision="fp16") == ["static", "fp16"]


def test_dataset_feeds_batches_images_with_labels() -> None:
    data = prepare_task_data(SklearnData(**demo_recipe_dict()["data"]), 0)
    batches = list(dataset_feeds(data, "val", 100))
    assert sum(len(labels) for _, labels in batches) == len(data.val)
    feed, labels = batches[0]
    assert feed["input"].dtype == np.float32 and feed["input"].shape == (100, 1, 8, 8)
    assert labels.dtype == np.int64


# --------------------------------------------------------------------------- decision


def _variant(name: str, p50: float, *, val_accuracy: float = 0.98, size: float = 1.0, excluded: int = 0,
             spread: float = 0.01) -> Variant:
    """A timed variant; its speed-up over an fp32 at 10 ms has an interval of ± ``spread`` (relative)."""
    precision = name.split("-")[0]
    ratio = 10.0 / p50
    scores = {"accuracy": val_accuracy}
    return Variant(name=name, precision=precision, path=Path(f"{name}.onnx"), val_metrics=scores,
                   val_agreement=1.0 if val_accuracy == 0.98 else 0.9, metrics=scores, agreement=1.0,
                   excluded_nodes=tuple(f"n{i}" for i in range(excluded)), p50_ms=p50, size_mb=size,
                   speedup=Speedup(ratio=ratio, low=ratio * (1 - spread), high=ratio * (1 + spread), rounds=4))


def _decide(variants: list[Variant], *, size_budget: float = 100.0):
    return decide(variants, eligible=lambda v: v.val_score >= 0.97, min_speedup=1.05,
                  size_budget_mb=size_budget, cpu_label="avx512_vnni", tolerance=0.01)


def test_int8_is_kept_when_it_pays() -> None:
    decision = _decide([_variant("fp32", 10.0), _variant("int8-dynamic", 4.0)])
    assert decision.kept == "int8-dynamic"
    assert decision.reason.startswith("int8-dynamic kept: 2.50× (95% interval 2.48–2.52×, 4 rounds) faster than "
                                      "fp32 on this CPU (avx512_vnni)")


def test_a_variant_is_kept_for_speed_only_when_its_interval_clears_min_speedup() -> None:
    rng = np.random.default_rng(0)
    for _ in range(30):
        ratio, spread = rng.uniform(0.95, 1.3), rng.uniform(0.0, 0.15)
        decision = _decide([_variant("fp32", 10.0), _variant("int8-dynamic", 10.0 / ratio, spread=spread)])
        clears = ratio * (1 - spread) >= 1.05
        assert (decision.kept == "int8-dynamic") == clears, (ratio, spread, decision.reason)
        if not clears and ratio >= 1.05:
            assert "its interval does not clear the 1.05× needed" in decision.reason, decision.reason


def test_fp32_is_kept_when_int8_is_barely_faster() -> None:
    decision = _decide([_variant("fp32", 10.0), _variant("int8-dynamic", 9.8)])
    assert decision.kept == "fp32"
    assert "only 1.02× faster" in decision.reason


def test_fp32_is_kept_when_the_fast_variant_loses_accuracy() -> None:
    decision = _decide([_variant("fp32", 10.0), _variant("int8-static-minmax", 3.0, val_accuracy=0.90, excluded=2)])
    assert decision.kept == "fp32"
    assert "loses 8.0 pt validation accuracy" in decision.reason and "2 node(s) excluded" in decision.reason


def test_a_binding_size_budget_keeps_the_smaller_variant() -> None:
    variants = [_variant("fp32", 10.0, size=4.0), _variant("fp16", 10.1, size=2.0)]
    decision = _decide(variants, size_budget=3.0)
    assert decision.kept == "fp16" and "fits the 3 MB size budget" in decision.reason


# --------------------------------------------------------------------------- on a real model


def test_stage_keeps_a_variant_and_records_why(run) -> None:
    stored = json.loads((run.run_dir / "03-quantize" / "stage.json").read_text())
    record = read_quantize_record(stored)
    assert isinstance(record, QuantizeRecord) and record.to_json() == stored["metrics"]
    teacher = record.models["teacher"]
    assert set(teacher.variants) == {"fp32", "fp32-optimized", "int8-static-minmax"}
    static = teacher.variants["int8-static-minmax"]
    fp32 = teacher.variants["fp32"]
    assert static.metric == "accuracy" and static.score is not None and fp32.score is not None
    assert abs(static.score - fp32.score) <= 0.01
    assert static.val_agreement is not None and static.val_agreement >= 0.99
    assert fp32.size_mb / static.size_mb >= 3.0
    assert teacher.decision in teacher.variants and teacher.reason.startswith(teacher.decision)
    assert record.cpu.isa == detect_cpu().isa and teacher.calibration_set == "train split"
    assert teacher.calibration_examples == 256  # the default calibration_samples, four whole batches of 64
    model = run.artifact.get("teacher")
    assert model.onnx == teacher.variants[teacher.decision].path
    assert (run.run_dir / model.onnx).is_file()
    report = run.report()
    assert report["teacher"]["precision"] == teacher.decision
    assert report["teacher"]["quantization_reason"] == teacher.reason
    assert damaged_stage(run.run_dir) is None  # every stage's record reads back as its kind's: a re-run reuses it


def test_wrecked_calibration_is_repaired_by_excluding_sensitive_nodes(exported: Path, data: QuantData,
                                                                     tmp_path: Path) -> None:
    # Calibrating on inputs 100× too small clips every activation: static INT8 then wrecks accuracy.
    wrecked = replace(data, calibration=tuple({"input": f["input"] * 0.01} for f in data.calibration))
    config = QuantizeStage(stage="quantize", modes=["static"], max_retries=4, **FAST_TIMING)
    builder = builder_for(config, load_device("host-cpu"), wrecked)
    _, variants = build_checked(builder, exported, tmp_path, "teacher", precision="fp32", label="teacher")
    static = next(v for v in variants if v.name == "int8-static-minmax")
    fp32 = next(v for v in variants if v.name == "fp32")
    assert static.retries >= 1 and static.excluded_nodes
    assert fp32.val_score - static.val_score <= 0.01 and static.val_agreement >= 0.99


def test_agreement_gate_fails_the_stage_with_a_clear_message(exported: Path, data: QuantData,
                                                            tmp_path: Path) -> None:
    wrecked = replace(data, calibration=tuple({"input": f["input"] * 0.01} for f in data.calibration))
    config = QuantizeStage(stage="quantize", modes=["static"], max_retries=0, **FAST_TIMING)
    with pytest.raises(ExportError, match=r"^teacher: int8-static-minmax agrees with fp32 on [0-9]+\.[0-9]{2}% of "
                                          r"validation inputs \(below the 99% required\) after excluding 0 node\(s\)"):
        quantize_model(exported, tmp_path, "teacher", wrecked, config, load_device("host-cpu"), label="teacher")


def test_with_auto_a_variant_missing_the_gate_is_left_out_not_fatal(exported: Path, data: QuantData,
                                                                   tmp_path: Path) -> None:
    wrecked = replace(data, calibration=tuple({"input": f["input"] * 0.01} for f in data.calibration))
    config = QuantizeStage(stage="quantize", modes=["auto", "static"], max_retries=0, **FAST_TIMING)
    result = quantize_model(exported, tmp_path, "teacher", wrecked, config, load_device("host-cpu"), label="teacher")
    static = next(v for v in result.variants if v.name == "int8-static-minmax")
    assert static.val_agreement < 0.99 and result.kept.name != static.name, result.decision.reason


def test_sensitivity_ranks_every_weighted_node(exported: Path, data: QuantData, tmp_path: Path) -> None:
    wrecked = replace(data, calibration=tuple({"input": f["input"] * 0.01} for f in data.calibration))
    config = QuantizeStage(stage="quantize", modes=["static"], max_retries=0, agreement=0.01, **FAST_TIMING)
    builder = builder_for(config, load_device("host-cpu"), wrecked)
    graphs, variants = build_checked(builder, exported, tmp_path, "teacher", precision="fp32", label="teacher")
    static = next(v for v in variants if v.name == "int8-static-minmax")
    nodes = weighted_nodes(graphs.preprocessed)
    ranked = rank_nodes(graphs.preprocessed, static.path, nodes, data.calibration[:2], threads=1)
    assert sorted(name for name, _ in ranked) == sorted(nodes) and len(nodes) == 4
    assert [score for _, score in ranked] == sorted((score for _, score in ranked), reverse=True)


def test_fp16_weights_halve_the_file_and_keep_predictions(exported: Path, data: QuantData, tmp_path: Path) -> None:
    half = fp16_weights(exported, tmp_path / "half.onnx")
    onnx.checker.check_model(str(half))
    assert half.stat().st_size < 0.6 * exported.stat().st_size
    assert np.array_equal(model_outputs(half, data.test, 1).argmax(1), model_outputs(exported, data.test, 1).argmax(1))


def test_quantize_needs_an_export_before_it(write_recipe) -> None:
    recipe = _recipe()
    recipe["stages"] = [recipe["stages"][0], recipe["stages"][2], recipe["stages"][1]]
    with pytest.raises(ConfigError, match=r"stages\[1\]\.stage: 'quantize' needs an 'export' stage before it"):
        edgekd.validate(write_recipe(recipe))


def test_unknown_quantize_key_is_named(write_recipe) -> None:
    with pytest.raises(ConfigError, match=r"stages\[2\]\.tolerence: unknown key 'tolerence' \(did you mean "
                                          r"'tolerance'\?\)"):
        edgekd.validate(write_recipe(_recipe(tolerence=0.02)))


# --------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, QuantData]:
    """A small random BERT classifier exported to ONNX, and token batches for it."""
    import torch
    import transformers

    from edgekd.profile.references import export_encoder

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=32, num_labels=2)
    config._attn_implementation = "eager"
    source = tmp_path_factory.mktemp("bert") / "bert.onnx"
    export_encoder(transformers.BertForSequenceClassification(config), source, sequence_length=16, dynamic=True,
                   output="logits")
    rng = np.random.default_rng(0)

    def batch(rows: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        ids = rng.integers(1, 64, (rows, 16), dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        return feeds, rng.integers(0, 2, rows, dtype=np.int64)

    return source, QuantData(calibration=(batch(8)[0],), val=(batch(16),), test=(batch(16),))


def test_bert_is_fused_then_quantized_despite_shape_inference_friction(bert: tuple[Path, QuantData],
                                                                       tmp_path: Path) -> None:
    from edgekd.quantize.graph import attention_shape

    source, data = bert
    assert attention_shape(onnx.load(str(source))) == (4, 64)
    config_q = QuantizeStage(stage="quantize", modes=["auto"], max_retries=0, **FAST_TIMING)
    graphs, variants = builder_for(config_q, load_device("host-cpu"), data).build(source, tmp_path, "bert",
                                                                                 precision="fp32")
    assert graphs.transformer and graphs.fusions.get("Attention") == 2
    assert [v.name for v in variants] == ["fp32", "fp32-optimized", "int8-dynamic", "int8-dynamic-fused"]
    fused_ops = {node.op_type for node in onnx.load(str(tmp_path / "bert.int8-dynamic-fused.onnx")).graph.node}
    assert "QAttention" in fused_ops  # the fused graph was quantized, not given up on


def test_retries_on_a_fused_bert_rank_only_the_nodes_int8_changed(bert: tuple[Path, QuantData], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    source, data = bert
    # A random BERT's INT8 predictions agree with FP32 on these few inputs: fail the gates so that both variants
    # retry, the fused one with int32 mask tensors among those the ranking reads.
    monkeypatch.setattr(variants_module, "within_gates", lambda *args: False)
    config_q = QuantizeStage(stage="quantize", modes=["dynamic"], max_retries=2, **FAST_TIMING)
    builder = builder_for(config_q, load_device("host-cpu"), data)
    graphs, variants = builder.build(source, tmp_path, "bert", precision="fp32")
    retried = {v.name: v for v in variants if v.retries}
    assert set(retried) == {"int8-dynamic", "int8-dynamic-fused"}, [(v.name, v.retries) for v in variants]
    for graph, name in ((graphs.preprocessed, "int8-dynamic"), (graphs.optimized, "int8-dynamic-fused")):
        quantized = quantize_dynamic_int8(graph, tmp_path / f"{name}.all.onnx", builder.options)
        candidates = weighted_nodes(graph)
        ranked = {node for node, _ in rank_nodes(graph, quantized, candidates, data.calibration, threads=1)}
        untouched = {n for n in candidates if n.endswith(("attention/self/MatMul", "attention/self/MatMul_1"))}
        assert ranked == set(candidates) - untouched and ranked, name  # Q·Kᵀ and P·V stay FP32 under dynamic INT8
        assert set(retried[name].excluded_nodes) <= ranked, name


def test_dataset_feeds_pad_text_batches_to_one_length_and_keep_graph_inputs(tmp_path: Path) -> None:
    from tests.test_text_pipeline import _write_tsv

    _write_tsv(tmp_path / "train.tsv", 120, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 40, seed=2)
    config = TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "dev.tsv", val_examples=20)
    data = prepare_task_data(config, 0, tokenizer_config=TokenizerConfig(vocab_size=100, max_length=32))
    batches = list(dataset_feeds(data, "train", 16, input_names={"input_ids", "attention_mask"}))
    assert {tuple(feed["input_ids"].shape[1:]) for feed, _ in batches} == {(batches[0][0]["input_ids"].shape[1],)}
    assert all(set(feed) == {"input_ids", "attention_mask"} for feed, _ in batches)
    assert sum(len(labels) for _, labels in batches) == len(data.train)


def test_quantize_stage_on_a_text_model(tmp_path: Path) -> None:
    import edgekd
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from tests.test_text_pipeline import _write_tsv

    _write_tsv(tmp_path / "train.tsv", 300, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 60, seed=2)
    recipe = validate_model({
        "name": "text-int8",
        "data": {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv"),
                 "val_examples": 60},
        "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 64, "heads": 2, "ffn": 128}},
        "student": {"model": {"arch": "bilstm", "embedding_dim": 16, "hidden": 8, "fc_hidden": 8}},
        "stages": [{"stage": "teacher", "epochs": 4, "batch_size": 16, "lr": 0.003},
                   {"stage": "export"},
                   {"stage": "quantize", "roles": ["teacher"], "modes": ["dynamic"], "tolerance": 0.5,
                    "agreement": 0.5},
                   {"stage": "profile", "warmup": 2, "runs": 10}, {"stage": "report"}],
    }, Recipe, source="test")
    result = edgekd.run(recipe, out=tmp_path / "run")
    quantized = result.stages[2].metrics["teacher"]
    assert "int8-dynamic" in quantized["variants"] and quantized["transformer"]
    # dynamic INT8 scales each activation by its whole batch: scored as the device (host-cpu) runs it, one at a time
    teacher = TaskModel.load(result.run_dir / "01-teacher" / "teacher")
    data = QuantData.from_dataset(prepare_task_data(recipe.data, recipe.seed, tokenizer=teacher.tokenizer), 64,
                                  eval_batch=1, input_names={"input_ids", "attention_mask", "token_type_ids"})
    assert {len(labels) for _, labels in data.test} == {1}
    dynamic = quantized["variants"]["int8-dynamic"]
    scores = model_outputs(result.run_dir / dynamic["path"], data.test, threads=1)
    labels = np.concatenate([labels for _, labels in data.test])
    assert dynamic["accuracy"] == pytest.approx(float((scores.argmax(-1) == labels).mean()))
    assert result.report()["teacher"]["precision"] == quantized["decision"] in quantized["variants"]
    assert result.artifact.get("teacher").onnx == quantized["variants"][quantized["decision"]]["path"]


def test_nan_scores_fail_every_gate() -> None:
    config = QuantizeStage(stage="quantize", **FAST_TIMING)
    for field, value in (("val_agreement", float("nan")), ("val_metrics", {"accuracy": float("nan")})):
        variant = replace(_variant("int8-dynamic", 4.0), **{field: value})
        assert not within_gates(variant, 0.98, config), field
        decision = decide_for([_variant("fp32", 10.0), variant], config, load_device("host-cpu"))
        assert decision.kept == "fp32", (field, decision.reason)
    nan_agreement = replace(_variant("int8-dynamic", 4.0), val_agreement=float("nan"))
    assert gate_failure([nan_agreement], config, label="student") is not None


@pytest.mark.parametrize(("metric", "agreement", "required", "text"), [
    ("accuracy", 0.9899244, 0.99, "agrees with fp32 on 98.99% of validation inputs (below the 99% required)"),
    ("accuracy", 0.99999, None, "agrees with fp32 on 99.99% of validation inputs"),
    ("accuracy", float("nan"), 0.99, "agrees with fp32 on nan% of validation inputs (below the 99% required)"),
    ("token_accuracy", 0.5, 0.9, "agrees with fp32 on 50.00% of validation tokens (below the 90% required)"),
    ("mse", 0.98001, 0.99, "changes its predictions by 2.00% of their spread on the validation split (more than the "
                           "1% allowed)"),
])
def test_an_agreement_shortfall_never_reads_as_the_gate(metric: str, agreement: float, required: float | None,
                                                        text: str) -> None:
    """98.992% below a 99% gate read "agrees with fp32 on 99.0%", without the gate: figures are cut toward the failing
    side and the gate is named."""
    from edgekd.quantize.quality import agreement_text

    assert agreement_text(metric, agreement, required) == text


def test_dynamic_int8_keeps_the_gemm_nodes_it_excludes_in_fp32(tmp_path: Path) -> None:
    """onnxruntime's dynamic quantizer turns each Gemm (an nn.Linear on 2-D input: MLPs, CNN heads) into a MatMul
    named '<name>_MatMul' before it reads nodes_to_exclude, so the Gemm names the retries excluded matched nothing:
    every layer stayed INT8 while the record listed them as FP32 (probe 48b/01)."""
    import torch
    from torch import nn

    from edgekd.quantize.model import int8_options

    net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    source = tmp_path / "mlp.onnx"
    torch.onnx.export(net, torch.zeros(1, 16), source, input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    gemms = [node.name for node in onnx.load(str(source)).graph.node if node.op_type == "Gemm"]
    assert len(gemms) == 3 and weighted_nodes(source) == gemms
    options = int8_options(QuantizeStage(stage="quantize"), load_device("host-cpu"))

    def quantized_ops(exclude: list[str]) -> list[str]:
        path = quantize_dynamic_int8(source, tmp_path / f"mlp.{len(exclude)}.onnx", options, exclude)
        return [node.op_type for node in onnx.load(str(path)).graph.node if node.op_type == "MatMulInteger"]

    assert len(quantized_ops([])) == 3
    assert len(quantized_ops(gemms[:1])) == 2 and quantized_ops(gemms) == []


def test_the_transformer_optimizer_says_nothing_below_an_error(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime's fusion modules log under top-level names ('fusion_embedlayer'): a BERT with fewer words than
    positions printed 'word_embedding_table ... size 32 <= position_embedding_table ... size 64' once per candidate
    of a budget search, 18 times under compress -q (probe 48b/03)."""
    import logging

    import torch
    import transformers

    from edgekd.profile.references import export_encoder
    from edgekd.quantize.graph import fuse_transformer

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64, num_labels=2)
    config._attn_implementation = "eager"
    source = tmp_path / "bert.onnx"
    export_encoder(transformers.BertForSequenceClassification(config), source, sequence_length=16, dynamic=True,
                   output="logits")
    with caplog.at_level(logging.INFO):
        fuse_transformer(source, tmp_path / "fused.onnx", None)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
