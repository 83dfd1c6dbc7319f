"""The quantize stage for every task: multi-label, regression, token classification and causal LMs.

Gates compare each variant with FP32 by the task's primary metric and a task-fit agreement
(:mod:`edgekd.quantize.quality`); a causal LM's KV-cache decoder is quantized to dynamic INT8 and kept
only when the per-token speed-up measured in the run clears ``min_speedup`` (or FP32 misses the size
budget INT8 fits) within ``loss_tolerance`` (:mod:`edgekd.quantize.causal_lm`).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.token_tags import IGNORE
from edgekd.errors import DataError, ExportError
from edgekd.export.causal_lm_onnx import CONTEXT_KEY, export_causal_lm
from edgekd.models.causal_lm import build_causal_lm
from edgekd.profile.generate import CachedGenerator
from edgekd.quantize.causal_lm import (
    INT8,
    compare_quality,
    lm_variants,
    loss_within,
    next_token_loss,
    time_generation,
    validation_windows,
)
from edgekd.quantize.config import QuantizeStage
from edgekd.quantize.decision import decide
from edgekd.quantize.model import int8_options
from edgekd.quantize.quality import split_scores, worse_by
from edgekd.quantize.quantizers import quantize_dynamic_int8
from edgekd.quantize.record import LMQuantizeRecord, read_quantize_record
from edgekd.task_heads import PRIMARY_METRIC, task_metrics
from edgekd.workflow import Run

RNG_SEEDS = (0, 1, 2)


# --------------------------------------------------------------------------- quality figures by task


def _outputs(task: str, rng: np.random.Generator, n: int = 40) -> tuple[np.ndarray, np.ndarray, list]:
    """Random outputs of ``task`` with labels, as (outputs, labels, batches of two)."""
    if task == "single_label":
        outputs, labels = rng.normal(size=(n, 5)), rng.integers(0, 5, n)
    elif task == "multi_label":
        outputs, labels = rng.normal(size=(n, 4)), (rng.random((n, 4)) < 0.4).astype(np.float32)
    elif task == "regression":
        outputs, labels = rng.normal(size=(n, 1)), rng.normal(size=n).astype(np.float32)
    else:
        outputs, labels = rng.normal(size=(n, 7, 3)), rng.integers(0, 3, (n, 7))
        labels[:, -2:] = IGNORE
    outputs = outputs.astype(np.float32)
    half = n // 2
    batches = [({"x": np.zeros(half)}, labels[:half]), ({"x": np.zeros(n - half)}, labels[half:])]
    return outputs, labels, batches


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("task", list(PRIMARY_METRIC))
def test_scores_are_the_task_metrics_and_agreement_with_itself_is_full(task: str, seed: int) -> None:
    outputs, labels, batches = _outputs(task, np.random.default_rng(seed))
    scores = split_scores(outputs, outputs, batches)
    expected = task_metrics(torch.from_numpy(outputs), torch.from_numpy(labels))
    assert scores.metrics == pytest.approx(expected) and next(iter(scores.metrics)) == PRIMARY_METRIC[task]
    assert scores.agreement == 1.0


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_changed_answers_lower_agreement_by_their_share(seed: int) -> None:
    rng = np.random.default_rng(seed)
    changed = rng.choice(40, size=int(rng.integers(1, 12)), replace=False)
    outputs, _, batches = _outputs("single_label", rng)
    other = outputs.copy()
    other[changed] = -other[changed] - 10 * np.eye(5, dtype=np.float32)[outputs[changed].argmax(1)]  # new arg-max
    assert split_scores(other, outputs, batches).agreement == pytest.approx(1 - len(changed) / 40)
    outputs, _, batches = _outputs("multi_label", rng)
    other = outputs.copy()
    other[changed, 0] = -other[changed, 0]  # one label of each changed row flips side of the threshold
    assert split_scores(other, outputs, batches).agreement == pytest.approx(1 - len(changed) / 40)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_regression_agreement_is_one_minus_the_relative_prediction_change(seed: int) -> None:
    rng = np.random.default_rng(seed)
    outputs, labels, batches = _outputs("regression", rng)
    scale = float(rng.uniform(0.001, 0.3))
    noise = rng.normal(size=outputs.shape).astype(np.float32)
    changed = outputs + scale * noise * np.linalg.norm(outputs - outputs.mean()) / np.linalg.norm(noise)
    scores = split_scores(changed, outputs, batches)
    assert scores.agreement == pytest.approx(1 - scale, rel=1e-4)
    assert scores.metrics["mse"] == pytest.approx(float(np.mean((changed[:, 0] - labels) ** 2)), rel=1e-5)


def test_token_agreement_counts_real_tokens_only_and_nan_is_wrong() -> None:
    outputs, labels, _ = _outputs("token_classification", np.random.default_rng(0), n=4)
    mask = (labels != IGNORE).astype(np.int64)
    batches = [({"attention_mask": mask}, labels)]
    other = outputs.copy()
    other[:, -2:] = -other[:, -2:]  # the padding positions disagree: they do not count
    assert split_scores(other, outputs, batches).agreement == 1.0
    other[0, 0] = np.nan  # one real token broken: wrong and disagreeing
    scores = split_scores(other, outputs, batches)
    assert scores.agreement == pytest.approx(1 - 1 / mask.sum())
    right = split_scores(outputs, outputs, batches).metrics["token_accuracy"] * mask.sum()
    was_right = outputs[0, 0].argmax() == labels[0, 0]
    assert scores.metrics["token_accuracy"] * mask.sum() == pytest.approx(right - was_right)


@pytest.mark.parametrize(("metric", "reference", "value", "worse"), [
    ("accuracy", 0.9, 0.88, 0.02), ("micro_f1", 0.7, 0.75, -0.05), ("token_accuracy", 0.8, 0.8, 0.0),
    ("mse", 0.5, 0.55, 0.1), ("mse", 0.5, 0.4, -0.2), ("val_loss", 1.3, 1.32, 0.02), ("val_loss", 1.3, 1.2, -0.1),
])
def test_worse_by_follows_the_metrics_direction(metric: str, reference: float, value: float, worse: float) -> None:
    assert worse_by(metric, reference, value) == pytest.approx(worse)
    assert math.isnan(worse_by(metric, reference, float("nan")))


# --------------------------------------------------------------------------- the stage on classifier tasks


def _npz(tmp: Path, task: str, seed: int = 0) -> Path:
    """Tabular-like 1×4×4 inputs whose targets are functions of them: 3 labels (multi-label) or a value."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(360, 1, 4, 4)).astype(np.float32)
    flat = inputs.reshape(len(inputs), -1)
    if task == "multi_label":
        labels = np.stack([flat[:, 0] > 0, flat[:, 5] + flat[:, 6] > 0, flat[:, 10] > 0.5], 1).astype(np.float32)
    else:
        labels = (flat[:, :4].sum(1) - flat[:, 8]).astype(np.float32)
    np.savez(tmp / f"{task}.npz", inputs=inputs, labels=labels)
    return tmp / f"{task}.npz"


def _npz_run(tmp: Path, task: str, quantize: dict[str, Any]) -> Run:
    training = {"epochs": 12, "batch_size": 32, "lr": 0.01}
    recipe = {"name": f"q-{task}", "threads": 1,
              "data": {"source": "npz", "path": str(_npz(tmp, task)), "val_fraction": 0.2, "test_fraction": 0.25},
              "teacher": {"model": {"arch": "mlp", "hidden": [32]}},
              "student": {"model": {"arch": "mlp", "hidden": [16]}},
              "stages": [{"stage": "teacher", **training}, {"stage": "export"},
                         {"stage": "quantize", "roles": ["teacher"], "warmup": 2, "runs": 20, "rounds": 3,
                          "calibration_samples": 64, **quantize}, {"stage": "report"}]}
    return edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp / "run")


def _check_decision_follows_figures(record: dict[str, Any], config: QuantizeStage, metric: str) -> None:
    """The kept variant is one the gates allow and whose speed-up clears min_speedup (else fp32)."""
    fp32 = record["variants"]["fp32"]

    def allowed(v: dict[str, Any]) -> bool:
        return (worse_by(metric, fp32[f"val_{metric}"], v[f"val_{metric}"]) <= config.tolerance + 1e-9
                and v["val_agreement"] >= config.agreement)

    paying = [name for name, v in record["variants"].items() if v["precision"] != "fp32" and allowed(v)
              and v["speedup"]["low"] is not None and v["speedup"]["low"] >= config.min_speedup]
    if paying:
        assert record["decision"] in paying, record["reason"]
    else:  # no size budget binds on host-cpu for models this small
        assert record["decision"] == "fp32", record["reason"]


@pytest.mark.parametrize("task", ["multi_label", "regression"])
def test_quantize_stage_gates_multi_label_and_regression_by_their_metric(tmp_path: Path, task: str) -> None:
    result = _npz_run(tmp_path, task, {})
    record = result.stages[2].metrics["teacher"]
    metric = PRIMARY_METRIC[task]
    static = record["variants"]["int8-static-minmax"]
    assert static["metric"] == metric and set(static["metrics"]) >= {metric}
    fp32 = record["variants"]["fp32"]
    assert static["val_agreement"] >= 0.9 and fp32["val_agreement"] == 1.0
    assert abs(worse_by(metric, fp32[metric], static[metric])) < 0.2
    _check_decision_follows_figures(record, QuantizeStage(stage="quantize"), metric)
    kept = record["variants"][record["decision"]]
    teacher = result.report()["teacher"]
    assert teacher["precision"] == record["decision"] and teacher[metric] == pytest.approx(kept[metric])
    model = result.artifact.get("teacher")
    assert model.metrics[f"fp32_{metric}"] == pytest.approx(fp32[metric]) and teacher["task"] == task
    assert model.onnx == kept["path"] and (result.run_dir / model.onnx).is_file()
    if task == "regression":
        assert teacher["accuracy"] is None and teacher["pearson"] == pytest.approx(kept["metrics"]["pearson"])


def test_a_strict_gate_keeps_fp32_and_says_why(tmp_path: Path) -> None:
    result = _npz_run(tmp_path, "regression", {"modes": ["auto"], "agreement": 1.0, "tolerance": 0.0, "max_retries": 0})
    record = result.stages[2].metrics["teacher"]
    assert record["decision"] == "fp32"
    assert "changes its predictions by" in record["reason"] or "raises validation MSE by" in record["reason"]
    with pytest.raises(ExportError, match=r"int8-static-minmax changes its predictions by [0-9]+\.[0-9]{2}% of their "
                       r"spread on the validation split \(more than the 0% allowed\) after excluding"):
        _npz_run(tmp_path, "regression", {"modes": ["static"], "agreement": 1.0, "max_retries": 0})


# --------------------------------------------------------------------------- causal LMs


@pytest.fixture(scope="module")
def lm_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray]:
    """A tiny Llama's KV-cache graph, its dynamic INT8 graph and a token stream to measure them on."""
    tmp = tmp_path_factory.mktemp("lm-int8")
    # default initialisation: every weight matrix its own (the spread models share one draw, which the
    # exporter stores once: INT8 would then keep FP32 copies for shared uses)
    model = build_causal_lm("llama", vocab_size=40, context=48, layers=2, width=64, heads=4, seed=0).eval()
    fp32 = export_causal_lm(model, tmp / "lm.onnx")
    config = QuantizeStage(stage="quantize")
    int8 = quantize_dynamic_int8(fp32, tmp / f"lm.{INT8}.onnx", int8_options(config, _device()))
    ids = np.random.default_rng(0).integers(0, 40, 600)
    return fp32, int8, ids


def _device(**budget: float) -> DeviceProfile:
    return DeviceProfile.model_validate({"name": "tiny-gen", "threads": 1,
                                         "budget": {"p90_ms": 50, "size_mb": 10, "peak_memory_mb": 500} | budget,
                                         "generation": {"prompt_tokens": 8, "new_tokens": 12}})


@pytest.mark.parametrize(("size", "context", "count", "expected"), [(600, 32, 64, 18), (600, 32, 5, 5), (33, 32, 9, 1),
                                                                      (200, 48, 3, 3)])
def test_validation_windows_are_spread_and_never_overlap(size: int, context: int, count: int, expected: int) -> None:
    ids = np.arange(size)
    windows = validation_windows(ids, context, count)
    assert windows.shape == (expected, context + 1)
    assert np.all(np.diff(windows[:, 0]) >= context) and windows[-1, -1] < size
    assert np.array_equal(windows, ids[windows[:, :1] + np.arange(context + 1)])


def test_a_validation_text_shorter_than_a_window_is_one_line() -> None:
    with pytest.raises(DataError, match="the validation text has 20 tokens, fewer than one window of data.context 32"):
        validation_windows(np.arange(20), 32, 4)


def test_next_token_loss_matches_torch_cross_entropy() -> None:
    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(3, 7, 11)).astype(np.float32), rng.integers(0, 11, (3, 7))
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits).flatten(0, 1),
                                                 torch.from_numpy(targets).flatten()).item()
    assert next_token_loss(logits, targets) == pytest.approx(expected, rel=1e-5)
    logits[0, 0, 0] = np.nan
    assert math.isnan(next_token_loss(logits, targets))


def test_int8_decoder_quality_and_timing_drive_the_decision(lm_graphs) -> None:
    fp32, int8, ids = lm_graphs
    windows = validation_windows(ids, 32, 16)
    quality = compare_quality(fp32, int8, windows, threads=1)
    assert quality["fp32"]["next_token_agreement"] == 1.0 and quality["fp32"]["max_abs_logit_diff"] == 0.0
    assert 0.8 <= quality[INT8]["next_token_agreement"] < 1.0 and quality[INT8]["max_abs_logit_diff"] > 0
    assert abs(quality[INT8]["val_loss"] - quality["fp32"]["val_loss"]) < 0.05
    assert quality["fp32"]["perplexity"] == pytest.approx(math.exp(quality["fp32"]["val_loss"]))
    onnx_int8 = onnx.load(str(int8))
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= {node.op_type for node in onnx_int8.graph.node}
    assert {p.key: p.value for p in onnx_int8.metadata_props}[CONTEXT_KEY] == "48"
    timing = time_generation({"fp32": fp32, INT8: int8}, ids[:8].tolist(), _device(), rounds=3, threads=1)
    assert [len(run.seconds) for run in timing[INT8]] == [12] * 3
    variants = lm_variants({"fp32": fp32, INT8: int8}, quality, timing)
    lowered = variants[1].size_mb / variants[0].size_mb
    assert lowered < 0.7 and variants[1].speedup.rounds == 3
    loss_change = quality[INT8]["val_loss"] - quality["fp32"]["val_loss"]
    for tolerance, min_speedup, budget in [(0.05, 1.0, 10.0), (0.0, 1.0, 10.0), (0.05, 100.0, 10.0),
                                           (0.05, 100.0, (variants[0].size_mb + variants[1].size_mb) / 2)]:
        decision = decide(variants, eligible=lambda v, t=tolerance: loss_within(v, variants[0], t),
                          min_speedup=min_speedup, size_budget_mb=budget, cpu_label="test", tolerance=tolerance)
        eligible = loss_change <= tolerance + 1e-12
        pays = variants[1].speedup.clears(min_speedup) or budget < variants[0].size_mb
        assert decision.kept == (INT8 if eligible and pays else "fp32"), decision.reason
        if not eligible:
            assert "raises validation loss by" in decision.reason and "nats/token" in decision.reason
        elif not pays:
            assert f"keeping it needs {min_speedup:g}×" in decision.reason or "cannot tell" in decision.reason


# --------------------------------------------------------------------------- a causal LM through the pipeline


def _lm_recipe(tmp: Path, quantize: dict[str, Any], size_mb: float = 10.0, target: str = "onnx-fp32") -> Path:
    from tests.test_causal_lm_pipeline import DEVICE, _corpus

    (tmp / "tiny-gen.yaml").write_text(yaml.safe_dump(DEVICE | {"budget": DEVICE["budget"] | {"size_mb": size_mb}}))
    recipe = {"name": "tiny-lm-int8", "seed": 0, "threads": 1, "device": str(tmp / "tiny-gen.yaml"),
              "data": {"source": "corpus", "path": str(_corpus(tmp / "corpus.txt")), "context": 32},
              "teacher": {"model": {"arch": "hf", "config": {"model_type": "llama", "hidden_size": 48,
                                                             "num_hidden_layers": 2, "num_attention_heads": 4,
                                                             "intermediate_size": 96}}},
              "student": {"model": {"arch": "hf", "config": {"model_type": "gpt2", "n_embd": 24, "n_layer": 1,
                                                             "n_head": 2}}},
              "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 3e-3},
                         {"stage": "export", "target": target},
                         {"stage": "quantize", "roles": ["teacher"], "rounds": 3, **quantize},
                         {"stage": "profile"}, {"stage": "bundle"}]}
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return tmp / "recipe.yaml"


def _lm_quantize(run_dir: Path) -> dict[str, Any]:
    stored = json.loads(next(run_dir.glob("*-quantize")).joinpath("stage.json").read_text())
    assert isinstance(read_quantize_record(stored), LMQuantizeRecord)  # its typed record, read back by field
    return stored["metrics"]


def assert_readme_generates_as_edgekd(bundle: Path) -> tuple[list[int], dict[str, Any], list[int]]:
    """Run the Python loop of a causal LM bundle's README and check it prints what edgekd's own loop over the
    bundled graph generates for the manifest's example; the example's prompt ids, the example and the tokens."""
    from transformers import AutoTokenizer

    readme = (bundle / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, check=True)
    tokenizer = AutoTokenizer.from_pretrained(bundle / "tokenizer")
    generation = json.loads((bundle / "manifest.json").read_text())["generation"]
    example, end = generation["example"], generation["end_of_text_id"]
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    tokens = CachedGenerator(bundle / "model.onnx").generate(prompt, example["new_tokens"]).tokens
    assert done.stdout.rstrip("\n") == tokenizer.decode(tokens[:tokens.index(end)] if end in tokens else tokens)
    return prompt, example, tokens


@pytest.mark.slow
def test_causal_lm_int8_is_kept_by_the_figures_and_its_bundle_generates(tmp_path: Path) -> None:
    # First a run INT8 cannot pay in (min_speedup 100, no size pressure): FP32 stays, every figure recorded.
    recipe = _lm_recipe(tmp_path, {"min_speedup": 100})
    edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    record = _lm_quantize(tmp_path / "run")
    teacher = record["teacher"]
    assert record["cpu"]["isa"] and record["device_isa"] and record["generation"] == {"prompt_tokens": 8,
                                                                                       "new_tokens": 12}
    assert teacher["decision"] == "fp32" and "keeping it needs 100×" in teacher["reason"]
    int8, fp32 = teacher["variants"][INT8], teacher["variants"]["fp32"]
    assert int8["size_mb"] < 0.75 * fp32["size_mb"] and int8["tokens_timed"] == 11 * 3
    assert int8["speedup_range"]["low"] <= int8["speedup_range"]["ratio"] <= int8["speedup_range"]["high"]
    assert teacher["loss_change"] == pytest.approx(int8["val_loss"] - fp32["val_loss"])
    assert abs(teacher["loss_change"]) < 0.05 and int8["next_token_agreement"] > 0.9
    # Then FP32 misses a size budget INT8 fits, within a loose tolerance: INT8 ships, profile and bundle use it.
    recipe = _lm_recipe(tmp_path, {"min_speedup": 100, "loss_tolerance": 0.5},
                        size_mb=(int8["size_mb"] + fp32["size_mb"]) / 2)
    result = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    teacher = _lm_quantize(tmp_path / "run")["teacher"]
    assert teacher["decision"] == INT8 and "fits the" in teacher["reason"]
    model = result.artifact.get("teacher")
    assert model.onnx == teacher["variants"][INT8]["path"] and model.metrics["precision"] == INT8
    bundle = tmp_path / "run" / "bundle"
    graph = onnx.load(str(bundle / "model.onnx"))
    assert "MatMulInteger" in {node.op_type for node in graph.graph.node}
    prompt, example, tokens = assert_readme_generates_as_edgekd(bundle)
    # A strict loss tolerance keeps FP32 whenever INT8 raised the loss at all.
    recipe = _lm_recipe(tmp_path, {"min_speedup": 100, "loss_tolerance": 0.0},
                        size_mb=(int8["size_mb"] + fp32["size_mb"]) / 2)
    edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    teacher = _lm_quantize(tmp_path / "run")["teacher"]
    assert teacher["decision"] == (INT8 if teacher["loss_change"] <= 0 else "fp32"), teacher["reason"]
    if teacher["loss_change"] > 0:
        assert "raises validation loss by" in teacher["reason"]
    # An .ort export target: the kept INT8 graph is converted too, and the bundle ships it.
    recipe = _lm_recipe(tmp_path, {"min_speedup": 100, "loss_tolerance": 0.5},
                        size_mb=(int8["size_mb"] + fp32["size_mb"]) / 2, target="ort-mobile")
    result = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    files = result.artifact.get("teacher").deploy_files
    assert files["ort"].endswith(f"teacher.{INT8}.ort") and files["onnx"].endswith(f"teacher.{INT8}.onnx")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["format"] == "ort" and (bundle / "model.ort").is_file()
    assert CachedGenerator(bundle / "model.ort").generate(prompt, example["new_tokens"]).tokens == tokens


def test_causal_lm_quantize_modes_and_missing_export_are_one_line(tmp_path: Path) -> None:
    for quantize, fragment in [({"modes": ["fp16"]}, "stages[2].modes[0]: a causal LM's KV-cache decoder is "
                                                     "quantized as dynamic INT8, not 'fp16'"),
                               ({"roles": ["student"]}, "stages[2].roles[0]: no earlier stage makes the student")]:
        result = CliRunner().invoke(app, ["validate", str(_lm_recipe(tmp_path, quantize))], env={"COLUMNS": "400"})
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert fragment in " ".join(result.output.split()), result.output


@pytest.mark.slow
def test_token_classifier_quantized_with_per_token_gates(tmp_path: Path) -> None:
    from tests.test_token_classification import recipe_dict, tagged_data

    recipe = recipe_dict(tagged_data(tmp_path, train=200, test=60), threads=1)
    recipe["stages"] = [{"stage": "teacher", "epochs": 3, "batch_size": 16, "lr": 0.003}, {"stage": "export"},
                        {"stage": "quantize", "roles": ["teacher"], "warmup": 2, "runs": 20, "rounds": 3,
                         "tolerance": 0.05, "agreement": 0.9}]
    result = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run")
    record = result.stages[2].metrics["teacher"]
    assert record["transformer"] and "int8-dynamic" in record["variants"]
    fp32, int8 = record["variants"]["fp32"], record["variants"]["int8-dynamic"]
    assert int8["metric"] == "token_accuracy" and set(int8["metrics"]) >= {"token_accuracy", "entity_micro_f1"}
    assert fp32["token_accuracy"] > 0.5 and int8["val_agreement"] >= 0.9  # tagged well, INT8 follows per token
    _check_decision_follows_figures(record, QuantizeStage(stage="quantize", tolerance=0.05, agreement=0.9),
                                    "token_accuracy")
    model = result.artifact.get("teacher").metrics
    kept = record["variants"][record["decision"]]
    assert model["token_accuracy"] == model["accuracy"] == pytest.approx(kept["token_accuracy"])
    assert model["entity_micro_f1"] == pytest.approx(kept["metrics"]["entity_micro_f1"])


@pytest.mark.slow
def test_quick_lm_quantize_benchmark_writes_the_stage_figures(tmp_path: Path) -> None:
    corpus = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
    if not corpus.is_file():
        from tests.test_causal_lm_pipeline import _corpus

        corpus = _corpus(tmp_path / "corpus.txt", lines=3000)
    out, repo = tmp_path / "bench.json", Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "benchmarks/quantize_lm.py", "--quick", "--corpus", str(corpus), "--out",
                           str(out), "--work", str(tmp_path / "work"), "--rounds", "3"], cwd=repo,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    case = result["cases"]["2x64"]
    assert result["cpu"]["isa"] and case["decision"] in ("fp32", INT8) and case["reason"].startswith(case["decision"])
    speedup = case["variants"][INT8]["speedup"]
    assert speedup["rounds"] == 3 and speedup["low"] <= speedup["ratio"] <= speedup["high"]
    assert case["decision"] == (INT8 if speedup["low"] >= 1.05 and case["loss_change"] <= 0.02 else "fp32")
    assert result["summary"]["2x64"]["loss_change"] == case["loss_change"]
