"""Pruning decoder classifiers (Llama, Qwen2) by family: gated MLP channels, config rewritten, plain reload.

Grouped-query KV groups and decoder factorization: ``tests/test_decoder_compress.py``.
"""

from __future__ import annotations

import math
import warnings
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
from edgekd.prune.tp_warnings import torch_pruning_warnings_logged
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


def test_torch_prunings_warnings_go_to_the_debug_log_not_the_terminal(caplog: pytest.LogCaptureFixture) -> None:
    """Torch-Pruning warns of a Qwen2's RMSNorm weights (``Unwrapped parameters detected: [...] Torch-Pruning will
    prune the last non-singleton dimension``), a raw UserWarning of three lines on stderr; those weights span the
    hidden width, which is never pruned. No UserWarning leaves the prune now: the warning is one debug line."""
    module = hf_families.build("qwen2", num_labels=2)
    model = TaskModel(module=module, spec={"arch": "hf"}, signature=SIGNATURE, class_names=("a", "b"))
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("DEBUG", logger="edgekd.prune.tp_warnings"):
        warnings.simplefilter("always")
        prune_step(model, PruneConfig(targets=["heads", "ffn"]), 0.5, padded_batch())
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []
    logged = [record for record in caplog.records if record.name == "edgekd.prune.tp_warnings"]
    assert [record.levelname for record in logged] == ["DEBUG"]
    said = logged[0].getMessage()
    assert said.startswith("Torch-Pruning warned: Unwrapped parameters detected: [") and "\n" not in said
    assert "'model.norm.weight'" in said and model.module.config.intermediate_size == 37 - math.ceil(37 * 0.5)


def test_other_warnings_raised_while_torch_pruning_runs_are_shown_as_before() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch_pruning_warnings_logged():
            warnings.warn("not Torch-Pruning's", UserWarning, stacklevel=1)
    assert [(w.category, str(w.message)) for w in caught] == [(UserWarning, "not Torch-Pruning's")]
