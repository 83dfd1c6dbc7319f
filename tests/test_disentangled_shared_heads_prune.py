"""Pruning the attention heads and FFN channels of DeBERTa-v2 (disentangled attention) and ALBERT (shared layers).

DeBERTa-v2 projects the relative-position embeddings per head (``pos_key_proj``/``pos_query_proj``, or the query
and key projections themselves under ``share_att_key``) and keeps its output projection beside the
self-attention; ALBERT runs one layer's weights in every layer (one group, or a few groups of layers). Tiny random
classifiers (3 heads of 8, FFN 37): a step of 0.5 removes 2 of 3 heads and 19 of 37 channels alike in every
attention module, the parameter count falls by exactly the removed rows, columns and bias entries, the pruned
model computes what the unpruned one computes with the removed heads' and channels' outputs zeroed, heads whose
weights are all zero are exactly the ones removed, the model reloads from its directory with the same logits and
exports to ONNX with parity; a prune stage runs on a DeBERTa-v2 student through the pipeline, and ``validate``
accepts pruning both families alike in every layer and refuses global scope, naming the key (factorizing them:
``tests/test_factorize_deberta_albert.py``).
"""

from __future__ import annotations

import copy
import math
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
from edgekd.prune.config import PruneConfig
from edgekd.prune.kv_groups import group_importance
from edgekd.prune.plain_mlp import plain_mlps
from edgekd.prune.structure import (
    at_path,
    attention_blocks,
    head_counts,
    inner_linear,
    outer_linear,
    per_head_projections,
)
from edgekd.prune.structured import prune_step
from edgekd.stages import check_recipe
from tests import hf_families
from tests.hf_families import padded_batch
from tests.test_config_errors import _assert_one_line_error
from tests.test_hf_validate import DISTILL, SMALL_BERT, _text_recipe, _validate
from tests.test_plain_mlp_prune import TEXT, _taylor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

_SIZES = dict(vocab_size=hf_families.VOCAB, hidden_size=24, num_attention_heads=3, intermediate_size=37,
              max_position_embeddings=160, pad_token_id=hf_families.PAD)
_RELATIVE = dict(relative_attention=True, pos_att_type=["p2c", "c2p"], type_vocab_size=0)
#: case → (family, config, attention modules, layers using each)
CASES: dict[str, tuple[str, dict[str, Any], int, int]] = {
    "deberta-v2": ("deberta-v2", {**_SIZES, **_RELATIVE, "num_hidden_layers": 2}, 2, 1),
    "deberta-v2-shared-key": ("deberta-v2", {**_SIZES, **_RELATIVE, "num_hidden_layers": 2, "share_att_key": True,
                                             "position_buckets": 8, "norm_rel_ebd": "layer_norm"}, 2, 1),
    "deberta-v2-absolute": ("deberta-v2", {**_SIZES, "num_hidden_layers": 2}, 2, 1),
    "deberta": ("deberta", {**_SIZES, **_RELATIVE, "num_hidden_layers": 2}, 2, 1),  # v1: fused in_proj, q/v biases
    "albert": ("albert", {**_SIZES, "embedding_size": 16, "num_hidden_layers": 3}, 1, 3),
    "albert-two-groups": ("albert", {**_SIZES, "embedding_size": 16, "num_hidden_layers": 4,
                                     "num_hidden_groups": 2}, 2, 2),
}
WIDTH, HEADS, SIZE, HIDDEN = 37, 3, 8, 24


def _model(case: str, seed: int = 0, **overrides: Any) -> TaskModel:
    """A random 2-label classifier of ``case`` (``overrides`` change config fields)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    kind, sizes, _, _ = CASES[case]
    torch.manual_seed(seed)
    config = AutoConfig.for_model(kind, num_labels=2, **{**sizes, **overrides})
    module = AutoModelForSequenceClassification.from_config(config, attn_implementation="eager").eval()
    return TaskModel(module=module, spec={"arch": "hf"}, signature=TEXT, class_names=("a", "b"))


def _layout(model: TaskModel):
    return family_of(model.module.config.model_type).attention


def _counts(model: TaskModel) -> list[tuple[int, int, int]]:
    return [head_counts(block, _layout(model)) for block in attention_blocks(model.module)]


def _kept(now: torch.Tensor, before: torch.Tensor, unit: int) -> list[int]:
    """Which of ``before``'s units (``unit`` rows each) the pruned weight ``now`` kept, in order."""
    old = before.reshape(-1, unit * before.shape[1])
    return [next(i for i in range(len(old)) if torch.equal(row, old[i])) for row in now.reshape(-1, old.shape[1])]


@torch.no_grad()
def _masked(reference: nn.Module, pruned: nn.Module) -> None:
    """Zero, in ``reference``, the output-projection columns reading the heads and channels ``pruned`` lost (their
    outputs then add nothing); the heads kept are found by their output columns, whatever the q/k/v layout."""
    layout = family_of(reference.config.model_type).attention
    for old, new in zip(attention_blocks(reference), attention_blocks(pruned), strict=True):
        kept = _kept(inner_linear(at_path(new, layout.out)).weight.T, inner_linear(at_path(old, layout.out)).weight.T,
                     SIZE)
        columns = inner_linear(at_path(old, layout.out)).weight.view(HIDDEN, HEADS, SIZE)
        columns[:, [h for h in range(HEADS) if h not in kept]] = 0
    for (old_in, old_out), (new_in, _) in zip(plain_mlps(reference), plain_mlps(pruned), strict=True):
        kept = _kept(new_in.weight, old_in.weight, 1)
        old_out.weight[:, [c for c in range(WIDTH) if c not in kept]] = 0


def _removed_params(model: TaskModel, heads: int, channels: int) -> int:
    """What removing ``heads`` heads from every attention module and ``channels`` FFN channels from every layer
    takes: their q/k/v (and per-head projections') rows with biases, their entries of per-head bias parameters
    (DeBERTa's ``q_bias``/``v_bias``), output columns; FFN rows, biases, columns."""
    layout, total = _layout(model), 0
    for block in attention_blocks(model.module):
        for name in (*layout.qkv, *per_head_projections(block, layout), *layout.per_kv_head):
            found = at_path(block, name)
            if isinstance(found, torch.Tensor):
                total += heads * found.numel() // HEADS
            else:
                total += heads * found.weight.shape[0] // HEADS * (HIDDEN + (found.bias is not None))
        total += heads * SIZE * HIDDEN
    return total + len(plain_mlps(model.module)) * channels * (2 * HIDDEN + 1)


@pytest.mark.parametrize("importance", ["l2", "taylor"])
@pytest.mark.parametrize("case", list(CASES))
def test_half_the_heads_and_channels_go_exactly_as_masked_and_the_model_reloads(case: str, importance: str,
                                                                                tmp_path: Path) -> None:
    model, batch = _model(case), padded_batch()
    _, _, modules, _ = CASES[case]
    assert _counts(model) == [(HEADS, HEADS, SIZE)] * modules  # shared layers: one attention module per group
    reference = copy.deepcopy(model.module)
    gone = math.ceil(WIDTH / 2)
    expected_params = model.params - _removed_params(model, 2, gone)
    prune_step(model, PruneConfig(targets=["heads", "ffn"], importance=importance), 0.5, batch,
               gradients=_taylor(batch))
    config = model.module.config
    assert _counts(model) == [(1, 1, SIZE)] * modules and model.params == expected_params
    assert config.intermediate_size == WIDTH - gone and config.num_attention_heads == HEADS
    assert config.edgekd_structure["heads"] == [1] * modules  # the config cannot state 1 head of 8 in 24
    _masked(reference, model.module)
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
        torch.testing.assert_close(expected, call_logits(reference.eval(), batch))
    model.save(tmp_path / "pruned")
    again = TaskModel.load(tmp_path / "pruned")
    assert again.params == model.params and _counts(again) == [(1, 1, SIZE)] * modules
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module.eval(), batch), expected, rtol=0, atol=0)
    if importance == "l2":
        assert export_onnx(again.module, batch, tmp_path / "pruned.onnx", load_export_target("onnx-fp32")).parity.passed


@torch.no_grad()
def _kill_heads(block: nn.Module, layout: Any, dead: list[int]) -> None:
    """Zero every weight of the heads ``dead``: their q/k/v and per-head projections' rows, output columns."""
    rows = [row for head in dead for row in range(head * SIZE, (head + 1) * SIZE)]
    for name in (*layout.qkv, *per_head_projections(block, layout)):
        layer = at_path(block, name)
        layer.weight[rows] = 0
        layer.bias[rows] = 0
    at_path(block, layout.out).weight[:, rows] = 0


@pytest.mark.parametrize("importance", ["l1", "taylor"])
@pytest.mark.parametrize("case", ["deberta-v2", "deberta-v2-shared-key", "albert-two-groups"])
def test_dead_heads_are_exactly_the_ones_removed_and_the_logits_stay(case: str, importance: str) -> None:
    """A head whose every weight is zero (DeBERTa-v2's relative-position rows included) adds nothing: it scores zero,
    it goes and no other, and the model computes what it did. A shared ALBERT module is scored over every layer
    using it."""
    model, batch = _model(case), padded_batch()
    layout, dead = _layout(model), [0, 2]
    for block in attention_blocks(model.module):
        _kill_heads(block, layout, dead)
    model.module.zero_grad()
    _taylor(batch)(model.module)
    for block in attention_blocks(model.module):
        scores = group_importance(block, layout, importance)
        assert (scores[dead] == 0).all() and scores[1] > 0
    model.module.zero_grad()
    with torch.no_grad():
        before = call_logits(model.module.eval(), batch)
    survivor = [outer_linear(at_path(block, layout.qkv[0])).weight[SIZE:2 * SIZE].clone()
                for block in attention_blocks(model.module)]
    prune_step(model, PruneConfig(targets=["heads"], importance=importance), 0.5, batch, gradients=_taylor(batch))
    for block, rows in zip(attention_blocks(model.module), survivor, strict=True):
        torch.testing.assert_close(outer_linear(at_path(block, layout.qkv[0])).weight, rows, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model.module.eval(), batch), before)


@pytest.mark.parametrize("case", ["deberta-v2", pytest.param("deberta", marks=pytest.mark.slow),
                                  pytest.param("albert", marks=pytest.mark.slow)])
def test_a_student_is_pruned_through_the_pipeline_and_reloads(case: str, tmp_path: Path) -> None:
    from tests.test_hf_matrix import recipe

    files = hf_families.sentiment_files(tmp_path, train=200, dev=40)
    tokenizer, checkpoint = files["tokenizer"], tmp_path / case
    _model(case, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id).module.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    prune = {"stage": "prune", "ratio": 0.5, "targets": ["heads", "ffn"], "recovery": {"epochs": 1, "lr": 0.002}}
    result = edgekd.run(recipe("text", "student", checkpoint, files, compress=(prune,)), out=tmp_path / "run")
    metrics = result.stages[2].metrics["student"]
    assert metrics["params_ratio"] < 1 and metrics["parity_max_abs_diff"] < 1e-4
    assert 0 < metrics["macs_ratio"] < 1  # counted through the relative-position projections too
    student = result.artifact.models["student"]
    reloaded = TaskModel.load(tmp_path / "run" / student.weights).module
    layout = family_of(CASES[case][0]).attention
    assert reloaded.config.intermediate_size == WIDTH - math.ceil(WIDTH / 2)
    assert [head_counts(block, layout) for block in attention_blocks(reloaded)] == [(1, 1, SIZE)] * CASES[case][2]
    if case.startswith("deberta"):  # the relative-position projections were pruned with the heads
        assert all(per_head_projections(block, layout) for block in attention_blocks(reloaded))
    assert student.metrics["parity_max_abs_diff"] < 1e-4


def _config_student(case: str) -> dict[str, Any]:
    kind, sizes, _, _ = CASES[case]
    return {"arch": "hf", "config": {"model_type": kind, **sizes}}


@pytest.mark.parametrize("case", ["deberta-v2", "albert"])
def test_validate_accepts_pruning_both_families_alike_in_every_layer(case: str, tmp_path: Path) -> None:
    stages = [*DISTILL, {"stage": "prune", "targets": ["heads", "ffn"]}, {"stage": "export"}]
    check_recipe(validate_model(_text_recipe(SMALL_BERT, _config_student(case), stages), Recipe,
                                source="recipe"), "recipe")
    kind = CASES[case][0]
    stages[2] = {"stage": "prune", "scope": "global"}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, _config_student(case), stages)),
                           "stages[2].scope", f"a 'hf' ({kind}) student is pruned alike in every layer")
