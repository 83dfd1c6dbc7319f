"""Pruning decoder classifiers (Llama, Qwen2) by family: gated MLP channels, config rewritten, plain reload.

Grouped-query KV groups and decoder factorization: ``tests/test_decoder_compress.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from edgekd.data.examples import InputSignature
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import PruneConfig
from edgekd.prune.structured import prune_step
from tests import hf_families
from tests.hf_families import padded_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
SIGNATURE = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)


@pytest.mark.parametrize("importance", ["l2", "taylor"])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_gated_mlp_pruning_shrinks_every_layer_alike_and_reloads(family: str, importance: str,
                                                                 tmp_path: Path) -> None:
    module = hf_families.build(family, num_labels=2)
    heads = (module.config.num_attention_heads, module.config.num_key_value_heads)
    model = TaskModel(module=module, spec={"arch": "hf"}, signature=SIGNATURE, class_names=("a", "b"))
    before, batch = model.params, padded_batch()

    def gradients(m: torch.nn.Module) -> None:
        torch.nn.functional.cross_entropy(call_logits(m, batch), torch.arange(len(batch["input_ids"])) % 2).backward()

    prune_step(model, PruneConfig(targets=["ffn"], importance=importance), 0.5, batch, gradients=gradients)
    config = model.module.config
    assert config.intermediate_size == 37 - math.ceil(37 * 0.5)  # 19 of each layer's 37 channels go
    assert {m.mlp.gate_proj.out_features for m in model.module.base_model.layers} == {config.intermediate_size}
    assert (config.num_attention_heads, config.num_key_value_heads) == heads  # GQA heads untouched
    assert model.params < before
    model.module.save_pretrained(tmp_path / "pruned")
    again = type(model.module).from_pretrained(tmp_path / "pruned").eval()
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
        torch.testing.assert_close(call_logits(again, batch), expected)
    result = export_onnx(again, batch, tmp_path / "pruned.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed and result.input_names == ("input_ids", "attention_mask")
