"""``edgekd validate`` on bring-your-own Hugging Face models: one line naming the key, before anything runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.stages import check_recipe
from tests import hf_families
from tests.conftest import demo_recipe_dict, shrink
from tests.test_config_errors import _assert_one_line_error
from tests.test_text_pipeline import _write_tsv

runner = CliRunner()
TEXT_DATA = {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 5}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One tiny saved checkpoint per family."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {family: str(hf_families.save(family, root / family))
            for family in (*hf_families.TEXT, *hf_families.IMAGE, *hf_families.MORE_ENCODERS)}


def _text_recipe(teacher: dict[str, Any], student: dict[str, Any], stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "byo", "data": TEXT_DATA, "tokenizer": {"vocab_size": 100},
            "teacher": {"model": teacher}, "student": {"model": student}, "stages": stages}


def _validate(tmp_path: Path, recipe: dict[str, Any]):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    for name in ("train.tsv", "dev.tsv"):
        _write_tsv(tmp_path / name, 20, seed=len(name))
    return runner.invoke(app, ["validate", str(path)])


SMALL_BERT = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2}
DISTILL = [{"stage": "teacher"}, {"stage": "distill"}]


@pytest.mark.parametrize("family", [f for f in hf_families.TEXT if f not in ("bert", "roberta")] + ["vit"])
def test_arch_bert_refuses_a_checkpoint_of_another_family(family: str, checkpoints: dict[str, str],
                                                          tmp_path: Path) -> None:
    recipe = _text_recipe({"arch": "bert", "pretrained": checkpoints[family]}, SMALL_BERT, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "teacher.model",
                           f"is a '{family}' checkpoint, not a BERT-layout encoder", "arch: hf")


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_arch_bert_still_loads_bert_layout_checkpoints(family: str, checkpoints: dict[str, str],
                                                       tmp_path: Path) -> None:
    recipe = _text_recipe({"arch": "bert", "pretrained": checkpoints[family]}, SMALL_BERT, DISTILL)
    result = _validate(tmp_path, recipe)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("family", list(hf_families.IMAGE))
def test_a_vision_checkpoint_on_text_data_is_refused(family: str, checkpoints: dict[str, str],
                                                     tmp_path: Path) -> None:
    recipe = _text_recipe({"arch": "hf", "pretrained": checkpoints[family]}, SMALL_BERT, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "teacher.model.arch",
                           f"a 'hf' ({family}) model takes image inputs", "gives text data")


@pytest.mark.parametrize("family", list(hf_families.TEXT))
def test_a_text_checkpoint_on_images_is_refused(family: str, checkpoints: dict[str, str], tmp_path: Path) -> None:
    recipe = shrink(demo_recipe_dict())
    recipe["student"]["model"] = {"arch": "hf", "pretrained": checkpoints[family]}
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model.arch",
                           f"a 'hf' ({family}) model takes text inputs", "gives image data")


@pytest.mark.parametrize("problem", [
    ({"arch": "hf"}, "give either 'pretrained'"),
    ({"arch": "hf", "config": {"hidden_size": 8}}, "expected a 'model_type'"),
    ({"arch": "hf", "config": {"model_type": "lama"}}, "model_type 'lama' is not a transformers model family "
                                                         "(did you mean 'llama'?)"),
    ({"arch": "hf", "config": {"model_type": "zzzz"}}, "model_type 'zzzz' is not a transformers model family "
                                                         "(e.g. bert"),
    ({"arch": "hf", "pretrained": "MISSING"}, "has no config.json"),
], ids=["neither", "no-model-type", "misspelt-model-type", "unknown-model-type", "no-config-json"])
def test_hf_spec_mistakes(problem: tuple[dict[str, Any], str], tmp_path: Path) -> None:
    spec, fragment = problem
    if spec.get("pretrained") == "MISSING":
        (tmp_path / "empty").mkdir()
        spec = {**spec, "pretrained": str(tmp_path / "empty")}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(spec, SMALL_BERT, DISTILL)), "teacher.model", fragment)


def test_a_checkpoint_in_a_sub_folder_is_pointed_at(tmp_path: Path) -> None:
    """A sentence-transformers directory keeps the model in a numbered sub-folder: the error names it."""
    outer = tmp_path / "st-model"
    (outer / "0_Transformer").mkdir(parents=True)
    (outer / "0_Transformer" / "config.json").write_text('{"model_type": "bert"}')
    (outer / "modules.json").write_text("[]")
    spec = {"arch": "hf", "pretrained": str(outer)}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(spec, SMALL_BERT, DISTILL)), "teacher.model",
                           "its sub-folder '0_Transformer' has one", str(outer / "0_Transformer"))


def _broken_checkpoint(source: Path, target: Path, fault: str) -> Path:
    """A copy of checkpoint ``source`` with one fault a download or a hand-made directory can have."""
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if fault == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif fault == "pickle-only":  # a file named as PyTorch weights that torch's weights_only loader cannot read
        weights.rename(target / "pytorch_model.bin")
    elif fault == "other-format":
        weights.rename(target / "flax_model.msgpack")
    elif fault == "missing-shard":
        weights.unlink()
        shard = {"bert.embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors"}
        (target / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": shard}))
    elif fault == "unknown-family":
        config = json.loads((target / "config.json").read_text())
        (target / "config.json").write_text(json.dumps({**config, "model_type": "frobnicator"}))
    return target


CHECKPOINT_FAULTS = {
    "truncated": ("model.safetensors' is not a readable safetensors file", "re-download or re-save it"),
    "pickle-only": ("pytorch_model.bin' is not PyTorch weights torch's weights_only loader reads",),
    "other-format": ("has no model.safetensors nor pytorch_model.bin; it has flax_model.msgpack",),
    "missing-shard": ("model-00001-of-00002.safetensors' is missing",),
    "unknown-family": ("model_type 'frobnicator' is not a transformers model family",),
}


@pytest.mark.parametrize("arch", ["hf", "bert"])
@pytest.mark.parametrize("fault", CHECKPOINT_FAULTS)
def test_a_checkpoint_that_cannot_load_is_refused_before_training(fault: str, arch: str, checkpoints: dict[str, str],
                                                                  tmp_path: Path) -> None:
    broken = _broken_checkpoint(Path(checkpoints["bert"]), tmp_path / "broken", fault)
    recipe = _text_recipe(SMALL_BERT, {"arch": arch, "pretrained": str(broken)}, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model", *CHECKPOINT_FAULTS[fault])


def test_a_pretrained_path_that_does_not_exist_is_not_read_as_a_hub_id(checkpoints: dict[str, str],
                                                                       tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    recipe = _text_recipe({"arch": "hf", "pretrained": missing}, SMALL_BERT, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "teacher.model", f"'{missing}' is not a directory")
    recipe = _text_recipe({"arch": "hf", "pretrained": checkpoints["bert"]}, SMALL_BERT, DISTILL)
    recipe["tokenizer"] = {"pretrained": missing}
    _assert_one_line_error(_validate(tmp_path, recipe), "tokenizer.pretrained", f"'{missing}' is not a directory")


@pytest.mark.parametrize(("config", "fragment"), [
    ({"model_type": "bert", "hidden_size": 30, "num_attention_heads": 4}, "not a multiple of the number of attention"),
    ({"model_type": "gpt2", "n_embd": 30, "n_head": 4}, "must be divisible by num_heads"),
], ids=["bert", "gpt2"])
def test_a_config_transformers_cannot_build_is_refused(config: dict[str, Any], fragment: str, tmp_path: Path) -> None:
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "config": config}, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model",
                           f"transformers cannot build a '{config['model_type']}' model", fragment)


#: Configs too large to allocate, each family under its own field names (GPT-2: n_embd, DistilBERT: dim …).
OVERSIZED = [
    ({"model_type": "bert", "hidden_size": 65_536, "num_hidden_layers": 24}, "24 layers of hidden 65536 and ffn 3072"),
    ({"model_type": "gpt2", "n_embd": 32_768, "n_layer": 48}, "48 layers of hidden 32768 and ffn 131072"),
    ({"model_type": "distilbert", "dim": 16_384, "n_layers": 1000, "hidden_dim": 4}, "1000 layers of hidden 16384"),
    ({"model_type": "llama", "num_hidden_layers": 1000}, "1000 layers of hidden 4096 and ffn 11008"),
    ({"model_type": "vit", "hidden_size": 50_000, "num_hidden_layers": 100}, "100 layers of hidden 50000"),
]


@pytest.mark.parametrize(("config", "fragment"), OVERSIZED, ids=[c["model_type"] for c, _ in OVERSIZED])
def test_hf_configs_too_large_to_allocate_are_refused(config: dict[str, Any], fragment: str, tmp_path: Path) -> None:
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "config": config}, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model", fragment, "expected at most 1e+10")


@pytest.mark.parametrize("config", [{"model_type": "bert", "hidden_size": "wide"},
                                    {"model_type": "llama", "num_hidden_layers": [1, 2]}], ids=["str", "list"])
def test_hf_config_values_of_the_wrong_type_are_refused(config: dict[str, Any], tmp_path: Path) -> None:
    field = next(key for key in config if key != "model_type")
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "config": config}, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model", "config:", field)


STEPS = {
    "factorize": ({"stage": "factorize"}, "stages[2].stage", "cannot be factorized"),
    "global-prune": ({"stage": "prune", "scope": "global"}, "stages[2].scope", "use scope: layer"),
    "hybrid": ({"stage": "hybrid", "target_params_ratio": 0.5}, "stages[2].stage", "cannot be factorized"),
}
#: family → the steps validate refuses for it (BERT-layout encoders take them all; the others' heads and MLP
#: channels are pruned alike in every layer).
REFUSED = {"distilbert": ["global-prune"], "gpt2": ["global-prune"], "llama": ["global-prune"],
           "qwen2": ["global-prune"], "deberta-v2": ["global-prune"], "albert": ["global-prune"]}


@pytest.mark.parametrize(("family", "step"), [(f, s) for f, steps in REFUSED.items() for s in steps])
def test_steps_a_family_cannot_take_are_refused(family: str, step: str, checkpoints: dict[str, str],
                                                tmp_path: Path) -> None:
    stage, key, *fragments = STEPS[step]
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "pretrained": checkpoints[family]},
                          [*DISTILL, stage, {"stage": "export"}])
    _assert_one_line_error(_validate(tmp_path, recipe), key, f"a 'hf' ({family}) ", *fragments)


#: family → the compression stages validate accepts for it.
ACCEPTED = {
    "bert": [{"stage": "prune"}, {"stage": "factorize"}],
    "roberta": [{"stage": "prune"}, {"stage": "factorize"}],
    "llama": [{"stage": "prune", "targets": ["heads"]}, {"stage": "factorize"},
              {"stage": "hybrid", "target_params_ratio": 0.5}],
    "qwen2": [{"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "factorize"}],
    "gpt2": [{"stage": "prune", "targets": ["heads"]}, {"stage": "factorize"},
             {"stage": "hybrid", "target_params_ratio": 0.5}],
    "distilbert": [{"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "factorize", "embeddings": True}],
    "deberta-v2": [{"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "factorize", "embeddings": True},
                   {"stage": "hybrid", "target_params_ratio": 0.5}],
    "albert": [{"stage": "factorize"}, {"stage": "prune", "targets": ["heads", "ffn"]},
               {"stage": "hybrid", "target_params_ratio": 0.5}],
}


@pytest.mark.parametrize("family", ACCEPTED)
def test_families_edgekd_rewrites_may_be_pruned_and_factorized(family: str, checkpoints: dict[str, str]) -> None:
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "pretrained": checkpoints[family]},
                          [*DISTILL, *ACCEPTED[family], {"stage": "export"}])
    check_recipe(validate_model(recipe, Recipe, source="recipe"), "recipe")


@pytest.mark.parametrize(("family", "layout"), [
    ("convnext", "its blocks form stages of different widths, not one stack of equal blocks"),
    ("resnet", "its blocks form stages of different widths, not one stack of equal blocks"),
    ("albert", "its layers share their weights (ALBERT runs num_hidden_layers passes through num_hidden_groups "
               "shared layer groups), so it has no separate layers to keep some of"),
])
def test_drop_layers_of_a_teacher_not_one_stack_of_layers_says_how_they_are_laid_out(
        family: str, layout: str, checkpoints: dict[str, str], tmp_path: Path) -> None:
    """ALBERT was refused as "not a transformer": the reason is its one shared layer, as a CNN's is its stages."""
    teacher = {"arch": "hf", "pretrained": checkpoints[family]}
    if family in hf_families.IMAGE:
        recipe = shrink(demo_recipe_dict())
        recipe["teacher"]["model"], recipe["student"]["model"] = teacher, {"arch": "drop_layers"}
    else:
        recipe = _text_recipe(teacher, {"arch": "drop_layers"}, DISTILL)
    _assert_one_line_error(_validate(tmp_path, recipe), "student.model.arch",
                           "'drop_layers' keeps some layers of the teacher's stack of transformer blocks; a "
                           f"teacher.model.arch 'hf' ({family}) cannot be cut so: {layout}")


@pytest.mark.parametrize("teacher", [{"arch": "bert", "pretrained": "bert"}, {"arch": "hf", "pretrained": "llama"}],
                         ids=["bert", "hf-llama"])
def test_a_search_candidate_keeps_a_pretrained_teacher(teacher: dict[str, Any], checkpoints: dict[str, str],
                                                       tmp_path: Path) -> None:
    """`edgekd compress` with a bring-your-own teacher (was: give either 'pretrained' or sizes)."""
    import torch
    from safetensors.torch import save_file

    from edgekd.search.config import SearchStage
    from edgekd.search.plan import Choice
    from edgekd.search.space import Structure
    from edgekd.search.train import candidate_recipe

    for name in ("train.tsv", "dev.tsv"):
        _write_tsv(tmp_path / name, 20, seed=len(name))
    data = {**TEXT_DATA, "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv")}
    spec = {**teacher, "pretrained": checkpoints[teacher["pretrained"]]}
    recipe = validate_model({**_text_recipe(spec, SMALL_BERT, DISTILL), "data": data}, Recipe, source="recipe")
    choice = Choice(structure=Structure(spec=SMALL_BERT), precisions=("fp32",), capacity=1, entries={})
    weights = tmp_path / "teacher.safetensors"
    save_file({"w": torch.zeros(1)}, str(weights))
    candidate = candidate_recipe(recipe, choice, SearchStage(stage="search"), weights, quantize=False)
    assert candidate.teacher.model.pretrained == spec["pretrained"] and candidate.teacher.weights is not None


#: Mixture-of-experts families with a sequence classifier (OLMoE has none: refused as a classifier, below), sized
#: to run (its key/value heads must divide the 2 attention heads: validate tries the model on the data).
MOE = {"mixtral": {"num_local_experts": 4}, "qwen2_moe": {"num_experts": 4}, "qwen3_moe": {"num_experts": 4}}


@pytest.mark.parametrize("family", sorted(MOE))
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_mixture_of_experts_model_with_an_export_stage_validates_through_transformers_exporter(
        family: str, role: str, tmp_path: Path) -> None:
    """Its routing has no TorchScript export, but transformers' exporter exports it (edgekd.export.backends)."""
    moe = {"arch": "hf", "config": {"model_type": family, "hidden_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "num_key_value_heads": 2, "num_experts_per_tok": 1,
                                        **MOE[family]}}
    models = {"teacher": moe, "student": SMALL_BERT} if role == "teacher" else {"teacher": SMALL_BERT, "student": moe}
    result = _validate(tmp_path, _text_recipe(models["teacher"], models["student"], [*DISTILL, {"stage": "export"}]))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_mixture_of_experts_model_is_refused_when_transformers_exporter_cannot_run(
        role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.export import hf_exporter

    monkeypatch.setattr(hf_exporter, "unavailable", lambda: "transformers' ONNX exporter needs onnxscript (absent)")
    moe = {"arch": "hf", "config": {"model_type": "mixtral", "hidden_size": 16, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "num_key_value_heads": 2, "num_experts_per_tok": 1,
                                    "num_local_experts": 4}}
    models = {"teacher": moe, "student": SMALL_BERT} if role == "teacher" else {"teacher": SMALL_BERT, "student": moe}
    stages = [*DISTILL, {"stage": "export"}]
    result = _validate(tmp_path, _text_recipe(models["teacher"], models["student"], stages))
    _assert_one_line_error(result, f"{role}.model: 'mixtral' is a mixture-of-experts model (4 experts)",
                           "cannot export its expert routing", "needs onnxscript (absent)",
                           "export (stages[2]) would fail after training")
    # without an export stage the same recipe trains: nothing is refused
    assert _validate(tmp_path, _text_recipe(models["teacher"], models["student"], DISTILL)).exit_code == 0


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_family_the_export_sweep_found_unexportable_is_refused_before_training(role: str, tmp_path: Path) -> None:
    """Longformer's traced graphs (TorchScript's and transformers') fail in onnxruntime at other lengths: refused from
    the table of :mod:`edgekd.models.export_support` with its reason, unless the recipe does not export."""
    longformer = {"arch": "hf", "config": {"model_type": "longformer", "hidden_size": 16, "num_hidden_layers": 1,
                                           "num_attention_heads": 2, "intermediate_size": 16, "attention_window": 4}}
    models = ({"teacher": longformer, "student": SMALL_BERT} if role == "teacher"
              else {"teacher": SMALL_BERT, "student": longformer})
    result = _validate(tmp_path, _text_recipe(models["teacher"], models["student"], [*DISTILL, {"stage": "export"}]))
    _assert_one_line_error(result, f"{role}.model: 'longformer' models cannot be exported to ONNX",
                           "fails in onnxruntime on other batch sizes or lengths",
                           "export (stages[2]) would fail after training")
    assert _validate(tmp_path, _text_recipe(models["teacher"], models["student"], DISTILL)).exit_code == 0


#: Families described by the general mechanisms: what validate accepts for each, and what it refuses with the
#: family's reason (case of tests/test_attention_heads_prune.DESCRIBED → accepted stages, refused stage, reason).
DESCRIBED_STEPS: dict[str, tuple[list[dict[str, Any]], dict[str, Any] | None, str, str]] = {
    "deberta": ([{"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "factorize", "embeddings": True}],
                None, "", ""),
    "phi3": ([{"stage": "hybrid", "target_params_ratio": 0.5}], None, "", ""),
    "gpt_neox": ([{"stage": "prune", "targets": ["heads"]}, {"stage": "factorize"}], None, "", ""),
    "falcon": ([{"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "factorize"}], None, "", ""),
    "mpnet": ([{"stage": "prune", "targets": ["ffn"]}], {"stage": "prune", "targets": ["heads"]},
              "stages[2].targets", "relative-position bias"),
    "bloom": ([{"stage": "factorize"}], {"stage": "prune"}, "stages[2].stage", "ALiBi slopes follow the head count"),
}


@pytest.mark.parametrize("case", DESCRIBED_STEPS)
def test_a_described_family_takes_what_it_claims_and_refuses_the_rest_with_its_reason(case: str,
                                                                                      tmp_path: Path) -> None:
    from tests.test_attention_heads_prune import DESCRIBED

    kind, sizes, _ = DESCRIBED[case]
    student = {"arch": "hf", "config": {"model_type": kind, **sizes}}
    accepted, refused, key, reason = DESCRIBED_STEPS[case]
    check_recipe(validate_model(_text_recipe(SMALL_BERT, student, [*DISTILL, *accepted, {"stage": "export"}]),
                                Recipe, source="recipe"), "recipe")
    if refused is not None:
        _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, [*DISTILL, refused])), key,
                               f"a 'hf' ({kind}) ", reason)


def test_an_unlisted_family_is_refused_with_what_edgekd_rewrites_generated_from_the_table(tmp_path: Path) -> None:
    from edgekd.models.families import FAMILIES, NOT_REWRITTEN
    from tests.test_attention_heads_prune import _TINY

    student = {"arch": "hf", "config": {"model_type": "yoso", **_TINY}}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, [*DISTILL, {"stage": "factorize"}])),
                           "stages[2].stage", "a 'hf' (yoso) student cannot be factorized",
                           "'yoso' is not a family edgekd knows the layout of", "deberta, ", "phi3")
    assert all(name in NOT_REWRITTEN for name, traits in FAMILIES.items() if traits.prune_targets or traits.factorize)


def test_a_family_looked_at_and_not_rewritten_says_why(tmp_path: Path) -> None:
    from tests.test_attention_heads_prune import _TINY

    student = {"arch": "hf", "config": {"model_type": "squeezebert", **_TINY, "embedding_size": 24,
                                        "intermediate_size": 36}}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, [*DISTILL, {"stage": "prune"}])),
                           "stages[2].stage", "a 'hf' (squeezebert) student has nothing structured pruning removes",
                           "grouped 1-D convolutions")


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_an_encoder_decoder_classifier_is_refused_pruning_with_why(family: str, tmp_path: Path) -> None:
    """BART, T5 … classify with an encoder and a decoder whose sizes their configs state apart: pruning and
    factorizing them is refused with that reason before training. Built from a config on the WordPiece edgekd
    trains, each takes its decoder start (T5's config has none) and end-of-sequence id (where its classifier reads
    the answer: [SEP], which ends every row) from the tokenizer: validate tries the model on rows laid out as the
    tokenizer lays out a sentence, and the run trains and exports it."""
    sizes = {"bart": {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
                      "decoder_attention_heads": 2, "encoder_ffn_dim": 16, "decoder_ffn_dim": 16},
             "t5": {"d_model": 16, "num_layers": 1, "num_heads": 2, "d_kv": 8, "d_ff": 16}}[family]
    student = {"arch": "hf", "config": {"model_type": family, **sizes}}
    for stage, says in (({"stage": "prune"}, "has nothing structured pruning removes"),
                        ({"stage": "factorize"}, "cannot be factorized")):
        _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, [*DISTILL, stage])),
                               "stages[2].stage", f"a 'hf' ({family}) student {says}",
                               f"'{family}' is an encoder-decoder model", "cross-attention")
    recipe = _text_recipe(SMALL_BERT, student, [*DISTILL, {"stage": "export"}])
    for stage in recipe["stages"][:2]:
        stage["epochs"] = 1
    assert _validate(tmp_path, recipe).exit_code == 0
    result = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    export = json.loads((tmp_path / "run" / "03-export" / "stage.json").read_text())
    assert export["metrics"]["student"]["parity"]["passed"]


def test_a_block_sparse_bigbird_trains_with_attention_losses_and_exports(tmp_path: Path) -> None:
    """BigBird's block-sparse attention forms no attention probabilities (the distill stage failed asking for
    attn_implementation="eager", which it was) and the exporter traced its sparse pattern at one length (the
    prune stage's check graph failed in a Reshape at another): the model gets full attention over the same
    weights, as transformers itself gives it for short inputs, and runs through every stage."""
    teacher = {"arch": "hf", "config": {"model_type": "big_bird", "hidden_size": 16, "num_hidden_layers": 2,
                                        "num_attention_heads": 2, "intermediate_size": 32,
                                        "attention_type": "block_sparse", "block_size": 4, "num_random_blocks": 2}}
    losses = [{"kind": "hinton"}, {"kind": "attention", "layer_map": {"kind": "uniform"}}]
    stages = [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1, "losses": losses},
              {"stage": "export"}]
    recipe = _text_recipe(teacher, {"arch": "drop_layers", "keep": 1}, stages)
    assert _validate(tmp_path, recipe).exit_code == 0
    result = runner.invoke(app, ["run", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    export = json.loads((tmp_path / "run" / "03-export" / "stage.json").read_text())
    assert export["metrics"]["teacher"]["parity"]["passed"] and export["metrics"]["student"]["parity"]["passed"]
    saved = json.loads(next((tmp_path / "run").glob("01-teacher/*/config.json")).read_text())
    assert saved["attention_type"] == "original_full"


def test_a_hidden_loss_on_a_family_edgekd_does_not_read_says_so(tmp_path: Path) -> None:
    """ALBERT returns hidden states; the refusal said the model 'does not have' them."""
    from tests.test_attention_heads_prune import _TINY

    student = {"arch": "hf", "config": {"model_type": "albert", **_TINY, "embedding_size": 16}}
    stages = [{"stage": "teacher"}, {"stage": "distill", "losses": [{"kind": "hidden"}]}]
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, stages)), "stages[1].losses[0].kind",
                           "loss 'hidden' compares the models' hidden_states, which edgekd does not read from a "
                           "'hf' (albert) student; losses on the logits alone apply to it (hinton, logit_mse)")


def test_a_loss_a_family_cannot_take_names_the_losses_it_can(tmp_path: Path) -> None:
    """A Llama student takes the hidden-state and attention losses; refusing MiniLM's (queries, keys and values), the
    message said that only losses on the logits applied to it."""
    student = {"arch": "hf", "config": {"model_type": "llama", **hf_families.TEXT["llama"], "num_hidden_layers": 1}}
    losses = [{"kind": "hinton"}, {"kind": "hidden", "layer_map": {"kind": "uniform"}},
              {"kind": "attention", "layer_map": {"kind": "uniform"}}]
    stages = [{"stage": "teacher"}, {"stage": "distill", "losses": losses}]
    assert _validate(tmp_path, _text_recipe(SMALL_BERT, student, stages)).exit_code == 0
    stages[1]["losses"] = [*losses, {"kind": "minilm"}]
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, stages)), "stages[1].losses[3].kind",
                           "loss 'minilm' compares the models' qkv, which edgekd does not read from a 'hf' (llama) "
                           "student; losses on the logits and its attentions, hidden_states apply to it (hinton, "
                           "logit_mse, hidden, pkd, attention, embedding, cosine)")


def _pruned_by_transformers_4(directory: Path, *, sharded: bool) -> Path:
    """A BERT as transformers 4 saved one after ``prune_heads({0: [0]})``: layer 0's query, key and value keep 2 of
    its 3 heads (16 of 24 rows) and config.json lists ``pruned_heads``, which transformers 5 does not rebuild;
    ``sharded``: its tensors in two safetensors files named by ``model.safetensors.index.json``."""
    import torch
    from safetensors.torch import load_file, save_file

    hf_families.save("bert", directory, num_labels=2)
    state = load_file(directory / "model.safetensors")
    (directory / "model.safetensors").unlink()
    kept, layer = torch.arange(8, 24), "bert.encoder.layer.0.attention"
    for name in [f"{layer}.self.{part}.{kind}" for part in ("query", "key", "value") for kind in ("weight", "bias")]:
        state[name] = state[name][kept].contiguous()
    state[f"{layer}.output.dense.weight"] = state[f"{layer}.output.dense.weight"][:, kept].contiguous()
    names = sorted(state)
    files = {f"model-0000{part + 1}-of-00002.safetensors": names[part::2] for part in range(2)} if sharded \
        else {"model.safetensors": names}
    for file, stored in files.items():
        save_file({name: state[name] for name in stored}, str(directory / file), metadata={"format": "pt"})
    if sharded:
        weight_map = {name: file for file, stored in files.items() for name in stored}
        (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "pruned_heads": {"0": [0]}}))
    return directory


@pytest.mark.parametrize(("role", "sharded"), [("teacher", False), ("student", True)])
def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused_by_validate_as_its_load_refuses_it(
        role: str, sharded: bool, tmp_path: Path) -> None:
    """It was refused only when its stage built it (the run directory made, the teacher trained before a student
    was built) while validate said ok; validate now reads the shapes from the safetensors headers (no weights)."""
    from pydantic import TypeAdapter

    from edgekd.data.examples import InputSignature
    from edgekd.errors import ModelError
    from edgekd.models.architectures import ModelSpec
    from edgekd.models.hf import build_hf

    checkpoint = _pruned_by_transformers_4(tmp_path / "pruned-v4", sharded=sharded)
    spec = TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(checkpoint)})
    with pytest.raises(ModelError) as refused:
        build_hf(spec, InputSignature(kind="text", vocab_size=100, pad_id=0, max_length=32), ("0", "1"))
    reason = str(refused.value).removeprefix(f"pretrained model '{checkpoint}': ")
    assert reason.startswith("its weights do not fit its config.json: bert.encoder.layer.0.attention.output.dense."
                             "weight is [24, 16] in the weights but [24, 24] by config.json, "), reason
    models = {"teacher": SMALL_BERT, "student": SMALL_BERT, role: {"arch": "hf", "pretrained": str(checkpoint)}}
    result = _validate(tmp_path, _text_recipe(models["teacher"], models["student"], DISTILL))
    _assert_one_line_error(result, f"{role}.model.pretrained: '{checkpoint}': {reason}")


def _fitting_bert(kind: str, directory: Path) -> Path:
    """A BERT checkpoint whose weights fit its config: saved for the data's 2 classes, saved with a head of 3 labels
    (replaced by the load), or pruned by edgekd (heads removed: config.json records the structure its class is
    rebuilt to)."""
    from edgekd.data.examples import InputSignature
    from edgekd.models.task_model import TaskModel
    from edgekd.prune.config import PruneConfig
    from edgekd.prune.structured import prune_step

    if kind != "pruned by edgekd":
        return hf_families.save("bert", directory, num_labels=3 if kind == "three labels" else 2)
    signature = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)
    model = TaskModel(module=hf_families.build("bert", num_labels=2), spec={"arch": "hf"}, signature=signature,
                      class_names=("0", "1"))
    prune_step(model, PruneConfig(targets=["heads"], importance="l2"), 0.5, hf_families.padded_batch())
    return model.save(directory)


@pytest.mark.parametrize("kind", ["as saved", "three labels", "pruned by edgekd"])
def test_a_checkpoint_whose_weights_fit_validates_and_is_refused_once_its_config_is_edited(kind: str,
                                                                                          tmp_path: Path) -> None:
    """The weights are compared with the class that loads them: a replaced head and the widths an edgekd-pruned
    model is rebuilt to fit; the same directory with the FFN width in its config.json edited does not."""
    from safetensors import safe_open

    checkpoint = _fitting_bert(kind, tmp_path / "checkpoint")
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as weights:
        rows = weights.get_slice("bert.encoder.layer.0.attention.self.query.weight").get_shape()[0]
    assert rows < 24 if kind == "pruned by edgekd" else rows == 24  # heads of 8 rows removed, or 3 heads kept
    recipe = _text_recipe({"arch": "hf", "pretrained": str(checkpoint)}, SMALL_BERT, DISTILL)
    result = _validate(tmp_path, recipe)
    assert result.exit_code == 0, result.output
    config = json.loads((checkpoint / "config.json").read_text())
    if "edgekd_structure" in config:  # each layer's FFN width, which its class is rebuilt to
        config["edgekd_structure"]["intermediate"] = [40, 40]
    (checkpoint / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    _assert_one_line_error(_validate(tmp_path, recipe), f"teacher.model.pretrained: '{checkpoint}': its weights do "
                           "not fit its config.json: bert.encoder.layer.0.intermediate.dense.bias is [37] in the "
                           "weights but [40] by config.json")


def _with_weights_not_of_its_config(kind: str, directory: Path) -> Path:
    """A BERT checkpoint whose safetensors hold what its config.json does not say: every name under a wrapper's
    ``module.`` prefix, a config of more layers than the weights hold, or of fewer."""
    from safetensors.torch import load_file, save_file

    hf_families.save("bert", directory, num_labels=2)
    config = json.loads((directory / "config.json").read_text())
    if kind == "prefixed":
        state = load_file(directory / "model.safetensors")
        save_file({f"module.{name}": tensor for name, tensor in state.items()}, str(directory / "model.safetensors"),
                  metadata={"format": "pt"})
    layers = {"fewer weights": config["num_hidden_layers"] + 1, "more weights": config["num_hidden_layers"] - 1}
    if kind in layers:
        (directory / "config.json").write_text(json.dumps({**config, "num_hidden_layers": layers[kind]}))
    return directory


@pytest.mark.parametrize(("kind", "reason"), [
    ("prefixed", r"its weights hold nothing for \d+ of the model's tensors \(bert\.embeddings\.LayerNorm\.bias, "
                 r"bert\.embeddings\.LayerNorm\.weight, …\): its tensors are named 'module\.…', a prefix over the "
                 r"model's"),
    ("fewer weights", r"its weights hold nothing for 16 of the model's tensors \(bert\.encoder\.layer\.2\.attention"),
    ("more weights", r"its weights hold 16 tensors of layers its config\.json does not have "
                     r"\(bert\.encoder\.layer\.1\.attention"),
])
def test_a_checkpoint_lacking_its_layers_or_holding_more_is_refused_by_validate_run_and_export(
        kind: str, reason: str, tmp_path: Path) -> None:
    """transformers draws missing weights at random and drops unexpected ones, saying so in a table edgekd kept
    quiet: validate said ok, and the run trained a teacher that was all random (a DDP state_dict's 'module.'
    names), had a random layer, or had silently lost one. A head saved for another task still loads (the
    from-scratch base model's own, a masked LM's: test_hf_models)."""
    import re

    from pydantic import TypeAdapter

    from edgekd.data.examples import InputSignature
    from edgekd.errors import ModelError
    from edgekd.models.architectures import ModelSpec
    from edgekd.models.hf import build_hf

    checkpoint = _with_weights_not_of_its_config(kind, tmp_path / kind.replace(" ", "-"))
    spec = TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(checkpoint)})
    with pytest.raises(ModelError, match=f"^pretrained model '{checkpoint}': {reason}.*; edgekd does not load a model "
                                         "whose layers it would have to draw at random or drop: save it again"):
        build_hf(spec, InputSignature(kind="text", vocab_size=100, pad_id=0, max_length=32), ("0", "1"))
    result = _validate(tmp_path, _text_recipe({"arch": "hf", "pretrained": str(checkpoint)}, SMALL_BERT, DISTILL))
    assert result.exit_code == 2 and re.search(f"teacher.model.pretrained: '{checkpoint}': {reason}", result.output)
    assert len(result.output.strip().splitlines()) == 1, result.output
    exported = CliRunner().invoke(app, ["export", str(checkpoint), "--out", str(tmp_path / "export")])
    assert exported.exit_code == 2 and re.search(f"{checkpoint}: {reason}.*; exported, those layers would be random",
                                                 exported.output), exported.output
    assert not (tmp_path / "export").exists()
