"""``edgekd compress`` / the ``search`` stage for causal language models, budgeted in ms per token.

Tiny decoders on a generated corpus: the grid maps canonical sizes to each family's config names and leaves
out decoders that cannot be built; a search picks the lowest-validation-loss student within the budget (a
size limit keeps the widest candidates out on any machine, however fast it times them) and the report and
CLI say so; an impossible budget and a bad space key are one line and exit 2 before anything trains.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.device import GenerationShape, load_device, with_budget
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.corpus import build_char_tokenizer
from edgekd.errors import ConfigError
from edgekd.models.specs import HFSpec
from edgekd.profile.speed_ratio import SpeedRatio
from edgekd.search.compress import search_recipe, search_stage
from edgekd.search.config import SearchStage
from edgekd.search.lm_space import check_lm_space, lm_candidates, lm_space_for
from edgekd.search.lm_table import LMFamily, lm_latency_table
from edgekd.search.table import table_key, table_path
from tests.test_causal_lm_pipeline import _corpus

runner = CliRunner()

GPT2 = {"arch": "hf", "config": {"model_type": "gpt2", "n_embd": 24, "n_layer": 1, "n_head": 2}}
LLAMA = {"arch": "hf", "config": {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64}}
PHI = {"arch": "hf", "config": {"model_type": "phi", "hidden_size": 16, "num_hidden_layers": 1,
                                "num_attention_heads": 4, "intermediate_size": 32}}
#: Narrow decoders, and a 256-wide one whose file (≈3 MB for one layer) is over the 2 MB budget on any machine.
SPACE = {"num_hidden_layers": [1, 2], "hidden_size": [16, 32, 256]}
#: Per-token latency every tiny decoder meets even on a loaded machine; the size limit does the excluding.
BUDGET = {"p90_ms": 50, "size_mb": 2, "peak_memory_mb": 1000}
FAST_TABLE = {"warmup": 1, "runs": 10, "rounds": 1}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One edgekd cache for the module, so later tests reuse the latency tables earlier ones built."""
    root = tmp_path_factory.mktemp("edgekd-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEKD_CACHE", str(root))
        yield root


def _recipe(tmp: Path, student: dict[str, Any], **search: Any) -> Path:
    """A corpus recipe: a tiny Llama teacher, a search over ``student``'s sizes, profile and report."""
    device = {"name": "tiny-gen", "threads": 1, "budget": BUDGET, "generation": {"prompt_tokens": 8, "new_tokens": 12}}
    (tmp / "tiny-gen.yaml").write_text(yaml.safe_dump(device))
    stage = {"stage": "search", "space": copy.deepcopy(SPACE), "precision": ["fp32"], "top_k": 2,
             "distill": {"epochs": 1, "batch_size": 16, "lr": 3e-3,
                         "losses": [{"kind": "token_kl", "temperature": 1.0, "alpha": 0.5}]},
             "table": FAST_TABLE, "confirm_runs": 10, **search}
    recipe = {"name": "tiny-lm-search", "seed": 0, "threads": 1, "device": str(tmp / "tiny-gen.yaml"),
              "data": {"source": "corpus", "path": str(_corpus(tmp / "corpus.txt", lines=300)), "context": 32},
              "teacher": {"model": LLAMA}, "student": {"model": student},
              "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 3e-3}, stage,
                         {"stage": "profile", "warmup": 1, "runs": 10}, {"stage": "report"}]}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# --------------------------------------------------------------------------- the grid


def test_space_keys_are_canonical_and_written_under_each_familys_own_names() -> None:
    gpt2 = lm_candidates(SearchStage(stage="search", space=SPACE, precision=["fp32", "int8"]), HFSpec(**GPT2))
    assert len(gpt2) == 2 * 3 * 2
    configs = [c.structure.spec["config"] for c in gpt2 if c.precision == "fp32"]
    assert {(c["n_layer"], c["n_embd"]) for c in configs} == {(1, 16), (1, 32), (1, 256), (2, 16), (2, 32), (2, 256)}
    assert all(c["n_head"] == 2 and "hidden_size" not in c and "num_hidden_layers" not in c for c in configs)
    # a Llama's MLP follows the width at the student's ratio (2×) unless the space sets it
    llama = lm_candidates(SearchStage(stage="search", space={"hidden_size": [16, 64]}, precision=["fp32"]),
                          HFSpec(**LLAMA))
    assert [(c.structure.spec["config"]["hidden_size"], c.structure.spec["config"]["intermediate_size"])
            for c in llama] == [(16, 32), (64, 128)]


@pytest.mark.parametrize(("student", "space", "kept"), [
    (GPT2, {"hidden_size": [20, 21, 24]}, [20, 24]),  # 21 is not divisible by 2 heads
    (LLAMA, {"hidden_size": [24, 36, 40]}, [24, 40]),  # 36 / 4 heads = 9: an odd rotary head size
    (LLAMA, {"num_key_value_heads": [1, 2, 3, 4]}, [1, 2, 4]),  # 4 heads are not divisible by 3 KV heads
    # Phi rotates half of each head: 24 / 4 heads = 6, 3 rotary dimensions (one model in a search stopped it)
    (PHI, {"hidden_size": [16, 24, 32]}, [16, 32]),
])
def test_decoders_that_cannot_be_built_are_left_out(student: dict, space: dict, kept: list[int]) -> None:
    key = next(iter(space))
    grid = lm_candidates(SearchStage(stage="search", space=space, precision=["fp32"]), HFSpec(**student))
    assert [dict(c.structure.varied)[key] for c in grid] == kept


def test_a_decoder_with_an_odd_rotary_part_is_refused_as_written() -> None:
    """transformers builds it and fails at its first forward pass: the run stopped in the distill stage with an
    internal error, after the teacher trained."""
    config = {**PHI["config"], "hidden_size": 24}
    with pytest.raises(ConfigError, match=r"config: rotary positions turn pairs of dimensions, but each head has 3 "
                                              r"rotary dimension\(s\) \(head size 6 × partial_rotary_factor 0\.5\)"):
        HFSpec(arch="hf", config=config)
    whole = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}
    HFSpec(arch="hf", config={**config, "rope_parameters": whole})  # the whole head rotates: 6 dimensions


def test_default_space_halves_keeps_and_doubles_the_students_layers_and_width() -> None:
    stage = SearchStage(stage="search")
    gpt2 = HFSpec(arch="hf", config={"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2})
    assert lm_space_for(stage, gpt2) == {"num_hidden_layers": [1, 2, 4], "hidden_size": [32, 64, 128]}
    assert len(lm_candidates(stage, gpt2)) == 3 * 3 * 2  # fp32 and int8
    assert lm_space_for(stage, HFSpec(**LLAMA)) == {"num_hidden_layers": [1, 2], "hidden_size": [16, 32, 64]}
    # never past the teacher's layers or width: 5 of 7 families chose a student with more parameters than its teacher
    teacher = HFSpec(arch="hf", config={"model_type": "llama", "hidden_size": 96, "num_hidden_layers": 3,
                                        "num_attention_heads": 4, "intermediate_size": 192})
    assert lm_space_for(stage, gpt2, teacher) == {"num_hidden_layers": [1, 2], "hidden_size": [32, 64]}
    assert lm_space_for(stage, HFSpec(**LLAMA), teacher) == {"num_hidden_layers": [1, 2],
                                                             "hidden_size": [16, 32, 64]}


@pytest.mark.parametrize(("student", "key", "fragment"), [
    (GPT2, "hidden_szie", "(did you mean 'hidden_size'?)"),
    (GPT2, "n_embd", "(did you mean 'hidden_size'? space keys are transformers' canonical names)"),
    (GPT2, "intermediate_size", "not a size of a 'gpt2' config; a 'gpt2' search varies num_hidden_layers, "
                                    "hidden_size, num_attention_heads"),
    (LLAMA, "vocab", "a 'llama' search varies num_hidden_layers, hidden_size, num_attention_heads"),
])
def test_a_bad_space_key_is_one_line_naming_it(student: dict, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        check_lm_space(SearchStage(stage="search", space={key: [16]}), HFSpec(**student), "stages[1]")
    assert str(error.value).startswith(f"stages[1].space.{key}: ") and fragment in str(error.value), error.value


def test_validate_refuses_a_bad_space_key_with_exit_2(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, GPT2, space={"num_hidden_layers": [1], "hidden_szie": [16]})
    result = runner.invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert "stages[1].space.hidden_szie: not a size of a 'gpt2' config (did you mean 'hidden_size'?)" in text, text
    prune = runner.invoke(app, ["validate", str(_recipe(tmp_path, GPT2, prune=[0.0, 0.5]))])
    assert prune.exit_code == 2 and "stages[1].prune: a causal-LM search varies sizes and precision" in prune.output
    loss = runner.invoke(app, ["validate", str(_recipe(tmp_path, GPT2, distill={"losses": [{"kind": "hinton"}]}))])
    assert loss.exit_code == 2 and "stages[1].distill.losses[0].kind: loss 'hinton'" in loss.output, loss.output


def test_compress_turns_a_plain_corpus_recipe_into_a_search_over_its_student(tmp_path: Path) -> None:
    plain = yaml.safe_load(_recipe(tmp_path, GPT2).read_text())
    plain["stages"] = [plain["stages"][0], {"stage": "distill", "epochs": 2, "losses": [{"kind": "token_kl"}]},
                       {"stage": "export"}, {"stage": "quantize", "loss_tolerance": 0.05, "min_speedup": 1.2},
                       {"stage": "profile"}, {"stage": "report"}]
    recipe = search_recipe(validate_model(plain, Recipe, source="test"))
    assert recipe.stage_names() == ["teacher", "search", "profile", "report"]
    search = search_stage(recipe)
    assert search is not None and search.distill.epochs == 2 and search.distill.losses[0].kind == "token_kl"
    assert search.quantize.min_speedup == 1.2  # the recipe's quantize settings (its stage-only keys left out)
    assert recipe.student.model.config == GPT2["config"]
    # --budget-ms is the per-token limit of a device that states one
    device = load_device(tmp_path / "tiny-gen.yaml")
    per_token = device.model_copy(update={"budget": device.budget.model_copy(update={"ms_per_token": 3.0})})
    assert with_budget(per_token, 0.5).budget.ms_per_token == 0.5 and with_budget(device, 0.5).budget.p90_ms == 0.5


# --------------------------------------------------------------------------- the latency table


def test_table_is_cached_per_generation_shape_and_scaled_on_an_estimated_device(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = SpeedRatio(ratio=3.0, host_ms=10.0, device_ms=30.0, reference_model="mobilebert-seq128",
                       source="a test figure", threads=1, cpu={})
    monkeypatch.setattr("edgekd.profile.causal_lm_stage.speed_ratio", lambda *_args, **_kwargs: fixed)
    phone = load_device("android-midrange-cpu")
    phone = phone.model_copy(update={"threads": 1, "generation": GenerationShape(prompt_tokens=6, new_tokens=8)})
    stage = SearchStage(stage="search", space={"hidden_size": [64]}, precision=["fp32", "int8"], table=FAST_TABLE)
    family = LMFamily(build_char_tokenizer("the cat sees a hat.\n" * 20), 32)
    table = lm_latency_table(lm_candidates(stage, HFSpec(**GPT2)), family, phone, stage)
    assert table.stats.profiled == 2 and Path(table.stats.path).name.startswith("android-midrange-cpu-causal-lm-")
    for entry in table.entries.values():
        assert entry.estimate and entry.p90_ms == pytest.approx(3.0 * entry.host_p90_ms)
    fp32, int8 = (next(e for e in table.entries.values() if e.precision == p) for p in ("fp32", "int8"))
    assert int8.size_mb < fp32.size_mb and fp32.macs == int8.macs > 0
    # the budget is not in the key; the generation shape is
    assert table_path(table_key(family, with_budget(phone, 0.01), stage)) == Path(table.stats.path)
    longer = phone.model_copy(update={"generation": GenerationShape(prompt_tokens=6, new_tokens=16)})
    assert table_path(table_key(family, longer, stage)) != Path(table.stats.path)


# --------------------------------------------------------------------------- impossible budgets


def test_impossible_budget_exits_2_in_one_line_before_training(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, GPT2, space={"num_hidden_layers": [1], "hidden_size": [16, 32]})
    result = runner.invoke(app, ["compress", str(recipe), "--budget-ms", "0.0001", "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert "no candidate meets the per-token budget: fastest candidate" in text and "vs budget 0.0001 ms" in text
    assert "(gpt2 num_hidden_layers=1 hidden_size=" in text and "int8 (add it to precision)" in text, text
    assert not out.exists()  # refused before the teacher trained


# --------------------------------------------------------------------------- a search end to end


@pytest.mark.parametrize(("student", "precision"), [
    (GPT2, ["fp32"]), (LLAMA, ["fp32"]), pytest.param(GPT2, ["fp32", "int8"], marks=pytest.mark.slow)],
    ids=["gpt2", "llama", "gpt2-int8"])
def test_compress_picks_the_lowest_loss_decoder_within_budget_and_reports_it(cache: Path, tmp_path: Path,
                                                                             student: dict, precision: list) -> None:
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, student, precision=precision, quantize={"rounds": 3})
    result = runner.invoke(app, ["compress", str(recipe), "--out", str(out)])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())  # the terminal table's title wraps
    assert "chosen by validation loss (nats per token; lower is better)" in shown, shown
    stage = next(out.glob("*-search"))
    search = json.loads((stage / "stage.json").read_text())["metrics"]["search"]
    assert search["task"] == "causal_lm" and search["metric"]["name"] == "val_loss"
    rows = search["table"]["candidates"]
    assert len(rows) == 6 * len(precision) and all(row["p90_ms"] > 0 and row["macs"] > 0 for row in rows)
    # the 256-wide FP32 decoders are over the size budget, never trained; the two largest feasible ones were
    family = student["config"]["model_type"]
    assert {row["label"] for row in rows if row["over"]} >= {f"{family} num_hidden_layers={n} hidden_size=256 fp32"
                                                             for n in (1, 2)}
    assert all(row["status"] == "over budget" and "size_mb" in row["over"] for row in rows if row["over"])
    feasible = {row["structure"]: row["macs"] for row in rows if not row["over"]}
    assert [t["capacity"] for t in search["trained"]] == sorted(feasible.values(), reverse=True)[:2]
    assert not {t["structure"] for t in search["trained"]} - set(feasible)
    # an INT8 variant is a candidate where the quantize stage kept it; the table timed both precisions
    if "int8" in precision:
        assert {row["precision"] for row in rows} == {"fp32", "int8"}
    # the choice is the lowest validation loss within budget, confirmed per token
    passing = [m for m in search["measured"] if m["verdict"] == "pass"]
    chosen = search["chosen"]
    assert chosen["val_loss"] == min(m["val_loss"] for m in passing)
    assert chosen["confirmed"]["verdict"] == "pass" and chosen["confirmed"]["p90_ms"] <= BUDGET["p90_ms"]
    # the run's student is the chosen model: the profile stage judged it per token, the report says so
    report = json.loads((out / "report.json").read_text())
    assert (report["student"]["precision"] or "fp32", report["student"]["size_mb"]) == (chosen["precision"],
                                                                              chosen["size_mb"])
    if chosen["precision"] == "fp32":
        assert report["student"]["val_loss"] == pytest.approx(chosen["val_loss"])
    assert report["student"]["size_mb"] <= BUDGET["size_mb"] and report["budget"]["verdict"] == "pass"
    assert f"chosen: {chosen['label']} — " in shown
    markdown = (out / "report.md").read_text()
    assert "## Budget search" in markdown and "val loss (nats/token)" in markdown and "← chosen" in markdown
    assert f"{chosen['label']} (validation loss {chosen['val_loss']:.4f} nats/token)" in markdown
    # the table was timed by the pre-flight check; the stage read it from the cache
    assert search["table"]["profiled"] == 0 and search["table"]["reused"] == len(rows)
