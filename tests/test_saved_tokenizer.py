"""A tokenizer saved beside a model reads back exactly as the model was trained with it, whatever the family.

transformers' ``AutoTokenizer`` picks a tokenizer class from a model directory's ``config.json``, and Qwen2's class
rebuilds a WordPiece vocabulary as byte-level BPE (every word spelt out in characters): a Qwen2 teacher trained on
the recipe's WordPiece then reloaded, in every later stage and in ``edgekd export DIR``, with other token ids.
Models are tiny random Hugging Face classifiers (:mod:`tests.hf_families`) and the synthetic sentiment TSVs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer

import edgekd
from edgekd import api
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.config import TokenizerConfig
from edgekd.data.corpus import build_char_tokenizer
from edgekd.data.examples import InputSignature
from edgekd.data.saved_tokenizer import read_tokenizer
from edgekd.data.task_data import prepare_task_data
from edgekd.data.tokenizer import load_or_train_tokenizer, save_tokenizer
from edgekd.distill.task_metrics import evaluation_metrics
from edgekd.errors import ModelError
from edgekd.models.causal_lm import CausalLM, build_causal_lm
from edgekd.models.task_model import TaskModel
from tests import hf_families

SENTENCE = "the film is a great story"
#: 36 words: longer than the recipes' max_length of 32 tokens.
LONG = " ".join(["the film is a story with cast and plot"] * 4)
ONE_EPOCH = {"epochs": 1, "batch_size": 16, "lr": 0.005}


@pytest.fixture(scope="module")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic sentiment TSVs and a WordPiece tokenizer trained on them (max_length 32)."""
    return hf_families.sentiment_files(tmp_path_factory.mktemp("text"))


def _ids(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    return tokenizer(texts)["input_ids"]


def _file_ids(directory: Path, texts: list[str]) -> list[list[int]]:
    """The ids an app reading ``directory/tokenizer.json`` with the ``tokenizers`` library gets."""
    return [encoding.ids for encoding in Tokenizer.from_file(str(directory / "tokenizer.json")).encode_batch(texts)]


def _file_length(directory: Path, text: str = LONG) -> int:
    """How many ids an app reading ``directory/tokenizer.json`` with the ``tokenizers`` library gets for ``text``."""
    return len(Tokenizer.from_file(str(directory / "tokenizer.json")).encode(text).ids)


def _texts(text_files: dict[str, Any]) -> list[str]:
    rows = (text_files["root"] / "dev.tsv").read_text().splitlines()[1:21]
    return [SENTENCE, *(row.split("\t")[0].strip() for row in rows)]


@pytest.mark.parametrize("family", ["qwen2", "llama", "gpt2", "bert"])
def test_a_model_directory_reloads_with_the_ids_it_was_trained_on(family: str, text_files: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    tokenizer = text_files["tokenizer"]
    module = hf_families.build(family, num_labels=2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    signature = InputSignature(kind="text", vocab_size=len(tokenizer), pad_id=tokenizer.pad_token_id, max_length=32)
    TaskModel(module=module, spec={"arch": "hf"}, signature=signature, class_names=("0", "1"),
              tokenizer=tokenizer).save(tmp_path / "model")
    texts = _texts(text_files)
    trained = _ids(tokenizer, texts)
    assert len(trained[0]) == len(SENTENCE.split()) + 2  # a word each, [CLS] and [SEP]: not spelt out
    reloaded = TaskModel.load(tmp_path / "model").tokenizer
    assert _ids(reloaded, texts) == trained
    assert _file_ids(tmp_path / "model", texts) == trained
    # the directory as a recipe's tokenizer.pretrained reads the same
    pretrained = load_or_train_tokenizer(TokenizerConfig(pretrained=str(tmp_path / "model"), max_length=32), [])
    assert _ids(pretrained, texts) == trained


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_a_causal_lm_directory_reloads_its_character_tokenizer(family: str, tmp_path: Path) -> None:
    text = "To be, or not to be: that is the question."
    tokenizer = build_char_tokenizer(text)
    module = build_causal_lm(family, vocab_size=len(tokenizer), context=32, layers=1, width=16, heads=2)
    CausalLM(module=module, tokenizer=tokenizer).save(tmp_path / "lm")
    trained = _ids(tokenizer, [text])
    assert len(trained[0]) == len(text)  # a character each
    assert _ids(CausalLM.load(tmp_path / "lm").tokenizer, [text]) == trained
    assert _file_ids(tmp_path / "lm", [text]) == trained


def _qwen2_recipe(text_files: dict[str, Any], checkpoint: Path) -> Recipe:
    """A pretrained Qwen2 teacher on the recipe's own WordPiece, a student of its first layer, distilled."""
    root = text_files["root"]
    return validate_model({
        "name": "qwen2-wordpiece",
        "data": {"source": "tsv", "train": str(root / "train.tsv"), "test": str(root / "dev.tsv"), "val_examples": 80},
        "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "hf", "pretrained": str(checkpoint)}},
        "student": {"model": {"arch": "drop_layers", "keep": 1}},
        "stages": [{"stage": "teacher", **ONE_EPOCH, "epochs": 2}, {"stage": "distill", **ONE_EPOCH}],
    }, Recipe, source="test")


def test_a_run_s_teacher_scores_as_recorded_when_reloaded_and_exports_its_tokenizer(
        text_files: dict[str, Any], tmp_path: Path) -> None:
    checkpoint = hf_families.save("qwen2", tmp_path / "my-qwen2", num_labels=2, vocab_size=200, pad_token_id=0)
    recipe = _qwen2_recipe(text_files, checkpoint)
    result = edgekd.run(recipe, out=tmp_path / "run")
    models = result.artifact.models
    teacher_dir, student_dir = (tmp_path / "run" / models[role].weights for role in ("teacher", "student"))

    teacher = TaskModel.load(teacher_dir)
    data = prepare_task_data(recipe.data, recipe.seed, tokenizer=teacher.tokenizer)
    assert evaluation_metrics(teacher, data)["accuracy"] == models["teacher"].metrics["accuracy"] > 0.8

    texts = _texts(text_files)
    trained = _ids(load_or_train_tokenizer(recipe.tokenizer, data.texts.train.texts), texts)
    assert _ids(teacher.tokenizer, texts) == trained
    assert _ids(TaskModel.load(student_dir).tokenizer, texts) == trained
    api.export(teacher_dir, out=tmp_path / "export", target="onnx-fp32", runs=10, warmup=1)
    assert _file_ids(tmp_path / "export", texts) == trained
    assert _ids(read_tokenizer(tmp_path / "export"), texts) == trained  # beside Qwen2's config.json too
    # truncating where the recipe says (the teacher's last call before saving had truncated at 16)
    assert [_file_length(directory) for directory in (teacher_dir, student_dir, tmp_path / "export")] == [32] * 3


def test_a_saved_tokenizer_json_truncates_at_max_length_and_pads_nothing_whatever_the_last_call(
        text_files: dict[str, Any], tmp_path: Path) -> None:
    tokenizer = text_files["tokenizer"]  # max_length 32
    tokenizer([LONG], truncation=True, max_length=16, padding="max_length")  # what its backend is left set to
    save_tokenizer(tokenizer, tmp_path / "wordpiece")
    assert (_file_length(tmp_path / "wordpiece"), _file_length(tmp_path / "wordpiece", SENTENCE)) == (32, 8)
    assert len(tokenizer([LONG])["input_ids"][0]) == len(LONG.split()) + 2  # calls are not truncated by it
    save_tokenizer(build_char_tokenizer(LONG), tmp_path / "characters")  # no max_length: truncated nowhere
    assert _file_length(tmp_path / "characters") == len(LONG)


def test_a_tokenizer_that_reads_back_otherwise_than_its_tokenizer_json_is_refused(text_files: dict[str, Any],
                                                                                tmp_path: Path) -> None:
    TaskModel(module=hf_families.build("bert", num_labels=2, vocab_size=len(text_files["tokenizer"])),
              spec={"arch": "hf"}, signature=InputSignature(kind="text", vocab_size=len(text_files["tokenizer"])),
              class_names=("0", "1"), tokenizer=text_files["tokenizer"]).save(tmp_path / "model")
    config_file = tmp_path / "model" / "tokenizer_config.json"
    # a token added in tokenizer_config.json only: transformers adds it, an app reading tokenizer.json does not
    added = {"content": "héllo", "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
             "special": False}
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "added_tokens_decoder": {"999": added}}))
    with pytest.raises(ModelError, match="encodes 'héllo' as .* where its tokenizer.json gives"):
        TaskModel.load(tmp_path / "model")
