"""Pruning whole attention heads of GPT-2, DistilBERT, Phi, ViT and DeiT through each family's ``Attention``.

Tiny random classifiers (3 heads of 8, or Phi with grouped-query attention and partial rotary embeddings): a
step removes the same number of heads (whole KV groups) in every layer, the head size stays, the parameter
count falls by exactly the removed rows, columns and bias entries, heads whose weights are all zero are exactly
the ones removed (the logits do not move), and the pruned model reloads from its directory with the same
logits and exports to ONNX with parity on a padded batch. Where the config states the head size (Phi, ViT,
DeiT) it states the new head counts; otherwise (GPT-2, DistilBERT, Phi with ``qk_layernorm``) the structure
lists every layer's heads and the config's counts stay.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.families import family as family_of
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import FactorizeConfig, PruneConfig
from edgekd.prune.gated_mlp import gated_mlps
from edgekd.prune.kv_groups import group_importance
from edgekd.prune.lowrank import factorize_task_model
from edgekd.prune.plain_mlp import plain_mlps
from edgekd.prune.structure import (
    CONFIG_KEY,
    LowRankLinear,
    at_path,
    attention_blocks,
    encoder_layers,
    head_counts,
    inner_linear,
    linear_shape,
)
from edgekd.prune.structured import prune_step
from tests import hf_families
from tests.hf_families import padded_batch
from tests.test_plain_mlp_prune import DIGITS, TEXT, _taylor

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

#: case → (family, config overrides, config states the pruned heads?)
CASES: dict[str, tuple[str, dict[str, Any], bool]] = {
    "gpt2": ("gpt2", {}, False),
    "distilbert": ("distilbert", {}, False),
    "phi": ("phi", {}, True),
    "phi-gqa": ("phi", {"num_attention_heads": 6, "num_key_value_heads": 3}, True),
    "phi-qk-layernorm": ("phi", {"qk_layernorm": True, "num_attention_heads": 6, "num_key_value_heads": 3}, False),
    "vit": ("vit", {}, True),
    "deit": ("deit", {}, True),
}


def _model(case: str) -> tuple[TaskModel, dict[str, torch.Tensor]]:
    kind, overrides, _ = CASES[case]
    if kind == "deit":  # laid out as ViT; transformers' auto class cannot build it from a bare config
        from transformers import DeiTConfig, DeiTForImageClassification

        torch.manual_seed(0)
        module = DeiTForImageClassification(DeiTConfig(num_labels=2, **hf_families.IMAGE["vit"])).eval()
    else:
        module = hf_families.build(kind, num_labels=2, **overrides)
    image = family_of(kind).modality == "image"
    batch = {"input": torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))} if image else padded_batch()
    return TaskModel(module=module, spec={"arch": "hf"}, signature=DIGITS if image else TEXT,
                     class_names=("a", "b")), batch


def _counts(model: TaskModel) -> list[tuple[int, int, int]]:
    layout = family_of(model.module.config.model_type).attention
    return [head_counts(block, layout) for block in attention_blocks(model.module)]


def _removed_params(model: TaskModel, groups: int) -> int:
    """What removing ``groups`` KV groups from every layer takes: q/k/v rows with their biases, output columns."""
    layout = family_of(model.module.config.model_type).attention
    total = 0
    for block in attention_blocks(model.module):
        queries, kv, size = head_counts(block, layout)
        hidden = linear_shape(getattr(block, layout.out))[0]
        rows = groups * size * (queries // kv + 2)  # the group's query heads, its key head and its value head
        bias = getattr(block, layout.qkv[0]).bias is not None
        total += rows * (hidden + bias) + groups * size * (queries // kv) * hidden
    return total


@pytest.mark.parametrize("importance", ["l2", "taylor"])
@pytest.mark.parametrize("case", list(CASES))
def test_heads_go_in_every_layer_and_the_model_reloads_and_exports(case: str, importance: str,
                                                                   tmp_path: Path) -> None:
    model, batch = _model(case)
    _, _, in_config = CASES[case]
    config = model.module.config
    layout = family_of(config.model_type).attention
    before_counts, heads_field = _counts(model), getattr(config, layout.heads)
    (queries, kv, size), = set(before_counts)
    assert len(before_counts) == 2  # one attention per layer, found through the family's description
    gone = -(-kv // 2)  # ceil: half the KV groups of every layer, each with its query heads
    expected_params = model.params - _removed_params(model, gone)
    prune_step(model, PruneConfig(targets=["heads"], importance=importance), 0.5, batch, gradients=_taylor(batch))
    kept = (queries - gone * queries // kv, kv - gone, size)
    assert _counts(model) == [kept, kept]
    assert model.params == expected_params
    if in_config:  # the config states the new counts and the head size; no structure needed
        assert getattr(config, layout.heads) == kept[0] and config.head_dim == size
        assert not hasattr(config, CONFIG_KEY)
    else:  # the config's counts stay (its head size is derived from them); the structure lists every layer's
        assert getattr(config, layout.heads) == heads_field
        structure = config.edgekd_structure
        assert structure["heads"] == [kept[0]] * 2 and structure["kv_heads"] == [kept[1]] * 2
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(tmp_path / "pruned")
    again = TaskModel.load(tmp_path / "pruned")
    assert again.params == model.params and _counts(again) == [kept, kept]
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module.eval(), batch), expected)
    result = export_onnx(again.module, batch, tmp_path / "pruned.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
@pytest.mark.parametrize("case", ["gpt2", "distilbert", "phi-gqa", "vit"])
def test_dead_heads_are_exactly_the_ones_removed_and_the_logits_stay(case: str, importance: str) -> None:
    """A KV group whose q/k/v rows, biases and output columns are all zero adds nothing: it scores zero by every
    criterion, those groups go and no other, and the model computes what it computed before."""
    model, batch = _model(case)
    layout = family_of(model.module.config.model_type).attention
    (queries, kv, size), = set(_counts(model))
    share = queries // kv
    dead = sorted(torch.randperm(kv, generator=torch.Generator().manual_seed(3))[:kv // 2 + kv % 2].tolist())
    with torch.no_grad():
        for block in attention_blocks(model.module):
            for group in dead:
                q_rows = slice(group * share * size, (group + 1) * share * size)
                kv_rows = [slice(queries * size + group * size, queries * size + (group + 1) * size),
                           slice((queries + kv) * size + group * size, (queries + kv) * size + (group + 1) * size)]
                if layout.fused:  # GPT-2's c_attn: a Conv1D, [in, q | k | v]
                    for rows in (q_rows, *kv_rows):
                        getattr(block, layout.qkv[0]).weight[:, rows] = 0
                        getattr(block, layout.qkv[0]).bias[rows] = 0
                    getattr(block, layout.out).weight[q_rows] = 0
                else:
                    for name, rows in zip(layout.qkv, (q_rows, slice(group * size, (group + 1) * size),
                                                       slice(group * size, (group + 1) * size)), strict=True):
                        getattr(block, name).weight[rows] = 0
                        if getattr(block, name).bias is not None:
                            getattr(block, name).bias[rows] = 0
                    getattr(block, layout.out).weight[:, q_rows] = 0
    model.module.zero_grad()
    _taylor(batch)(model.module)
    for block in attention_blocks(model.module):
        scores = group_importance(block, layout, importance)
        assert (scores[dead] == 0).all() and (scores[[g for g in range(kv) if g not in dead]] > 0).all()
    model.module.zero_grad()
    with torch.no_grad():
        before = call_logits(model.module.eval(), batch)
    prune_step(model, PruneConfig(targets=["heads"], importance=importance), 0.5, batch, gradients=_taylor(batch))
    assert set(_counts(model)) == {(queries - len(dead) * share, kv - len(dead), size)}
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model.module.eval(), batch), before)


@pytest.mark.parametrize("case", ["gpt2", "vit"])
def test_heads_and_ffn_pruned_together_in_two_steps_reload(case: str, tmp_path: Path) -> None:
    """A second step prunes what the first left (the structure's or the config's counts), and the result reloads."""
    model, batch = _model(case)
    for _ in range(2):
        prune_step(model, PruneConfig(targets=["heads", "ffn"]), 0.34, batch)
    (queries, kv, _), = set(_counts(model))
    assert (queries, kv) == (1, 1)  # 3 heads → 2 → 1
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(call_logits(TaskModel.load(tmp_path / "pruned").module.eval(), batch), expected)



@pytest.mark.parametrize("case", ["gpt2", "distilbert", "phi-gqa"])
def test_heads_pruned_after_factorization_keep_the_ranks_and_reload(case: str, tmp_path: Path) -> None:
    """The hybrid order: heads go through the factor pairs' outer dimensions (a fused c_attn's second factor keeps
    the rows of every part), the ranks stay, and the structure rebuilds the per-layer heads and the pairs."""
    model, batch = _model(case)
    factorize_task_model(model, FactorizeConfig(param_ratio=0.5))
    ranks = dict(model.module.config.edgekd_structure["low_rank"])
    layout = family_of(model.module.config.model_type).attention
    assert any(isinstance(getattr(block, name), LowRankLinear)
               for block in attention_blocks(model.module) for name in (*layout.qkv, layout.out))
    (queries, kv, size), = set(_counts(model))
    prune_step(model, PruneConfig(targets=["heads"]), 0.5, batch)
    gone = -(-kv // 2)
    assert set(_counts(model)) == {(queries - gone * queries // kv, kv - gone, size)}
    assert model.module.config.edgekd_structure["low_rank"] == ranks
    _reloaded(model, batch, tmp_path / "hybrid")


def _reloaded(model: TaskModel, batch: dict[str, torch.Tensor], directory: Path) -> TaskModel:
    """``model`` saved to ``directory`` and reloaded, checked to have its parameters and compute its logits."""
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(directory)
    again = TaskModel.load(directory)
    assert again.params == model.params
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module.eval(), batch), expected)
    return again


_TINY = dict(vocab_size=hf_families.VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
             intermediate_size=37, max_position_embeddings=160, pad_token_id=hf_families.PAD)
_NO_FFN = {key: value for key, value in _TINY.items() if key != "intermediate_size"}
_GQA = dict(_TINY, num_attention_heads=4, num_key_value_heads=2, bos_token_id=2, eos_token_id=3)
#: Families described in edgekd.models.families by the same mechanisms (fused and interleaved projections,
#: per-head parameters and norms, fused gated MLPs): case → (family, config, pruning exact?). Exact: the pruned
#: model computes what the unpruned one computes with the removed heads' and channels' outputs zeroed (OLMo-2
#: normalises queries over all heads together, so removing heads changes the others' scale).
DESCRIBED: dict[str, tuple[str, dict[str, Any], bool]] = {
    "deberta": ("deberta", dict(_TINY, relative_attention=True, pos_att_type=["c2p", "p2c"], type_vocab_size=0), True),
    "deberta-talking-heads": ("deberta", dict(_TINY, relative_attention=True, pos_att_type=["c2p", "p2c"],
                                             talking_head=True), False),
    "gpt_neox": ("gpt_neox", _TINY, True),
    "opt": ("opt", dict(_TINY, ffn_dim=37, word_embed_proj_dim=24, max_position_embeddings=160), True),
    "starcoder2": ("starcoder2", _GQA, True),
    "stablelm": ("stablelm", dict(_GQA, hidden_size=32), True),
    "stablelm-qk-layernorm": ("stablelm", dict(_GQA, hidden_size=32, qk_layernorm=True), True),
    "olmo": ("olmo", _GQA, True),
    "olmo2": ("olmo2", _GQA, False),
    "gemma2": ("gemma2", dict(_GQA, head_dim=6), True),
    "gemma3_text": ("gemma3_text", dict(_GQA, head_dim=6), True),
    "phi3": ("phi3", dict(_GQA, hidden_size=32), True),
    "falcon": ("falcon", dict(_NO_FFN, num_attention_heads=4, ffn_hidden_size=37, new_decoder_architecture=True,
                              num_kv_heads=2), True),  # [q q k v] per KV group
    "falcon-per-head": ("falcon", dict(_NO_FFN, ffn_hidden_size=37, multi_query=False), True),  # [q k v] per head
    "falcon-alibi": ("falcon", dict(_NO_FFN, ffn_hidden_size=37, multi_query=False, alibi=True), True),  # ffn only
    "bloom": ("bloom", {key: value for key, value in _NO_FFN.items() if key != "max_position_embeddings"}, True),
    "mpnet": ("mpnet", dict(_TINY, max_position_embeddings=162), True),
    "mobilebert": ("mobilebert", dict(_TINY, embedding_size=16, intra_bottleneck_size=12, true_hidden_size=12,
                                      num_feedforward_networks=2), True),
    "biogpt": ("biogpt", _TINY, True),
    "gptj": ("gptj", dict(_NO_FFN, n_inner=37, rotary_dim=4), True),
    "gpt_bigcode": ("gpt_bigcode", dict(_NO_FFN, n_inner=37), True),
    "persimmon": ("persimmon", dict(_TINY, qk_layernorm=True), True),
    "olmo3": ("olmo3", _GQA, False),
    "arcee": ("arcee", _GQA, True),
    **{kind: (kind, dict(_GQA, head_dim=6), True) for kind in ("glm", "glm4", "exaone4")},
    **{kind: (kind, _GQA, True) for kind in ("smollm3", "seed_oss")},
    "helium": ("helium", dict(_GQA, head_dim=6), True),
    **{kind: (kind, _TINY, True) for kind in ("ernie", "data2vec-text", "roberta-prelayernorm", "xlm-roberta-xl",
                                              "megatron-bert", "roformer", "esm")},
    **{kind: (kind, _NO_FFN, True) for kind in ("xlm", "flaubert")},
    "big_bird": ("big_bird", dict(_TINY, attention_type="original_full"), True),
    "rembert": ("rembert", dict(_TINY, input_embedding_size=16, output_embedding_size=16), True),
    "modernbert": ("modernbert", dict(_TINY, global_attn_every_n_layers=1), True),
    **{kind: (kind, hf_families.IMAGE["vit"], True) for kind in ("dinov2", "dinov2_with_registers", "vit_msn",
                                                                 "ijepa")},
    "beit": ("beit", dict(hf_families.IMAGE["vit"], use_relative_position_bias=True), True),
    "data2vec-vision": ("data2vec-vision", hf_families.IMAGE["vit"], True),
}


def _described(case: str) -> tuple[TaskModel, dict[str, torch.Tensor]]:
    """A random 2-label classifier of ``case`` and a batch for it (padded text, or 8 × 8 one-channel images)."""
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    kind, sizes, _ = DESCRIBED[case]
    image = family_of(kind).modality == "image"
    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, num_labels=2, **sizes)
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    module = auto.from_config(config, attn_implementation="eager").eval()
    batch = {"input": torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))} if image else padded_batch()
    return TaskModel(module=module, spec={"arch": "hf"}, signature=DIGITS if image else TEXT,
                     class_names=("a", "b")), batch


def _pruned_outputs(module: torch.nn.Module) -> list[tuple[torch.nn.Module, int]]:
    """Every layer that reads pruned units, with the width of one unit along its inputs: each attention's output
    projection (a head) and each MLP's output projection (a channel)."""
    traits = family_of(module.config.model_type)
    if traits.bert_layout:
        layers = encoder_layers(module)
        return ([(layer.attention.output.dense, layer.attention.self.attention_head_size) for layer in layers]
                + [(layer.output.dense, 1) for layer in layers])
    layout = traits.attention
    heads = [(at_path(block, layout.out), at_path(block, layout.head_size)) for block in attention_blocks(module)]
    return heads + [(mlp.down_proj, 1) for mlp in gated_mlps(module)] + [(out, 1) for _, out in plain_mlps(module)]


def _kept_units(old: torch.nn.Module, new: torch.nn.Module, unit: int) -> list[int]:
    """Which of ``old``'s input units (``unit`` columns each) the pruned ``new`` kept, found by their weights."""
    before = inner_linear(old).weight.T.reshape(-1, unit * inner_linear(old).weight.shape[0])
    after = inner_linear(new).weight.T.reshape(-1, before.shape[1])
    return [next(i for i in range(len(before)) if torch.equal(row, before[i])) for row in after]


#: One default case per mechanism; the rest run with the slow suite.
_SLOW = ("falcon-per-head", "gpt_bigcode", "stablelm", "olmo", "olmo3", "gemma2", "glm4", "exaone4", "helium",
         "smollm3", "seed_oss", "mpnet", "biogpt", "ernie", "data2vec-text", "roberta-prelayernorm", "roformer",
         "rembert", "esm", "big_bird", "flaubert", "dinov2_with_registers", "ijepa",
         "data2vec-vision")


@pytest.mark.parametrize("case", [pytest.param(case, marks=[pytest.mark.slow] if case in _SLOW else [])
                                  for case in DESCRIBED])
def test_a_described_family_prunes_factorizes_reloads_and_exports(case: str, tmp_path: Path) -> None:
    """Every target the family claims goes in one step (half the heads, whole KV groups, and half the MLP channels
    of every layer); where pruning is exact the pruned model computes what the unpruned one computes with the removed
    units' columns of the output projections zeroed; then it is factorized, reloads from its directory with the
    same logits and exports to ONNX with parity on a padded batch."""
    model, batch = _described(case)
    kind, _, exact = DESCRIBED[case]
    traits = family_of(kind)
    reference, before = copy.deepcopy(model.module), model.params
    targets = sorted(traits.prune_targets)
    if targets:
        prune_step(model, PruneConfig(targets=targets, importance="l2"), 0.5, batch)
        assert model.params < before
        with torch.no_grad():
            for (old, unit), (new, _) in zip(_pruned_outputs(reference), _pruned_outputs(model.module), strict=True):
                kept = _kept_units(old, new, unit)
                assert 0 < len(kept) < inner_linear(old).weight.shape[1] // unit  # every layer lost some, kept some
                columns = inner_linear(old).weight.view(inner_linear(old).weight.shape[0], -1, unit)
                columns[:, [u for u in range(columns.shape[1]) if u not in kept]] = 0
            pruned = call_logits(model.module.eval(), batch)
            if exact:
                torch.testing.assert_close(pruned, call_logits(reference.eval(), batch))
    if traits.factorize:
        assert any(rank for rank in (d.rank for d in factorize_task_model(model, FactorizeConfig(param_ratio=0.5))))
    again = _reloaded(model, batch, tmp_path / "compressed")
    assert export_onnx(again.module, batch, tmp_path / "compressed.onnx", load_export_target("onnx-fp32")).parity.passed


@pytest.mark.parametrize("case", ["deberta-talking-heads", "gpt_neox", "phi3", "olmo2", "stablelm-qk-layernorm",
                                  "modernbert"])
def test_a_described_family_in_the_hybrid_order_with_taylor_importance_reloads(case: str, tmp_path: Path) -> None:
    """Factorized first, then pruned by Taylor scores (gradients taken again between the heads and the channels, on
    the model whose heads are already gone): the heads go through the factor pairs' outer dimensions, the ranks stay
    and the model reloads with the same logits."""
    model, batch = _described(case)
    factorize_task_model(model, FactorizeConfig(param_ratio=0.5))
    ranks = dict(model.module.config.edgekd_structure["low_rank"])
    before = model.params
    prune_step(model, PruneConfig(targets=["heads", "ffn"], importance="taylor"), 0.5, batch, gradients=_taylor(batch))
    assert model.params < before and model.module.config.edgekd_structure["low_rank"] == ranks
    _reloaded(model, batch, tmp_path / "hybrid")


#: Decoder families described for pruning, as causal LMs (granite has no sequence classifier).
CAUSAL_LMS = {**{case: DESCRIBED[case] for case in ("gpt_neox", "gptj", "gpt_bigcode", "opt", "starcoder2",
                                                    "stablelm-qk-layernorm", "olmo", "olmo2", "gemma2", "gemma3_text",
                                                    "phi3", "falcon", "falcon-per-head")},
              "bloom": ("bloom", _NO_FFN, True),  # the export reads its context
              "granite": ("granite", _GQA, True),  # these have no sequence classifiers
              "codegen": ("codegen", dict(_NO_FFN, n_inner=37, rotary_dim=4), True),
              "cohere-qk-norm": ("cohere", dict(_GQA, use_qk_norm=True), True),  # a [heads, head_dim] norm weight
              "cohere2": ("cohere2", _GQA, True),
              **{kind: (kind, dict(_GQA, head_dim=6), True) for kind in ("ministral", "nemotron")}}


@pytest.mark.parametrize("case", [pytest.param(case, marks=[] if case in ("phi3", "gemma2") else pytest.mark.slow)
                                  for case in CAUSAL_LMS])
def test_a_described_decoder_as_causal_lm_prunes_factorizes_reloads_and_exports_with_its_cache(
        case: str, tmp_path: Path) -> None:
    """The causal-LM stages' path: every claimed target pruned alike in every layer, the projections factorized (not
    the output layer), the model reloads from its directory with the same logits and exports with its KV cache,
    matching PyTorch over a prefix and cached steps."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekd.export.causal_lm_stage import export_with_cache
    from edgekd.models.causal_lm import load_causal_lm
    from edgekd.prune.lowrank import factorize_model
    from edgekd.prune.structured import prune_decoder, sync_decoder_config

    kind, sizes, _ = CAUSAL_LMS[case]
    torch.manual_seed(0)
    module = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **sizes), attn_implementation="eager").eval()
    rows = torch.randint(4, hf_families.VOCAB, (2, 12), generator=torch.Generator().manual_seed(0))
    before = sum(p.numel() for p in module.parameters())
    traits = family_of(kind)
    if traits.prune_targets:
        prune_decoder(module, PruneConfig(targets=sorted(traits.prune_targets)), 0.5, {"input_ids": rows}, None)
        sync_decoder_config(module)
    head = next(name for name, layer in module.named_modules() if layer is module.get_output_embeddings())
    decisions = factorize_model(module, FactorizeConfig(param_ratio=0.5), skip=(head,))
    sync_decoder_config(module)
    assert any(d.rank for d in decisions) and sum(p.numel() for p in module.parameters()) < before
    with torch.no_grad():
        expected = module(input_ids=rows).logits
    module.save_pretrained(tmp_path / "lm")
    again = load_causal_lm(tmp_path / "lm").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=rows).logits, expected, rtol=0, atol=0)
    _, parity = export_with_cache(again, rows, 8, tmp_path / "lm.onnx", load_export_target("onnx-fp32"))
    assert parity.passed


def test_a_heads_step_that_removes_no_head_says_so(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A RoFormer student in a run lost no head (Torch-Pruning found none it could remove; its FFN did shrink) and
    nothing said so. A step that removes no head warns, whatever the family: here Torch-Pruning's step is stubbed
    to remove nothing, and the real step on the same model removes heads without the warning."""
    import edgekd.prune.structured as structured

    def run(stubbed: bool) -> TaskModel:
        torch.manual_seed(0)
        model = TaskModel(module=hf_families.build("bert", num_labels=2), spec={"arch": "hf"}, signature=TEXT,
                          class_names=("a", "b"))
        with monkeypatch.context() as patch, caplog.at_level("WARNING", logger="edgekd.prune.structured"):
            if stubbed:
                patch.setattr(structured, "prune_module", lambda *args, **kwargs: None)
            caplog.clear()
            prune_step(model, PruneConfig(targets=["heads"]), 0.5, padded_batch())
        return model

    run(stubbed=True)
    assert "no attention head of this bert was removed" in caplog.text
    pruned = run(stubbed=False)
    assert pruned.module.bert.encoder.layer[0].attention.self.query.out_features < 24
    assert "no attention head" not in caplog.text
