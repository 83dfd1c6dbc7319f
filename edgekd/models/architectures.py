"""Every model architecture a recipe can name, by its ``arch``: its spec and how a module is built from it.

The recipe's model union (:data:`ModelSpec`), the builder :func:`build_module` picks, the image families
(:data:`IMAGE_ARCHS`) and the archs a budget search can vary (:data:`SEARCHABLE`) all come from
:data:`ARCHITECTURES`. Adding an architecture: its spec (a :class:`~edgekd.models.specs.SpecBase` with its
traits) and its builder, one line here, and its tiny example in ``tests/test_architectures.py``, whose
contract test builds, exports, checks parity and reloads every registered architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import Field
from torch import nn

from edgekd.data.examples import InputSignature
from edgekd.errors import ConfigError
from edgekd.models import hf
from edgekd.models.builders import build_cnn, build_mlp
from edgekd.models.specs import (
    BertSpec,
    BiLSTMSpec,
    CNNSpec,
    DropLayersSpec,
    HFSpec,
    MLPSpec,
    MobileNetV2Spec,
    ModuleSpec,
    ResNetSpec,
    SpecBase,
    TextCNNSpec,
)
from edgekd.models.text_students import BiLSTMClassifier, TextCNNClassifier
from edgekd.models.user_module import build_user_module
from edgekd.models.vision import build_mobilenet_v2, build_resnet

Builder = Callable[[Any, InputSignature, tuple[str, ...], nn.Module | None], nn.Module]
"""``(spec, input signature, class names, teacher module or None) -> module``, randomly initialised (seed torch
first); only ``drop_layers`` uses the teacher."""


@dataclass(frozen=True)
class Architecture:
    """One ``arch``: the spec a recipe writes and the builder of its module."""

    spec: type[SpecBase]
    build: Builder

    @property
    def arch(self) -> str:
        """The name a recipe's ``model.arch`` gives it."""
        return self.spec.model_fields["arch"].annotation.__args__[0]


def _image(build: Callable[[Any, tuple[int, ...], int], nn.Module]) -> Builder:
    """An image classifier's builder, taking the image shape and the class count."""
    return lambda spec, signature, class_names, _teacher: build(spec, tuple(signature.image_shape), len(class_names))


def _text_student(module: Callable[[Any, int, int, int], nn.Module]) -> Builder:
    """A text student's builder, taking the vocabulary size, the class count and the padding id."""
    return lambda spec, signature, class_names, _teacher: module(spec, signature.vocab_size, len(class_names),
                                                                 signature.pad_id)


def _bert(spec: BertSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
          ) -> nn.Module:
    return hf.build_bert(spec, vocab_size=signature.vocab_size, num_classes=len(class_names), pad_id=signature.pad_id,
                         max_positions=signature.max_length, per_token=signature.per_token)


def _hf(spec: HFSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
        ) -> nn.Module:
    return hf.build_hf(spec, signature, class_names)


def _drop_layers(spec: DropLayersSpec, _signature: InputSignature, _class_names: tuple[str, ...],
                 teacher: nn.Module | None) -> nn.Module:
    if teacher is None:
        raise ConfigError("model arch 'drop_layers' is built from a teacher; none was given")
    return hf.drop_layers(teacher, spec)


def _module(spec: ModuleSpec, signature: InputSignature, class_names: tuple[str, ...], _teacher: nn.Module | None
            ) -> nn.Module:
    return build_user_module(spec, signature, len(class_names))


#: Every architecture, by ``arch`` (the recipe union lists them in this order).
ARCHITECTURES: dict[str, Architecture] = {entry.arch: entry for entry in (
    Architecture(CNNSpec, _image(build_cnn)),
    Architecture(MLPSpec, _image(build_mlp)),
    Architecture(ResNetSpec, _image(build_resnet)),
    Architecture(MobileNetV2Spec, _image(build_mobilenet_v2)),
    Architecture(BertSpec, _bert),
    Architecture(HFSpec, _hf),
    Architecture(DropLayersSpec, _drop_layers),
    Architecture(BiLSTMSpec, _text_student(BiLSTMClassifier)),
    Architecture(TextCNNSpec, _text_student(TextCNNClassifier)),
    Architecture(ModuleSpec, _module),
)}

#: A recipe's ``model``: the tagged union of every registered spec.
ModelSpec = Annotated[Union[tuple(entry.spec for entry in ARCHITECTURES.values())],  # noqa: UP007
                      Field(discriminator="arch")]

#: Image classifiers of their own (``hf`` answers its modality from its family; ``module`` takes the data's).
IMAGE_ARCHS = tuple(arch for arch, entry in ARCHITECTURES.items() if entry.spec.modality == "image")
#: The student architectures a budget search can vary (those whose spec has a default ``search_space``).
SEARCHABLE = tuple(arch for arch, entry in ARCHITECTURES.items() if entry.spec.search_space)


def spec_class(arch: str) -> type[SpecBase]:
    """The spec of the registered ``arch``."""
    return ARCHITECTURES[arch].spec


def build_module(spec: Any, signature: InputSignature, class_names: tuple[str, ...],
                 teacher: nn.Module | None = None) -> nn.Module:
    """The randomly initialised module ``spec`` describes (seed torch first for determinism)."""
    return ARCHITECTURES[spec.arch].build(spec, signature, class_names, teacher)


def build_model(spec: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An image classifier of a registered image arch for images of ``input_shape`` (seed torch first)."""
    return build_module(spec, InputSignature(kind="image", image_shape=tuple(input_shape)), _classes(num_classes))


def build_text_student(spec: Any, *, vocab_size: int, num_classes: int, pad_id: int) -> nn.Module:
    """A text student (``bilstm``, ``textcnn``) over a tokenizer's ``vocab_size`` ids padded with ``pad_id``."""
    signature = InputSignature(kind="text", vocab_size=vocab_size, pad_id=pad_id)
    return build_module(spec, signature, _classes(num_classes))


def _classes(count: int) -> tuple[str, ...]:
    """Class names for builders that need only their number."""
    return tuple(str(index) for index in range(count))
