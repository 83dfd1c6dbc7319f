"""Decoder classifiers compressed by family: whole grouped-query KV groups pruned, projections factorized.

Every case is a tiny random checkpoint (``tests/hf_families.py``): GQA decoders with fewer KV heads than
query heads (Llama, Qwen2, Mistral, Qwen3, Gemma), a multi-head decoder (Llama with as many KV heads as
heads), GPT-2 (fused, transposed ``Conv1D`` layers) and DistilBERT (factorized like the decoders). Each
compressed model must be physically smaller, reload from its directory with the logits it had before saving,
and export to ONNX with parity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.errors import ModelError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import FactorizeConfig, PruneConfig
from edgekd.prune.kv_groups import attention_blocks
from edgekd.prune.lowrank import factorize_layer, factorize_task_model
from edgekd.prune.structure import LowRankLinear, linear_layers
from edgekd.prune.structured import prune_step
from tests import hf_families
from tests.hf_families import padded_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
SIGNATURE = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)
#: (family, config overrides): GQA decoders (KV heads < heads) of several families, and a multi-head Llama.
DECODERS = [("llama", {}), ("qwen2", {}), ("mistral", {}), ("qwen3", {}), ("gemma", {}),
            ("llama", {"num_key_value_heads": 4}), ("llama", {"num_attention_heads": 6, "num_key_value_heads": 3})]
DECODER_IDS = ["llama-gqa", "qwen2", "mistral", "qwen3", "gemma", "llama-mha", "llama-6-of-3"]


def _model(family: str, **overrides: Any) -> TaskModel:
    module = hf_families.build(family, num_labels=2, **overrides)
    return TaskModel(module=module, spec={"arch": "hf"}, signature=SIGNATURE, class_names=("a", "b"))


def _taylor(batch: dict[str, torch.Tensor]):
    def gradients(module: nn.Module) -> None:
        labels = torch.arange(len(batch["input_ids"])) % 2
        nn.functional.cross_entropy(call_logits(module, batch), labels).backward()
    return gradients


def _reloads_and_exports(model: TaskModel, batch: dict[str, torch.Tensor], directory: Path) -> TaskModel:
    """Save, reload: the same logits as before saving; the reloaded model's ONNX export passes parity."""
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(directory)
    again = TaskModel.load(directory)
    assert again.params == model.params
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module.eval(), batch), expected)
    result = export_onnx(again.module, batch, directory / "model.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed and result.input_names == ("input_ids", "attention_mask")
    return again


@pytest.mark.parametrize(("family", "overrides"), DECODERS, ids=DECODER_IDS)
def test_kv_group_pruning_keeps_a_valid_gqa_model_that_reloads(family: str, overrides: dict[str, Any],
                                                               tmp_path: Path) -> None:
    model, batch = _model(family, **overrides), padded_batch()
    config = model.module.config
    heads, kv, head_dim, ffn = (config.num_attention_heads, config.num_key_value_heads,
                                attention_blocks(model.module)[0].head_dim, config.intermediate_size)
    before = model.params
    prune_step(model, PruneConfig(targets=["heads"], importance="l2"), 0.5, batch)
    removed = -(-kv // 2)  # ceil: half the KV groups of every layer, each with its query heads
    assert (config.num_key_value_heads, config.num_attention_heads) == (kv - removed, (kv - removed) * heads // kv)
    assert config.head_dim == head_dim and config.intermediate_size == ffn
    for block in attention_blocks(model.module):
        assert block.q_proj.out_features == block.o_proj.in_features == config.num_attention_heads * head_dim
        assert block.k_proj.out_features == block.v_proj.out_features == config.num_key_value_heads * head_dim
    share = heads // kv  # query heads per KV head
    bias = attention_blocks(model.module)[0].q_proj.bias is not None
    per_layer = removed * head_dim * ((2 * share + 2) * config.hidden_size + (share + 2 if bias else 0))
    assert model.params == before - per_layer * config.num_hidden_layers  # q, k, v rows (and biases), o columns
    _reloads_and_exports(model, batch, tmp_path / "pruned")


def _rows(groups: list[int], size: int) -> list[int]:
    return [row for group in groups for row in range(group * size, (group + 1) * size)]


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_zero_importance_kv_groups_are_exactly_the_ones_removed(importance: str, seed: int) -> None:
    """Groups whose weights are all zero have zero magnitude and zero Taylor importance: those go, no other."""
    model, batch = _model("llama", num_attention_heads=8, num_key_value_heads=4, head_dim=4, seed=seed), padded_batch()
    generator = torch.Generator().manual_seed(seed)
    zeroed, kept_rows = [], []
    with torch.no_grad():
        for block in attention_blocks(model.module):
            dead = sorted(torch.randperm(4, generator=generator)[:2].tolist())
            live = [g for g in range(4) if g not in dead]
            for group in dead:
                block.q_proj.weight[group * 8:(group + 1) * 8] = 0
                block.o_proj.weight[:, group * 8:(group + 1) * 8] = 0
                for name in ("k_proj", "v_proj"):
                    getattr(block, name).weight[group * 4:(group + 1) * 4] = 0
            zeroed.append(dead)
            kept_rows.append({name: getattr(block, name).weight[_rows(live, size)].clone()
                              for name, size in (("q_proj", 8), ("k_proj", 4), ("v_proj", 4))})
    prune_step(model, PruneConfig(targets=["heads"], importance=importance), 0.5, batch, gradients=_taylor(batch))
    assert (model.module.config.num_attention_heads, model.module.config.num_key_value_heads) == (4, 2)
    for block, rows in zip(attention_blocks(model.module), kept_rows, strict=True):
        for name, weight in rows.items():
            torch.testing.assert_close(getattr(block, name).weight, weight, rtol=0, atol=0)
        assert block.o_proj.weight.abs().sum(0).gt(0).all()  # no zeroed query head's column survived
    assert all(len(dead) == 2 for dead in zeroed)


@pytest.mark.parametrize(("family", "overrides"), DECODERS[:2] + DECODERS[5:6], ids=["llama-gqa", "qwen2", "llama-mha"])
def test_heads_and_mlp_channels_pruned_together_with_taylor(family: str, overrides: dict[str, Any],
                                                            tmp_path: Path) -> None:
    model, batch = _model(family, **overrides), padded_batch()
    kv = model.module.config.num_key_value_heads
    prune_step(model, PruneConfig(targets=["heads", "ffn"], importance="taylor"), 0.5, batch,
               gradients=_taylor(batch))
    config = model.module.config
    assert config.num_key_value_heads == kv - -(-kv // 2) and config.intermediate_size == 37 - 19
    _reloads_and_exports(model, batch, tmp_path / "pruned")


#: The projections factorized in each family (GPT-2: its Conv1D layers, weights stored as [in, out]; DistilBERT, an
#: encoder not laid out as BERT, rides on the same low-rank record).
PROJECTIONS = {"llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
               "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
               "gemma": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
               "gpt2": ("c_attn", "c_proj", "c_fc"),
               "distilbert": ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "pre_classifier")}


@pytest.mark.parametrize("family", PROJECTIONS)
def test_factorized_decoder_is_smaller_and_reloads(family: str, tmp_path: Path) -> None:
    model, batch = _model(family), padded_batch()
    before = model.params
    decisions = factorize_task_model(model, FactorizeConfig(param_ratio=0.3))
    factorized = {d.name.rpartition(".")[2] for d in decisions if d.rank is not None}
    assert factorized == set(PROJECTIONS[family])
    layers = dict(linear_layers(model.module))
    assert all(isinstance(layers[d.name], LowRankLinear) for d in decisions if d.rank is not None)
    assert model.params < 0.6 * before
    assert model.module.config.edgekd_structure["low_rank"] == {d.name: d.rank for d in decisions if d.rank}
    _reloads_and_exports(model, batch, tmp_path / "factorized")


@pytest.mark.parametrize(("shape", "bias"), [((24, 72), True), ((37, 24), False), ((5, 9), True)])
def test_a_full_rank_conv1d_factorization_is_exact(shape: tuple[int, int], bias: bool) -> None:
    """GPT-2's Conv1D computes ``x W + b`` with ``W [in, out]``: the pair must apply the same map, not its transpose."""
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(sum(shape))
    layer = Conv1D(shape[1], shape[0])
    if bias:
        nn.init.normal_(layer.bias)
    else:
        layer.bias = None
    pair = factorize_layer(layer, min(shape))
    x = torch.randn(3, 4, shape[0])
    with torch.no_grad():
        expected = x @ layer.weight + (layer.bias if bias else 0)
        torch.testing.assert_close(pair(x), expected, rtol=1e-5, atol=1e-5)
    assert (pair[0].in_features, pair[1].out_features) == shape


def test_factorized_then_pruned_decoder_reloads(tmp_path: Path) -> None:
    """The hybrid schedule's order: KV groups and MLP channels pruned through factor pairs' outer dimensions."""
    model, batch = _model("llama", num_attention_heads=8, num_key_value_heads=4, head_dim=4), padded_batch()
    factorize_task_model(model, FactorizeConfig(param_ratio=0.5))
    ranks = dict(model.module.config.edgekd_structure["low_rank"])
    prune_step(model, PruneConfig(targets=["heads", "ffn"]), 0.5, batch)
    config = model.module.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (4, 2, 4)
    assert config.edgekd_structure["low_rank"] == ranks  # the ranks stay what factorization chose
    _reloads_and_exports(model, batch, tmp_path / "hybrid")


@pytest.mark.parametrize(("family", "targets", "fragment"), [
    ("gpt2", ["channels"], "targets: a gpt2 model prunes 'ffn' and/or 'heads'"),
    ("llama", ["channels"], "targets: a llama model prunes 'ffn' and/or 'heads'"),
])
def test_targets_a_decoder_cannot_take_are_one_line_errors(family: str, targets: list[str], fragment: str) -> None:
    model = _model(family)
    with pytest.raises(ModelError) as error:
        prune_step(model, PruneConfig(targets=targets), 0.5, padded_batch())
    assert fragment in str(error.value) and "\n" not in str(error.value)


@pytest.fixture(scope="module")
def llama_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated sentiment TSV, a WordPiece tokenizer trained on it and a GQA Llama classifier checkpoint."""
    root = tmp_path_factory.mktemp("llama-text")
    tokenizer = hf_families.sentiment_files(root, train=120, dev=40)["tokenizer"]
    return hf_families.save("llama", root / "llama", num_labels=2, tokenizer=tokenizer,
                            num_attention_heads=8, num_key_value_heads=4, head_dim=4)


# 9–19 s on 2 busy cores (prune and factorize each time their exports); the default suite prunes Llama/Qwen2 KV
# groups in a pipeline through tests/test_hf_matrix.py's prunable-family case.
@pytest.mark.slow
def test_llama_classifier_recipe_prunes_kv_groups_factorizes_and_exports(llama_checkpoint: Path,
                                                                             tmp_path: Path) -> None:
    root = llama_checkpoint.parent
    recipe = validate_model({
        "name": "llama-heads",
        "data": {"source": "tsv", "train": str(root / "train.tsv"), "test": str(root / "dev.tsv"), "val_examples": 20},
        "tokenizer": {"pretrained": str(root / "tokenizer"), "max_length": 32},
        "teacher": {"model": {"arch": "hf", "pretrained": str(llama_checkpoint)}},
        "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}},
        "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 0.002},
                   {"stage": "prune", "role": "teacher", "ratio": 0.5, "targets": ["heads"], "importance": "l1"},
                   {"stage": "factorize", "role": "teacher", "param_ratio": 0.5},
                   {"stage": "export"}],
    }, Recipe, source="test")
    result = edgekd.run(recipe, out=tmp_path / "run")
    for stage in result.stages[1:3]:
        metrics = stage.metrics["teacher"]
        assert metrics["params_ratio"] < 1 and metrics["parity_max_abs_diff"] < 1e-4
    teacher = result.artifact.models["teacher"]
    reloaded = TaskModel.load(result.run_dir / teacher.weights).module.config
    assert (reloaded.num_attention_heads, reloaded.num_key_value_heads, reloaded.head_dim) == (4, 2, 4)
    layers = result.stages[2].metrics["teacher"]["layers"]
    assert reloaded.edgekd_structure["low_rank"] == {d["name"]: d["rank"] for d in layers if d["rank"] is not None}
    assert teacher.metrics["parity_max_abs_diff"] < 1e-4 and teacher.onnx is not None
