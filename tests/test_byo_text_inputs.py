"""Bring-your-own text models: a GPT-2-style tokenizer without a padding token, and a model with fewer positions than
the device feeds, on a real classifier recipe (tiny random GPT-2 and BERT checkpoints, a generated sentiment TSV)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.data.config import TokenizerConfig
from edgekd.data.tokenizer import load_or_train_tokenizer
from edgekd.errors import ConfigError
from tests.test_config_errors import _assert_one_line_error
from tests.test_text_pipeline import _write_tsv

runner = CliRunner()


def _byte_level_tokenizer(directory: Path, texts: list[str], **special: str) -> Path:
    """A GPT-2-style byte-level BPE tokenizer: end-of-text as its only special token, no padding token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                           initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=backend, **special).save_pretrained(directory)
    return directory


TEXTS = ["the film is great", "a dull story", "its cast is lovely and the plot superb"]


def test_a_tokenizer_without_a_padding_token_pads_with_its_end_of_text_token(tmp_path: Path,
                                                                            caplog: pytest.LogCaptureFixture) -> None:
    directory = _byte_level_tokenizer(tmp_path / "gpt2-tok", TEXTS, eos_token="<|endoftext|>")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        tokenizer = load_or_train_tokenizer(TokenizerConfig(pretrained=str(directory)), TEXTS)
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.pad_token_id == tokenizer.eos_token_id
    assert caplog.messages == [f"tokenizer.pretrained: '{directory}' has no padding token; padding with its "
                               "end-of-text token '<|endoftext|>'"]
    batch = tokenizer(["great", "a dull story"], padding=True)
    assert batch["input_ids"][0][-1] == tokenizer.eos_token_id and batch["attention_mask"][0][-1] == 0


def test_a_tokenizer_with_neither_padding_nor_end_of_text_is_refused(tmp_path: Path) -> None:
    directory = _byte_level_tokenizer(tmp_path / "bare", TEXTS)
    with pytest.raises(ConfigError, match="has no padding token and no end-of-text token to pad with"):
        load_or_train_tokenizer(TokenizerConfig(pretrained=str(directory)), TEXTS)


def _recipe(tmp_path: Path, teacher: dict[str, Any], stages: list[dict[str, Any]]) -> Path:
    for name, rows in (("train.tsv", 40), ("dev.tsv", 20)):
        _write_tsv(tmp_path / name, rows, seed=len(name))
    recipe = {"name": "byo", "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "val_examples": 5},
              "tokenizer": {"vocab_size": 100, "max_length": 32}, "teacher": {"model": teacher},
              "student": {"model": {"arch": "bilstm", "hidden": 8, "embedding_dim": 8}}, "stages": stages}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


TIMED = [{"stage": "teacher"}, {"stage": "distill"}, {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile"}]
GPT2 = {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2}
ROBERTA = {"model_type": "roberta", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
           "intermediate_size": 32, "pad_token_id": 1}


@pytest.mark.parametrize(("config", "usable"), [({**GPT2, "n_positions": 64}, 64),
                                                ({**ROBERTA, "max_position_embeddings": 129}, 127)])
def test_a_model_with_fewer_positions_than_the_device_feeds_is_refused_before_training(
        config: dict[str, Any], usable: int, tmp_path: Path) -> None:
    """host-cpu feeds 128 tokens: onnxruntime failed on an out-of-range position after training (RoBERTa-style
    embeddings skip the padding id's positions, so 129 rows take 127 tokens)."""
    for teacher in ({"arch": "hf", "config": config}, {"arch": "hf", "pretrained": _saved(config, tmp_path)}):
        result = runner.invoke(app, ["validate", str(_recipe(tmp_path, teacher, TIMED))])
        _assert_one_line_error(result, f"teacher.model: it takes at most {usable} tokens, but device 'host-cpu' "
                               "feeds inputs.sequence_length 128")


@pytest.mark.parametrize("config", [{**GPT2, "n_positions": 128}, {**ROBERTA, "max_position_embeddings": 130}, GPT2])
def test_a_model_taking_the_devices_length_or_a_recipe_without_timing_validates(config: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    teacher = {"arch": "hf", "config": config}
    assert runner.invoke(app, ["validate", str(_recipe(tmp_path, teacher, TIMED))]).exit_code == 0
    short = {"arch": "hf", "config": {**GPT2, "n_positions": 64}}
    untimed = TIMED[:3]
    assert runner.invoke(app, ["validate", str(_recipe(tmp_path, short, untimed))]).exit_code == 0


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_model_with_fewer_positions_than_the_tokenizers_max_length_is_refused_before_training(
        role: str, tmp_path: Path) -> None:
    """Training feeds tokenizer.max_length tokens (32 here): a 16-position model was refused only when its stage
    built it, a student after the teacher had trained, in a recipe without a timing stage too."""
    short = {"arch": "hf", "config": {**GPT2, "n_positions": 16}}
    path = _recipe(tmp_path, {"arch": "hf", "config": GPT2}, TIMED[:3])
    recipe = yaml.safe_load(path.read_text())
    recipe[role]["model"] = short
    path.write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["validate", str(path)])
    _assert_one_line_error(result, f"{role}.model: it takes at most 16 tokens, fewer than the tokenizer's max_length "
                           "32; lower tokenizer.max_length")


def _saved(config: dict[str, Any], tmp_path: Path) -> str:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    sizes = {key: value for key, value in config.items() if key != "model_type"}
    directory = tmp_path / f"saved-{config['model_type']}"
    AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model(config["model_type"], vocab_size=100, num_labels=2, **sizes)).save_pretrained(directory)
    return str(directory)


def test_a_model_directory_without_tokenizer_files_is_refused_not_given_an_empty_vocabulary(tmp_path: Path) -> None:
    """transformers makes a tokenizer of only special tokens up from a bare model directory: every sentence became
    [UNK] and the run trained on nothing, with exit code 0."""
    from transformers import BertConfig, BertForSequenceClassification

    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1,
                                              num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="has no tokenizer files \\(expected tokenizer.json"):
        load_or_train_tokenizer(TokenizerConfig.model_construct(pretrained=str(tmp_path)), TEXTS)
    # and by validate, before anything runs (was: validate said ok, the run stopped at its first stage)
    path = _recipe(tmp_path, {"arch": "hf", "pretrained": str(tmp_path)}, TIMED[:3])
    recipe = yaml.safe_load(path.read_text())
    recipe["tokenizer"] = {"pretrained": str(tmp_path)}
    path.write_text(yaml.safe_dump(recipe))
    _assert_one_line_error(runner.invoke(app, ["validate", str(path)]), "tokenizer.pretrained",
                           f"'{tmp_path}' has no tokenizer files (expected tokenizer.json")


def test_a_sentencepiece_only_tokenizer_without_the_package_is_one_line_naming_it(tmp_path: Path) -> None:
    """ALBERT/T5/XLM-R tokenizers saved as a SentencePiece model only: without the sentencepiece package transformers
    fell back to other readers and said 'tiktoken is required'."""
    import importlib.util

    if importlib.util.find_spec("sentencepiece") is not None:
        pytest.skip("sentencepiece is installed: the model is read")
    (tmp_path / "tokenizer_config.json").write_text('{"tokenizer_class": "AlbertTokenizer"}')
    (tmp_path / "spiece.model").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match=r"has only a SentencePiece model \(spiece.model\), which needs the "
                                          r"sentencepiece package"):
        load_or_train_tokenizer(TokenizerConfig(pretrained=str(tmp_path)), TEXTS)
    path = _recipe(tmp_path, {"arch": "bilstm", "hidden": 8, "embedding_dim": 8}, TIMED[:3])
    recipe = yaml.safe_load(path.read_text())
    recipe["tokenizer"] = {"pretrained": str(tmp_path)}
    path.write_text(yaml.safe_dump(recipe))
    _assert_one_line_error(runner.invoke(app, ["validate", str(path)]), "tokenizer.pretrained",
                           "which needs the sentencepiece package")


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_a_checkpoint_of_a_smaller_vocabulary_than_the_tokenizer_is_refused_by_validate(role: str,
                                                                                       tmp_path: Path) -> None:
    """The model's embeddings have no rows for the tokenizer's last ids: refused when the model was built, so
    validate said ok and a student's refusal came after the teacher had trained."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer_dir = _byte_level_tokenizer(tmp_path / "tok", TEXTS, eos_token="<|endoftext|>")
    from transformers import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    model_dir = tmp_path / "small-vocab"
    BertForSequenceClassification(BertConfig(vocab_size=size - 3, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32)).save_pretrained(model_dir)
    path = _recipe(tmp_path, {"arch": "bilstm", "hidden": 8, "embedding_dim": 8}, TIMED[:3])
    recipe = yaml.safe_load(path.read_text())
    recipe[role]["model"] = {"arch": "hf", "pretrained": str(model_dir)}
    recipe["tokenizer"] = {"pretrained": str(tokenizer_dir), "max_length": 32}
    path.write_text(yaml.safe_dump(recipe))
    _assert_one_line_error(runner.invoke(app, ["validate", str(path)]), f"{role}.model.pretrained: '{model_dir}': "
                           f"its vocabulary has {size - 3} tokens, fewer than the tokenizer's {size}")


def test_without_a_tokenizer_section_validate_checks_against_the_pretrained_teachers_tokenizer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The run tokenizes with a pretrained teacher's own tokenizer when the recipe names none, but validate assumed
    a WordPiece trained on the data: it warned falsely that the teacher's ids came from that WordPiece, and passed a
    student of fewer tokens than the teacher's tokenizer, refused by the run after the teacher trained."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    teacher_dir = _byte_level_tokenizer(tmp_path / "teacher", TEXTS, eos_token="<|endoftext|>")
    size = len(AutoTokenizer.from_pretrained(teacher_dir))
    for directory, vocabulary in ((teacher_dir, size), (tmp_path / "student", size - 3)):
        config = BertConfig(vocab_size=vocabulary, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32)
        BertForSequenceClassification(config).save_pretrained(directory)
    path = _recipe(tmp_path, {"arch": "bilstm", "hidden": 8, "embedding_dim": 8}, TIMED[:3])
    recipe = yaml.safe_load(path.read_text())
    recipe.pop("tokenizer", None)
    recipe["teacher"]["model"] = {"arch": "hf", "pretrained": str(teacher_dir)}
    path.write_text(yaml.safe_dump(recipe))
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        assert runner.invoke(app, ["validate", str(path)]).exit_code == 0
    assert not [r for r in caplog.records if "comes with its own tokenizer" in r.getMessage()]
    recipe["student"]["model"] = {"arch": "hf", "pretrained": str(tmp_path / "student")}
    path.write_text(yaml.safe_dump(recipe))
    _assert_one_line_error(runner.invoke(app, ["validate", str(path)]), "student.model.pretrained: "
                           f"'{tmp_path / 'student'}': its vocabulary has {size - 3} tokens, fewer than the "
                           f"tokenizer's {size}")


def test_pretrained_given_as_a_path_object_or_with_a_tilde_loads(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """From Python a directory is naturally a ``pathlib.Path`` (refused as 'not a valid string'), and ``~/...``
    passed the directory check but reached transformers as a hub id. Both are kept as the expanded path's text
    (what the run record and the fingerprints show, :mod:`edgekd.config.paths`)."""
    from pydantic import TypeAdapter
    from transformers import BertConfig, BertForSequenceClassification

    from edgekd.data.examples import InputSignature
    from edgekd.models.architectures import ModelSpec
    from edgekd.models.hf import build_hf

    checkpoint = tmp_path / "home" / "my-bert"
    BertForSequenceClassification(BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                             intermediate_size=32)).save_pretrained(checkpoint)
    _byte_level_tokenizer(checkpoint, TEXTS, eos_token="<|endoftext|>")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    text = InputSignature(kind="text", vocab_size=300, pad_id=0, max_length=32)
    for given in (checkpoint, "~/my-bert"):
        spec = TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": given})
        assert spec.pretrained == str(checkpoint)
        assert build_hf(spec, text, ("neg", "pos")).config.num_labels == 2
        tokenizer = load_or_train_tokenizer(TokenizerConfig(pretrained=given), TEXTS)
        assert tokenizer.eos_token == "<|endoftext|>"


def test_a_checkpoint_with_its_own_tokenizer_fed_other_ids_is_warned_about(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A fine-tuned checkpoint saved with its tokenizer, in a recipe whose ids come from a WordPiece trained on the
    data: every id would read another token's embedding row, silently."""
    from transformers import GPT2Config, GPT2ForSequenceClassification

    checkpoint = _byte_level_tokenizer(tmp_path / "gpt2", TEXTS, eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=300, n_embd=16, n_layer=1, n_head=2, n_positions=160, pad_token_id=0,
                        bos_token_id=0, eos_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(checkpoint)
    teacher = {"arch": "hf", "pretrained": str(checkpoint)}
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        assert runner.invoke(app, ["validate", str(_recipe(tmp_path, teacher, TIMED))]).exit_code == 0
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records if r.name.startswith("edgekd")] == [
        f"teacher.model.pretrained '{checkpoint}' comes with its own tokenizer, but the token ids come from a "
        "WordPiece vocabulary trained on the data (tokenizer.pretrained is unset): its embeddings would read other "
        f"tokens' rows; set tokenizer.pretrained: {checkpoint}"]
    caplog.clear()
    recipe = yaml.safe_load(_recipe(tmp_path, teacher, TIMED).read_text())
    (tmp_path / "own.yaml").write_text(yaml.safe_dump({**recipe, "tokenizer": {"pretrained": str(checkpoint)}}))
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        assert runner.invoke(app, ["validate", str(tmp_path / "own.yaml")]).exit_code == 0
    assert [r.getMessage() for r in caplog.records if r.name.startswith("edgekd")] == []
