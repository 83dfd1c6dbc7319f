"""Pruning and factorizing causal LMs: a corpus recipe's prune/factorize/hybrid stages, judged by validation loss.

Tiny Llama (grouped-query attention, gated MLP) and GPT-2 decoders trained on the generated corpus of
``tests/test_causal_lm_pipeline.py``; the outcomes checked are the models' shapes and parameters, the
validation loss of every step, reloading, the KV-cache export's parity and per-token timing, and the
one-line refusals of what does not apply.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.api import run
from edgekd.cli import app
from edgekd.prune.causal_lm import LMCompression
from tests.test_causal_lm_pipeline import DEVICE, STUDENT, TEACHER, _recipe, _stage, _validate
from tests.test_prune import interrupt_recovery

#: A Llama with grouped-query attention: 4 query heads sharing 2 KV heads, a 96-wide gated MLP.
GQA_TEACHER = {"arch": "hf", "config": TEACHER["config"] | {"num_key_value_heads": 2}}
TRAIN = {"batch_size": 16, "lr": 3e-3}


def _model_dir(run_dir: Path, stage: str, role: str) -> Path:
    return next(run_dir.glob(f"*-{stage}")) / role


def _config(run_dir: Path, stage: str, role: str) -> dict[str, Any]:
    return json.loads((_model_dir(run_dir, stage, role) / "config.json").read_text())


def _val_loss(run_dir: Path, stage: str, role: str, recipe: Path) -> float:
    """The validation loss of the model a stage saved, reloaded from its directory."""
    from edgekd.data.config import CorpusData
    from edgekd.data.lm_data import prepare_lm_data
    from edgekd.models.causal_lm import CausalLM, validation_loss

    model = CausalLM.load(_model_dir(run_dir, stage, role))
    data = CorpusData.model_validate(yaml.safe_load(recipe.read_text())["data"])
    lm = prepare_lm_data(data, None, tokenizer=model.tokenizer)
    return validation_loss(model.module, lm.validation, lm.context)


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("lm-prune")
    stages = [{"stage": "teacher", "epochs": 2, **TRAIN},
              {"stage": "prune", "role": "teacher", "ratio": 0.5, "targets": ["heads", "ffn"], "steps": 2,
               "recovery": {"epochs": 1, **TRAIN}},
              {"stage": "factorize", "role": "teacher", "param_ratio": 0.5},
              {"stage": "export"}, {"stage": "profile", "warmup": 1, "runs": 10}]
    recipe = _recipe(tmp, teacher={"model": GQA_TEACHER}, stages=stages)
    run(recipe, out=tmp / "run", show_progress=False)
    return recipe, tmp / "run"


def test_pruning_removes_half_the_kv_groups_and_mlp_channels(pruned_run) -> None:
    _, run_dir = pruned_run
    before, after = _config(run_dir, "teacher", "teacher"), _config(run_dir, "prune", "teacher")
    assert (before["num_attention_heads"], before["num_key_value_heads"]) == (4, 2)
    assert (after["num_attention_heads"], after["num_key_value_heads"]) == (2, 1)  # one whole group of 2 queries
    assert after["head_dim"] == 12 and after["hidden_size"] == 48
    assert abs(after["intermediate_size"] - 0.5 * before["intermediate_size"]) <= 2
    assert "edgekd_structure" not in after  # plain from_pretrained reloads a pruned decoder
    prune = _stage(run_dir, "prune")["teacher"]
    assert 0.4 < prune["params_ratio"] < 0.6 and prune["macs_ratio"] < 0.6
    assert prune["ratio_per_step"] == pytest.approx(1 - 0.5 ** 0.5)


def test_every_step_records_its_validation_loss_and_the_measured_ones_their_per_token_speed(pruned_run) -> None:
    _, run_dir = pruned_run
    teacher = _stage(run_dir, "teacher")["teacher"]
    prune = _stage(run_dir, "prune")["teacher"]
    steps = prune["trajectory"]
    assert [s["step"] for s in steps] == [0, 1, 2]
    assert steps[0]["val_loss"] == pytest.approx(teacher["val_loss"], abs=1e-5)  # the model as it came
    for step in steps:
        assert math.isfinite(step["val_loss"]) and step["perplexity"] == pytest.approx(math.exp(step["val_loss"]))
    assert prune["val_loss"] == steps[-1]["val_loss"] and prune["before"] == steps[0]
    assert prune["val_loss"] < math.log(teacher["vocab_size"]) - 1.0  # recovered: far below a uniform guess
    assert steps[1]["per_token_p50_ms"] is None  # only the first and last steps are exported and timed
    for step in (steps[0], steps[2]):
        assert step["parity_max_abs_diff"] < 1e-3
        assert 0 < step["per_token_p50_ms"] <= step["per_token_p90_ms"] and step["tokens_per_second"] > 0
    interval = prune["speedup_interval"]
    assert interval["low"] <= prune["speedup"] <= interval["high"] and interval["rounds"] == 8
    assert steps[0]["speedup"]["ratio"] == 1.0
    assert prune["generation"] == DEVICE["generation"]


def test_factorized_model_reloads_with_the_logits_it_was_measured_with(pruned_run) -> None:
    recipe, run_dir = pruned_run
    factorize = _stage(run_dir, "factorize")["teacher"]
    pruned = _stage(run_dir, "prune")["teacher"]
    assert factorize["before"]["params"] == pruned["params"] and factorize["params"] < pruned["params"]
    ranked = [layer for layer in factorize["layers"] if layer["rank"] is not None]
    assert ranked and all(".mlp." in r["name"] or ".self_attn." in r["name"] for r in ranked)
    assert all(layer["name"] != "lm_head" for layer in factorize["layers"])
    low_rank = _config(run_dir, "factorize", "teacher")["edgekd_structure"]["low_rank"]
    assert low_rank == {layer["name"]: layer["rank"] for layer in ranked}
    assert _val_loss(run_dir, "factorize", "teacher", recipe) == pytest.approx(factorize["val_loss"], abs=1e-6)
    assert _val_loss(run_dir, "prune", "teacher", recipe) == pytest.approx(pruned["val_loss"], abs=1e-6)


def test_the_compressed_model_exports_with_its_cache_and_profiles(pruned_run) -> None:
    _, run_dir = pruned_run
    export = _stage(run_dir, "export")["teacher"]
    assert export["kv_cache"] and export["parity"]["passed"]
    profile = _stage(run_dir, "profile")["teacher"]
    assert profile["tokens_timed"] == 11 * 10 and profile["per_token_p50_ms"] > 0
    assert not list(run_dir.glob("*-prune/check-*.onnx"))  # the steps' exports are removed once timed


def test_hybrid_reaches_its_parameter_target_with_taylor_importance(tmp_path: Path) -> None:
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "hybrid", "role": "teacher", "prune": {"ratio": 0.3, "importance": "taylor"},
               "factorize": {"energy": 0.9}, "target_params_ratio": 0.5, "max_steps": 4, "measure_latency": False}]
    recipe = _recipe(tmp_path, teacher={"model": GQA_TEACHER}, stages=stages)
    run(recipe, out=tmp_path / "run", show_progress=False)
    hybrid = _stage(tmp_path / "run", "hybrid")["teacher"]
    assert hybrid["target_reached"] and hybrid["params_ratio"] <= 0.5
    assert hybrid["steps_run"] == len(hybrid["trajectory"]) - 1 <= 4
    assert all(step["per_token_p50_ms"] is None for step in hybrid["trajectory"])  # measure_latency: false
    assert _val_loss(tmp_path / "run", "hybrid", "teacher", recipe) == pytest.approx(hybrid["val_loss"], abs=1e-6)


def test_an_interrupted_hybrid_of_a_decoder_resumes_after_its_last_finished_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "hybrid", "role": "teacher", "prune": {"ratio": 0.3}, "factorize": {"energy": 0.9},
               "target_params_ratio": 0.4, "max_steps": 4, "measure_latency": False,
               "recovery": {"epochs": 1, **TRAIN}}]
    recipe = _recipe(tmp_path, teacher={"model": GQA_TEACHER}, stages=stages)
    run(recipe, out=tmp_path / "straight", show_progress=False)
    straight = _stage(tmp_path / "straight", "hybrid")["teacher"]
    assert straight["steps_run"] >= 2
    recovered = interrupt_recovery(monkeypatch, LMCompression, at_step=2)
    with pytest.raises(KeyboardInterrupt):
        run(recipe, out=tmp_path / "stopped", show_progress=False)
    run(recipe, out=tmp_path / "stopped", show_progress=False)
    assert recovered == [1, 2, *range(2, straight["steps_run"] + 1)]  # step 1 was not run again
    resumed = _stage(tmp_path / "stopped", "hybrid")["teacher"]
    assert [(s["params"], s["val_loss"]) for s in resumed["trajectory"]] == \
        [(s["params"], s["val_loss"]) for s in straight["trajectory"]]


def test_a_hybrid_latency_target_is_judged_per_token(tmp_path: Path) -> None:
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "hybrid", "role": "teacher", "prune": {"ratio": 0.5, "targets": ["ffn"]},
               "target_latency_ms": 1000.0, "max_steps": 3}]
    run(_recipe(tmp_path, teacher={"model": GQA_TEACHER}, stages=stages), out=tmp_path / "run", show_progress=False)
    hybrid = _stage(tmp_path / "run", "hybrid")["teacher"]
    # any decoder here takes well under a second a token: the target is met before any step, the model kept as it is
    assert hybrid["target_reached"] and hybrid["steps_run"] == 0 and hybrid["params_ratio"] == 1.0
    assert 0 < hybrid["per_token_p50_ms"] < 1000.0 and hybrid["speedup_interval"]["rounds"] == 8


def test_gpt2_is_factorized_with_sequence_level_recovery_and_exports(tmp_path: Path) -> None:
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "factorize", "role": "teacher", "param_ratio": 0.4, "recovery": {
                  "epochs": 1, **TRAIN, "losses": [{"kind": "sequence_kd", "prompts": 8, "prompt_tokens": 4,
                                                    "new_tokens": 8}]}},
              {"stage": "export"}]
    recipe = _recipe(tmp_path, teacher={"model": STUDENT}, stages=stages)
    run(recipe, out=tmp_path / "run", show_progress=False)
    factorize = _stage(tmp_path / "run", "factorize")["teacher"]
    names = {layer["name"].rsplit(".", 1)[-1] for layer in factorize["layers"] if layer["rank"] is not None}
    assert names <= {"c_attn", "c_proj", "c_fc"} and "c_attn" in names
    assert factorize["params_ratio"] < 1 and math.isfinite(factorize["val_loss"])
    assert _val_loss(tmp_path / "run", "factorize", "teacher", recipe) == pytest.approx(factorize["val_loss"],
                                                                                         abs=1e-6)
    assert _stage(tmp_path / "run", "export")["teacher"]["parity"]["passed"]
    assert not (next((tmp_path / "run").glob("*-factorize")) / "teacher-continuations").exists()


def _sized(model_type: str) -> dict[str, Any]:
    return {"arch": "hf", "config": {"model_type": model_type, "hidden_size": 24, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "intermediate_size": 48}}


#: Causal LMs with a plain MLP (Phi-3's fuses [gate | up]): the config fields stating its width and the head
#: count, the width before pruning, and whether the config states the pruned heads (an explicit head_dim).
PLAIN_MLP_LMS = {"gpt2": (STUDENT, "n_inner", 4 * STUDENT["config"]["n_embd"], "n_head", False),
                 "phi": (_sized("phi"), "intermediate_size", 48, "num_attention_heads", True),
                 "phi3": (_sized("phi3"), "intermediate_size", 48, "num_attention_heads", True),
                 "gpt_neox": (_sized("gpt_neox"), "intermediate_size", 48, "num_attention_heads", False)}


@pytest.mark.parametrize("family", [pytest.param(family, marks=[] if family in ("gpt2", "phi") else pytest.mark.slow)
                                    for family in PLAIN_MLP_LMS])
def test_a_plain_mlp_causal_lm_is_pruned_reloads_and_exports(family: str, tmp_path: Path) -> None:
    """Heads and MLP channels: Phi's (and Phi-3's) config states one head of 12 (head_dim explicit); GPT-2's and
    GPT-NeoX's derive the head size from the head count, so it stays and the structure lists one head per layer
    (the KV-cache export reads it)."""
    model, field, width, heads, stated = PLAIN_MLP_LMS[family]
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "prune", "role": "teacher", "ratio": 0.5, "targets": ["heads", "ffn"], "steps": 1},
              {"stage": "export"}]
    recipe = _recipe(tmp_path, teacher={"model": model}, stages=stages)
    run(recipe, out=tmp_path / "run", show_progress=False)
    prune = _stage(tmp_path / "run", "prune")["teacher"]
    config = _config(tmp_path / "run", "prune", "teacher")
    assert config[field] == width - math.ceil(width * 0.5)
    if stated:
        assert (config[heads], config["head_dim"]) == (1, 12) and "edgekd_structure" not in config
    else:
        assert config[heads] == 2 and config["edgekd_structure"]["heads"] == [1]
    first, last = prune["trajectory"][0], prune["trajectory"][-1]
    assert last["params"] < first["params"] and math.isfinite(last["val_loss"])
    assert _val_loss(tmp_path / "run", "prune", "teacher", recipe) == pytest.approx(last["val_loss"], abs=1e-6)
    assert _stage(tmp_path / "run", "export")["teacher"]["parity"]["passed"]


def test_factorizing_tied_gpt2_embeddings_is_one_line(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, teacher={"model": STUDENT}, stages=[
        {"stage": "teacher", "epochs": 1, **TRAIN}, {"stage": "factorize", "role": "teacher", "embeddings": True}])
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "stages[1].embeddings" in result.output and "tied" in result.output
    assert "Traceback" not in result.output


TOKEN_KL = {"stage": "distill", "losses": [{"kind": "token_kl"}]}


@pytest.mark.parametrize("stages, fragments", [
    ([{"stage": "teacher"}, TOKEN_KL, {"stage": "prune", "targets": ["channels"]}],
     ("stages[2].targets", "(gpt2) model prunes ffn or heads, not channels")),
    ([{"stage": "teacher"}, TOKEN_KL, {"stage": "hybrid", "target_params_ratio": 0.5, "prune": {"scope": "global"}}],
     ("stages[2].prune.scope", "(gpt2) student is pruned alike in every layer", "use scope: layer")),
    ([{"stage": "teacher"}, {"stage": "prune", "role": "teacher", "scope": "global"}],
     ("stages[1].scope", "use scope: layer")),
    ([{"stage": "teacher"}, {"stage": "prune", "role": "teacher", "targets": ["channels"]}],
     ("stages[1].targets", "prunes ffn or heads, not channels")),
    ([{"stage": "teacher"}, {"stage": "factorize", "role": "teacher", "recovery": {"losses": [{"kind": "hinton"}]}}],
     ("stages[1].recovery.losses[0].kind", "'hinton' does not apply to a causal language model")),
    ([{"stage": "teacher"}, {"stage": "factorize", "role": "teacher", "recovery": {"losses": [
        {"kind": "sequence_kd", "prompt_tokens": 30, "new_tokens": 10}]}}],
     ("stages[1].recovery.losses[0]", "the teacher's context of 32")),
    ([{"stage": "teacher"}, {"stage": "search"}],  # its default distillation is a classifier's
     ("stages[1].distill.losses[0].kind", "'hinton' does not apply to a causal language model")),
    ([{"stage": "teacher"}, {"stage": "search", "distill": {"losses": [{"kind": "token_kl"}]},
                             "space": {"num_hidden_layers": [1], "n_embd": [16]}}],
     ("stages[1].space.n_embd", "did you mean 'hidden_size'?")),
])
def test_compressions_a_causal_lm_cannot_run_are_one_line(tmp_path: Path, stages: list, fragments: tuple) -> None:
    code, output = _validate(_recipe(tmp_path, stages=stages))
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1 and all(f in output for f in fragments), output


@pytest.mark.parametrize("stage", [{"stage": "prune", "role": "teacher"}, {"stage": "factorize", "role": "teacher"}])
def test_a_compression_timing_generation_past_the_context_is_refused(tmp_path: Path, stage: dict) -> None:
    recipe = _recipe(tmp_path, stages=[{"stage": "teacher"}, stage])
    (tmp_path / "tiny-gen.yaml").write_text(yaml.safe_dump(DEVICE | {"generation": {"prompt_tokens": 30,
                                                                                    "new_tokens": 8}}))
    code, output = _validate(recipe)
    assert code == 2 and "32 positions" in output and "30 prompt + 8 new" in output, output


def test_a_llama_causal_lm_recipe_with_prune_and_factorize_validates(tmp_path: Path) -> None:
    stages = [{"stage": "teacher"}, {"stage": "prune", "role": "teacher", "targets": ["heads"]},
              {"stage": "factorize", "role": "teacher"}, {"stage": "hybrid", "role": "teacher",
                                                          "target_macs_ratio": 0.5}, {"stage": "export"}]
    code, output = _validate(_recipe(tmp_path, teacher={"model": GQA_TEACHER}, stages=stages))
    assert code == 0, output


def test_a_qwen2_decoder_with_biased_projections_is_pruned_and_exports(tmp_path: Path) -> None:
    config = {"model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
              "num_key_value_heads": 4, "intermediate_size": 64}
    stages = [{"stage": "teacher", "epochs": 1, **TRAIN},
              {"stage": "prune", "role": "teacher", "ratio": 0.25, "targets": ["heads"], "importance": "l1"},
              {"stage": "export"}]
    recipe = _recipe(tmp_path, teacher={"model": {"arch": "hf", "config": config}}, stages=stages)
    run(recipe, out=tmp_path / "run", show_progress=False)
    after = _config(tmp_path / "run", "prune", "teacher")
    assert (after["num_attention_heads"], after["num_key_value_heads"], after["intermediate_size"]) == (3, 3, 64)
    prune = _stage(tmp_path / "run", "prune")["teacher"]
    assert prune["params"] < prune["before"]["params"] and prune["parity_max_abs_diff"] < 1e-3
    assert _stage(tmp_path / "run", "export")["teacher"]["parity"]["passed"]
    assert _val_loss(tmp_path / "run", "prune", "teacher", recipe) == pytest.approx(prune["val_loss"], abs=1e-6)


SHAKESPEARE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"


@pytest.mark.slow  # ~20 s: trains, prunes and factorizes a 2x64 character LM
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"Tiny Shakespeare not found at {SHAKESPEARE}")
def test_quick_benchmark_records_both_stages_per_token(tmp_path: Path) -> None:
    from tests.test_kd_benchmark import load_benchmark

    out = tmp_path / "prune_lm.json"
    assert load_benchmark("prune_lm").main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["cpu"]["brand"] and result["size"] == "2x64"
    assert result["prune"]["params_ratio"] < 0.7 and result["factorize"]["params_ratio"] < 1
    assert result["prune"]["after"]["params"] == result["factorize"]["before"]["params"]
    for stage in ("prune", "factorize"):
        speedup = result[stage]["speedup"]
        assert speedup["low"] <= speedup["ratio"] <= speedup["high"] and speedup["rounds"] == 8
        assert result[stage]["after"]["val_loss"] < math.log(66)  # 65 characters and end-of-text: trained
