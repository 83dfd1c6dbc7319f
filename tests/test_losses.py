"""Distillation losses against hand-computed values, masking, projections, layer maps and model outputs."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
)

from edgekd.data.examples import UNLABELLED
from edgekd.distill.layer_map import map_layers
from edgekd.distill.layer_map_config import LayerMap
from edgekd.distill.losses.attention import AttentionDistillationLoss, AttentionLoss
from edgekd.distill.losses.combined import CombinedLoss
from edgekd.distill.losses.cosine import CosineDistillationLoss, CosineLoss
from edgekd.distill.losses.embedding import EmbeddingDistillationLoss, EmbeddingLoss
from edgekd.distill.losses.hidden import HiddenLoss, HiddenStateDistillationLoss
from edgekd.distill.losses.hinton import HintonDistillationLoss, HintonLoss
from edgekd.distill.losses.logit_mse import LogitMSEDistillationLoss, LogitMSELoss
from edgekd.distill.losses.minilm import MiniLMDistillationLoss, MiniLMLoss
from edgekd.distill.losses.pkd import PKDDistillationLoss, PKDLoss
from edgekd.distill.losses.registry import GENERATION_LOSSES, LOSSES, LossConfig, build_loss
from edgekd.distill.outputs import ModelInfo, ModelOutputs, forward_outputs
from edgekd.errors import ConfigError, ModelError

NO_LABELS = torch.zeros(1, dtype=torch.long)
PADDED = torch.tensor([[1, 1, 0]])  # one sentence of two real tokens and one pad


def outputs(*, logits: list[list[float]] | None = None, hidden: list | None = None,
            attentions: list | None = None, qkv: list | None = None) -> ModelOutputs:
    """ModelOutputs from nested lists (logits default to a dummy [1, 2])."""

    def tensors(values: list | None) -> tuple[torch.Tensor, ...] | None:
        return None if values is None else tuple(torch.tensor(v, dtype=torch.float32) for v in values)

    return ModelOutputs(
        logits=torch.tensor(logits if logits is not None else [[0.0, 0.0]]),
        hidden_states=tensors(hidden),
        attentions=tensors(attentions),
        qkv=tensors(qkv),  # type: ignore[arg-type]
    )


def with_padding_changed(out: ModelOutputs, mask: torch.Tensor, value: float = 57.0) -> ModelOutputs:
    """A copy of ``out`` holding ``value`` at every padded position (``mask == 0``) of per-token tensors."""
    pad = mask == 0

    def change(tensors: tuple[torch.Tensor, ...] | None, where: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        return None if tensors is None else tuple(t.masked_fill(where, value) for t in tensors)

    return ModelOutputs(
        out.logits,
        change(out.hidden_states, pad[:, :, None]),
        change(out.attentions, pad[:, None, :, None] | pad[:, None, None, :]),
        change(out.qkv, pad[:, :, None]),  # type: ignore[arg-type]
    )


def assert_padding_ignored(loss: nn.Module, student: ModelOutputs, teacher: ModelOutputs, mask: torch.Tensor) -> None:
    """Changing both models' padded positions (to different values) leaves the loss as it was."""
    before = loss(student, teacher, NO_LABELS, mask)
    after = loss(with_padding_changed(student, mask, 0.9), with_padding_changed(teacher, mask, -3.0), NO_LABELS, mask)
    assert after.item() == pytest.approx(before.item(), rel=1e-6)

# --------------------------------------------------------------------------- logit losses


def test_hinton_alpha_zero_is_cross_entropy() -> None:
    student, teacher = [[2.0, 0.5, -1.0]], [[0.0, 3.0, 0.0]]
    loss = HintonDistillationLoss(temperature=4.0, alpha=0.0)(
        outputs(logits=student), outputs(logits=teacher), NO_LABELS, None
    )
    log_z = math.log(sum(math.exp(v) for v in student[0]))
    assert loss.item() == pytest.approx(log_z - student[0][0], rel=1e-6)


def test_hinton_identical_logits_have_zero_soft_loss() -> None:
    logits = [[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]]
    loss = HintonDistillationLoss(temperature=3.0, alpha=1.0)(
        outputs(logits=logits), outputs(logits=logits), torch.tensor([2, 2]), None
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_hinton_soft_term_matches_hand_computation() -> None:
    # Two classes, T = 2: p_teacher = softmax([2, 0] / 2), p_student = softmax([0, 0] / 2) = [0.5, 0.5]
    t = 2.0
    p_t1 = 1 / (1 + math.exp(-1.0))
    p_t = [p_t1, 1 - p_t1]
    kl = sum(p * math.log(p / 0.5) for p in p_t)
    expected = 0.5 * t * t * kl + 0.5 * math.log(2)  # alpha 0.5; CE of uniform logits is log 2
    loss = HintonDistillationLoss(temperature=t, alpha=0.5)
    student, teacher, labels = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([1])
    assert loss(ModelOutputs(student), ModelOutputs(teacher), labels, None).item() == pytest.approx(expected, rel=1e-6)
    assert loss.forward_logits(student, teacher, labels).item() == pytest.approx(expected, rel=1e-6)


def test_hinton_hard_term_counts_only_labelled_rows() -> None:
    # Row 0 has label 0, row 1 is an augmented sentence (UNLABELLED): the CE is row 0's alone.
    student = [[2.0, 0.5, -1.0], [9.0, -9.0, 0.0]]
    loss = HintonDistillationLoss(temperature=4.0, alpha=0.0)(
        outputs(logits=student), outputs(logits=student), torch.tensor([0, UNLABELLED]), None
    )
    log_z = math.log(sum(math.exp(v) for v in student[0]))
    assert loss.item() == pytest.approx(log_z - student[0][0], rel=1e-6)


def test_hinton_batch_without_labels_keeps_only_the_soft_term() -> None:
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    unlabelled = torch.tensor([UNLABELLED])
    mixed = HintonDistillationLoss(temperature=2.0, alpha=0.5)(ModelOutputs(student), ModelOutputs(teacher), unlabelled)
    soft = HintonDistillationLoss(temperature=2.0, alpha=1.0)(ModelOutputs(student), ModelOutputs(teacher), unlabelled)
    assert torch.isfinite(mixed)
    assert mixed.item() == pytest.approx(0.5 * soft.item(), rel=1e-6)


@pytest.mark.parametrize(("temperature", "alpha"), [(0.0, 0.5), (-1.0, 0.5), (2.0, 1.5)])
def test_hinton_rejects_bad_settings(temperature: float, alpha: float) -> None:
    with pytest.raises(ValueError):
        HintonDistillationLoss(temperature, alpha)


def test_logit_mse_is_mean_squared_difference() -> None:
    loss = LogitMSEDistillationLoss()(
        outputs(logits=[[1.0, 2.0], [3.0, 4.0]]), outputs(logits=[[0.0, 2.0], [1.0, 1.0]]), NO_LABELS, None
    )
    assert loss.item() == pytest.approx((1 + 0 + 4 + 9) / 4)


# --------------------------------------------------------------------------- hidden-state losses

# One sentence, three positions (the last padded), width 2; layer 1 of each model.
S_LAYER = [[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]]
T_LAYER = [[[0.0, 0.0], [3.0, 2.0], [-7.0, 9.0]]]
ZEROS = [[[0.0, 0.0]] * 3]


def test_hidden_mse_averages_real_tokens_only() -> None:
    student, teacher = outputs(hidden=[ZEROS, S_LAYER]), outputs(hidden=[ZEROS, T_LAYER])
    loss = HiddenStateDistillationLoss([(1, 1)], 2, 2, "mse")
    expected = ((1 + 4) / 2 + (0 + 4) / 2) / 2
    assert loss(student, teacher, NO_LABELS, PADDED).item() == pytest.approx(expected)
    assert_padding_ignored(loss, student, teacher, PADDED)
    unmasked = (2.5 + 2.0 + (107**2 + 91**2) / 2) / 3
    assert loss(student, teacher, NO_LABELS, None).item() == pytest.approx(unmasked)


def test_hidden_cosine_is_one_minus_cosine_over_real_tokens() -> None:
    student = outputs(hidden=[ZEROS, [[[1.0, 0.0], [1.0, 1.0], [5.0, -1.0]]]])
    teacher = outputs(hidden=[ZEROS, [[[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]]]])
    loss = HiddenStateDistillationLoss([(1, 1)], 2, 2, "cosine")(student, teacher, NO_LABELS, PADDED)
    assert loss.item() == pytest.approx(((1 - 0) + (1 - 1 / math.sqrt(2))) / 2)


def test_hidden_loss_follows_the_uniform_layer_map() -> None:
    # Student layers 1, 2 learn from teacher layers 2, 4: only those equal the student's.
    a, b, other = [[[1.0, 2.0]]], [[[3.0, -1.0]]], [[[9.0, 9.0]]]
    student = outputs(hidden=[other, a, b])
    teacher = outputs(hidden=[other, other, a, other, b])
    loss = build_loss(HiddenLoss(kind="hidden"), ModelInfo(2, 2, 1), ModelInfo(4, 2, 1))
    assert loss(student, teacher, NO_LABELS, None).item() == 0.0
    assert loss.pairs == [(1, 2), (2, 4)]


def test_projection_appears_when_widths_differ_and_is_trainable() -> None:
    assert list(HiddenStateDistillationLoss([(1, 1), (2, 2)], 4, 4).parameters()) == []
    loss = HiddenStateDistillationLoss([(1, 1), (2, 2)], 2, 3)
    assert [type(p) for p in loss.projections] == [nn.Linear, nn.Linear]
    assert all(p.requires_grad for p in loss.parameters())
    with torch.no_grad():
        for projection in loss.projections:
            projection.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))  # [s0, s1, 0]
            projection.bias.zero_()
    student = outputs(hidden=[[[[0.0, 0.0]]], [[[1.0, 2.0]]], [[[1.0, 2.0]]]])
    teacher = outputs(hidden=[[[[0.0, 0.0, 0.0]]], [[[1.0, 2.0, 3.0]]], [[[0.0, 0.0, 0.0]]]])
    value = loss(student, teacher, NO_LABELS, None)
    assert value.item() == pytest.approx((9 / 3 + 5 / 3) / 2)
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.projections[0].parameters())


def test_embedding_loss_reads_the_embedding_output() -> None:
    student = outputs(hidden=[S_LAYER, ZEROS])
    teacher = outputs(hidden=[T_LAYER, S_LAYER])
    loss = EmbeddingDistillationLoss(2, 2)(student, teacher, NO_LABELS, PADDED)
    assert loss.item() == pytest.approx(2.25)


def test_cosine_loss_is_distilbert_cosine_embedding_loss_on_real_tokens() -> None:
    last_s = [[[1.0, 0.0], [1.0, 1.0], [5.0, -1.0]]]
    last_t = [[[0.5, 2.0], [1.0, 0.0], [2.0, 2.0]]]
    student = outputs(hidden=[ZEROS, ZEROS, last_s])
    teacher = outputs(hidden=[ZEROS, ZEROS, ZEROS, last_t])
    loss = CosineDistillationLoss(2, 3, 2, 2)(student, teacher, NO_LABELS, PADDED)
    real_s, real_t = torch.tensor(last_s[0][:2]), torch.tensor(last_t[0][:2])
    reference = nn.CosineEmbeddingLoss()(real_s, real_t, torch.ones(2))
    assert loss.item() == pytest.approx(reference.item())
    assert loss.item() == pytest.approx(((1 - 0.5 / math.sqrt(4.25)) + (1 - 1 / math.sqrt(2))) / 2)


def test_pkd_compares_normalised_cls_vectors() -> None:
    student = outputs(hidden=[ZEROS, [[[3.0, 4.0], [8.0, 8.0], [1.0, 1.0]]]])
    teacher = outputs(hidden=[ZEROS, [[[1.0, 0.0], [0.0, 5.0], [2.0, 0.0]]]])
    loss = PKDDistillationLoss([(1, 1)], 2, 2)
    expected = ((0.6 - 1.0) ** 2 + 0.8**2) / 2  # [3, 4]/5 vs [1, 0], averaged over the 2 dimensions
    assert loss(student, teacher, NO_LABELS, PADDED).item() == pytest.approx(expected)
    assert_padding_ignored(loss, student, teacher, PADDED)


# --------------------------------------------------------------------------- attention losses

S_ATT = [[[[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [0.2, 0.3, 0.5]]]]  # [B=1, H=1, T=3, T=3]
T_ATT = [[[[0.9, 0.1, 0.0], [0.5, 0.5, 0.0], [0.1, 0.1, 0.8]]]]


def test_attention_mse_over_real_query_key_pairs() -> None:
    student, teacher = outputs(attentions=[S_ATT]), outputs(attentions=[T_ATT])
    loss = AttentionDistillationLoss([(1, 1)], "mse")
    expected = (0.4**2 + 0.4**2 + 0.25**2 + 0.25**2) / 4
    assert loss(student, teacher, NO_LABELS, PADDED).item() == pytest.approx(expected)
    assert_padding_ignored(loss, student, teacher, PADDED)


def test_attention_kl_is_teacher_to_student_per_real_row() -> None:
    student, teacher = outputs(attentions=[S_ATT]), outputs(attentions=[T_ATT])
    loss = AttentionDistillationLoss([(1, 1)], "kl")
    row1 = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    row2 = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert loss(student, teacher, NO_LABELS, PADDED).item() == pytest.approx((row1 + row2) / 2, rel=1e-5)
    assert_padding_ignored(loss, student, teacher, PADDED)


def test_attention_averages_heads_when_head_counts_differ() -> None:
    rng = np.random.default_rng(0)
    s_maps, t_maps = rng.dirichlet(np.ones(4), size=(2, 2, 4)), rng.dirichlet(np.ones(4), size=(2, 4, 4))
    loss = AttentionDistillationLoss([(1, 1)], "mse")(
        outputs(attentions=[s_maps.tolist()]), outputs(attentions=[t_maps.tolist()]), NO_LABELS, None
    )
    expected = ((s_maps.mean(axis=1) - t_maps.mean(axis=1)) ** 2).mean()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # With equal head counts the heads are compared one by one: swapped heads are not equal.
    swapped = AttentionDistillationLoss([(1, 1)], "mse")(
        outputs(attentions=[s_maps.tolist()]), outputs(attentions=[s_maps[:, ::-1].tolist()]), NO_LABELS, None
    )
    assert swapped.item() > 0


def test_attention_rejects_the_embedding_layer() -> None:
    config = AttentionLoss(kind="attention", layer_map=LayerMap(kind="explicit", pairs=[(0, 0), (1, 2)]))
    with pytest.raises(ConfigError, match="layer 0, the embeddings"):
        build_loss(config, ModelInfo(2, 8, 2), ModelInfo(2, 8, 2))


# --------------------------------------------------------------------------- MiniLM


def numpy_minilm(s_qkv: list[np.ndarray], t_qkv: list[np.ndarray], mask: np.ndarray, heads: int) -> float:
    """MiniLMv2 relation loss written out loop by loop, sentence by sentence."""
    per_relation = []
    for s, t in zip(s_qkv, t_qkv, strict=True):
        rows = []
        for b in range(mask.shape[0]):
            real = int(mask[b].sum())
            for x_s, x_t in zip(np.split(s[b, :real], heads, axis=1), np.split(t[b, :real], heads, axis=1),
                                strict=True):
                rel_s = x_s @ x_s.T / math.sqrt(x_s.shape[1])
                rel_t = x_t @ x_t.T / math.sqrt(x_t.shape[1])
                p_s = np.exp(rel_s) / np.exp(rel_s).sum(axis=1, keepdims=True)
                p_t = np.exp(rel_t) / np.exp(rel_t).sum(axis=1, keepdims=True)
                rows.extend((p_t * np.log(p_t / p_s)).sum(axis=1))
        per_relation.append(np.mean(rows))
    return float(np.mean(per_relation))


def test_minilm_matches_relations_computed_by_hand_for_different_widths() -> None:
    rng = np.random.default_rng(1)
    s_qkv = [rng.normal(size=(2, 3, 4)) for _ in range(3)]  # student width 4, teacher width 8
    t_qkv = [rng.normal(size=(2, 3, 8)) for _ in range(3)]
    mask = np.array([[1, 1, 1], [1, 1, 0]])
    student, teacher = outputs(qkv=[x.tolist() for x in s_qkv]), outputs(qkv=[x.tolist() for x in t_qkv])
    loss = MiniLMDistillationLoss(relation_heads=2, student_hidden=4, teacher_hidden=8)
    padded = torch.tensor(mask)
    value = loss(student, teacher, NO_LABELS, padded)
    assert value.item() == pytest.approx(numpy_minilm(s_qkv, t_qkv, mask, heads=2), rel=1e-5)
    assert_padding_ignored(loss, student, teacher, padded)
    assert loss(student, student, NO_LABELS, padded).item() == pytest.approx(0.0, abs=1e-6)


def test_minilm_needs_widths_divisible_by_relation_heads() -> None:
    with pytest.raises(ConfigError, match="student's hidden size 12 is not divisible by relation_heads=8"):
        build_loss(MiniLMLoss(kind="minilm"), ModelInfo(2, 12, 2), ModelInfo(4, 32, 4))


# --------------------------------------------------------------------------- layer maps


@pytest.mark.parametrize(("layer_map", "s", "t", "pairs"), [
    (LayerMap(kind="uniform"), 4, 12, [(1, 3), (2, 6), (3, 9), (4, 12)]),
    (LayerMap(kind="uniform"), 4, 6, [(1, 1), (2, 3), (3, 4), (4, 6)]),
    (LayerMap(kind="uniform"), 3, 3, [(1, 1), (2, 2), (3, 3)]),
    (LayerMap(kind="skip", k=2), 3, 6, [(1, 2), (2, 4), (3, 6)]),
    (LayerMap(kind="skip", k=2), 3, 12, [(1, 2), (2, 4), (3, 6)]),
    (LayerMap(kind="last"), 3, 6, [(1, 4), (2, 5), (3, 6)]),
    (LayerMap(kind="last", k=2), 3, 6, [(2, 5), (3, 6)]),
    (LayerMap(kind="explicit", pairs=[(0, 0), (2, 5)]), 2, 6, [(0, 0), (2, 5)]),
])
def test_layer_maps(layer_map: LayerMap, s: int, t: int, pairs: list[tuple[int, int]]) -> None:
    assert map_layers(layer_map, s, t) == pairs


@pytest.mark.parametrize(("layer_map", "s", "t", "message"), [
    (LayerMap(kind="skip", k=3), 4, 6, "maps student layer 4 to teacher layer 12.*k must be at most 1"),
    (LayerMap(kind="uniform"), 6, 4, "at least as many teacher layers as student layers"),
    (LayerMap(kind="last", k=4), 3, 6, "k must be at most 3"),
    (LayerMap(kind="explicit", pairs=[(1, 7)]), 2, 6, r"pair \[1, 7\] is out of range.*teacher layers 0..6"),
    (LayerMap(kind="uniform"), 0, 6, "needs encoder layers in both models"),
])
def test_impossible_layer_maps_say_why(layer_map: LayerMap, s: int, t: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        map_layers(layer_map, s, t)


def test_layer_map_rejects_fields_of_other_kinds() -> None:
    with pytest.raises(ConfigError, match="k applies only to kinds 'skip' and 'last'"):
        LayerMap(kind="uniform", k=2)
    with pytest.raises(ConfigError, match="pairs apply only to kind 'explicit'"):
        LayerMap(kind="skip", k=2, pairs=[(1, 1)])


# --------------------------------------------------------------------------- building and combining


def test_registry_covers_every_loss_config() -> None:
    members = typing.get_args(typing.get_args(LossConfig)[0])
    kinds = {typing.get_args(m.model_fields["kind"].annotation)[0] for m in members}
    assert set(LOSSES) | set(GENERATION_LOSSES) == kinds and not set(LOSSES) & set(GENERATION_LOSSES)


def test_encoder_losses_need_a_transformer_student() -> None:
    bilstm, bert = ModelInfo(0, 0, 0), ModelInfo(4, 32, 4)
    assert isinstance(build_loss(HintonLoss(kind="hinton"), bilstm, bert), HintonDistillationLoss)
    with pytest.raises(ConfigError, match="loss 'hidden' compares .*hidden_states, but the student has no "
                                          r"transformer encoder; losses on the logits alone apply to it "
                                          r"\(hinton, logit_mse\)"):
        build_loss(HiddenLoss(kind="hidden"), bilstm, bert)


def test_combined_loss_weights_parts_and_reports_them() -> None:
    student, teacher = outputs(hidden=[ZEROS, S_LAYER]), outputs(hidden=[ZEROS, T_LAYER])
    combined = CombinedLoss([
        (2.0, HiddenStateDistillationLoss([(1, 1)], 2, 2, "mse")),
        (0.5, HiddenStateDistillationLoss([(1, 1)], 2, 2, "cosine")),
        (1.0, LogitMSEDistillationLoss()),
    ])
    assert combined.needs == frozenset({"hidden_states"})
    total = combined(student, teacher, NO_LABELS, PADDED)
    cosine = ((1 - 0) + (1 - 17 / (5 * math.sqrt(13)))) / 2  # [1, 2]·[0, 0] has cosine 0; [3, 4]·[3, 2] = 17
    assert combined.last_parts == pytest.approx({"hidden": 2.25, "hidden_2": cosine, "logit_mse": 0.0})
    assert total.item() == pytest.approx(2.0 * 2.25 + 0.5 * cosine)


# --------------------------------------------------------------------------- model outputs


def tiny_bert(layers: int = 2, hidden: int = 32, heads: int = 4, attention: str = "eager") -> nn.Module:
    config = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                        intermediate_size=2 * hidden, vocab_size=100, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0, attn_implementation=attention)
    return BertForSequenceClassification(config).eval()


INPUTS = {"input_ids": torch.tensor([[2, 5, 7, 9, 3], [2, 8, 3, 0, 0]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}


def test_forward_outputs_of_a_bert_classifier() -> None:
    torch.manual_seed(0)
    model = tiny_bert()
    assert ModelInfo.of(model) == ModelInfo(2, 32, 4)
    out = forward_outputs(model, INPUTS, frozenset({"hidden_states", "attentions", "qkv"}))
    assert out.logits.shape == (2, 2)
    assert [tuple(h.shape) for h in out.hidden_states or ()] == [(2, 5, 32)] * 3
    assert [tuple(a.shape) for a in out.attentions or ()] == [(2, 4, 5, 5)] * 2
    assert [tuple(x.shape) for x in out.qkv or ()] == [(2, 5, 32)] * 3
    last = model.bert.encoder.layer[-1].attention.self
    for captured, projection in zip(out.qkv or (), (last.query, last.key, last.value), strict=True):
        torch.testing.assert_close(captured, projection(out.hidden_states[1]))
    plain = forward_outputs(model, INPUTS, frozenset())
    assert (plain.hidden_states, plain.attentions, plain.qkv) == (None, None, None)
    torch.testing.assert_close(plain.logits, out.logits)


def test_forward_outputs_explains_what_a_model_cannot_give() -> None:
    with pytest.raises(ModelError, match='attn_implementation="eager"'):
        forward_outputs(tiny_bert(attention="sdpa"), INPUTS, frozenset({"attentions"}))
    distilbert = DistilBertForSequenceClassification(
        DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
    )
    with pytest.raises(ModelError, match="no BERT-style query/key/value projections.*the losses on qkv relations need"):
        forward_outputs(distilbert, INPUTS, frozenset({"qkv"}))


class Bag(nn.Module):
    """A plain text classifier: mean of token embeddings, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed, self.head = nn.Embedding(100, 8), nn.Linear(8, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids).mean(1))


def test_forward_outputs_of_a_plain_module_are_logits_only() -> None:
    model = Bag()
    assert ModelInfo.of(model) == ModelInfo(0, 0, 0)
    assert forward_outputs(model, INPUTS, frozenset()).logits.shape == (2, 2)
    with pytest.raises(ModelError, match=r"Bag is not a Hugging Face transformer, so it has no "
                                         r"hidden_states; only losses on logits apply"):
        forward_outputs(model, INPUTS, frozenset({"hidden_states"}))


def test_two_steps_with_every_loss_reduce_the_combined_loss() -> None:
    torch.manual_seed(0)
    teacher, student = tiny_bert(layers=4, hidden=32, heads=4), tiny_bert(layers=2, hidden=16, heads=2)
    configs = [HintonLoss(kind="hinton"), LogitMSELoss(kind="logit_mse"), HiddenLoss(kind="hidden"),
               PKDLoss(kind="pkd"), AttentionLoss(kind="attention", metric="kl"),
               EmbeddingLoss(kind="embedding", metric="cosine"), CosineLoss(kind="cosine"),
               MiniLMLoss(kind="minilm", relation_heads=4)]
    s_info, t_info = ModelInfo.of(student), ModelInfo.of(teacher)
    combined = CombinedLoss([(c.weight, build_loss(c, s_info, t_info)) for c in configs])
    assert combined.needs == frozenset({"hidden_states", "attentions", "qkv"})
    with torch.no_grad():
        target = forward_outputs(teacher, INPUTS, combined.needs)
    optimizer = torch.optim.AdamW([*student.parameters(), *combined.parameters()], lr=3e-3)
    labels = torch.tensor([0, 1])

    def step() -> float:
        loss = combined(forward_outputs(student, INPUTS, combined.needs), target, labels, INPUTS["attention_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    first = step()
    step()
    with torch.no_grad():
        after = combined(forward_outputs(student, INPUTS, combined.needs), target, labels, INPUTS["attention_mask"])
    assert after.item() < first
    assert set(combined.last_parts) == set(LOSSES)
    projection = combined.parts[2].projections[0]
    assert isinstance(projection, nn.Linear) and projection.weight.grad is not None
    assert projection.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------- every registered loss


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_every_registered_loss_trains_a_tiny_student_from_a_tiny_teacher(kind: str) -> None:
    """The contract of a loss: built from its default config for a student narrower and shallower than
    its teacher, it gives a finite positive scalar whose gradient reaches the student (and no teacher)."""
    torch.manual_seed(0)
    teacher, student = tiny_bert(layers=4, hidden=32, heads=4), tiny_bert(layers=2, hidden=16, heads=2)
    cls = LOSSES[kind]
    loss = build_loss(cls.config_model(kind=kind, **({"relation_heads": 4} if kind == "minilm" else {})),
                      ModelInfo.of(student), ModelInfo.of(teacher))
    assert loss.kind == kind and loss.needs == cls.config_model.needs
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        teacher_out = forward_outputs(teacher, INPUTS, loss.needs)
    value = loss(forward_outputs(student.train(), INPUTS, loss.needs), teacher_out, labels, INPUTS["attention_mask"])
    assert value.ndim == 0 and torch.isfinite(value) and value.item() > 0
    value.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_minilm_sums_the_three_relations_as_the_paper_does() -> None:
    torch.manual_seed(0)
    teacher, student = tiny_bert(layers=2, hidden=32), tiny_bert(layers=1, hidden=16, heads=2)
    outputs_of = {name: forward_outputs(model, INPUTS, frozenset({"qkv"})) for name, model in
                  (("student", student), ("teacher", teacher))}
    values = {reduction: build_loss(MiniLMLoss(kind="minilm", relation_heads=4, relations=reduction),
                                    ModelInfo.of(student), ModelInfo.of(teacher))(
        outputs_of["student"], outputs_of["teacher"], NO_LABELS, INPUTS["attention_mask"]).item()
        for reduction in ("mean", "sum")}
    assert values["sum"] == pytest.approx(3 * values["mean"])
