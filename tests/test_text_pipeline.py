"""Text distillation through the whole pipeline on a small synthetic sentiment set (no shared data needed)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.models.task_model import TaskModel

GOOD = ["great", "lovely", "superb", "charming", "moving", "fun"]
BAD = ["dull", "awful", "boring", "tedious", "messy", "flat"]
FILLER = ["the", "film", "is", "a", "story", "with", "its", "cast", "and", "plot", "quite", "really"]


def _write_tsv(path: Path, rows: int, seed: int) -> None:
    rng = random.Random(seed)
    lines = ["sentence\tlabel"]
    for _ in range(rows):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, rng.randint(3, 9)) + [rng.choice(GOOD if label else BAD)]
        rng.shuffle(words)
        lines.append(" ".join(words) + f" \t{label}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def text_data(tmp_path: Path) -> dict:
    _write_tsv(tmp_path / "train.tsv", 400, seed=1)
    _write_tsv(tmp_path / "dev.tsv", 80, seed=2)
    return {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv"),
            "val_examples": 80}


def _recipe(text_data: dict, student: dict, distills: list[dict], **extra) -> Recipe:
    training = {"epochs": 6, "batch_size": 16, "lr": 0.003, "warmup_ratio": 0.1, "max_grad_norm": 1.0}
    recipe = {
        "name": "text-test",
        "data": text_data,
        "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 2, "hidden": 32, "heads": 2, "ffn": 64}},
        "student": {"model": student},
        "stages": [{"stage": "teacher", **training}, *[{"stage": "distill", **training, **d} for d in distills],
                   {"stage": "export"}, {"stage": "profile", "warmup": 3, "runs": 20}, {"stage": "report"}],
        **extra,
    }
    return validate_model(recipe, Recipe, source="test")


ALL_TRANSFORMER_LOSSES = [
    {"kind": "hinton", "temperature": 2.0, "alpha": 0.5}, {"kind": "embedding"}, {"kind": "hidden"},
    {"kind": "attention"}, {"kind": "cosine"}, {"kind": "pkd", "layer_map": {"kind": "last"}},
    {"kind": "minilm", "relation_heads": 2},
]


def test_transformer_student_with_every_loss(text_data: dict, tmp_path: Path) -> None:
    student = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    result = edgekd.run(_recipe(text_data, student, [{"losses": ALL_TRANSFORMER_LOSSES}]), out=tmp_path / "run")
    report = result.report()
    assert report["teacher"]["accuracy"] > 0.9  # one sentiment word decides the label: easy
    assert report["student"]["accuracy"] > 0.8
    assert report["student"]["params"] < report["teacher"]["params"]
    assert report["student"]["parity_max_abs_diff"] < 1e-4
    model = TaskModel.load(tmp_path / "run" / "02-distill" / "student")
    assert model.tokenizer is not None and model.module.config.num_hidden_layers == 1


def test_layer_dropped_student_and_bilstm_with_augmentation(text_data: dict, tmp_path: Path) -> None:
    dropped = edgekd.run(_recipe(text_data, {"arch": "drop_layers", "keep": [1]},
                                 [{"losses": [{"kind": "hinton"}, {"kind": "cosine"}]}]), out=tmp_path / "drop")
    assert dropped.report()["student"]["accuracy"] > 0.8
    bilstm = {"arch": "bilstm", "embedding_dim": 32, "hidden": 16, "fc_hidden": 16}
    augment = {"copies": 2, "p_mask": 0.1, "p_ngram": 0.25, "max_ngram": 3}
    # Logit MSE mixed with cross-entropy, which counts only the labelled sentences of the transfer set.
    losses = [{"kind": "logit_mse"}, {"kind": "hinton", "alpha": 0.0, "weight": 0.5}]
    result = edgekd.run(_recipe(text_data, bilstm, [{"losses": losses, "augment": augment}]), out=tmp_path / "bilstm")
    distill = result.stages[1].metrics["student"]
    assert distill["transfer_set_size"] > 320 + 250  # the 320 labelled sentences plus augmented copies
    assert result.report()["student"]["accuracy"] > 0.7


def test_ensemble_and_assistant_chain(text_data: dict, tmp_path: Path) -> None:
    student = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    recipe = _recipe(text_data, student, [{"losses": [{"kind": "hinton"}]}]).model_dump(mode="json")
    recipe["teacher"]["ensemble"] = {"members": 2, "weighting": "accuracy"}
    result = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "ensemble")
    teacher = result.stages[0].metrics["teacher"]
    assert len(teacher["members"]) == 2 and 0 <= teacher["ensemble_accuracy"] <= 1
    assert len(result.artifact.get("teacher").members) == 2
    assert result.report()["student"]["accuracy"] > 0.8

    # The trained members reload from their weight files, one per member, on the same fixed split.
    stage_dir = tmp_path / "ensemble" / "01-teacher"
    assert sorted(p.name for p in stage_dir.iterdir() if p.is_dir()) == ["teacher", "teacher-1"]  # no checkpoints left
    recipe["teacher"]["weights"] = [str(stage_dir / name / "model.safetensors") for name in ("teacher", "teacher-1")]
    recipe["data"]["split_seed"] = recipe["seed"]
    recipe["seed"] += 1
    recipe["stages"] = recipe["stages"][:1]
    reloaded = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "reloaded")
    members = reloaded.stages[0].metrics["teacher"]["members"]
    assert [m["accuracy"] for m in members] == [m["accuracy"] for m in teacher["members"]]
    assert [m["val_accuracy"] for m in members] == [m["val_accuracy"] for m in teacher["members"]]

    chain = _recipe(text_data, student, [{"teacher": "teacher", "student": "assistant"},
                                         {"teacher": "assistant", "student": "student"}],
                    assistant={"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}})
    result = edgekd.run(chain, out=tmp_path / "chain")
    assert set(result.artifact.models) == {"teacher", "assistant", "student"}
    assert result.report()["student"]["accuracy"] > 0.8


def test_ensemble_rejects_intermediate_losses(text_data: dict, tmp_path: Path) -> None:
    student = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    recipe = _recipe(text_data, student, [{"losses": [{"kind": "hidden"}]}]).model_dump(mode="json")
    recipe["teacher"]["ensemble"] = {"members": 2}
    recipe["stages"][0]["epochs"] = 1
    with pytest.raises(ConfigError, match="soft targets only"):
        edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "bad")
