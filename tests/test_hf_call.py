"""Models are called by keyword with the inputs their forward names; ONNX graphs and feeds use those names only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.export.ort_format import convert_to_ort, numpy_feeds
from edgekd.export.parity import check_parity, parity_batches
from edgekd.models.architectures import build_text_student
from edgekd.models.call import call_logits, forward_parameters
from edgekd.models.specs import BiLSTMSpec, TextCNNSpec
from tests import hf_families
from tests.hf_families import padded_batch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
#: The inputs each family's tokenizer gives (``model_input_names``): what a plain call passes.
TOKENIZER_INPUTS = {"bert": ("input_ids", "token_type_ids", "attention_mask")}
PLAIN_INPUTS = ("input_ids", "attention_mask")
AXES = {name: {1: "sequence"} for name in ("input_ids", "attention_mask", "token_type_ids")}


def plain_logits(family: str, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    names = TOKENIZER_INPUTS.get(family, PLAIN_INPUTS)
    with torch.no_grad():
        return model(**{name: batch[name] for name in names}).logits


@pytest.mark.parametrize("family", hf_families.TEXT)
def test_edgekd_call_equals_a_plain_keyword_call(family: str) -> None:
    model, batch = hf_families.build(family), padded_batch()
    with torch.no_grad():
        ours = call_logits(model, batch)
    torch.testing.assert_close(ours, plain_logits(family, model, batch), atol=0, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_positional_call_was_silently_wrong_for_decoders(family: str) -> None:
    """The old ``model(*batch.values())`` put token_type_ids into position_ids: the logits moved."""
    model, batch = hf_families.build(family), padded_batch()
    with torch.no_grad():
        positional = model(*batch.values()).logits
    assert (positional - plain_logits(family, model, batch)).abs().max() > 1e-4


@pytest.mark.parametrize("family", hf_families.TEXT)
def test_onnx_inputs_are_the_forward_names_and_parity_holds_on_padded_batches(family: str, tmp_path: Path) -> None:
    model, batch = hf_families.build(family), padded_batch()
    result = export_onnx(model, batch, tmp_path / f"{family}.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes=AXES)
    expected = TOKENIZER_INPUTS.get(family, PLAIN_INPUTS)
    assert set(result.input_names) == set(expected) and set(expected) <= set(forward_parameters(model))
    assert result.parity.passed and result.parity.samples == 1 + 7 + 6
    # a new batch, longer than the traced one, runs through the exported graph as through the model
    other = padded_batch(rows=4, seed=5, longest=23)
    assert check_parity(model, tmp_path / f"{family}.onnx", other, atol=1e-4, rtol=1e-4).passed


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_parity_catches_a_graph_traced_with_inputs_in_the_wrong_slots(family: str, tmp_path: Path) -> None:
    """A graph traced positionally (token_type_ids as the forward's third parameter) fails the gate."""
    model, batch = hf_families.build(family), padded_batch()

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
            return self.model(input_ids, attention_mask, token_type_ids).logits

    path = tmp_path / "wrong.onnx"
    torch.onnx.export(Positional(), tuple(batch.values()), str(path), dynamo=False, opset_version=17,
                      input_names=list(batch), output_names=["logits"],
                      dynamic_axes={name: {0: "batch", 1: "sequence"} for name in batch})
    names = {i.name for i in onnx.load(str(path)).graph.input}
    assert "input_ids" in names
    assert not check_parity(model, path, parity_batches(batch), atol=1e-4, rtol=1e-4).passed


@pytest.mark.parametrize("spec", [TextCNNSpec(arch="textcnn", embedding_dim=16, filters=8),
                                  BiLSTMSpec(arch="bilstm", embedding_dim=16, hidden=8, fc_hidden=8)],
                         ids=["textcnn", "bilstm"])
def test_ort_mobile_export_of_text_students_without_token_type_ids(spec, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_text_student(spec, vocab_size=hf_families.VOCAB, num_classes=3, pad_id=hf_families.PAD).eval()
    batch = padded_batch()
    target = load_export_target("ort-mobile")
    onnx_path = tmp_path / f"{spec.arch}.onnx"
    result = export_onnx(model, batch, onnx_path, target, extra_dynamic_axes=AXES)
    assert result.input_names == ("input_ids", "attention_mask")
    feeds = numpy_feeds(batch)
    assert all("token_type_ids" in feed for feed in feeds)  # batches carry it; the graph does not take it
    converted = convert_to_ort(onnx_path, target, feeds, out_dir=tmp_path / "ort")
    assert converted.parity.passed and converted.parity.samples == 8
    assert np.isfinite(converted.parity.max_abs_diff)


def test_a_decoder_checkpoint_pads_with_the_tokenizers_id_so_padding_does_not_change_its_answer(
        tmp_path: Path) -> None:
    """OPT's checkpoints say pad_token_id 1; with a tokenizer padding with 0 the classifier read its answer off the
    last token that is not 1: a padding position. A row padded as the bundle pads got another answer."""
    from transformers import OPTConfig, OPTForSequenceClassification

    from edgekd.models.specs import HFSpec

    torch.manual_seed(0)
    OPTForSequenceClassification(OPTConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                           ffn_dim=32, max_position_embeddings=32, word_embed_proj_dim=16,
                                           pad_token_id=1, bos_token_id=2, eos_token_id=2, num_labels=2)
                                 ).save_pretrained(tmp_path / "opt")
    model = build_text_student(HFSpec(arch="hf", pretrained=str(tmp_path / "opt")), vocab_size=60, num_classes=2,
                               pad_id=0).eval()
    assert model.config.pad_token_id == 0
    ids = torch.tensor([[5, 9, 1, 14]])  # id 1 is a word here, not padding
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    with torch.no_grad():
        alone = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        with_padding = model(input_ids=padded, attention_mask=(padded != 0).long()).logits
    torch.testing.assert_close(with_padding, alone)
