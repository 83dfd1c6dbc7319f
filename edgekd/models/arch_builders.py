"""The builder of each architecture the registry (:mod:`edgekd.models.architectures`) names by import path.

Each is ``(spec, input signature, class names, teacher module or None) -> module``, randomly initialised
(seed torch first); only ``drop_layers`` uses the teacher. They live apart from the registry so that reading
a recipe (the registry's specs) does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from edgekd.data.examples import InputSignature
from edgekd.errors import ConfigError
from edgekd.models import hf
from edgekd.models.builders import build_cnn as _build_cnn
from edgekd.models.builders import build_mlp as _build_mlp
from edgekd.models.onnx_teacher import build_onnx_teacher
from edgekd.models.specs import BertSpec, DropLayersSpec, HFSpec, ModuleSpec, OnnxSpec
from edgekd.models.text_students import BiLSTMClassifier, TextCNNClassifier
from edgekd.models.user_module import build_user_module
from edgekd.models.vision import build_mobilenet_v2 as _build_mobilenet_v2
from edgekd.models.vision import build_resnet as _build_resnet

Builder = Callable[[Any, InputSignature, tuple[str, ...], nn.Module | None], nn.Module]


def _image(build: Callable[[Any, tuple[int, ...], int], nn.Module]) -> Builder:
    """An image classifier's builder, taking the image shape and the class count."""
    return lambda spec, signature, class_names, _teacher: build(spec, tuple(signature.image_shape), len(class_names))


def _text_student(module: Callable[..., nn.Module]) -> Builder:
    """A text student's builder, taking the vocabulary size, the class count, the padding id and whether it tags
    each token."""
    return lambda spec, signature, class_names, _teacher: module(spec, signature.vocab_size, len(class_names),
                                                                 signature.pad_id, per_token=signature.per_token)


cnn = _image(_build_cnn)
mlp = _image(_build_mlp)
resnet = _image(_build_resnet)
mobilenet_v2 = _image(_build_mobilenet_v2)
bilstm = _text_student(BiLSTMClassifier)
textcnn = _text_student(TextCNNClassifier)


def bert(spec: BertSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
         ) -> nn.Module:
    """A BERT classifier (``arch: bert``) of the spec's sizes or checkpoint."""
    return hf.build_bert(spec, vocab_size=signature.vocab_size, num_classes=len(class_names), pad_id=signature.pad_id,
                         max_positions=signature.max_length, per_token=signature.per_token,
                         class_names=class_names)


def hf_model(spec: HFSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
             ) -> nn.Module:
    """Any Hugging Face classifier (``arch: hf``)."""
    return hf.build_hf(spec, signature, class_names)


def drop_layers(spec: DropLayersSpec, _signature: InputSignature, _class_names: tuple[str, ...],
                teacher: nn.Module | None) -> nn.Module:
    """The teacher with layers dropped (``arch: drop_layers``)."""
    if teacher is None:
        raise ConfigError("model arch 'drop_layers' is built from a teacher; none was given")
    return hf.drop_layers(teacher, spec)


def module(spec: ModuleSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
           ) -> nn.Module:
    """The user's own module (``arch: module``)."""
    return build_user_module(spec, signature, len(class_names))


def onnx(spec: OnnxSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
         ) -> nn.Module:
    """A trained model as an ONNX file, run by onnxruntime (``arch: onnx``)."""
    return build_onnx_teacher(spec, signature, len(class_names))
