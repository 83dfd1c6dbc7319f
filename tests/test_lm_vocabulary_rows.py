"""A causal-LM checkpoint with more vocabulary rows than its tokenizer has ids (a padded vocabulary, or a
checkpoint fine-tuned on a smaller tokenizer) is cut to the tokenizer's ids when built: nothing trains the extra
rows' logits down, so the exported graph sampled ids the tokenizer cannot decode."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from edgekd.data.corpus import build_char_tokenizer
from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.models.causal_lm import causal_lm_from_spec
from edgekd.models.specs import HFSpec
from edgekd.profile.generate import CachedGenerator

EXTRA = 24


@pytest.mark.parametrize("family, tied", [("llama", False), ("gpt2", True)])
def test_rows_beyond_the_tokenizer_are_cut_and_never_generated(tmp_path: Path, family: str, tied: bool) -> None:
    tokenizer = build_char_tokenizer("the cat sat on a mat.\n")
    size = len(tokenizer)
    config = AutoConfig.for_model(family, vocab_size=size + EXTRA, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                  tie_word_embeddings=tied)
    torch.manual_seed(0)
    checkpoint = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():  # the extra rows' logits dominate, as untrained padding rows can
        checkpoint.get_output_embeddings().weight[size:] *= 30
    checkpoint.save_pretrained(tmp_path / "checkpoint")
    module = causal_lm_from_spec(HFSpec(arch="hf", pretrained=str(tmp_path / "checkpoint")), tokenizer, 16,
                                 "student.model")
    assert module.get_input_embeddings().num_embeddings == module.get_output_embeddings().weight.shape[0] == size
    assert module.config.vocab_size == size
    kept = checkpoint.get_input_embeddings().weight[:size]
    assert torch.equal(module.get_input_embeddings().weight, kept)  # the tokenizer's rows are the checkpoint's
    generator = CachedGenerator(export_causal_lm(module.eval(), tmp_path / "model.onnx"))
    assert generator.vocab == size
    sampled = [t for seed in range(5) for t in generator.generate([1, 2, 3], 12, temperature=1.0, seed=seed).tokens]
    assert max(sampled) < size and tokenizer.decode(sampled)
