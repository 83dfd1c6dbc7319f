"""The architecture contract, checked for every registered ``arch``: build → export → parity → reload.

Each registered architecture needs a tiny example here (a test fails until it has one); the example is built
through the path a recipe takes (:func:`edgekd.models.task_model.build_task_model`), exported to ONNX (whose
parity with PyTorch the exporter checks), saved, reloaded, and must give the same logits in all three.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from pydantic import TypeAdapter

from edgekd.config.device import InputShape
from edgekd.data.examples import InputSignature
from edgekd.errors import ConfigError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.architectures import ARCHITECTURES, IMAGE_ARCHS, SEARCHABLE, ModelSpec
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel, build_task_model

CLASSES = ("a", "b", "c")
VOCAB, PAD, SEQUENCE = 60, 0, 9
TEXT = InputSignature(kind="text", vocab_size=VOCAB, pad_id=PAD, max_length=16)
DIGITS = InputSignature(kind="image", image_shape=(1, 8, 8))
PHOTOS = InputSignature(kind="image", image_shape=(3, 32, 32))
BERT = {"arch": "bert", "layers": 2, "hidden": 12, "heads": 3, "ffn": 20, "dropout": 0.0}
#: The ONNX file of the ``onnx`` example: the ``mlp`` example exported (made by :func:`_build` when first needed).
ONNX_FILE = Path(tempfile.gettempdir()) / f"edgekd-architectures-{os.getpid()}" / "mlp.onnx"
atexit.register(shutil.rmtree, ONNX_FILE.parent, True)

#: A tiny example of every registered architecture and the inputs it takes.
TINY: dict[str, tuple[dict[str, Any], InputSignature]] = {
    "cnn": ({"arch": "cnn", "channels": [4, 6], "hidden": 8}, DIGITS),
    "mlp": ({"arch": "mlp", "hidden": [10, 6]}, DIGITS),
    "resnet": ({"arch": "resnet", "depths": [1, 1], "widths": [8, 12], "stem": 8}, PHOTOS),
    "mobilenet_v2": ({"arch": "mobilenet_v2", "width_multiplier": 0.25, "dropout": 0.0}, PHOTOS),
    "bert": (BERT, TEXT),
    "hf": ({"arch": "hf", "config": {"model_type": "distilbert", "vocab_size": VOCAB, "dim": 12, "n_layers": 1,
                                     "n_heads": 3, "hidden_dim": 20, "max_position_embeddings": 16,
                                     "pad_token_id": PAD}}, TEXT),
    "drop_layers": ({"arch": "drop_layers", "keep": [1]}, TEXT),
    "bilstm": ({"arch": "bilstm", "embedding_dim": 8, "hidden": 6, "layers": 2, "fc_hidden": 7}, TEXT),
    "textcnn": ({"arch": "textcnn", "embedding_dim": 8, "filters": 5, "kernel_sizes": [2, 4]}, TEXT),
    "module": ({"arch": "module", "factory": "tests.user_modules:small_cnn", "kwargs": {"width": 4, "classes": 3}},
               DIGITS),
    "onnx": ({"arch": "onnx", "path": str(ONNX_FILE)}, DIGITS),
}


def _spec(arch: str) -> Any:
    return TypeAdapter(ModelSpec).validate_python(TINY[arch][0])


def _inputs(signature: InputSignature) -> dict[str, torch.Tensor]:
    """Three random examples; text ones of three lengths (right-padded), so padding is exercised."""
    generator = torch.Generator().manual_seed(0)
    if signature.kind == "image":
        return {"input": torch.randn(3, *signature.image_shape, generator=generator)}
    ids = torch.randint(1, VOCAB, (3, SEQUENCE), generator=generator)
    mask = (torch.arange(SEQUENCE) < torch.tensor([[SEQUENCE], [5], [2]])).long()
    return {"input_ids": ids * mask + PAD * (1 - mask), "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _build(arch: str) -> TaskModel:
    spec, signature = TINY[arch]
    if arch == "onnx" and not ONNX_FILE.is_file():
        mlp = _build("mlp")
        export_onnx(mlp.module, _inputs(DIGITS), ONNX_FILE, load_export_target("onnx-fp32"))
    torch.manual_seed(0)
    teacher = build_task_model(_spec("bert"), signature, CLASSES) if arch == "drop_layers" else None
    return build_task_model(_spec(arch), signature, CLASSES, teacher=teacher)


def test_every_registered_architecture_has_a_tiny_example() -> None:
    assert set(TINY) == set(ARCHITECTURES)
    assert set(IMAGE_ARCHS) <= {arch for arch, (_, signature) in TINY.items() if signature.kind == "image"}
    assert set(SEARCHABLE) == {arch for arch, entry in ARCHITECTURES.items() if entry.spec.search_space}


@pytest.mark.parametrize("arch", sorted(TINY))
def test_the_recipe_union_reads_each_arch_as_its_registered_spec(arch: str) -> None:
    assert type(_spec(arch)) is ARCHITECTURES[arch].spec and _spec(arch).arch == arch


@pytest.mark.parametrize("arch", sorted(TINY))
def test_build_export_parity_reload(arch: str, tmp_path: Path) -> None:
    model = _build(arch)
    inputs = _inputs(model.signature)
    with torch.no_grad():
        built = call_logits(model.module.eval(), inputs).numpy()
    assert built.shape == (3, len(CLASSES)) and np.isfinite(built).all()
    if ARCHITECTURES[arch].spec.trainable:
        # checked at a device's 24 tokens too (within the model's positions: the hf example takes 16) and a second
        # length: every text arch's graph runs at lengths other than the one it was traced at
        result = export_onnx(model.module, inputs, tmp_path / "model.onnx", load_export_target("onnx-fp32"),
                             extra_dynamic_axes=model.signature.dynamic_axes(), shape=InputShape(sequence_length=24))
        assert result.parity.max_abs_diff < 1e-4
        lengths = {dims[1] for shapes in result.checked_shapes for name, dims in shapes.items() if name == "input_ids"}
        assert len(lengths) == (3 if model.signature.kind == "text" else 0)
        assert not lengths or lengths & {16, 24}  # the device length, or the positions it is cut to
    else:  # a model given as an ONNX file is its own export (the export stage does not export it again)
        shutil.copy(model.module.path, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name].numpy() for i in session.get_inputs()}
    np.testing.assert_allclose(session.run(None, feeds)[0], built, atol=1e-4)
    reloaded = TaskModel.load(model.save(tmp_path / "model"))
    assert reloaded.spec == model.spec and reloaded.class_names == CLASSES and reloaded.params == model.params
    with torch.no_grad():
        np.testing.assert_allclose(call_logits(reloaded.module, inputs).numpy(), built, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(a for a, e in ARCHITECTURES.items() if isinstance(e.spec.modality, str)))
def test_an_arch_given_the_other_modality_is_one_line_naming_it(arch: str) -> None:
    spec = _spec(arch)
    other, wanted = (TEXT, "images") if spec.modality == "image" else (DIGITS, "text")
    with pytest.raises(ConfigError, match=rf"^model arch '{arch}' takes {wanted}, but the recipe's data is "
                                          rf"{'text' if other is TEXT else 'images'}$"):
        build_task_model(spec, other, CLASSES)


TAGS = dataclasses.replace(TEXT, per_token=True)
#: Archs built as taggers for token data (an ONNX teacher is the file it is: its tests are test_onnx_teacher.py).
TAGGING = sorted(arch for arch, entry in ARCHITECTURES.items() if entry.spec.tags_tokens and entry.spec.trainable)


@pytest.mark.parametrize("arch", TAGGING)
def test_every_tagging_arch_answers_per_token_exports_and_reloads(arch: str, tmp_path: Path) -> None:
    """An arch whose spec says it ``tags_tokens`` builds, for token classification data, a model answering
    ``[batch, sequence, tags]`` whose real tokens' logits padding does not change, exported with a dynamic
    sequence axis on the output too, and reloaded as a tagger."""
    signature = TAGS
    torch.manual_seed(0)
    teacher = build_task_model(_spec("bert"), signature, CLASSES) if arch == "drop_layers" else None
    model = build_task_model(_spec(arch), signature, CLASSES, teacher=teacher)
    inputs = _inputs(signature)
    real = inputs["attention_mask"].bool()
    with torch.no_grad():
        tagged = call_logits(model.module.eval(), inputs)
        alone = call_logits(model.module, {name: value[1:2, :5] for name, value in inputs.items()})
    assert tagged.shape == (3, SEQUENCE, len(CLASSES)) and torch.isfinite(tagged).all()
    torch.testing.assert_close(alone[0], tagged[1, :5], atol=1e-5, rtol=0)
    result = export_onnx(model.module, inputs, tmp_path / "model.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes=signature.dynamic_axes())
    assert result.parity.max_abs_diff < 1e-4
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    shorter = {i.name: inputs[i.name][1:, :6].numpy() for i in session.get_inputs()}  # rows of 5 and 2 tokens
    answered = session.run(None, shorter)[0]
    assert answered.shape == (2, 6, len(CLASSES))
    kept = real[1:, :6]
    np.testing.assert_allclose(answered[kept.numpy()], tagged[1:, :6][kept].numpy(), atol=1e-4)
    reloaded = TaskModel.load(model.save(tmp_path / "model"))
    assert reloaded.signature.per_token
    with torch.no_grad():
        np.testing.assert_allclose(call_logits(reloaded.module, inputs).numpy(), tagged.numpy(), atol=1e-6)


def test_a_user_module_is_refused_for_token_classification() -> None:
    with pytest.raises(ConfigError, match=r"^model arch 'module' classifies whole inputs, but the data is token "
                                          r"classification \(a tag per token\); use one that tags tokens \(bert, "):
        build_task_model(_spec("module"), TAGS, CLASSES)
