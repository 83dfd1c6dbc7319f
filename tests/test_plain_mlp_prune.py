"""Pruning the plain MLP channels of GPT-2, Phi, DistilBERT, ViT and DeiT through each family's ``PlainMLP``.

Each family is a tiny random classifier (3 heads, FFN 37: odd sizes); a step removes the same channels in
every layer, the parameter count falls by exactly the removed rows, columns and bias entries, the family's
own config field states the new width, and the model reloads with plain ``from_pretrained`` (identical
logits) and exports to ONNX with parity. Heads stay (they are pruned on their own: test_attention_heads_prune.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edgekd.data.examples import InputSignature
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import PruneConfig
from edgekd.prune.plain_mlp import channel_importance, plain_mlps
from edgekd.prune.structured import prune_step
from tests import hf_families
from tests.hf_families import padded_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
TEXT = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)
DIGITS = InputSignature(kind="image", image_shape=(1, 8, 8))
#: family → (config field stating the MLP width, image classifier?)
FAMILIES = {"gpt2": ("n_inner", False), "phi": ("intermediate_size", False), "distilbert": ("hidden_dim", False),
            "vit": ("intermediate_size", True), "deit": ("intermediate_size", True)}
WIDTH = 37


def _model(family: str) -> tuple[TaskModel, dict[str, torch.Tensor]]:
    image = FAMILIES[family][1]
    if family == "deit":  # laid out as ViT; transformers' auto class cannot build it from a bare config
        from transformers import DeiTConfig, DeiTForImageClassification

        torch.manual_seed(0)
        module = DeiTForImageClassification(DeiTConfig(num_labels=2, **hf_families.IMAGE["vit"])).eval()
    else:
        module = hf_families.build(family, num_labels=2, **({"n_inner": WIDTH} if family == "gpt2" else {}))
    batch = {"input": torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))} if image else padded_batch()
    return TaskModel(module=module, spec={"arch": "hf"}, signature=DIGITS if image else TEXT,
                     class_names=("a", "b")), batch


def _taylor(batch: dict[str, torch.Tensor]):
    def gradients(module: nn.Module) -> None:
        labels = torch.arange(len(next(iter(batch.values())))) % 2
        nn.functional.cross_entropy(call_logits(module, batch), labels).backward()
    return gradients


@pytest.mark.parametrize("importance", ["l1", "taylor"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_plain_mlp_channels_go_in_every_layer_and_the_model_reloads_and_exports(
        family: str, importance: str, tmp_path: Path) -> None:
    model, batch = _model(family)
    field, image = FAMILIES[family]
    pairs = plain_mlps(model.module)
    assert len(pairs) == 2  # one per layer, found through the family's description
    hidden = {m.in_features if isinstance(m, nn.Linear) else m.nx for m, _ in pairs}.pop()
    before = model.params
    prune_step(model, PruneConfig(targets=["ffn"], importance=importance), 0.5, batch, gradients=_taylor(batch))
    gone = math.ceil(WIDTH * 0.5)
    assert getattr(model.module.config, field) == WIDTH - gone
    # each layer loses `gone` rows of `into` (weights + bias) and `gone` columns of `out`
    assert before - model.params == len(pairs) * gone * (2 * hidden + 1)
    assert model.module.config.num_attention_heads == 3
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.module.save_pretrained(tmp_path / "pruned")
    again = type(model.module).from_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again, batch), expected)
    result = export_onnx(again, batch, tmp_path / "pruned.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed
    assert result.input_names == (("input",) if image else ("input_ids", "attention_mask"))


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
@pytest.mark.parametrize("family", ["gpt2", "phi"])
def test_zeroed_channels_are_exactly_the_ones_removed(family: str, importance: str) -> None:
    """Channels whose coupled weights are all zero score zero by every criterion: those go, no other."""
    model, batch = _model(family)
    zeroed = sorted(torch.randperm(WIDTH, generator=torch.Generator().manual_seed(1))[:5].tolist())
    for into, out in plain_mlps(model.module):
        with torch.no_grad():
            if family == "gpt2":
                into.weight[:, zeroed] = 0
                out.weight[zeroed] = 0
            else:
                into.weight[zeroed] = 0
                out.weight[:, zeroed] = 0
            into.bias[zeroed] = 0
    model.module.zero_grad()
    _taylor(batch)(model.module)
    for into, out in plain_mlps(model.module):
        scores = channel_importance(into, out, importance)
        assert sorted(torch.topk(scores, 5, largest=False).indices.tolist()) == zeroed
        assert (scores[zeroed] == 0).all() and (scores[[i for i in range(WIDTH) if i not in zeroed]] > 0).all()

