"""``--device`` (and ``--budget-ms``) on ``edgekd run`` / ``compress`` is the device the recipe is checked against.

A model with fewer positions than the recipe's device feeds was refused naming that device even when the command
gave another one that fits, although the refusal itself says to give one with ``--device``; and the override's own
mistakes are still one line.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from transformers import BertConfig, BertForSequenceClassification
from typer.testing import CliRunner

from edgekd.cli import app
from tests.test_text_pipeline import _write_tsv

SHORT = {"name": "short", "description": "32-token inputs", "threads": 1,
         "inputs": {"batch": 1, "sequence_length": 32, "image_size": None},
         "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}, "precision": "fp32", "isa": "detect"}


def _recipe(tmp_path: Path) -> Path:
    """A recipe on host-cpu (128-token inputs) whose teacher takes at most 64 tokens."""
    BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=64)).save_pretrained(tmp_path / "bert64")
    _write_tsv(tmp_path / "train.tsv", 60, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 20, seed=2)
    (tmp_path / "short.yaml").write_text(yaml.safe_dump(SHORT))
    recipe = {"name": "short-teacher", "device": "host-cpu",
              "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "text_column": "sentence",
                       "label_column": "label", "val_examples": 10},
              "tokenizer": {"vocab_size": 200, "max_length": 32},
              "teacher": {"model": {"arch": "hf", "pretrained": "bert64"}},
              "student": {"model": {"arch": "textcnn", "embedding_dim": 8, "filters": 8, "kernel_sizes": [1, 2]}},
              "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1},
                         {"stage": "export"}, {"stage": "profile", "runs": 10}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_run_checks_the_recipe_against_the_device_it_is_given(tmp_path: Path) -> None:
    recipe, out = _recipe(tmp_path), tmp_path / "run"
    refused = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--dry-run"])
    assert refused.exit_code == 2 and "device 'host-cpu' feeds inputs.sequence_length 128" in refused.output
    given = CliRunner().invoke(app, ["run", str(recipe), "--out", str(out), "--dry-run",
                                     "--device", str(tmp_path / "short.yaml")])
    assert given.exit_code == 0, given.output
    assert "01-teacher" in given.output and "runs" in given.output


def test_a_device_override_that_does_not_fit_either_is_named(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    (tmp_path / "long.yaml").write_text(yaml.safe_dump({**SHORT, "name": "long",
                                                        "inputs": {**SHORT["inputs"], "sequence_length": 96}}))
    outcome = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run",
                                       "--device", str(tmp_path / "long.yaml")])
    assert outcome.exit_code == 2 and "Traceback" not in outcome.output
    assert "device 'long' feeds inputs.sequence_length 96" in " ".join(outcome.output.split())
    unknown = CliRunner().invoke(app, ["run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run",
                                       "--device", "no-such-device"])
    assert unknown.exit_code == 2 and "unknown device 'no-such-device'" in unknown.output


def test_validate_checks_against_the_device_it_is_given(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path)
    refused = CliRunner().invoke(app, ["validate", str(recipe)])
    assert refused.exit_code == 2 and "device 'host-cpu' feeds inputs.sequence_length 128" in refused.output
    given = CliRunner().invoke(app, ["validate", str(recipe), "--device", str(tmp_path / "short.yaml")],
                               env={"COLUMNS": "400"})
    assert given.exit_code == 0 and f"on device '{tmp_path / 'short.yaml'}'" in given.output, given.output
    unknown = CliRunner().invoke(app, ["validate", str(recipe), "--device", "no-such-device"])
    assert unknown.exit_code == 2 and "unknown device 'no-such-device'" in unknown.output


def _bert_recipe(tmp_path: Path, teacher: dict, student: dict, *, max_length: int = 32) -> Path:
    """A text recipe of edgekd's own BERT roles (no ``arch: hf``), profiled on the device."""
    _write_tsv(tmp_path / "train.tsv", 60, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 20, seed=2)
    recipe = {"name": "bert-roles", "device": "host-cpu",
              "data": {"source": "tsv", "train": "train.tsv", "test": "dev.tsv", "text_column": "sentence",
                       "label_column": "label", "val_examples": 10},
              "tokenizer": {"vocab_size": 200, "max_length": max_length},
              "teacher": {"model": teacher}, "student": {"model": student},
              "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1},
                         {"stage": "export"}, {"stage": "profile", "runs": 10}]}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _device(tmp_path: Path, length: int) -> Path:
    path = tmp_path / f"seq{length}.yaml"
    path.write_text(yaml.safe_dump({**SHORT, "name": f"seq{length}",
                                    "inputs": {**SHORT["inputs"], "sequence_length": length}}))
    return path


def test_edgekds_own_bert_roles_are_checked_against_the_device_length(tmp_path: Path) -> None:
    """``arch: bert`` from sizes gets a position table of max(tokenizer.max_length, 512); a device feeding more
    failed in onnxruntime at the profile stage, after training. ``drop_layers`` keeps its teacher's table."""
    sized = {"arch": "bert", "layers": 2, "hidden": 16, "heads": 2, "ffn": 32}
    recipe = _bert_recipe(tmp_path, sized, {"arch": "drop_layers"})
    fits = CliRunner().invoke(app, ["validate", str(recipe), "--device", str(_device(tmp_path, 512))])
    assert fits.exit_code == 0, fits.output
    refused = CliRunner().invoke(app, ["validate", str(recipe), "--device", str(_device(tmp_path, 1000))])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert ("teacher.model: it takes at most 512 tokens, but device 'seq1000' feeds inputs.sequence_length 1000"
            in " ".join(refused.output.split()))
    longer = _bert_recipe(tmp_path, sized, {"arch": "drop_layers"}, max_length=1024)
    assert CliRunner().invoke(app, ["validate", str(longer), "--device", str(_device(tmp_path, 1000))]).exit_code == 0


def test_a_pretrained_bert_role_is_checked_against_its_checkpoints_positions(tmp_path: Path) -> None:
    BertForSequenceClassification(BertConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=32,
                                             max_position_embeddings=64)).save_pretrained(tmp_path / "bert64")
    recipe = _bert_recipe(tmp_path, {"arch": "bert", "pretrained": "bert64"},
                          {"arch": "textcnn", "embedding_dim": 8, "filters": 8, "kernel_sizes": [1, 2]})
    refused = CliRunner().invoke(app, ["validate", str(recipe), "--device", str(_device(tmp_path, 96))])
    assert refused.exit_code == 2
    assert "teacher.model: it takes at most 64 tokens" in " ".join(refused.output.split()), refused.output
    assert CliRunner().invoke(app, ["validate", str(recipe), "--device", str(_device(tmp_path, 64))]).exit_code == 0


def test_a_device_image_size_other_than_the_datas_is_refused_before_training(tmp_path: Path) -> None:
    """A device profile setting inputs.image_size 3 for the 8 × 8 digits passed validate and failed in the export
    stage, after training ('input has static shape [batch, 1, 8, 8] but the device profile sets image_size=3')."""
    from tests.conftest import demo_recipe_dict

    recipe = tmp_path / "digits.yaml"
    recipe.write_text(yaml.safe_dump(demo_recipe_dict()))
    for side, fits in ((3, False), (8, True), (None, True)):
        device = tmp_path / f"d{side}.yaml"
        device.write_text(yaml.safe_dump({**SHORT, "name": f"d{side}", "inputs": {**SHORT["inputs"],
                                                                                 "image_size": side}}))
        for command in ("validate", "run"):
            args = [command, str(recipe), "--device", str(device), *(["--dry-run"] if command == "run" else [])]
            result = CliRunner().invoke(app, args)
            if fits:
                assert result.exit_code == 0, result.output
                continue
            assert result.exit_code == 2
            assert ("device 'd3' sets inputs.image_size 3, but the recipe's models take the data's 8×8 images"
                    in " ".join(result.output.split()))
