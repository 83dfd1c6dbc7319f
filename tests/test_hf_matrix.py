"""Bring-your-own Hugging Face classifiers: every family as teacher and as student, through the pipeline.

Each case saves a tiny random checkpoint of the family (``save_pretrained``, three labels, the data
has two or ten) and runs teacher → distill → export with it in the given role: the head is
replaced with a one-line notice, the model trains, its ONNX graph takes exactly the inputs its
forward names, and the exported file matches PyTorch on the test set's padded batches.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import onnx
import pytest

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.models.families import family as family_traits
from edgekd.models.task_model import TaskModel
from edgekd.prune.structure import attention_blocks, head_counts
from edgekd.stages import check_recipe
from tests import hf_families

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
TRAINING = {"epochs": 4, "batch_size": 16, "lr": 0.002, "warmup_ratio": 0.1, "max_grad_norm": 1.0}
SMALL = {"text": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32},
         "image": {"arch": "cnn", "channels": [8, 16], "hidden": 32}}
#: The inputs each family's graph takes (its forward's names that the data gives, as its tokenizer would).
GRAPH_INPUTS = {"bert": ("input_ids", "attention_mask", "token_type_ids")}
TEXT_INPUTS = ("input_ids", "attention_mask")
#: Accuracy a family must reach in TRAINING's few epochs as the trained teacher (random init): well above
#: chance (text: 2 classes, one word decides; digits: 10 classes).
TEACHER_ACCURACY = {"text": 0.7, "image": 0.5}


@pytest.fixture(scope="module")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic sentiment TSVs and a WordPiece tokenizer trained on them, saved as a directory."""
    return hf_families.sentiment_files(tmp_path_factory.mktemp("text"))


def recipe(modality: str, role: str, checkpoint: Path, text_files: dict[str, Any],
           compress: tuple[dict[str, Any], ...] = ()) -> Recipe:
    """teacher → distill → export, the checkpoint (``arch: hf``) as ``role``, a small plain model as the other."""
    theirs, ours = {"arch": "hf", "pretrained": str(checkpoint)}, SMALL[modality]
    if modality == "text":
        root = text_files["root"]
        data = {"source": "tsv", "train": str(root / "train.tsv"), "test": str(root / "dev.tsv"), "val_examples": 80}
        extra = {"tokenizer": {"pretrained": str(root / "tokenizer"), "max_length": 32}}
    else:
        data = {"source": "sklearn", "name": "digits", "val_fraction": 0.15, "test_fraction": 0.25}
        extra = {}
    return validate_model({
        "name": f"hf-{role}", "data": data, **extra,
        "teacher": {"model": theirs if role == "teacher" else ours},
        "student": {"model": ours if role == "teacher" else theirs},
        "stages": [{"stage": "teacher", **TRAINING},
                   {"stage": "distill", **TRAINING, "losses": [{"kind": "hinton", "temperature": 2.0, "alpha": 0.5}]},
                   *compress, {"stage": "export"}],
    }, Recipe, source="matrix")


#: family → the config field stating its FFN width, and that width in the tiny checkpoint (GPT-2's: 4 × n_embd).
PRUNABLE = {"bert": ("intermediate_size", 37), "roberta": ("intermediate_size", 37),
            "llama": ("intermediate_size", 37), "qwen2": ("intermediate_size", 37), "gpt2": ("n_inner", 96),
            "distilbert": ("hidden_dim", 37), "vit": ("intermediate_size", 37)}


#: Every family in both roles. A prunable family also runs as the student through the pipeline (teacher →
#: distill → prune → export) in test_prunable_family_as_student_is_pruned_with_recovery_and_reloads, so its
#: student case here is in the slow suite; the others run in both roles by default.
CASES = [pytest.param(family, role, id=f"{family}-{role}",
                      marks=[pytest.mark.slow] if role == "student" and family in PRUNABLE else [])
         for family in (*hf_families.TEXT, *hf_families.IMAGE) for role in ("teacher", "student")]


@pytest.mark.parametrize(("family", "role"), CASES)
def test_family_in_role_trains_exports_and_reloads(family: str, role: str, text_files: dict[str, Any],
                                                    tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    check_family_in_role(family, role, text_files, tmp_path, caplog)


@pytest.mark.slow
@pytest.mark.parametrize("family", hf_families.LARGER)
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_larger_configs_in_role(family: str, role: str, text_files: dict[str, Any], tmp_path: Path,
                                caplog: pytest.LogCaptureFixture) -> None:
    check_family_in_role(family, role, text_files, tmp_path, caplog, **hf_families.LARGER[family])


def check_family_in_role(family: str, role: str, text_files: dict[str, Any], tmp_path: Path,
                         caplog: pytest.LogCaptureFixture, **sizes: Any) -> None:
    """One matrix case (see the module docstring); ``sizes`` override the family's tiny config."""
    modality = "text" if family in hf_families.TEXT else "image"
    tokenizer = text_files["tokenizer"] if modality == "text" else None
    checkpoint = hf_families.save(family, tmp_path / family, num_labels=3, tokenizer=tokenizer, **sizes)
    with caplog.at_level(logging.INFO, logger="edgekd.models.hf"):
        result = edgekd.run(recipe(modality, role, checkpoint, text_files), out=tmp_path / "run")
    classes = 2 if modality == "text" else 10
    assert f"classifier replaced: {classes} labels, checkpoint had 3" in caplog.messages
    model = result.artifact.models[role]
    if role == "teacher":
        assert model.metrics["accuracy"] > TEACHER_ACCURACY[modality]
    assert model.metrics["parity_max_abs_diff"] < 1e-4
    reloaded = TaskModel.load(tmp_path / "run" / model.weights)
    assert reloaded.module.config.model_type == family and reloaded.class_names == model_classes(result, role)
    graph = onnx.load(str(tmp_path / "run" / model.onnx)).graph
    expected = ("input",) if modality == "image" else GRAPH_INPUTS.get(family, TEXT_INPUTS)
    assert tuple(i.name for i in graph.input) == expected


def model_classes(result: Any, role: str) -> tuple[str, ...]:
    """The class names the model directory of ``role`` records (as the data gave them)."""
    other = "student" if role == "teacher" else "teacher"
    return TaskModel.load(result.run_dir / result.artifact.models[other].weights).class_names


@pytest.mark.parametrize("family", list(PRUNABLE))
def test_prunable_family_as_student_is_pruned_with_recovery_and_reloads(family: str, text_files: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    modality = "image" if family in hf_families.IMAGE else "text"  # image: digits, 10 classes
    checkpoint = hf_families.save(family, tmp_path / family, num_labels=10 if modality == "image" else 2,
                                  tokenizer=text_files["tokenizer"] if modality == "text" else None)
    decoder = family in ("llama", "qwen2")  # grouped-query KV groups pruned with the MLP channels
    described = family_traits(family).attention is not None  # heads pruned through the family's Attention
    targets = ["heads", "ffn"] if described else ["ffn"]
    prune = {"stage": "prune", "ratio": 0.5, "targets": targets, "recovery": {"epochs": 1, "lr": 0.002}}
    result = edgekd.run(recipe(modality, "student", checkpoint, text_files, compress=(prune,)), out=tmp_path / "run")
    metrics = result.stages[2].metrics["student"]
    assert metrics["params_ratio"] < 1 and metrics["parity_max_abs_diff"] < 1e-4
    student = result.artifact.models["student"]
    reloaded = TaskModel.load(tmp_path / "run" / student.weights).module
    field, width = PRUNABLE[family]
    assert reloaded.config.model_type == family and getattr(reloaded.config, field) == width - math.ceil(width / 2)
    if decoder:  # 4 query heads sharing 2 KV heads: one group of 2 query heads and its KV head go
        assert (reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads) == (2, 1)
    elif described:  # 3 heads of 8 → 1 head of 8 in each layer, stated by the family's config or the structure
        layout = family_traits(family).attention
        assert {head_counts(block, layout) for block in attention_blocks(reloaded)} == {(1, 1, 8)}
    assert student.metrics["parity_max_abs_diff"] < 1e-4


#: GPT-2 runs by default (its graph breaks onnxruntime's BERT fusion); the others take ~20 s each on 2 busy cores.
BUNDLED = [pytest.param("distilbert", marks=pytest.mark.slow), "gpt2", pytest.param("llama", marks=pytest.mark.slow)]


@pytest.mark.parametrize("family", BUNDLED)
def test_family_as_student_is_quantized_profiled_and_bundled(family: str, text_files: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """ort-mobile export, INT8 candidates (GPT-2's graph breaks onnxruntime's BERT fusion: quantized unfused).

    Quantize times its candidates briefly (one round of 20 runs): the speed verdict is not what is tested.
    """
    import json

    import numpy as np
    import onnxruntime as ort

    checkpoint = hf_families.save(family, tmp_path / family, num_labels=2, tokenizer=text_files["tokenizer"])
    built = recipe("text", "student", checkpoint, text_files).model_dump(mode="json", exclude_unset=True)
    built["stages"][-1] = {"stage": "export", "target": "ort-mobile"}
    built["stages"] += [{"stage": "quantize", "warmup": 2, "runs": 20, "rounds": 1},
                        {"stage": "profile", "warmup": 2, "runs": 10}, {"stage": "bundle"}]
    result = edgekd.run(validate_model(built, Recipe, source="matrix"), out=tmp_path / "run")
    bundle = result.run_dir / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [i["name"] for i in manifest["inputs"]] == list(TEXT_INPUTS)
    session = ort.InferenceSession(str(bundle / "model.ort"), providers=["CPUExecutionProvider"])
    encoded = text_files["tokenizer"](["a really great film", "dull"], padding=True, return_tensors="np")
    feeds = {i.name: encoded[i.name].astype(np.int64) for i in session.get_inputs()}
    assert session.run(None, feeds)[0].shape == (2, 2)


VIT_STUDENT = {"arch": "hf", "config": {"model_type": "vit", "patch_size": 2, "hidden_size": 16,
                                        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}}


def test_image_transformers_distil_hidden_states_and_attentions(text_files: dict[str, Any], tmp_path: Path) -> None:
    """ViT teacher (checkpoint) → ViT student built from a config, with hidden-state and attention losses."""
    checkpoint = hf_families.save("vit", tmp_path / "vit", num_labels=10)
    built = recipe("image", "teacher", checkpoint, text_files).model_dump(mode="json", exclude_unset=True)
    built["student"]["model"] = VIT_STUDENT
    built["stages"][1]["losses"] = [{"kind": "hinton"}, {"kind": "hidden"}, {"kind": "attention"}]
    with pytest.raises(ConfigError, match=r"stages\[1\]\.cache_teacher: the teacher-output cache stores "
                                          r"attentions, hidden_states per token of text"):
        check_recipe(validate_model(built, Recipe, source="matrix"), "matrix")
    built["stages"][1]["cache_teacher"] = False
    result = edgekd.run(validate_model(built, Recipe, source="matrix"), out=tmp_path / "run")
    student = result.artifact.models["student"]
    assert student.metrics["parity_max_abs_diff"] < 1e-4 and student.metrics["accuracy"] > 0.1
    assert TaskModel.load(tmp_path / "run" / student.weights).module.config.num_hidden_layers == 1
