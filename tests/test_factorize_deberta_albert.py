"""Low-rank factorization (and the LadaBERT hybrid) of DeBERTa-v2 (disentangled attention) and ALBERT (shared layers).

Tiny random classifiers (hidden 24, FFN 37, ALBERT's embeddings 16 wide): at ``param_ratio`` 0.5 a 24×24 projection
becomes a rank-6 pair (288 weights fewer), a 37×24 or 24×37 one a rank-7 pair (461 fewer) and ALBERT's 16→24
embedding projection a rank-4 pair (224 fewer). DeBERTa-v2 factorizes its relative-position projections
(``pos_key_proj``/``pos_query_proj``) like its other projections, and under ``share_att_key`` its key and query
projections serve the positions too; ALBERT's shared layer is one module, factorized once: its parameters drop once,
every layer using it computes with the pair (its MACs drop once per use). At full rank the factorized model computes
what the dense one does (within 1e-5); lower rank fractions move the logits further, in order; the factorized (then
pruned) model reloads from its directory with the same logits and exports to ONNX with parity. A factorize and a
hybrid stage run on a DeBERTa-v2 student (and a hybrid on an ALBERT one) through the pipeline, and ``validate``
accepts both stages for both families (a DeBERTa-v2 config with ``share_att_key`` included).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.families import family as family_of
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import FactorizeConfig, PruneConfig
from edgekd.prune.lowrank import factorize_layer, factorize_model, factorize_task_model
from edgekd.prune.measure import count_macs
from edgekd.prune.structure import (
    LowRankEmbedding,
    LowRankLinear,
    at_path,
    attention_blocks,
    dense_weight,
    embedding_tables,
    head_counts,
    linear_layers,
    low_rank_layers,
    outer_linear,
    per_head_projections,
    replace_module,
)
from edgekd.prune.structured import prune_step, record_structure
from edgekd.stages import check_recipe
from tests import hf_families
from tests.hf_families import padded_batch
from tests.test_config_errors import _assert_one_line_error
from tests.test_disentangled_shared_heads_prune import CASES, SIZE, _model
from tests.test_hf_validate import DISTILL, SMALL_BERT, _text_recipe, _validate

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

FACTORIZED = ["deberta-v2", "deberta-v2-shared-key", "albert", "albert-two-groups"]
#: weights one dense layer of shape (out, in) loses at param_ratio 0.5: rank floor(0.5·out·in / (out + in)) pairs
SAVED = {(24, 24): 24 * 24 - 6 * 48, (37, 24): 37 * 24 - 7 * 61, (24, 37): 24 * 37 - 7 * 61, (24, 16): 24 * 16 - 4 * 40}
#: case → how many distinct dense layers of each shape it has (the classifier stays dense): DeBERTa-v2 q/k/v/out
#: (+ pos_key_proj/pos_query_proj without share_att_key) and FFN per layer and the pooler; ALBERT its embedding
#: projection, then q/k/v/dense and FFN per *group* (its layers share them) and the pooler
LAYERS = {
    "deberta-v2": {(24, 24): 2 * 6 + 1, (37, 24): 2, (24, 37): 2},
    "deberta-v2-shared-key": {(24, 24): 2 * 4 + 1, (37, 24): 2, (24, 37): 2},
    "albert": {(24, 16): 1, (24, 24): 4 + 1, (37, 24): 1, (24, 37): 1},
    "albert-two-groups": {(24, 16): 1, (24, 24): 2 * 4 + 1, (37, 24): 2, (24, 37): 2},
}


def _saved(case: str) -> int:
    return sum(count * SAVED[shape] for shape, count in LAYERS[case].items())


def _logits(model: TaskModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return call_logits(model.module.eval(), batch)


@pytest.mark.parametrize("case", FACTORIZED)
def test_params_drop_as_computed_and_the_model_reloads_prunes_and_exports(case: str, tmp_path: Path) -> None:
    model, batch = _model(case), padded_batch()
    before = model.params
    decisions = factorize_task_model(model, FactorizeConfig(param_ratio=0.5))
    assert model.params == before - _saved(case)
    assert sum(d.rank is not None for d in decisions) == sum(LAYERS[case].values())
    layout = family_of(model.module.config.model_type).attention
    for block in attention_blocks(model.module):  # the relative-position projections are pairs like the others
        assert all(isinstance(at_path(block, name), LowRankLinear)
                   for name in (*layout.qkv, layout.out, *per_head_projections(block, layout)))
        assert len(per_head_projections(block, layout)) == (2 if case == "deberta-v2" else 0)
    expected = _logits(model, batch)
    model.save(tmp_path / "factorized")
    again = TaskModel.load(tmp_path / "factorized")
    assert again.params == model.params and low_rank_layers(again.module) == low_rank_layers(model.module)
    torch.testing.assert_close(_logits(again, batch), expected, rtol=0, atol=0)
    # then pruned: the per-head rows of every pair's outer factor go with their heads, the ranks stay
    prune_step(again, PruneConfig(targets=["heads", "ffn"]), 0.5, batch)
    modules = CASES[case][2]
    assert [head_counts(block, layout) for block in attention_blocks(again.module)] == [(1, 1, SIZE)] * modules
    for block in attention_blocks(again.module):
        for name in (*layout.qkv, *per_head_projections(block, layout)):
            assert outer_linear(at_path(block, name)).out_features == SIZE and at_path(block, name).rank == 6
    pruned = _logits(again, batch)
    again.save(tmp_path / "pruned")
    reloaded = TaskModel.load(tmp_path / "pruned")
    assert reloaded.params == again.params < model.params
    torch.testing.assert_close(_logits(reloaded, batch), pruned, rtol=0, atol=0)
    if case in ("deberta-v2", "albert-two-groups"):  # the richest layouts (the export takes most of the time)
        target = load_export_target("onnx-fp32")
        assert export_onnx(reloaded.module, batch, tmp_path / "model.onnx", target).parity.passed


@pytest.mark.parametrize("layers", [3, 5])
def test_a_shared_albert_layer_is_factorized_once_and_used_by_every_layer(layers: int) -> None:
    """Parameters drop once whatever the depth; MACs drop once per layer using the shared pair."""
    model, batch = _model("albert", num_hidden_layers=layers), padded_batch()
    params, macs = model.params, count_macs(model, batch)
    factorize_task_model(model, FactorizeConfig(param_ratio=0.5))
    assert model.params == params - _saved("albert")
    tokens, rows = batch["input_ids"].numel(), len(batch["input_ids"])
    saved_per_layer = 4 * SAVED[(24, 24)] + SAVED[(37, 24)] + SAVED[(24, 37)]
    assert count_macs(model, batch) == macs - tokens * (SAVED[(24, 16)] + layers * saved_per_layer) \
        - rows * SAVED[(24, 24)]  # the pooler reads the first token of each row
    calls: list[str] = []
    for name, pair in model.module.named_modules():
        if isinstance(pair, LowRankLinear):
            pair.register_forward_hook(lambda *_, name=name: calls.append(name))
    _logits(model, batch)
    shared = "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.query"
    assert calls.count(shared) == layers


def _at_rank(model: TaskModel, fraction: float, *, embeddings: bool) -> None:
    """Replace every linear layer but the classifier (and every embedding table, with ``embeddings``) by its factor
    pair of ``fraction`` of its full rank (``min(out, in)``); 1.0 reconstructs each exactly."""
    module = model.module
    classifier, _ = linear_layers(module)[-1]
    layers = [(n, m) for n, m in linear_layers(module) if n != classifier]
    for name, layer in layers + (embedding_tables(module) if embeddings else []):
        replace_module(module, name, factorize_layer(layer, max(1, round(fraction * min(dense_weight(layer).shape)))))
    record_structure(model)


def _relative_error(model: TaskModel, batch: dict[str, torch.Tensor], dense: torch.Tensor) -> float:
    return float((_logits(model, batch) - dense).norm() / dense.norm())


@pytest.mark.parametrize("case", FACTORIZED)
def test_full_rank_computes_the_dense_model_and_lower_ranks_move_the_logits_further(case: str,
                                                                                   tmp_path: Path) -> None:
    model, batch = _model(case), padded_batch(rows=16)
    dense = _logits(model, batch)
    exact = copy.deepcopy(model)
    _at_rank(exact, 1.0, embeddings=True)  # DeBERTa-v2's encoder reads its relative-position table whole
    if case.startswith("deberta"):
        assert isinstance(exact.module.deberta.encoder.rel_embeddings, LowRankEmbedding)
    assert len(low_rank_layers(exact.module)) == sum(LAYERS[case].values()) + len(embedding_tables(model.module))
    torch.testing.assert_close(_logits(exact, batch), dense, rtol=0, atol=1e-5)
    exact.save(tmp_path / "full")
    torch.testing.assert_close(_logits(TaskModel.load(tmp_path / "full"), batch), _logits(exact, batch),
                               rtol=0, atol=0)
    errors, sizes = [], []
    for fraction in (0.95, 0.85, 0.7, 0.5):
        low = copy.deepcopy(model)
        _at_rank(low, fraction, embeddings=False)
        errors.append(_relative_error(low, batch, dense))
        sizes.append(low.params)
    assert errors[0] > 1e-4 and errors == sorted(errors) and sizes == sorted(sizes, reverse=True), (errors, sizes)


def test_a_layer_held_under_two_names_is_factorized_once_for_both() -> None:
    """Weights shared by aliasing one module (as ALBERT shares its layer): every holder gets the same pair."""
    torch.manual_seed(0)
    shared = nn.Linear(32, 32)
    model = nn.ModuleDict({"first": nn.Sequential(shared, nn.ReLU()), "second": nn.Sequential(shared, nn.Tanh())})
    decisions = factorize_model(model, FactorizeConfig(param_ratio=0.25))
    assert [(d.name, d.rank) for d in decisions] == [("first.0", 4)]
    assert model["first"][0] is model["second"][0] and isinstance(model["second"][0], LowRankLinear)
    assert sum(p.numel() for p in model.parameters()) == 4 * 64 + 32


_FACTORIZE = {"stage": "factorize", "param_ratio": 0.5, "embeddings": True, "recovery": {"epochs": 1, "lr": 0.002}}
_HYBRID = {"stage": "hybrid", "target_params_ratio": 0.7, "max_steps": 3, "measure_latency": False,
           "prune": {"ratio": 0.3, "targets": ["heads", "ffn"]}, "factorize": {"param_ratio": 0.6},
           "recovery": {"epochs": 1, "lr": 0.002}}


@pytest.mark.parametrize(("case", "stage"), [
    ("deberta-v2", _FACTORIZE),
    pytest.param("deberta-v2", _HYBRID, marks=pytest.mark.slow),
    pytest.param("albert-two-groups", {**_HYBRID, "factorize": {"param_ratio": 0.6, "embeddings": True}},
                 marks=pytest.mark.slow),
], ids=["deberta-factorize", "deberta-hybrid", "albert-hybrid"])
def test_a_student_is_factorized_through_the_pipeline_and_reloads(case: str, stage: dict[str, Any],
                                                                  tmp_path: Path) -> None:
    from tests.test_hf_matrix import recipe

    files = hf_families.sentiment_files(tmp_path, train=200, dev=40)
    tokenizer, checkpoint = files["tokenizer"], tmp_path / case
    _model(case, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id).module.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    result = edgekd.run(recipe("text", "student", checkpoint, files, compress=(stage,)), out=tmp_path / "run")
    metrics = result.stages[2].metrics["student"]
    assert metrics["params_ratio"] <= (0.7 if stage["stage"] == "hybrid" else 0.75)
    assert 0 < metrics["macs_ratio"] < 1
    if stage.get("measure_latency", True):  # the stage's own check export (the hybrids here skip it)
        assert metrics["parity_max_abs_diff"] < 1e-4
    student = result.artifact.models["student"]
    reloaded = TaskModel.load(tmp_path / "run" / student.weights)
    assert reloaded.params == metrics["params"]
    layout = family_of(CASES[case][0]).attention
    blocks = attention_blocks(reloaded.module)
    assert len(blocks) == CASES[case][2]  # ALBERT: one per group, whatever the depth
    for block in blocks:  # DeBERTa-v2's relative-position projections are pairs like q/k/v
        assert all(isinstance(at_path(block, name), LowRankLinear)
                   for name in (*layout.qkv, *per_head_projections(block, layout)))
    assert reloaded.module.config.edgekd_structure["low_rank"] == low_rank_layers(reloaded.module)
    if stage["stage"] == "hybrid":
        assert metrics["target_reached"] and reloaded.module.config.intermediate_size < 37
    assert student.metrics["parity_max_abs_diff"] < 1e-4


@pytest.mark.parametrize("case", ["deberta-v2", "deberta-v2-shared-key", "albert", "albert-two-groups"])
@pytest.mark.parametrize("stage", [{"stage": "factorize", "embeddings": True},
                                   {"stage": "hybrid", "target_params_ratio": 0.5}], ids=["factorize", "hybrid"])
def test_validate_accepts_factorizing_both_families(case: str, stage: dict[str, Any]) -> None:
    kind, sizes, _, _ = CASES[case]
    student = {"arch": "hf", "config": {"model_type": kind, **sizes}}
    check_recipe(validate_model(_text_recipe(SMALL_BERT, student, [*DISTILL, stage, {"stage": "export"}]), Recipe,
                                source="recipe"), "recipe")


def test_deberta_fields_its_model_code_reads_are_config_keys_and_a_misspelt_one_is_refused(tmp_path: Path) -> None:
    """``share_att_key``, ``position_buckets`` and ``norm_rel_ebd`` (DeBERTa-v3's) are read by the model code, not
    defined by its config class: accepted; a misspelling is still one line naming the closest."""
    kind, sizes, _, _ = CASES["deberta-v2-shared-key"]
    student = {"arch": "hf", "config": {"model_type": kind, **sizes, "share_att_kye": True}}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, [*DISTILL, {"stage": "export"}])),
                           "student.model", "unknown key 'share_att_kye'", "did you mean 'share_att_key'?")
