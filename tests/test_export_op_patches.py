"""Families torch's TorchScript exporter failed on export with parity once their ops are patched for the trace.

One representative family per patched op in the default suite (each a tiny random model): the stock exporter
fails on it (so the patch is what makes it pass), edgekd's export path passes its parity gate, and the patched
functions compute what torch's own do. The rest of the families each patch fixed run in the slow matrix
(``tests/test_hf_breadth.py``). Every export failure that remains is one ``ExportError`` line.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from edgekd.errors import ExportError
from edgekd.export.causal_lm_onnx import probed_layout
from edgekd.export.causal_lm_stage import export_with_cache
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.op_patches import exportable_ops, traceable_repeat_interleave, traceable_rms_norm
from edgekd.export.torch_log import quiet_torch_exporter
from tests.hf_families import padded_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
_DECODER = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=48, max_position_embeddings=128, pad_token_id=0, bos_token_id=2, eos_token_id=3)
#: family → (config sizes, the stock exporter's failure): one per patched op.
CLASSIFIERS: dict[str, tuple[dict[str, Any], str]] = {
    "glm": (_DECODER, "All tensors must have the same rank"),  # repeat_interleave in the rotary embedding
    "diffllama": (_DECODER, "aten::rms_norm"),
    "falcon": (dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, alibi=True,
                    pad_token_id=0), "complex128"),  # the ALiBi slopes' bfloat16 cast
    "dinov2_with_registers": (dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, mlp_ratio=2), "aten::_upsample_bicubic2d_aa"),
}
AXES = {name: {1: "sequence"} for name in ("input_ids", "attention_mask", "token_type_ids")}


def _classifier(family: str) -> torch.nn.Module:
    torch.manual_seed(0)
    image = family.startswith("dinov2")
    auto = AutoModelForImageClassification if image else AutoModelForSequenceClassification
    config = AutoConfig.for_model(family, num_labels=3, **CLASSIFIERS[family][0])
    return auto.from_config(config, attn_implementation="eager").eval()


def _sample(family: str) -> Any:
    return torch.randn(4, 3, 16, 16) if family.startswith("dinov2") else padded_batch()


def _stock_export(model: torch.nn.Module, sample: Any) -> None:
    """torch's exporter and onnxruntime on ``model`` without edgekd's patches (raises what they raise)."""
    import onnxruntime as ort

    from edgekd.models.call import call_logits

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            batch = dict(zip(names, inputs, strict=True))
            return call_logits(self.model, batch)

    names = ["pixel_values"] if isinstance(sample, torch.Tensor) else ["input_ids", "attention_mask"]
    inputs = (sample,) if isinstance(sample, torch.Tensor) else (sample["input_ids"], sample["attention_mask"])
    buffer = io.BytesIO()
    with torch.no_grad(), quiet_torch_exporter():  # its failure writes the whole TorchScript graph to stdout
        torch.onnx.export(Logits(), inputs, buffer, dynamo=False, opset_version=17, input_names=names)
    ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_a_family_the_stock_exporter_fails_on_exports_with_parity(family: str, tmp_path: Path) -> None:
    model, sample = _classifier(family), _sample(family)
    with pytest.raises(Exception, match=CLASSIFIERS[family][1]):
        _stock_export(model, sample)
    axes = {} if isinstance(sample, torch.Tensor) else AXES
    result = export_onnx(model, sample, tmp_path / "model.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes=axes)
    assert result.parity.passed and result.parity.max_abs_diff < 1e-4
    assert torch.repeat_interleave is not traceable_repeat_interleave  # nothing stays patched


@pytest.mark.parametrize("family, sizes", [
    ("cohere", _DECODER),  # repeat_interleave interleaving its rotary frequencies
    ("falcon", dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)),  # multi-query
], ids=["cohere", "falcon-multi-query"])
def test_a_causal_lm_family_exports_with_its_cache(family: str, sizes: dict[str, Any], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **sizes), attn_implementation="eager").eval()
    rows = torch.randint(4, 120, (3, 12), generator=torch.Generator().manual_seed(1))
    _, parity = export_with_cache(model, rows, 6, tmp_path / "model.onnx", load_export_target("onnx-fp32"))
    assert parity.passed and parity.max_abs_diff < 1e-4
    assert probed_layout(model) == [(1 if family == "falcon" else 2, 8, 8)] * 2


def test_an_encoder_as_a_causal_lm_is_one_line(tmp_path: Path) -> None:
    config = AutoConfig.for_model("bert", vocab_size=120, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16)
    model = AutoModelForCausalLM.from_config(config).eval()
    with pytest.raises(ExportError, match=r"BertLMHeadModel returns no key/value cache") as caught:
        export_with_cache(model, torch.randint(4, 120, (2, 8)), 4, tmp_path / "m.onnx", load_export_target("onnx-fp32"))
    assert "\n" not in str(caught.value) and not (tmp_path / "m.onnx").exists()


def test_any_exception_while_exporting_is_one_export_error_line(tmp_path: Path) -> None:
    """A forward that trips an assertion only while traced (as the exporter's own checks do) is an ExportError."""

    class Fragile(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, input: torch.Tensor) -> torch.Tensor:
            assert not torch.jit.is_tracing(), "cannot be traced"
            return self.linear(input)

    with pytest.raises(ExportError, match=r"cannot export Fragile to ONNX opset 17: AssertionError: cannot be traced"):
        export_onnx(Fragile().eval(), torch.randn(3, 4), tmp_path / "m.onnx", load_export_target("onnx-fp32"))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_the_traceable_ops_compute_what_torchs_do(dim: int) -> None:
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(traceable_repeat_interleave(x, 2, dim), torch.repeat_interleave(x, 2, dim))
    assert torch.equal(traceable_repeat_interleave(x, torch.tensor([1, 2]), 0),
                       torch.repeat_interleave(x, torch.tensor([1, 2]), 0))  # tensor repeats: torch's own
    weight = torch.rand(4)
    torch.testing.assert_close(traceable_rms_norm(x, (4,), weight, 1e-6), torch.rms_norm(x, (4,), weight, 1e-6))
    with exportable_ops():
        assert torch.equal(torch.expm1(x), torch.exp(x) - 1) and x.bfloat16().dtype == torch.float32
    assert x.bfloat16().dtype == torch.bfloat16 and torch.rms_norm is not traceable_rms_norm


def test_fnet_which_torchscript_cannot_export_is_exported_by_transformers_exporter(tmp_path: Path) -> None:
    """FNet mixes tokens with a Fourier transform torch's TorchScript exporter has no export of (aten::fft_fftn):
    transformers' exporter, tried after it (edgekd.export.backends), exports it with parity on padded batches, so
    the refusal table no longer lists it."""
    from edgekd.models.export_support import export_refusal

    torch.manual_seed(0)
    config = AutoConfig.for_model("fnet", vocab_size=120, hidden_size=16, num_hidden_layers=1, intermediate_size=16,
                                  num_labels=3, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    result = export_onnx(model, padded_batch(), tmp_path / "m.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes=AXES)
    assert result.exporter == "transformers" and result.parity.passed
    assert export_refusal("fnet", "sequence") is None and export_refusal("llama", "sequence") is None
    assert "unordered_map::at" in export_refusal("reformer", "sequence")


def test_funnels_graph_runs_only_at_the_length_it_was_traced_at_so_the_table_refuses_it(tmp_path: Path) -> None:
    """Funnel Transformer's pooling indices are fixed while tracing: its graph matched PyTorch on the batch it was
    exported from and failed in onnxruntime at the device's length (after training, at the profile stage)."""
    import numpy as np
    import onnxruntime as ort

    from edgekd.models.export_support import export_refusal

    torch.manual_seed(0)
    config = AutoConfig.for_model("funnel", vocab_size=120, block_sizes=[1, 1], d_model=24, n_head=3, d_head=8,
                                  d_inner=37, num_labels=2, pad_token_id=0)
    model = AutoModelForSequenceClassification.from_config(config).eval()
    batch = {name: tensor for name, tensor in padded_batch().items() if name != "token_type_ids"}
    export_onnx(model, batch, tmp_path / "m.onnx", load_export_target("onnx-fp32"), extra_dynamic_axes=AXES)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    longer = np.ones((2, 128), dtype=np.int64)  # the device profile's length
    with pytest.raises(Exception, match="GatherElements|broadcast"):
        session.run(None, {"input_ids": longer, "attention_mask": longer})
    assert "a shape fixed while tracing" in export_refusal("funnel", "sequence")
