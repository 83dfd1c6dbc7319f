"""An ``arch: hf`` spec's ``config:`` keys are checked against the family's config class: a misspelt size is
refused with one line naming it (transformers would store it unread and build the default-sized model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from edgekd.data.examples import InputSignature
from edgekd.models.architectures import ModelSpec
from tests import hf_families
from tests.test_config_errors import _assert_one_line_error
from tests.test_hf_validate import DISTILL, SMALL_BERT, _text_recipe, _validate

FAMILIES = {**hf_families.TEXT, **hf_families.IMAGE}
#: The inputs a trained WordPiece gives: [PAD] 0 pads, [SEP] 3 ends each example.
TEXT = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=0, max_length=32, end_id=3)


def _spec(model_type: str, config: dict[str, Any]) -> Any:
    return TypeAdapter(ModelSpec).validate_python({"arch": "hf", "config": {"model_type": model_type, **config}})


def _misspelt(key: str) -> str:
    """``key`` with its last two letters swapped (``hidden_size`` → ``hidden_sizee``-like typos)."""
    return key[:-2] + key[-1] + key[-2] if key[-1] != key[-2] else key + "s"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_key_of_the_families_test_configs_is_accepted(family: str) -> None:
    assert _spec(family, FAMILIES[family]).model_type == family


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_misspelt_key_is_refused_with_the_right_name(family: str) -> None:
    for key in FAMILIES[family]:
        typo = _misspelt(key)
        with pytest.raises(ValidationError) as raised:
            _spec(family, {**FAMILIES[family], typo: FAMILIES[family][key]})
        (error,) = raised.value.errors()
        assert f"unknown key '{typo}' for model_type '{family}'" in error["msg"]
        assert f"did you mean '{key}'?" in error["msg"]


def test_a_key_of_another_family_is_refused() -> None:
    """GPT-2's ``n_embd`` means nothing to BERT (it would silently build a 768-wide model)."""
    with pytest.raises(ValidationError, match="unknown key 'n_embd' for model_type 'bert'"):
        _spec("bert", {"n_embd": 24})


def test_validate_names_the_misspelt_key_in_one_line(tmp_path: Path) -> None:
    teacher = {"arch": "hf", "config": {"model_type": "llama", **hf_families.TEXT["llama"], "num_key_value_head": 1}}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(teacher, SMALL_BERT, DISTILL)), "teacher.model",
                           "unknown key 'num_key_value_head'", "did you mean 'num_key_value_heads'?")


@pytest.mark.parametrize(("model_type", "key", "value", "fraction"), [
    ("phi", "partial_rotary_factor", 0.25, 0.25),   # Phi checkpoints' own spelling
    ("gpt_neox", "rotary_pct", 0.5, 0.5),           # GPT-NeoX's, converted by its config class
    ("llama", "rope_theta", 500000.0, None),        # the spelling before rope_parameters
])
def test_older_rotary_spellings_are_taken_and_applied(model_type: str, key: str, value: float,
                                                      fraction: float | None) -> None:
    from edgekd.models.families import built_config

    spec = _spec(model_type, {"hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 1, key: value})
    rope = built_config(spec.config).rope_parameters
    if fraction is None:
        assert rope["rope_theta"] == value
    else:
        assert rope["partial_rotary_factor"] == fraction


@pytest.mark.parametrize("key", ["rope_theta", "trust_remote_code"])
def test_keys_a_bert_config_does_not_read_are_still_refused(key: str) -> None:
    """Rotary keys mean nothing to BERT, and a loading argument is not a size of the model."""
    with pytest.raises(ValidationError, match=f"unknown key '{key}' for model_type 'bert'"):
        _spec("bert", {key: 1})


_T5 = dict(vocab_size=hf_families.VOCAB, d_model=16, num_layers=1, num_heads=2, d_ff=32, d_kv=8)
_BART = dict(vocab_size=hf_families.VOCAB, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=64)


@pytest.mark.parametrize(("model_type", "sizes"), [("t5", _T5), ("bart", _BART), ("mbart", _BART)])
@pytest.mark.parametrize("key", ["decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id"])
def test_special_token_ids_are_keys_of_every_family(model_type: str, sizes: dict[str, Any], key: str) -> None:
    """T5's classifier reads decoder_start_token_id, which T5Config does not define: it was refused as unknown."""
    from edgekd.models.families import built_config

    spec = _spec(model_type, {**sizes, key: 3})
    assert getattr(built_config(spec.config), key) == 3


@pytest.mark.parametrize("ids", [{}, {"decoder_start_token_id": 0, "eos_token_id": 3}])
@pytest.mark.parametrize(("model_type", "sizes"), [("t5", _T5), ("bart", _BART), ("mbart", _BART)])
def test_an_encoder_decoder_classifier_from_a_config_validates(model_type: str, sizes: dict[str, Any],
                                                               ids: dict[str, int], tmp_path: Path) -> None:
    """Its decoder starts from decoder_start_token_id and its classifier reads the last end-of-sequence token: given,
    or the tokenizer's (its padding id; the [SEP], id 3, that ends every example). A T5 from a config without them
    was refused (no decoder start; its end id 1 is [UNK] here), a BART read its answer at [CLS] (its end id 2)."""
    from edgekd.models.hf import build_hf

    student = {"arch": "hf", "config": {"model_type": model_type, **sizes, **ids}}
    module = build_hf(_spec(model_type, student["config"]), TEXT, ("neg", "pos"))
    assert (module.config.decoder_start_token_id, module.config.eos_token_id) == (0, 3)
    recipe = _text_recipe(SMALL_BERT, student, DISTILL)
    recipe["tokenizer"]["max_length"] = 32
    result = _validate(tmp_path, recipe)
    assert result.exit_code == 0, result.output


def test_a_key_the_model_reads_and_its_config_lacks_is_named(tmp_path: Path) -> None:
    """T5Config has no decoder_start_token_id, which T5's classifier reads: validate said only
    "'T5Config' object has no attribute 'decoder_start_token_id'" of a checkpoint saved without it."""
    from transformers import T5Config, T5ForSequenceClassification

    T5ForSequenceClassification(T5Config(**_T5, eos_token_id=3)).save_pretrained(tmp_path / "t5")
    config = json.loads((tmp_path / "t5" / "config.json").read_text())
    (tmp_path / "t5" / "config.json").write_text(json.dumps(
        {key: value for key, value in config.items() if key != "decoder_start_token_id"}))
    student = {"arch": "hf", "pretrained": str(tmp_path / "t5")}
    _assert_one_line_error(_validate(tmp_path, _text_recipe(SMALL_BERT, student, DISTILL)), "student.model.pretrained",
                           "model 'hf' (t5) reads 'decoder_start_token_id' from its config, which does not set it",
                           "set decoder_start_token_id in the model's config")


def test_a_misspelt_special_token_id_is_still_refused() -> None:
    with pytest.raises(ValidationError, match="unknown key 'decoder_start_tokn_id' for model_type 't5' "
                                              r"\(did you mean 'decoder_start_token_id'\?\)"):
        _spec("t5", {**_T5, "decoder_start_tokn_id": 0})


def test_a_checkpoint_reading_its_answer_at_the_end_token_takes_the_tokenizers(tmp_path: Path) -> None:
    """A BART checkpoint ends rows with its own </s> (2); beside a trained WordPiece, where 2 is [CLS] and [SEP] (3)
    ends each row, it read its answer at the first token. A BERT checkpoint, which pools the first token, keeps its
    own id."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from edgekd.models.call import call_logits
    from edgekd.models.hf import build_hf

    for family, sizes in (("bart", {**_BART, "eos_token_id": 2}), ("bert", {**hf_families.TEXT["bert"],
                                                                           "eos_token_id": 2})):
        AutoModelForSequenceClassification.from_config(AutoConfig.for_model(family, num_labels=2, **sizes)
                                                       ).save_pretrained(tmp_path / family)
    bart = build_hf(TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(tmp_path / "bart")}),
                    TEXT, ("neg", "pos")).eval()
    bert = build_hf(TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(tmp_path / "bert")}),
                    TEXT, ("neg", "pos"))
    assert (bart.config.eos_token_id, bert.config.eos_token_id) == (3, 2)
    rows = torch.tensor([[2, 7, 8, 9, 3, 0], [2, 7, 8, 3, 0, 0]])  # [CLS] … [SEP] [PAD]: one end token per row
    with torch.no_grad():
        assert call_logits(bart, {"input_ids": rows, "attention_mask": (rows != 0).long()}).shape == (2, 2)
