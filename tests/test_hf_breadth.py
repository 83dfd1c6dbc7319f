"""More Hugging Face families as a bring-your-own teacher: teacher → distill → export, or one line refusing them.

The families here are ones no issue names (encoders, decoders and vision backbones beyond the matrix of
``test_hf_matrix``, each a tiny random checkpoint saved with ``save_pretrained``; causal-LM families beyond
the generation tests', built from sizes and exported with their KV cache). A family either trains,
exports with its graph matching PyTorch and reloads, or is refused by validate in one line naming its key and
the family before anything trains; never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

import edgekd
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.models.task_model import TaskModel
from tests import char_lm, hf_families
from tests.test_hf_matrix import recipe

pytestmark = [pytest.mark.slow,  # ~55 s for all (one epoch each); the default suite is at its time budget
              pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                         "ignore::torch.jit.TracerWarning")]

_LAYERS = dict(num_hidden_layers=2, max_position_embeddings=160)
TEXT: dict[str, dict[str, Any]] = {
    "electra": dict(embedding_size=16, hidden_size=24, num_attention_heads=3, intermediate_size=37, **_LAYERS),
    "xlm-roberta": dict(hidden_size=24, num_attention_heads=3, intermediate_size=37, num_hidden_layers=2,
                        max_position_embeddings=162),
    "deberta-v2": dict(hidden_size=24, num_attention_heads=3, intermediate_size=37, relative_attention=True,
                       pos_att_type=["p2c", "c2p"], type_vocab_size=0, **_LAYERS),
    "albert": dict(embedding_size=16, hidden_size=24, num_attention_heads=3, intermediate_size=37, **_LAYERS),
    "mpnet": dict(hidden_size=24, num_attention_heads=3, intermediate_size=37, num_hidden_layers=2,
                  max_position_embeddings=162),
    "mobilebert": dict(hidden_size=24, embedding_size=16, num_attention_heads=3, intermediate_size=36,
                       intra_bottleneck_size=12, true_hidden_size=12, num_feedforward_networks=1, **_LAYERS),
    "modernbert": dict(hidden_size=24, num_attention_heads=3, intermediate_size=37, global_attn_every_n_layers=1,
                       **_LAYERS),
    "phi": dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, **_LAYERS),
    "falcon": dict(hidden_size=24, num_attention_heads=4, num_hidden_layers=2),
    "gpt_neox": dict(hidden_size=32, num_attention_heads=4, intermediate_size=37, **_LAYERS),
    "opt": dict(hidden_size=24, num_attention_heads=4, ffn_dim=37, word_embed_proj_dim=24, **_LAYERS),
    "bloom": dict(hidden_size=24, n_layer=2, n_head=4),
    "stablelm": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=37, **_LAYERS),
    # exported through edgekd.export.op_patches: repeat_interleave in the rotary embedding, torch's own RMSNorm
    **dict.fromkeys(("glm", "glm4", "helium", "diffllama"), dict(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=37, head_dim=8, **_LAYERS)),
}
IMAGE: dict[str, dict[str, Any]] = {
    "swin": dict(image_size=8, patch_size=2, num_channels=1, embed_dim=12, depths=[1, 1], num_heads=[2, 2],
                 window_size=2),
    "beit": dict(image_size=8, patch_size=2, num_channels=1, hidden_size=24, num_hidden_layers=2,
                 num_attention_heads=3, intermediate_size=37),
    "dinov2": dict(image_size=8, patch_size=2, num_channels=1, hidden_size=24, num_hidden_layers=2,
                   num_attention_heads=3, mlp_ratio=2),
    "regnet": dict(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8),
    "mobilevit": dict(num_channels=1, image_size=8, hidden_sizes=[16, 16, 16],
                      neck_hidden_sizes=[8, 8, 16, 16, 16, 16, 32]),
    "convnextv2": dict(num_channels=1, patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=8),
    "poolformer": dict(num_channels=1, hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, patch_sizes=[2, 2],
                       strides=[2, 2], padding=[0, 0]),
    # antialiased bicubic resize of its position embeddings (edgekd.export.op_patches)
    "dinov2_with_registers": dict(image_size=8, patch_size=2, num_channels=1, hidden_size=24, num_hidden_layers=2,
                                  num_attention_heads=3, mlp_ratio=2, num_register_tokens=2),
}
#: Families that cannot take the data (digits are 8 × 8 pixels) and the reason their forward gives.
REFUSED = {"efficientnet": (dict(num_channels=1, image_size=8, width_coefficient=0.1, depth_coefficient=0.1),
                            "Kernel size can't be greater than actual input size")}
ONE_EPOCH = {"epochs": 1, "batch_size": 16, "lr": 0.002}


@pytest.fixture(scope="module")
def text_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The synthetic sentiment TSVs and their WordPiece tokenizer (see :func:`hf_families.sentiment_files`)."""
    return hf_families.sentiment_files(tmp_path_factory.mktemp("text"))


def _checkpoint(family: str, sizes: dict[str, Any], directory: Path, tokenizer: Any) -> Path:
    torch.manual_seed(0)
    if tokenizer is not None:
        sizes = {**sizes, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
        tokenizer.save_pretrained(directory)
    auto = AutoModelForSequenceClassification if tokenizer is not None else AutoModelForImageClassification
    auto.from_config(AutoConfig.for_model(family, num_labels=3, **sizes)).save_pretrained(directory)
    return directory


def _one_epoch(built: Any) -> Any:
    return built.model_copy(update={"stages": [s.model_copy(update=ONE_EPOCH) if s.stage in ("teacher", "distill")
                                               else s for s in built.stages]})


@pytest.mark.parametrize("family", [*TEXT, *IMAGE])
def test_a_family_as_teacher_trains_exports_with_parity_and_reloads(family: str, text_files: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    modality = "text" if family in TEXT else "image"
    tokenizer = text_files["tokenizer"] if modality == "text" else None
    checkpoint = _checkpoint(family, {**TEXT, **IMAGE}[family], tmp_path / family, tokenizer)
    result = edgekd.run(_one_epoch(recipe(modality, "teacher", checkpoint, text_files)), out=tmp_path / "run")
    teacher = result.artifact.models["teacher"]
    assert teacher.metrics["parity_max_abs_diff"] < 1e-4
    assert TaskModel.load(tmp_path / "run" / teacher.weights).module.config.model_type == family


@pytest.mark.parametrize("family", REFUSED)
def test_a_family_that_cannot_take_the_data_is_one_line_before_training(family: str, text_files: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    sizes, reason = REFUSED[family]
    checkpoint = _checkpoint(family, sizes, tmp_path / family, None)
    with pytest.raises(ConfigError, match=rf"teacher\.model\.pretrained: '.*': model 'hf' \({family}\) does not run "
                                          rf"on the data's inputs .*{reason}"):
        edgekd.run(_one_epoch(recipe("image", "teacher", checkpoint, text_files)), out=tmp_path / "run")
    assert not (tmp_path / "run" / "01-teacher" / "teacher").exists()


_DECODER = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, max_position_embeddings=128)
_GQA = dict(_DECODER, num_key_value_heads=2, intermediate_size=48)
#: Causal-LM families beyond the ones the causal-LM tests build (gpt2, llama, qwen2 ...), as generation teachers.
CAUSAL_LM: dict[str, dict[str, Any]] = {
    "phi": dict(_DECODER, intermediate_size=48), "gemma2": dict(_GQA, head_dim=8), "falcon": dict(_DECODER),
    "gpt_neox": dict(_DECODER, intermediate_size=48), "opt": dict(_DECODER, ffn_dim=48, word_embed_proj_dim=32),
    "bloom": dict(hidden_size=32, n_layer=2, n_head=4), "stablelm": dict(_GQA), "olmo": dict(_GQA),
    "starcoder2": dict(_GQA), "gptj": dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=128),
    "codegen": dict(n_embd=32, n_layer=2, n_head=4, rotary_dim=4, n_positions=128, n_ctx=128),
    "gpt_bigcode": dict(n_embd=32, n_layer=2, n_head=4, n_positions=128),
    # exported through edgekd.export.op_patches (interleaved rotary frequencies, RMSNorm, xIELU's expm1)
    **dict.fromkeys(("glm", "glm4", "helium", "cohere", "cohere2", "diffllama", "apertus"), dict(_GQA, head_dim=8)),
}
GPT2_STUDENT = {"arch": "hf", "config": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2}}


@pytest.mark.parametrize("family", CAUSAL_LM)
def test_a_causal_lm_family_as_teacher_distils_and_exports_with_its_cache(family: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(char_lm.TEXT * 4, encoding="utf-8")
    recipe_dict = {
        "name": family, "data": {"source": "corpus", "path": str(corpus), "context": 32}, "tokenizer": {"kind": "char"},
        "teacher": {"model": {"arch": "hf", "config": {"model_type": family, **CAUSAL_LM[family]}}},
        "student": {"model": GPT2_STUDENT}, "device": "host-cpu",
        "stages": [{"stage": "teacher", **ONE_EPOCH},
                   {"stage": "distill", **ONE_EPOCH, "losses": [{"kind": "token_kl", "alpha": 0.5}]},
                   {"stage": "export"}],
    }
    result = edgekd.run(validate_model(recipe_dict, Recipe, source=family), out=tmp_path / "run")
    teacher = result.artifact.models["teacher"]
    assert teacher.metrics["parity_max_abs_diff"] < 1e-4 and teacher.metrics["val_loss"] > 0
    assert [i.name for i in onnx.load(str(tmp_path / "run" / teacher.onnx)).graph.input][:2] == ["input_ids",
                                                                                                  "attention_mask"]
