"""Quantize stages write typed records (:mod:`edgekd.quantize.record`): the records the stages' own code makes
read back by field, each model's decision is read from them into a :class:`QuantizationDecision`, and a damaged
one is one line naming its ``stage.json`` and the field. (A real run's records: ``tests/test_quantize.py`` and,
for causal LMs, ``tests/test_quantize_tasks.py``.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.config.device import load_device
from edgekd.profile.bench import paired_ratio
from edgekd.profile.cpu import detect_cpu
from edgekd.profile.generate import Generation
from edgekd.quantize.causal_lm import INT8, lm_record, lm_variants
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.decision import decide
from edgekd.quantize.graph import PreparedGraphs
from edgekd.quantize.isa import int8_settings
from edgekd.quantize.model import QuantizeResult, int8_options
from edgekd.quantize.quantizers import Int8Options
from edgekd.quantize.record import (
    LMQuantizeRecord,
    QuantizationDecision,
    QuantizeRecord,
    quantization_decisions,
    quantize_record,
    read_quantize_record,
)
from edgekd.quantize.variants import Variant
from tests.test_report_schema import _assert_damage_is_one_line

ISA = ["avx2", "avx512_vnni"]


def _variant(name: str, p50: float, metric: str, score: float | None) -> Variant:
    scores = None if score is None else {metric: score, "other": 0.5}
    variant = Variant(name=name, precision=name.split("-")[0], path=Path(f"{name}.onnx"), val_metrics=scores,
                      val_agreement=None if score is None else 0.99, metrics=scores,
                      agreement=None if score is None else 0.98, metric=metric)
    return variant.timed(p50, 1.0, paired_ratio([10.0, 11.0], [p50, p50 * 1.1]))


def _int8_options() -> Int8Options:
    return int8_options(QuantizeStage(stage="quantize"), load_device("host-cpu"))


def _classifier_metrics(metric: str = "accuracy", score: float | None = 0.9) -> dict:
    """A quantize stage's metrics as :func:`edgekd.quantize.stage.run_quantize` makes them, for two models."""
    metrics: dict = {"cpu": detect_cpu().to_json(), "device_isa": ISA}
    for role, int8_p50 in (("teacher", 4.0), ("student", 12.0)):
        variants = (_variant("fp32", 10.0, metric, score), _variant("int8-dynamic", int8_p50, metric, score))
        decision = decide(variants, eligible=lambda v: True, min_speedup=1.05, size_budget_mb=50.0,
                          cpu_label="test", tolerance=0.01)
        result = QuantizeResult(graphs=PreparedGraphs(preprocessed=Path("pre.onnx"), fused=None, transformer=False),
                                variants=variants, decision=decision, options=_int8_options(), calibration_examples=0)
        metrics[role] = result.to_json(lambda path: f"04-quantize/{path}") | {"calibration_set": "train split"}
    return metrics


def _lm_metrics(tmp_path: Path) -> dict:
    """A causal-LM quantize stage's metrics as :mod:`edgekd.quantize.causal_lm` makes them, for the student."""
    models = {"fp32": tmp_path / "fp32.onnx", INT8: tmp_path / "int8.onnx"}
    for size, path in zip((4000, 1200), models.values(), strict=True):
        path.write_bytes(bytes(size))
    quality = {name: {"val_loss": loss, "perplexity": float(np.exp(loss)), "next_token_accuracy": 0.5,
                      "next_token_agreement": agreement, "max_abs_logit_diff": diff}
               for name, loss, agreement, diff in (("fp32", 1.8, 1.0, 0.0), (INT8, 1.81, 0.97, 0.05))}
    timing = {name: [Generation(tokens=[1, 2, 3, 4], seconds=[0.002, *(step * (1 + r / 10) for r in range(3))])
                     for _ in range(3)] for name, step in (("fp32", 0.001), (INT8, 0.0005))}
    variants = lm_variants(models, quality, timing)
    decision = decide(variants, eligible=lambda v: True, min_speedup=1.05, size_budget_mb=50.0, cpu_label="test",
                      tolerance=0.05)
    student = lm_record(variants, quality, timing, decision, {"fp32": "03-export/student.onnx",
                                                              INT8: "04-quantize/student.int8-dynamic.onnx"})
    return {"cpu": detect_cpu().to_json(), "device_isa": ISA, "generation": {"prompt_tokens": 8, "new_tokens": 3},
            "rounds": 3, "student": student | {"int8_settings": int8_settings(ISA).to_json(), "windows": 4,
                                               "prompt_tokens": 8}}


def _stage(metrics: dict, index: int = 4) -> dict:
    return {"index": index, "stage": "quantize", "metrics": metrics}


@pytest.mark.parametrize("metric,score", [("accuracy", 0.9), ("mse", 0.25), ("accuracy", None)])
def test_the_classifier_record_reads_back_each_models_variants_by_field(metric: str, score: float | None) -> None:
    metrics = _classifier_metrics(metric, score)
    record = quantize_record(metrics)
    assert isinstance(record, QuantizeRecord) and record.to_json() == metrics
    assert set(record.models) == {"teacher", "student"} and record.cpu == detect_cpu()
    teacher = record.models["teacher"]
    assert teacher.decision == "int8-dynamic" and teacher.reason.startswith("int8-dynamic kept")
    assert record.models["student"].decision == "fp32"  # slower than fp32: kept fp32
    int8 = teacher.variants["int8-dynamic"]
    assert int8.score == score and int8.val_score == score and int8.metric == metric
    assert int8.path == "04-quantize/int8-dynamic.onnx" and int8.speedup is not None and int8.speedup.ratio > 2
    assert teacher.int8_settings == _int8_options().settings and teacher.calibration_set == "train split"


def test_the_causal_lm_record_reads_back_both_graphs_by_field(tmp_path: Path) -> None:
    metrics = _lm_metrics(tmp_path)
    record = quantize_record(metrics)
    assert isinstance(record, LMQuantizeRecord) and record.to_json() == metrics
    student = record.models["student"]
    int8, fp32 = student.variants[INT8], student.variants["fp32"]
    assert student.decision == INT8 and int8.speedup_range is not None and fp32.speedup_range is None
    assert int8.speedup_range.low <= int8.speedup_range.ratio <= int8.speedup_range.high
    assert int8.tokens_timed == 3 * 3 and int8.size_mb < fp32.size_mb
    assert student.loss_change == pytest.approx(int8.val_loss - fp32.val_loss)
    assert record.generation.new_tokens == 3 and record.rounds == 3


def test_each_models_decision_is_read_from_the_records() -> None:
    records = [_stage(_classifier_metrics(), 3) | {"stage": "export"}, _stage(_classifier_metrics())]
    found = quantization_decisions(records)
    assert [(d.role, d.decision) for d in found] == [("teacher", "int8-dynamic"), ("student", "fp32")]
    line = found[0].line()
    assert line.startswith("Quantization of the teacher: int8-dynamic — int8-dynamic kept: ")
    assert QuantizationDecision.model_validate(found[0].model_dump()) == found[0]
    assert QuantizationDecision(stage="quantize", role=None, decision=None, reason=None).line() == (
        "Quantization: no decision")


@pytest.mark.parametrize("entry", [{"stage": "quantize", "role": None, "decision": "int8"},
                                   {"stage": "quantize", "role": None, "decision": "int8", "reason": None, "x": 1},
                                   {"stage": "quantize", "role": 3, "decision": "int8", "reason": None}])
def test_a_decision_of_another_shape_is_refused(entry: dict) -> None:
    with pytest.raises(ValueError):
        QuantizationDecision.model_validate(entry)


@pytest.mark.parametrize("field,damage", [
    ("teacher.decision", lambda m: m["teacher"].pop("decision")),
    ("teacher.variants.fp32.p50_ms", lambda m: m["teacher"]["variants"]["fp32"].update(p50_ms="fast")),
    ("student.variants.int8-dynamic.speedup.ratio",
     lambda m: m["student"]["variants"]["int8-dynamic"]["speedup"].pop("ratio")),
    ("student.variants.fp32", lambda m: m["student"]["variants"]["fp32"].pop("accuracy")),
    ("student.variants.fp32", lambda m: m["student"]["variants"]["fp32"].update(legacy=1.0)),
    ("student.int8_settings.weight_type", lambda m: m["student"]["int8_settings"].update(weight_type="int4")),
    ("teacher.int8_settings.legacy", lambda m: m["teacher"]["int8_settings"].update(legacy=True)),
    ("student.fusions.Attention", lambda m: m["student"]["fusions"].update(Attention="two")),
    ("cpu.isa", lambda m: m["cpu"].pop("isa")),
    ("assistant", lambda m: m.update(assistant=[])),
])
def test_a_malformed_classifier_record_is_one_line_naming_its_file_and_field(field: str, damage) -> None:
    _assert_damage_is_one_line(read_quantize_record, _stage(_classifier_metrics()), field, damage)


@pytest.mark.parametrize("field,damage", [
    ("student.loss_change", lambda m: m["student"].pop("loss_change")),
    ("student.variants.int8-dynamic.tokens_timed",
     lambda m: m["student"]["variants"]["int8-dynamic"].update(tokens_timed="many")),
    ("student.variants.int8-dynamic.speedup_range.runs",
     lambda m: m["student"]["variants"]["int8-dynamic"]["speedup_range"].pop("runs")),
    ("student.variants.fp32.calibration_set", lambda m: m["student"]["variants"]["fp32"].update(calibration_set="x")),
    ("generation.prompt_tokens", lambda m: m["generation"].update(prompt_tokens="eight")),
    ("rounds", lambda m: m.update(rounds="three")),
])
def test_a_malformed_causal_lm_record_is_one_line_naming_its_file_and_field(tmp_path: Path, field: str,
                                                                             damage) -> None:
    _assert_damage_is_one_line(read_quantize_record, _stage(_lm_metrics(tmp_path)), field, damage)
