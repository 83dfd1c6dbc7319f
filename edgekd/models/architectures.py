"""Every model architecture a recipe can name, by its ``arch``: its spec and how a module is built from it.

The recipe's model union (:data:`ModelSpec`), the builder :func:`build_module` picks, the image families
(:data:`IMAGE_ARCHS`) and the archs a budget search can vary (:data:`SEARCHABLE`) all come from
:data:`ARCHITECTURES`. Adding an architecture: its spec (a :class:`~edgekd.models.specs.SpecBase` with its
traits), its builder in :mod:`edgekd.models.arch_builders`, one line here (with a validate-time ``check`` when
the spec must be tried on the recipe's data, and ``positions`` when its text models take a bounded number of
tokens), and its tiny example in ``tests/test_architectures.py``, whose contract test builds, exports, checks
parity and reloads every registered architecture.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from edgekd.models.specs import (
    BertSpec,
    BiLSTMSpec,
    CNNSpec,
    DropLayersSpec,
    HFSpec,
    MLPSpec,
    MobileNetV2Spec,
    ModuleSpec,
    OnnxSpec,
    ResNetSpec,
    SpecBase,
    TextCNNSpec,
)

if TYPE_CHECKING:
    from torch import nn

    from edgekd.data.examples import InputSignature
    from edgekd.models.arch_builders import Builder


@dataclass(frozen=True)
class Architecture:
    """One ``arch``: the spec a recipe writes and its builder, named by import path (imported when building, so
    reading a recipe does not import torch)."""

    spec: type[SpecBase]
    build: str
    """``"module:function"`` of the builder (see :mod:`edgekd.models.arch_builders`)."""
    check: str | None = None
    """``"module:function"`` of ``check(spec, state, key)``: ``edgekd validate``'s rule for a spec that must be
    tried on the recipe's data (a user's module, an ONNX file); ``state.fail(key + ".field", ...)`` to refuse."""
    positions: str | None = None
    """``"module:function"`` of ``positions(spec, recipe, length) -> int | None``: the most tokens a text model of
    the spec takes, known before it is built; :func:`edgekd.input_rules.check_sequence_fits` refuses it when fewer
    than ``length``, the device's ``inputs.sequence_length`` (a limit found by trying, as an ONNX graph's, is only
    looked for below it). Unset, or None returned, for no limit or one not known yet."""

    @property
    def arch(self) -> str:
        """The name a recipe's ``model.arch`` gives it."""
        return self.spec.model_fields["arch"].annotation.__args__[0]

    def builder(self) -> Builder:
        """Import and return the builder."""
        return _imported(self.build)

    def checker(self) -> Callable[[Any, Any, str], None] | None:
        """Import and return the validate-time check, if the architecture has one."""
        return _imported(self.check) if self.check is not None else None

    def position_limit(self) -> Callable[[Any, Any, int], int | None] | None:
        """Import and return the function giving a spec's most tokens, if the architecture has a limit."""
        return _imported(self.positions) if self.positions is not None else None


def _imported(path: str) -> Any:
    """The function named ``"module:function"``."""
    module, function = path.split(":")
    return getattr(importlib.import_module(module), function)


def _builder(name: str) -> str:
    return f"edgekd.models.arch_builders:{name}"


#: A Hugging Face model's validate-time rule: its untrained twin takes the recipe's data.
_DATA_FIT = "edgekd.models.data_fit:check_spec"
#: An image classifier edgekd builds from sizes: built for the recipe's images, it runs on them.
_IMAGE_FIT = "edgekd.models.data_fit:check_image_spec"

#: Every architecture, by ``arch`` (the recipe union lists them in this order).
ARCHITECTURES: dict[str, Architecture] = {entry.arch: entry for entry in (
    Architecture(CNNSpec, _builder("cnn"), check=_IMAGE_FIT),
    Architecture(MLPSpec, _builder("mlp"), check=_IMAGE_FIT),
    Architecture(ResNetSpec, _builder("resnet"), check=_IMAGE_FIT),
    Architecture(MobileNetV2Spec, _builder("mobilenet_v2"), check=_IMAGE_FIT),
    Architecture(BertSpec, _builder("bert"), check=_DATA_FIT, positions="edgekd.input_rules:bert_positions"),
    Architecture(HFSpec, _builder("hf_model"), check=_DATA_FIT, positions="edgekd.input_rules:hf_positions"),
    Architecture(DropLayersSpec, _builder("drop_layers")),
    Architecture(BiLSTMSpec, _builder("bilstm")),
    Architecture(TextCNNSpec, _builder("textcnn")),
    Architecture(ModuleSpec, _builder("module"), check="edgekd.models.user_module:check_spec"),
    Architecture(OnnxSpec, _builder("onnx"), check="edgekd.models.onnx_teacher:check_spec",
                 positions="edgekd.models.onnx_teacher:graph_positions"),
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
    return ARCHITECTURES[spec.arch].builder()(spec, signature, class_names, teacher)


def build_model(spec: Any, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """An image classifier of a registered image arch for images of ``input_shape`` (seed torch first)."""
    from edgekd.data.examples import InputSignature

    return build_module(spec, InputSignature(kind="image", image_shape=tuple(input_shape)), _classes(num_classes))


def build_text_student(spec: Any, *, vocab_size: int, num_classes: int, pad_id: int) -> nn.Module:
    """A text student (``bilstm``, ``textcnn``) over a tokenizer's ``vocab_size`` ids padded with ``pad_id``."""
    from edgekd.data.examples import InputSignature

    signature = InputSignature(kind="text", vocab_size=vocab_size, pad_id=pad_id)
    return build_module(spec, signature, _classes(num_classes))


def _classes(count: int) -> tuple[str, ...]:
    """Class names for builders that need only their number."""
    return tuple(str(index) for index in range(count))
