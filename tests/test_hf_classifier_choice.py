"""Families transformers maps to several classifiers (DeiT, LeViT) build from a config as their plain classifier;
a family that cannot run on the data's input size is refused in one line when built."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig

from edgekd.data.examples import InputSignature
from edgekd.errors import ModelError
from edgekd.models.hf import build_hf, classifier_class
from edgekd.models.specs import HFSpec
from edgekd.models.task_model import build_task_model

CONFIGS = {
    "deit": {"image_size": 8, "patch_size": 2, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32},
    "levit": {"image_size": 32, "patch_size": 16, "hidden_sizes": [16, 32, 48], "num_attention_heads": [1, 2, 3],
              "depths": [1, 1, 1], "key_dim": [8, 8, 8]},
}


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_a_family_with_a_teacher_variant_builds_its_plain_classifier(model_type: str) -> None:
    spec = HFSpec(arch="hf", config={"model_type": model_type, "num_channels": 1, **CONFIGS[model_type]})
    torch.manual_seed(0)
    side = CONFIGS[model_type]["image_size"]
    model = build_hf(spec, InputSignature("image", image_shape=(1, side, side)), tuple("abc"))
    assert type(model).__name__.endswith("ForImageClassification")
    logits = model(pixel_values=torch.randn(2, 1, side, side)).logits
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_a_family_that_cannot_take_the_data_is_refused_when_built() -> None:
    spec = HFSpec(arch="hf", config={"model_type": "levit", "num_channels": 1, **CONFIGS["levit"], "image_size": 8})
    with pytest.raises(ModelError, match=r"model 'hf' \(levit\) does not run on the data's inputs \(\(1, 8, 8\)\): "):
        build_task_model(spec, InputSignature("image", image_shape=(1, 8, 8)), tuple("abc"))


@pytest.mark.parametrize(("config", "message"), [
    # T5's classifier pools the end-of-sequence token too, and these inputs (no tokenizer: no end token) have none
    ({"model_type": "t5", "vocab_size": 40, "d_model": 16, "d_kv": 4, "d_ff": 24, "num_layers": 1, "num_heads": 4},
     "at least one <eos> token"),
    # BART's classifier pools the last end-of-sequence token; ids without one are a ValueError
    ({"model_type": "bart", "vocab_size": 40, "d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
      "encoder_attention_heads": 2, "decoder_attention_heads": 2, "encoder_ffn_dim": 24, "decoder_ffn_dim": 24,
      "eos_token_id": 39}, "at least one <eos> token"),
])
def test_a_text_family_whose_forward_fails_on_the_token_ids_is_refused_when_built(config: dict, message: str) -> None:
    spec = HFSpec(arch="hf", config=config)
    with pytest.raises(ModelError, match=rf"model 'hf' \({config['model_type']}\) does not run on the data's inputs "
                                         rf"\(token ids\): .*{message}"):
        build_task_model(spec, InputSignature("text", max_length=8, vocab_size=40), tuple("ab"))


@pytest.mark.parametrize(("model_type", "modality", "architectures", "expected"), [
    ("bert", "text", None, "BertForSequenceClassification"),
    ("bert", "text", ["PrunedBertForSequenceClassification"], "BertForSequenceClassification"),  # a re-saved reload
    ("deit", "image", None, "DeiTForImageClassification"),
    ("deit", "image", ["DeiTForImageClassificationWithTeacher"], "DeiTForImageClassificationWithTeacher"),
])
def test_the_saved_classifier_class_is_found_by_family(model_type: str, modality: str, architectures: list | None,
                                                       expected: str) -> None:
    config = AutoConfig.for_model(model_type, architectures=architectures)
    assert classifier_class(config, modality).__name__ == expected


def test_a_family_without_a_classifier_is_one_line() -> None:
    with pytest.raises(ModelError, match="transformers has no image classifier for model_type 'bert'"):
        classifier_class(AutoConfig.for_model("bert"), "image")
