"""A Hugging Face model that cannot take the recipe's data is refused by ``edgekd validate`` and at the pipeline's
start, by the rule the stage building it applies (:mod:`edgekd.models.data_fit`): a pretrained student used to be
refused by the distill stage, after the teacher had trained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data.examples import InputSignature
from edgekd.models.architectures import build_module
from edgekd.models.specs import BertSpec
from tests import hf_families
from tests.conftest import demo_recipe_dict, shrink
from tests.test_config_errors import _assert_one_line_error
from tests.test_hf_validate import SMALL_BERT, _text_recipe, _validate

runner = CliRunner()
ONE_EPOCH = [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}]


def _causal_lm(directory: Path) -> Path:
    """A tiny CodeGen causal LM (transformers has no sequence classifier for CodeGen)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("codegen", vocab_size=hf_families.VOCAB, n_embd=24, n_layer=1, n_head=2,
                                  rotary_dim=4, n_positions=160, bos_token_id=2, eos_token_id=3)
    AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    return directory


def _image_recipe(role: str, model: dict[str, Any]) -> dict[str, Any]:
    recipe = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=1)
    recipe[role]["model"] = model
    recipe["stages"] = [stage for stage in recipe["stages"] if stage["stage"] in ("teacher", "distill")]
    return recipe


@pytest.mark.parametrize(("case", "fragment"), [
    ("three_channels", "takes 3-channel images, the data has 1"),
    ("larger_images", "model 'hf' (vit) does not run on the data's inputs ((1, 8, 8)): Input image size (8*8) "
                      "doesn't match model (16*16)"),
])
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_an_image_checkpoint_the_images_do_not_fit_is_refused_by_validate(case: str, fragment: str, role: str,
                                                                         tmp_path: Path) -> None:
    sizes = {"three_channels": {"num_channels": 3}, "larger_images": {"image_size": 16}}[case]
    checkpoint = hf_families.save("vit", tmp_path / "vit", **sizes)
    result = _validate(tmp_path, _image_recipe(role, {"arch": "hf", "pretrained": str(checkpoint)}))
    _assert_one_line_error(result, str(tmp_path / "recipe.yaml"), f"{role}.model.pretrained: '{checkpoint}': ",
                           fragment)


def test_the_same_image_checkpoint_fitting_the_images_validates(tmp_path: Path) -> None:
    checkpoint = hf_families.save("vit", tmp_path / "vit")  # 1 channel, 8 × 8: the digits
    result = _validate(tmp_path, _image_recipe("student", {"arch": "hf", "pretrained": str(checkpoint)}))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_an_image_classifier_built_from_sizes_the_images_do_not_fit_is_refused_by_validate(role: str,
                                                                                           tmp_path: Path) -> None:
    """A CNN of more pooling blocks than the digits' 8 pixels halve to passed validate; as the student it was
    refused by the distill stage, after the teacher trained."""
    deep = {"arch": "cnn", "channels": [4, 4, 4, 4], "hidden": 8}
    result = _validate(tmp_path, _image_recipe(role, deep))
    _assert_one_line_error(result, str(tmp_path / "recipe.yaml"), f"{role}.model: model.channels: 4 pooling blocks "
                           "need images of at least 16 pixels a side, got 8×8")
    shallow = {**deep, "channels": [4, 4, 4]}
    assert _validate(tmp_path, _image_recipe(role, shallow)).exit_code == 0


@pytest.mark.parametrize("arch", ["hf", "bert"])
def test_a_checkpoint_with_fewer_tokens_than_the_trained_wordpiece_is_refused_by_validate(arch: str,
                                                                                         tmp_path: Path) -> None:
    """The tokenizer is trained on the data when the run starts (100 tokens here): its size is known at validate."""
    checkpoint = hf_families.save("bert", tmp_path / "bert", vocab_size=40)
    recipe = _text_recipe(SMALL_BERT, {"arch": arch, "pretrained": str(checkpoint)}, ONE_EPOCH)
    result = _validate(tmp_path, recipe)
    _assert_one_line_error(result, "student.model.pretrained", "its vocabulary has 40 tokens, "
                           "fewer than the tokenizer's 100")
    # the way out when the checkpoint's own tokenizer is the longer one (tokens added, embeddings not resized)
    assert "use the model's own tokenizer" in result.output and "resize_token_embeddings" in result.output


def test_the_trained_wordpieces_own_size_is_compared_not_its_bound(tmp_path: Path) -> None:
    """vocab_size 5000 is a bound: on 20 sentences WordPiece learns a few hundred tokens at most. A checkpoint
    larger than what it learns validates; one smaller is refused with the learnt size."""
    from edgekd.config.loading import validate_model
    from edgekd.config.recipe import Recipe
    from edgekd.data.config import TokenizerConfig
    from edgekd.data.text import load_text_dataset
    from edgekd.data.tokenizer import load_or_train_tokenizer

    small = hf_families.save("bert", tmp_path / "small", vocab_size=40)
    recipe = _text_recipe(SMALL_BERT, {"arch": "hf", "pretrained": str(small)}, ONE_EPOCH)
    recipe["tokenizer"] = {"vocab_size": 5000}
    result = _validate(tmp_path, recipe)  # writes the data files
    loaded = validate_model({**recipe, "data": {**recipe["data"], "train": str(tmp_path / "train.tsv"),
                                                "test": str(tmp_path / "dev.tsv")}}, Recipe, source="test")
    texts = load_text_dataset(loaded.data, loaded.seed)
    learnt = len(load_or_train_tokenizer(TokenizerConfig(vocab_size=5000), texts.train.texts))
    assert 40 < learnt < 5000
    _assert_one_line_error(result, f"its vocabulary has 40 tokens, fewer than the tokenizer's {learnt}")
    large = hf_families.save("bert", tmp_path / "large", vocab_size=learnt)
    recipe["student"]["model"]["pretrained"] = str(large)
    result = _validate(tmp_path, recipe)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("source", ["pretrained", "config"])
def test_a_causal_lm_family_without_a_sequence_classifier_is_refused_by_validate(source: str,
                                                                                tmp_path: Path) -> None:
    model = ({"arch": "hf", "pretrained": str(_causal_lm(tmp_path / "codegen"))} if source == "pretrained" else
             {"arch": "hf", "config": {"model_type": "codegen", "n_embd": 24, "n_layer": 1, "n_head": 2,
                                       "rotary_dim": 4}})
    recipe = _text_recipe(SMALL_BERT, model, ONE_EPOCH)
    _assert_one_line_error(_validate(tmp_path, recipe), f"student.model.{source}",
                           "transformers has no sequence classifier for model_type 'codegen'")


def test_the_run_refuses_the_student_before_the_teacher_trains(tmp_path: Path) -> None:
    """``edgekd run`` applies the rule at its start: no teacher is trained for a student that cannot be built."""
    checkpoint = hf_families.save("vit", tmp_path / "vit", num_channels=3)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(_image_recipe("student", {"arch": "hf", "pretrained": str(checkpoint)})))
    result = runner.invoke(app, ["run", str(path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "student.model.pretrained" in result.output and "takes 3-channel images" in result.output
    assert not list((tmp_path / "run").glob("*teacher*"))


def test_a_bert_checkpoint_whose_head_has_other_labels_gets_the_datas_head(tmp_path: Path) -> None:
    """``arch: bert`` loads a checkpoint as ``arch: hf`` does: a 3-label head on 2-class data is replaced (it was a
    RuntimeError about ``ignore_mismatched_sizes`` when the student was built)."""
    checkpoint = hf_families.save("bert", tmp_path / "bert", num_labels=3)
    signature = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)
    module = build_module(BertSpec(arch="bert", pretrained=str(checkpoint)), signature, ("neg", "pos"))
    assert module.config.num_labels == 2 and module.config.id2label == {0: "neg", 1: "pos"}
    logits = module(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long)).logits
    assert logits.shape == (1, 2)
