"""A causal-LM recipe through the whole pipeline: teacher → distill → export → profile → bundle → report.

Runs on a generated corpus (no shared data needed) with tiny Llama and GPT-2 models, and checks the
outcomes: the models learn (validation loss well below a uniform guess), the KV-cache export matches
PyTorch, generation is timed with the device's prompt and length, the bundle's README loop generates
what edgekd's own loop generates, a re-run is cached, and bad recipes are refused with one line.
"""

from __future__ import annotations

import json
import logging
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.api import run, validate
from edgekd.cli import app
from edgekd.config.device import DeviceProfile
from edgekd.distill.record import LMDistillFigures, LMTrainedFigures, read_distill_record, read_teacher_record
from edgekd.export.record import KVCacheExportRecord, read_export_record
from edgekd.profile.generate import CachedGenerator
from edgekd.profile.record import LMProfileRecord, read_profile_record
from edgekd.profile.rejudge import rejudge_profile
from tests.conftest import demo_recipe_dict, shrink
from tests.test_report_schema import _assert_damage_is_one_line

TEACHER = {"arch": "hf", "config": {"model_type": "llama", "hidden_size": 48, "num_hidden_layers": 2,
                                    "num_attention_heads": 4, "intermediate_size": 96}}
STUDENT = {"arch": "hf", "config": {"model_type": "gpt2", "n_embd": 24, "n_layer": 1, "n_head": 2}}
DEVICE = {"name": "tiny-gen", "threads": 1, "budget": {"p90_ms": 50, "size_mb": 10, "peak_memory_mb": 500},
          "generation": {"prompt_tokens": 8, "new_tokens": 12}}


def _corpus(path: Path, seed: int = 0, lines: int = 900) -> Path:
    """Text with structure a tiny model learns in a few epochs: templated sentences over small word lists."""
    rng = random.Random(seed)
    who, verb, what = ["the cat", "a dog", "my friend", "the king"], ["sees", "likes", "keeps"], ["a hat", "the sun"]
    path.write_text("".join(f"{rng.choice(who)} {rng.choice(verb)} {rng.choice(what)}.\n" for _ in range(lines)),
                    encoding="utf-8")
    return path


def _recipe(tmp: Path, **changes: Any) -> Path:
    (tmp / "tiny-gen.yaml").write_text(yaml.safe_dump(DEVICE))
    recipe = {
        "name": "tiny-lm", "seed": 0, "threads": 1, "device": str(tmp / "tiny-gen.yaml"),
        "data": {"source": "corpus", "path": str(_corpus(tmp / "corpus.txt")), "context": 32},
        "teacher": {"model": TEACHER}, "student": {"model": STUDENT},
        "stages": [{"stage": "teacher", "epochs": 3, "batch_size": 16, "lr": 3e-3},
                   {"stage": "distill", "epochs": 3, "batch_size": 16, "lr": 3e-3,
                    "losses": [{"kind": "token_kl", "temperature": 1.0, "alpha": 0.5}]},
                   {"stage": "export"}, {"stage": "profile", "warmup": 2, "runs": 12}, {"stage": "bundle"},
                   {"stage": "report"}],
    }
    for key, value in changes.items():
        recipe[key] = value
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("lm")
    recipe = _recipe(tmp)
    result = run(recipe, out=tmp / "run", show_progress=False)
    return recipe, tmp / "run", result.report()


def _record(run_dir: Path, name: str) -> dict[str, Any]:
    found = next(run_dir.glob(f"*-{name}"))
    return json.loads((found / "stage.json").read_text())


def _stage(run_dir: Path, name: str) -> dict[str, Any]:
    return _record(run_dir, name)["metrics"]


def test_teacher_and_student_learn_the_corpus(lm_run) -> None:
    _, run_dir, report = lm_run
    teacher = read_teacher_record(_record(run_dir, "teacher"))
    assert isinstance(teacher.teacher, LMTrainedFigures) and teacher.history is not None
    assert [epoch.epoch for epoch in teacher.history] == [1, 2, 3]
    vocab = teacher.teacher.vocab_size
    assert teacher.teacher.train_tokens > teacher.teacher.validation_tokens > teacher.teacher.context == 32
    for role in ("teacher", "student"):
        figures = report[role]
        assert figures["task"] == "causal_lm"
        assert figures["val_loss"] < math.log(vocab) - 1.0  # far below a uniform guess over the characters
        assert figures["perplexity"] == pytest.approx(math.exp(figures["val_loss"]))
    assert report["student"]["params"] < report["teacher"]["params"] / 3
    distill = read_distill_record(_record(run_dir, "distill"))
    assert distill.role == "student" and isinstance(distill.figures, LMDistillFigures)
    assert distill.figures.losses == ["token_kl"] and distill.figures.teacher_continuation_loss is None
    assert distill.figures.val_loss == report["student"]["val_loss"]
    history = distill.history
    assert [epoch.epoch for epoch in history] == [1, 2, 3] and all("val_loss" in epoch.model_extra for epoch in history)


def test_export_is_checked_on_cached_steps_and_records_the_context(lm_run) -> None:
    import onnx

    _, run_dir, _ = lm_run
    record = _record(run_dir, "export")
    export = read_export_record(record)
    assert export.to_json() == record["metrics"] and set(export.models) == {"teacher", "student"}
    for exported in export.models.values():
        assert isinstance(exported, KVCacheExportRecord) and exported.ort is None  # the onnx-fp32 target
        # the step-wise check's prefix, and the device's prompt the profile stage starts from
        assert DEVICE["generation"]["prompt_tokens"] in exported.checked_prompts and len(exported.checked_prompts) == 2
        parity = exported.parity
        assert parity.passed and parity.max_abs_diff <= parity.atol + parity.rtol * parity.reference_max_abs
        graph = onnx.load(str(run_dir / exported.path), load_external_data=False)
        names = [i.name for i in graph.graph.input]
        assert names[:2] == ["input_ids", "attention_mask"] and names[2] == "past_key_values.0.key"
        assert {p.key: p.value for p in graph.metadata_props}["edgekd.context_length"] == "32"


@pytest.mark.parametrize("stage,read,field,damage", [
    ("teacher", read_teacher_record, "teacher.vocab_size", lambda m: m["teacher"].pop("vocab_size")),
    ("teacher", read_teacher_record, "teacher.ensemble_accuracy",
     lambda m: m["teacher"].update(ensemble_accuracy=0.5)),
    ("distill", read_distill_record, "student.teacher_continuation_loss.losses[1]",
     lambda m: m["student"].update(teacher_continuation_loss={"losses[1]": "low"})),
    ("distill", read_distill_record, "history[2].train_loss", lambda m: m["history"][2].pop("train_loss")),
    ("export", read_export_record, "student.kv_cache", lambda m: m["student"].update(kv_cache="yes")),
    ("export", read_export_record, "teacher.optimization_level",
     lambda m: m["teacher"].update(optimization_level="max")),
    ("profile", read_profile_record, "student.per_token_p90_ms", lambda m: m["student"].pop("per_token_p90_ms")),
    ("profile", read_profile_record, "student.speedup.teacher.low",
     lambda m: m["student"]["speedup"]["teacher"].update(low="slow")),
    ("profile", read_profile_record, "teacher.p50_ms", lambda m: m["teacher"].update(p50_ms=1.0)),
    ("profile", read_profile_record, "cpu.physical_cores", lambda m: m["cpu"].pop("physical_cores")),
    ("profile", read_profile_record, "budget.verdict", lambda m: m["budget"].update(verdict="maybe")),
])
def test_a_malformed_causal_lm_record_is_one_line(lm_run, stage: str, read, field: str, damage) -> None:
    _assert_damage_is_one_line(read, _record(lm_run[1], stage), field, damage)


def test_profile_times_generation_on_the_devices_prompt(lm_run) -> None:
    _, run_dir, report = lm_run
    record = _record(run_dir, "profile")
    profile = read_profile_record(record)
    assert isinstance(profile, LMProfileRecord) and profile.to_json() == record["metrics"]
    assert profile.generation.model_dump() == {"prompt_tokens": 8, "new_tokens": 12}
    assert set(profile.models) == {"teacher", "student"} and profile.cpu.to_json() == report["cpu"]
    for figures in profile.models.values():
        assert figures.tokens_timed == 11 * profile.runs == 11 * 12
        assert 0 < figures.per_token_p50_ms <= figures.per_token_p90_ms
        assert figures.tokens_per_second > 0 and figures.time_to_first_token_ms > 0
    assert profile.models["teacher"].speedup is None  # only the judged model's
    speedup = (profile.models["student"].speedup or {})["teacher"]
    assert speedup.low <= speedup.ratio <= speedup.high and speedup.runs == profile.runs
    assert profile.budget is not None and profile.budget.judged == "student"
    checks = {c.name: c for c in profile.budget.checks}
    assert checks["per_token_p90_latency"].limit == 50 and report["budget"]["verdict"] in ("pass", "fail")


def test_another_budget_judges_the_stored_generation_timings(lm_run) -> None:
    """A reused causal-LM profile stage is judged against another budget (the pipeline's re-judging of a profile
    under a new budget, test_pipeline.py) by its per-token p90, as the stage judges it, its figures kept."""
    record = _record(lm_run[1], "profile")
    assert rejudge_profile(record, DeviceProfile.model_validate(DEVICE)) is record  # the budget it was judged by

    def verdict(**budget: float) -> tuple[str, list[tuple[str, float, bool]], str]:
        judged = rejudge_profile(record, DeviceProfile.model_validate(DEVICE | {"budget": budget}))
        assert {key: value for key, value in judged["metrics"].items() if key != "budget"} == {
            key: value for key, value in record["metrics"].items() if key != "budget"}
        said = judged["metrics"]["budget"]
        checks = [(check["name"], check["limit"], check["passed"]) for check in said["checks"]]
        return said["verdict"], checks, judged["artifact"]["student"]["metrics"]["budget_verdict"]

    roomy = {"p90_ms": 1e6, "size_mb": 1e6, "peak_memory_mb": 1e6}
    assert verdict(**roomy) == ("pass", [("per_token_p90_latency", 1e6, True), ("model_size", 1e6, True),
                                         ("peak_memory", 1e6, True)], "pass")
    assert verdict(**roomy, ms_per_token=1e-3) == ("fail", [("per_token_p90_latency", 1e-3, False),
                                                            ("model_size", 1e6, True), ("peak_memory", 1e6, True)],
                                                   "fail")


def test_the_bundle_readme_loop_generates_what_edgekd_generates(lm_run, tmp_path: Path) -> None:
    _, run_dir, _ = lm_run
    bundle = run_dir / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    cache = manifest["generation"]["cache"]
    assert cache["layers"] == 1 and cache["kv_heads"] == 2 and cache["head_dim"] == 12
    assert manifest["generation"]["context_length"] == 32 and manifest["task"] == "causal_lm"
    example = manifest["generation"]["example"]
    assert example["prompt_tokens"] + example["new_tokens"] <= 32  # within the context
    readme = (bundle / "README.md").read_text()
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, check=True)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundle / "tokenizer")
    prompt = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    assert len(prompt) == example["prompt_tokens"] and example["prompt"] in _corpus(tmp_path / "c.txt").read_text()
    tokens = CachedGenerator(bundle / "model.onnx").generate(prompt, example["new_tokens"]).tokens
    end = manifest["generation"]["end_of_text_id"]
    expected = tokenizer.decode(tokens[:tokens.index(end)] if end in tokens else tokens)
    assert done.stdout.rstrip("\n") == expected


def test_open_run_loads_the_causal_lms_as_transformers_models(lm_run) -> None:
    """``open_run(...).load_model`` read a causal LM's directory as a classifier's (KeyError 'signature')."""
    import torch

    from edgekd.workflow import open_run

    _, run_dir, _ = lm_run
    opened = open_run(run_dir)
    teacher, student = opened.load_model("teacher"), opened.load_model("student")
    assert (teacher.config.model_type, student.config.model_type) == ("llama", "gpt2") and not student.training
    prompt = [1, 2, 3, 4]
    ids = torch.tensor([prompt])
    with torch.no_grad():
        for _ in range(6):  # the loaded student's greedy tokens are the exported student's
            ids = torch.cat([ids, student(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    exported = CachedGenerator(run_dir / _record(run_dir, "export")["artifact"]["student"]["onnx"])
    assert ids[0, len(prompt):].tolist() == exported.generate(prompt, 6).tokens


def test_a_rerun_reuses_every_trained_stage(lm_run) -> None:
    recipe, run_dir, _ = lm_run
    result = run(recipe, out=run_dir, show_progress=False)
    assert [record.skipped for record in result.stages][:4] == [True, True, True, True]


def _validate(recipe: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(recipe)], env={"COLUMNS": "400"})
    return result.exit_code, result.output


@pytest.mark.parametrize("change, fragments", [
    ({"stages": [{"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "hinton"}]}]},
     ("stages[1].losses[0].kind", "'hinton'", "token_kl")),
    ({"tokenizer": {"kind": "wordpiece"}}, ("tokenizer.kind", "char or bpe")),
    ({"student": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}}},
     ("student.model.arch", "arch: hf")),
    ({"stages": [{"stage": "teacher"}, {"stage": "export"}, {"stage": "quantize", "roles": ["teacher"],
                                                           "modes": ["dynamic", "static"]}]},
     ("stages[2].modes[1]", "dynamic INT8, not 'static'")),
    ({"data": {"source": "corpus", "path": "missing.txt"}}, ("missing.txt",)),
    ({"stages": [{"stage": "teacher"}, {"stage": "distill", "losses": [
        {"kind": "sequence_kd", "prompt_tokens": 20, "new_tokens": 20}]}]}, ("stages[1].losses[0]", "context of 32")),
    ({"stages": [{"stage": "teacher"}, {"stage": "distill", "losses": [
        {"kind": "on_policy", "prompt_tokens": 8, "new_tokens": 30}]}]}, ("stages[1].losses[0]", "context of 32")),
    ({"student": {"model": STUDENT | {"config": STUDENT["config"] | {"n_positions": 16}}}},
     ("student.model", "16 positions", "data.context 32")),
    ({"teacher": {"model": TEACHER | {"config": TEACHER["config"] | {"vocab_size": 10}}}},
     ("teacher.model", "its vocabulary has 10 tokens", "the character tokenizer of data.path")),
])
def test_recipes_a_causal_lm_cannot_run_are_one_line(tmp_path: Path, change: dict, fragments: tuple[str, ...]) -> None:
    code, output = _validate(_recipe(tmp_path, **change))
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1 and all(f in output for f in fragments), output


@pytest.mark.parametrize("prompt, new", [(30, 8), (8, 40), (100, 2)])
def test_a_device_generating_past_the_models_context_is_refused_before_training(
        tmp_path: Path, prompt: int, new: int) -> None:
    recipe = _recipe(tmp_path)
    (tmp_path / "tiny-gen.yaml").write_text(yaml.safe_dump(DEVICE | {"generation": {"prompt_tokens": prompt,
                                                                                    "new_tokens": new}}))
    code, output = _validate(recipe)
    assert code == 2 and "32 positions" in output and f"{prompt} prompt + {new} new" in output, output
    assert "(data.context: a model built from sizes gets that many)" in output and "raise data.context" in output


@pytest.mark.parametrize("tokenizer, stages, fraction, fragments", [
    (None, None, 0.9998, ("token(s), fewer than the 8 device 'tiny-gen' generation.prompt_tokens",)),
    ({"kind": "bpe", "vocab_size": 300}, None, 0.9998, ("at most", "generation.prompt_tokens")),
    (None, [{"stage": "teacher"}, {"stage": "export"}, {"stage": "quantize", "roles": ["teacher"]}], 0.999,
     ("fewer than the 33 the quantize stage's validation windows",)),
])
def test_a_validation_text_too_short_for_the_later_stages_is_refused_before_training(
        tmp_path: Path, tokenizer: dict | None, stages: list | None, fraction: float,
        fragments: tuple[str, ...]) -> None:
    """The profile, quantize and compression stages prompt with the device's prompt_tokens (and quantize compares
    on context + 1 windows) from the validation text: a text too short for them is refused by validate, not
    after the teacher and student have trained."""
    changes = {"stages": stages} if stages else {}
    recipe = yaml.safe_load(_recipe(tmp_path, **changes).read_text())
    recipe["data"]["train_fraction"] = fraction
    if tokenizer:
        recipe["tokenizer"] = tokenizer
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    code, output = _validate(tmp_path / "recipe.yaml")
    assert code == 2 and "corpus.txt (data.path)" in output and all(f in output for f in fragments), output
    assert len(output.strip().splitlines()) == 1, output


@pytest.mark.parametrize(("tokenizer", "fragment"), [
    (None, "the training text is 25 token(s), too few for two windows of data.context 32 (66 tokens)"),
    ({"kind": "bpe", "vocab_size": 300}, "the training text is at most 26 token(s), too few for two windows"),
])
def test_a_training_text_too_short_for_two_windows_is_refused_by_validate(
        tmp_path: Path, tokenizer: dict | None, fragment: str) -> None:
    """The teacher stage refused it when it started; validate names the file, the tokens and data.context."""
    recipe = yaml.safe_load(_recipe(tmp_path, stages=[{"stage": "teacher"}]).read_text())
    (tmp_path / "corpus.txt").write_text("To be or not to be, that is the question. " * 2)
    recipe["data"]["train_fraction"] = 0.3
    if tokenizer:
        recipe["tokenizer"] = tokenizer
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    code, output = _validate(tmp_path / "recipe.yaml")
    assert code == 2 and "corpus.txt (data.path)" in output and fragment in output, output
    assert len(output.strip().splitlines()) == 1, output


def test_a_validation_text_shorter_than_one_window_is_warned_about(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    from edgekd.api import validate

    recipe = yaml.safe_load(_recipe(tmp_path, stages=[{"stage": "teacher"}]).read_text())
    recipe["data"]["train_fraction"] = 0.999  # about 18 characters of validation text, context 32
    with caplog.at_level("WARNING", logger="edgekd.task_rules"):
        validate(recipe)
    said = [r.getMessage() for r in caplog.records if "less than one data.context window of 32" in r.getMessage()]
    assert len(said) == 1 and "corpus.txt (data.path): the validation text is " in said[0], caplog.text


def test_validate_reads_the_corpus_once_for_its_vocabulary_and_validation_checks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The character tokenizer's size and the validation text's length come from one read of data.path (validate
    read it for each), and a validation text too short is still refused from that read."""
    from edgekd.api import validate
    from edgekd.data import lm_data
    from edgekd.errors import DataError

    reads = []
    load = lm_data.load_corpus
    monkeypatch.setattr(lm_data, "load_corpus", lambda data: reads.append(data.path.name) or load(data))
    assert validate(_recipe(tmp_path)).name == "tiny-lm"
    assert reads == ["corpus.txt"]

    reads.clear()
    recipe = yaml.safe_load(_recipe(tmp_path).read_text())
    recipe["data"]["train_fraction"] = 0.9998
    with pytest.raises(DataError, match="fewer than the 8 device 'tiny-gen' generation.prompt_tokens"):
        validate(recipe)
    assert reads == ["corpus.txt"]


def test_a_generation_loss_on_a_classifier_is_one_line(write_recipe) -> None:
    recipe = write_recipe(shrink(demo_recipe_dict()) | {
        "stages": [{"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "token_kl"}]}]})
    code, output = _validate(recipe)
    assert code == 2 and "'token_kl' does not apply" in output and "stages[1].losses[0].kind" in output, output


def test_a_pretrained_student_with_a_smaller_vocabulary_is_one_line_before_the_teacher_trains(tmp_path: Path) -> None:
    from edgekd.models.causal_lm import build_causal_lm

    other = tmp_path / "other-vocab"
    build_causal_lm("gpt2", vocab_size=11, context=32, layers=1, width=16, heads=2).save_pretrained(other)
    recipe = _recipe(tmp_path, student={"model": {"arch": "hf", "pretrained": str(other)}},
                     stages=[{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1,
                                                                  "losses": [{"kind": "token_kl"}]}])
    result = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run")], env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert "student.model: its vocabulary has 11 tokens" in result.output
    assert not list(tmp_path.glob("run/*-teacher"))  # refused before the teacher trained


def test_a_pretrained_causal_lm_whose_weights_do_not_fit_its_config_is_refused_by_validate_as_its_load_is(
        tmp_path: Path) -> None:
    """Its load raised transformers' RuntimeError (an internal error after a table of tensors) when the stage built
    it, and validate said ok: both now say it in one line, validate from the safetensors headers."""
    from pydantic import TypeAdapter

    from edgekd.errors import ModelError
    from edgekd.models.architectures import ModelSpec
    from edgekd.models.causal_lm import build_causal_lm, causal_lm_from_spec

    edited = tmp_path / "edited"
    build_causal_lm("llama", vocab_size=40, context=32, layers=1, width=16, heads=2).save_pretrained(edited)
    config = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))  # the weights' is 64
    spec = TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(edited)})
    with pytest.raises(ModelError) as refused:
        causal_lm_from_spec(spec, None, 32, "student.model")
    reason = str(refused.value).removeprefix(f"pretrained model '{edited}': ")
    assert reason.startswith("its weights do not fit its config.json: model.layers.0.mlp.down_proj.weight is "
                             "[16, 64] in the weights but [16, 48] by config.json, "), reason
    code, output = _validate(_recipe(tmp_path, student={"model": {"arch": "hf", "pretrained": str(edited)}}))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert f"student.model.pretrained: '{edited}': {reason}" in output, output


def test_a_pretrained_teacher_without_its_tokenizer_and_no_tokenizer_section_is_refused_by_validate(
        tmp_path: Path) -> None:
    """The corpus is then read with the teacher's own tokenizer: validate said ok and the teacher stage failed."""
    from edgekd.models.causal_lm import build_causal_lm

    build_causal_lm("llama", vocab_size=40, context=32, layers=1, width=16, heads=2).save_pretrained(tmp_path / "t")
    code, output = _validate(_recipe(tmp_path, teacher={"model": {"arch": "hf", "pretrained": str(tmp_path / "t")}}))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert "recipe.yaml: teacher.model.pretrained: with no tokenizer section" in output and "has no tokenizer files" \
        in output, output


def test_a_corpus_read_with_the_teachers_own_tokenizer_is_not_warned_about(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Without a tokenizer section a corpus is read with the pretrained teacher's tokenizer: validate warned that its
    ids came from "a WordPiece vocabulary trained on the data", which a corpus never uses; a character tokenizer
    (tokenizer.kind: char) does read other rows of the teacher's embeddings, and the warning names it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from edgekd.models.causal_lm import build_causal_lm

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator([_corpus(tmp_path / "c.txt").read_text()], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>")
    build_causal_lm("llama", vocab_size=len(tokenizer), context=32, layers=1, width=16,
                    heads=2).save_pretrained(tmp_path / "t")
    tokenizer.save_pretrained(tmp_path / "t")
    teacher = {"model": {"arch": "hf", "pretrained": str(tmp_path / "t")}}
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        validate(_recipe(tmp_path, teacher=teacher))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("edgekd")] == []
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        validate(_recipe(tmp_path, teacher=teacher, tokenizer={"kind": "char"}))
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name.startswith("edgekd")] == [
        f"teacher.model.pretrained '{tmp_path / 't'}' comes with its own tokenizer, but the token ids come from a "
        "character vocabulary trained on the data (tokenizer.pretrained is unset): its embeddings would read other "
        f"tokens' rows; set tokenizer.pretrained: {tmp_path / 't'}"]


def test_a_local_pretrained_tokenizer_larger_than_a_models_vocabulary_is_refused_by_validate(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.train_from_iterator([_corpus(tmp_path / "c.txt").read_text()], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>").save_pretrained(tmp_path / "tok")
    size = len(PreTrainedTokenizerFast.from_pretrained(tmp_path / "tok"))
    student = {"model": STUDENT | {"config": STUDENT["config"] | {"vocab_size": size - 1}}}
    code, output = _validate(_recipe(tmp_path, tokenizer={"pretrained": str(tmp_path / "tok")}, student=student))
    assert code == 2 and len(output.strip().splitlines()) == 1, output
    assert f"student.model: its vocabulary has {size - 1} tokens, fewer than the {size} of tokenizer.pretrained" \
        in output, output
    student["model"]["config"]["vocab_size"] = size  # as many rows as tokens: fine
    code, output = _validate(_recipe(tmp_path, tokenizer={"pretrained": str(tmp_path / "tok")}, student=student))
    assert code == 0, output
    (tmp_path / "tok" / "tokenizer.json").unlink()  # vocab.json and merges.txt only, which transformers cannot read
    (tmp_path / "tok" / "vocab.json").write_text("{}")
    (tmp_path / "tok" / "merges.txt").write_text("")
    code, output = _validate(_recipe(tmp_path, tokenizer={"pretrained": str(tmp_path / "tok")}, student=student))
    assert code == 2 and "tokenizer.pretrained: cannot load" in output, output


def test_bpe_and_datasets_corpora_train_and_save_their_tokenizer(tmp_path: Path) -> None:
    import datasets

    text = _corpus(tmp_path / "c.txt").read_text().splitlines()
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": text[:800]}),
                          "validation": datasets.Dataset.from_dict({"text": text[800:]})}).save_to_disk(
        str(tmp_path / "ds"))
    recipe = _recipe(tmp_path, tokenizer={"kind": "bpe", "vocab_size": 300},
                     stages=[{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 3e-3}])
    spec = yaml.safe_load(recipe.read_text())
    spec["data"] = {"source": "corpus", "path": str(tmp_path / "ds"), "context": 16}
    recipe.write_text(yaml.safe_dump(spec))
    run(recipe, out=tmp_path / "run", show_progress=False)
    saved = next((tmp_path / "run").glob("*-teacher")) / "teacher"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(saved)
    assert 250 <= len(tokenizer) <= 300
    assert tokenizer.decode(tokenizer("Ünïcode the cat")["input_ids"]) == "Ünïcode the cat"  # byte-level: any text
    assert math.isfinite(_stage(tmp_path / "run", "teacher")["teacher"]["val_loss"])


@pytest.mark.slow
def test_sequence_level_and_on_policy_losses_train_the_student_and_cache_the_teachers_outputs(tmp_path: Path) -> None:
    losses = [{"kind": "token_kl"}, {"kind": "sequence_kd", "prompts": 24, "prompt_tokens": 6, "new_tokens": 10},
              {"kind": "on_policy", "beta": 1.0, "student_fraction": 0.5, "prompt_tokens": 4, "new_tokens": 6,
               "weight": 0.5}]
    stages = [{"stage": "teacher", "epochs": 2, "batch_size": 16, "lr": 3e-3},
              {"stage": "distill", "epochs": 1, "batch_size": 16, "lr": 3e-3, "losses": losses,
               "teacher_cache_dir": str(tmp_path / "shared")}]
    recipe = _recipe(tmp_path, stages=stages)
    run(recipe, out=tmp_path / "run", show_progress=False)
    distill = _stage(tmp_path / "run", "distill")["student"]
    vocab = _stage(tmp_path / "run", "teacher")["teacher"]["vocab_size"]
    assert distill["losses"] == ["token_kl", "sequence_kd", "on_policy"] and distill["val_loss"] < math.log(vocab)
    cached = list((tmp_path / "shared").glob("continuations-*.safetensors"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    stages[1]["losses"][2]["weight"] = 0.25  # the distill stage re-runs; the teacher's continuations are reused
    run(_recipe(tmp_path, stages=stages), out=tmp_path / "run", show_progress=False)
    assert [p.stat().st_mtime_ns for p in (tmp_path / "shared").glob("continuations-*.safetensors")] == [stamp]


def test_a_pretrained_teacher_brings_its_tokenizer_and_starts_from_its_weights(lm_run, tmp_path: Path) -> None:
    recipe, run_dir, report = lm_run
    saved = next(run_dir.glob("*-teacher")) / "teacher"  # a save_pretrained directory with its tokenizer
    spec = yaml.safe_load(recipe.read_text())
    spec["teacher"] = {"model": {"arch": "hf", "pretrained": str(saved)}}
    spec["stages"] = [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 1e-4}]
    (tmp_path / "pretrained.yaml").write_text(yaml.safe_dump(spec))
    run(tmp_path / "pretrained.yaml", out=tmp_path / "run", show_progress=False)
    again = _stage(tmp_path / "run", "teacher")["teacher"]
    assert again["vocab_size"] == _stage(run_dir, "teacher")["teacher"]["vocab_size"]
    assert again["val_loss"] < report["teacher"]["val_loss"] + 0.05  # fine-tuned from the trained weights
    assert again["val_loss"] < report["student"]["val_loss"]


def test_given_teacher_weights_are_evaluated_not_trained_and_distilled_from(lm_run, tmp_path: Path) -> None:
    """A teacher trained once is shared by later runs (seeds, losses) as ``teacher.weights``: the file
    ``save_pretrained`` wrote, whose tied output layer is left out."""
    recipe, run_dir, report = lm_run
    weights = next(run_dir.glob("*-teacher")) / "teacher" / "model.safetensors"
    spec = yaml.safe_load(recipe.read_text())
    spec["teacher"] = {"model": TEACHER, "weights": str(weights)}
    spec["stages"] = spec["stages"][:2]
    (tmp_path / "reuse.yaml").write_text(yaml.safe_dump(spec))
    run(tmp_path / "reuse.yaml", out=tmp_path / "run", show_progress=False)
    teacher = _stage(tmp_path / "run", "teacher")
    assert teacher["history"] == [] and "epochs_run" not in teacher["teacher"]
    assert teacher["teacher"]["val_loss"] == pytest.approx(report["teacher"]["val_loss"], abs=1e-5)
    assert _stage(tmp_path / "run", "distill")["student"]["val_loss"] < math.log(teacher["teacher"]["vocab_size"]) - 1


def test_teacher_weights_of_another_size_are_one_line(lm_run, tmp_path: Path) -> None:
    recipe, run_dir, _ = lm_run
    weights = next(run_dir.glob("*-distill")) / "student" / "model.safetensors"  # the student's, not the teacher's
    spec = yaml.safe_load(recipe.read_text())
    spec["teacher"] = {"model": TEACHER, "weights": str(weights)}
    spec["stages"] = spec["stages"][:1]
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "wrong.yaml"), "--out", str(tmp_path / "run")],
                                env={"COLUMNS": "400"})
    assert result.exit_code == 2, result.output
    assert str(weights) in result.output and "do not fit the recipe's model" in result.output, result.output


def test_an_edited_data_file_changes_the_data_digest_and_a_touched_one_does_not(tmp_path: Path) -> None:
    import os

    import numpy as np

    from edgekd.data.config import CorpusData, NpzData, TextFileData
    from edgekd.data.content_digest import data_content_digest

    corpus = _corpus(tmp_path / "corpus.txt")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.arrow").write_bytes(b"rows")
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / name).write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    np.savez(tmp_path / "set.npz", inputs=np.zeros((2, 1, 4, 4), np.float32), labels=np.array([0, 1]))
    sources = {
        corpus: CorpusData(source="corpus", path=corpus),
        tmp_path / "ds" / "data.arrow": CorpusData(source="corpus", path=tmp_path / "ds"),
        tmp_path / "dev.tsv": TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "dev.tsv"),
        tmp_path / "set.npz": NpzData(source="npz", path=tmp_path / "set.npz"),
    }
    for edited, data in sources.items():
        before = data_content_digest(data)
        assert before is not None and before.startswith("sha256:")
        stat = edited.stat()
        os.utime(edited, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert data_content_digest(data) == before, edited
        edited.write_bytes(edited.read_bytes()[:-1] + b"X")
        assert data_content_digest(data) != before, edited


def test_an_edited_corpus_retrains_the_teacher(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, stages=[{"stage": "teacher", "epochs": 1, "batch_size": 16}])
    run(recipe, out=tmp_path / "run", show_progress=False)
    assert [s.skipped for s in run(recipe, out=tmp_path / "run", show_progress=False).stages] == [True]
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus.read_text().replace("the cat", "the cow"))
    assert [s.skipped for s in run(recipe, out=tmp_path / "run", show_progress=False).stages] == [False]
