"""Model specs: the architectures a recipe can name, each with its sizes and traits (registered, with their
builders, in :mod:`edgekd.models.architectures`, which makes the recipe's union of them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, JsonValue, PrivateAttr, StrictInt, ValidationInfo, model_validator

from edgekd.config.base import LocalPath, PathOrId, PositiveInt, StrictModel, spelt_pattern
from edgekd.config.paths import recorded_checkpoints
from edgekd.errors import ConfigError
from edgekd.models import families
from edgekd.models.checkpoint_files import check_local_path, check_weights, looks_local
from edgekd.models.packaged import is_packaged, resolve_pretrained

#: A layer width, channel or embedding count: positive and small enough to allocate.
Width = Annotated[PositiveInt, Field(le=65_536)]
#: The most parameters a spec built from sizes may have (4 bytes each: 40 GB, more than the machines have).
MAX_PARAMS = 10**10
#: A number of layers (or blocks).
Depth = Annotated[PositiveInt, Field(le=1_024)]

Modality = Literal["image", "text"]
"""What a model takes: images (any array input) or token ids.

Every spec states its ``modality``, the ``prune_targets`` structured pruning can remove from it
(empty: not prunable) and which intermediate outputs it ``exposes`` to distillation losses
(``hidden_states``, ``attentions``, ``qkv``), so recipes are checked against them before anything runs.
A spec a budget search can vary has a default ``search_space`` (spec field → values to try), and
``factorizable`` says whether low-rank factorization can rewrite it. ``arch: hf`` specs answer these
from their checkpoint's family (:mod:`edgekd.models.families`) rather than as class constants.
"""


class SpecBase(StrictModel):
    """What every model spec states besides its sizes (see :data:`Modality`); subclasses override."""

    modality: ClassVar[Modality | None]
    """None: the data's (a user's own module takes whatever the recipe's data gives)."""
    prune_targets: ClassVar[frozenset[str]] = frozenset()
    exposes: ClassVar[frozenset[str]] = frozenset()
    search_space: ClassVar[dict[str, list[Any]]] = {}
    factorizable: ClassVar[bool] = True
    tags_tokens: ClassVar[bool] = False
    """Whether it can answer per token (token classification): the transformers, the BiLSTM and TextCNN built as
    taggers, an ONNX teacher whose output is per token."""
    trainable: ClassVar[bool] = True
    """False for a fixed model the teacher stage evaluates but cannot train (an ONNX file): nothing to export."""

    def content_digest(self) -> str | None:
        """The digest of files the model is read from whose content the spec's fields do not show (an ONNX
        file's); None when the fields say it all. Part of the teacher stage's fingerprint."""
        return None

    @property
    def label(self) -> str:
        """How messages name this model (``'bert'``; an ``hf`` spec adds its family: ``'hf' (llama)``)."""
        return f"'{getattr(self, 'arch', '?')}'"


class CNNSpec(SpecBase):
    """A plain image CNN: conv-BN-ReLU blocks (each halving the image), then an MLP head."""

    modality: ClassVar[Modality] = "image"
    prune_targets: ClassVar[frozenset[str]] = frozenset({"channels"})
    search_space: ClassVar[dict[str, list[Any]]] = {
        "channels": [[8, 16], [16, 32], [32, 64], [16, 32, 64]], "hidden": [32, 64]}

    arch: Literal["cnn"]
    channels: list[Width] = Field(min_length=1)
    hidden: Width = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class MLPSpec(SpecBase):
    """A multilayer perceptron over the flattened input."""

    modality: ClassVar[Modality] = "image"
    prune_targets: ClassVar[frozenset[str]] = frozenset({"channels"})
    search_space: ClassVar[dict[str, list[Any]]] = {"hidden": [[32], [64], [128], [64, 64], [128, 128]]}

    arch: Literal["mlp"]
    hidden: list[Width] = Field(min_length=1)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


#: Layer shapes a pruned image model is rebuilt with: module name → [in, out] (conv: [in, out, groups]).
LayerShapes = dict[str, list[PositiveInt]]


class ResNetSpec(SpecBase):
    """He et al. (2016) ResNet (``transformers``' implementation); the defaults are ResNet-18."""

    modality: ClassVar[Modality] = "image"
    prune_targets: ClassVar[frozenset[str]] = frozenset({"channels"})

    arch: Literal["resnet"]
    block: Literal["basic", "bottleneck"] = "basic"
    depths: list[Depth] = Field(default=[2, 2, 2, 2], min_length=1)
    widths: list[Width] = Field(default=[64, 128, 256, 512], min_length=1)
    stem: Width = Field(default=64, description="Channels of the 7 × 7 stem convolution.")
    shapes: LayerShapes | None = Field(default=None, description="Written by pruning: the layers' pruned shapes.")

    @model_validator(mode="after")
    def _one_width_per_stage(self) -> ResNetSpec:
        if len(self.depths) != len(self.widths):
            raise ValueError(f"depths ({len(self.depths)} stages) and widths ({len(self.widths)}) must match")
        return self


class MobileNetV2Spec(SpecBase):
    """Sandler et al. (2018) MobileNetV2 (``transformers``' implementation)."""

    modality: ClassVar[Modality] = "image"
    prune_targets: ClassVar[frozenset[str]] = frozenset({"channels"})

    arch: Literal["mobilenet_v2"]
    width_multiplier: Annotated[float, Field(gt=0, le=4)] = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    shapes: LayerShapes | None = Field(default=None, description="Written by pruning: the layers' pruned shapes.")


class EmbeddingStudent(SpecBase):
    """A text student with a word-embedding table of its own (:mod:`edgekd.models.embeddings`), answering per
    sentence or, for token classification, per token."""

    modality: ClassVar[Modality] = "text"
    tags_tokens: ClassVar[bool] = True

    embeddings: Literal["random", "teacher"] = Field(
        default="random", description="'teacher': start from the teacher's word embeddings (same tokenizer), "
        "projected to the student's embedding width on their top principal directions.")


class BertSpec(EmbeddingStudent):
    """A BERT-family sequence classifier: from ``pretrained`` (hub id or local directory) or a fresh config.

    A fresh one may start from its teacher's word embeddings (``embeddings: teacher``, projected to
    ``hidden``), as TinyBERT's and MiniLM's small students start from pretrained knowledge.
    """

    prune_targets: ClassVar[frozenset[str]] = frozenset({"heads", "ffn"})
    exposes: ClassVar[frozenset[str]] = frozenset({"hidden_states", "attentions", "qkv"})
    search_space: ClassVar[dict[str, list[Any]]] = {
        "layers": [1, 2, 4], "hidden": [128, 256, 512], "heads": [2, 8], "ffn": [None]}

    arch: Literal["bert"]
    pretrained: PathOrId | None = None
    trust_remote_code: bool = Field(default=False, description="Run code shipped with a hub model; off unless set.")
    layers: Depth = 4
    hidden: Width = 512
    heads: Width = 8
    ffn: Width | None = Field(default=None, description="Feed-forward width; default 4 × hidden.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1

    @model_validator(mode="after")
    def _sizes_fit(self, info: ValidationInfo) -> BertSpec:
        sized = self.model_fields_set & {"layers", "hidden", "heads", "ffn"}
        if self.pretrained is not None and sized:
            raise ValueError(f"give either 'pretrained' or sizes ({', '.join(sorted(sized))}), not both")
        if self.pretrained is not None and self.embeddings == "teacher":
            raise ValueError("embeddings: 'teacher' builds a fresh table from the teacher's; a pretrained model "
                             "has its own (drop 'pretrained' and give sizes, or drop 'embeddings')")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        readable = self.pretrained is not None and (is_packaged(self.pretrained) or looks_local(self.pretrained)
                                                    or Path(self.pretrained).is_dir())
        model_type = _checked_checkpoint(self.pretrained, self.trust_remote_code, info) if readable else None
        if model_type is not None and not families.family(model_type).bert_layout:
            raise ValueError(f"pretrained '{self.pretrained}' is a '{model_type}' checkpoint, not a BERT-layout "
                             "encoder; use arch: hf to load any family")
        check_transformer_size(self.layers, self.hidden, self.ffn or 4 * self.hidden)
        return self


def _checked_checkpoint(pretrained: str, trust_remote_code: bool, info: ValidationInfo) -> str | None:
    """The ``model_type`` of checkpoint ``pretrained``, once it is known to load: a path that exists, a family
    transformers knows (unless the checkpoint brings its own code) and, for a local directory, readable
    weights (safetensors, or PyTorch's read by its weights_only loader). Raises ``ValueError`` (one line)
    otherwise, so ``validate`` names the key; except in a finished run's record (checked when the run began), where
    a checkpoint moved or deleted since gives the model type the run recorded (None if it recorded none)."""
    try:
        return _checkpoint_type(pretrained, trust_remote_code)
    except ValueError:
        recorded = recorded_checkpoints(info)
        if recorded is None:
            raise
        return recorded.get(pretrained)


def _checkpoint_type(pretrained: str, trust_remote_code: bool) -> str:
    check_local_path(pretrained)
    model_type = families.read_config(pretrained, trust_remote_code=trust_remote_code).get("model_type")
    if not isinstance(model_type, str):
        raise ValueError(f"pretrained '{pretrained}': its config.json has no model_type")
    if not trust_remote_code:
        families.check_model_type(model_type, source=f"pretrained '{pretrained}': config.json")
    local = Path(resolve_pretrained(pretrained))
    if local.is_dir():
        check_weights(local)
    return model_type


def check_transformer_size(layers: int, hidden: int, ffn: int) -> None:
    """Raise ``ValueError`` when a transformer of these sizes has more than :data:`MAX_PARAMS` parameters."""
    params = layers * (4 * hidden**2 + 2 * hidden * ffn)
    if params > MAX_PARAMS:
        raise ValueError(f"{layers} layers of hidden {hidden} and ffn {ffn} are about {params:.1e} "
                         f"parameters; expected at most {MAX_PARAMS:.0e}")


class HFSpec(SpecBase):
    """Any Hugging Face sequence or image classifier: a checkpoint (``pretrained``) or a transformers ``config``.

    The family comes from the checkpoint's ``config.json`` (or ``config.model_type``) and gives the
    spec's traits; transformers builds the model (``AutoModelFor{Sequence,Image}Classification``).
    """

    tags_tokens: ClassVar[bool] = True

    arch: Literal["hf"]
    pretrained: PathOrId | None = Field(default=None, description="A hub id or a local save_pretrained directory.")
    config: dict[str, Any] | None = Field(
        default=None, description="A transformers config as a mapping, model_type included (a fresh model).")
    trust_remote_code: bool = Field(default=False, description="Run code shipped with a hub model; off unless set.")
    _model_type: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> HFSpec:
        if (self.pretrained is None) == (self.config is None):
            which = "not both" if self.config is not None else "one of them is needed"
            raise ValueError(f"give either 'pretrained' (a checkpoint) or 'config' (a transformers config), {which}")
        if self.config is not None:
            model_type = self.config.get("model_type")
            if not isinstance(model_type, str):
                raise ValueError("config: expected a 'model_type' (e.g. bert, llama, vit) naming the family")
            families.check_model_type(model_type)
            families.check_config_keys(self.config)
            built = families.built_config(self.config)
            sizes = families.transformer_sizes(built)
            if sizes is not None:
                check_transformer_size(*sizes)  # before building: a huge config would take long even on meta
            families.check_buildable(built)
            rotary = families.rotary_problem(built)
            if rotary is not None:
                raise ValueError(f"config: {rotary}")
        else:
            model_type = _checked_checkpoint(self.pretrained, self.trust_remote_code, info)
            if model_type is None:  # a finished run's checkpoint, gone since, of a run that recorded no model types
                raise ValueError(f"'{self.pretrained}' cannot be read (moved or deleted since the run began) and the "
                                 "run did not record its model type; put the checkpoint back to reopen the run")
        self._model_type = model_type
        return self

    @property
    def model_type(self) -> str:
        """The family's ``model_type`` (``bert``, ``llama``, ``vit``, …)."""
        return self._model_type

    @property
    def family(self) -> families.Family:
        """The family's traits (see :mod:`edgekd.models.families`)."""
        return families.family(self._model_type)

    @property
    def label(self) -> str:
        return f"'hf' ({self._model_type})"

    @property
    def modality(self) -> Modality:  # type: ignore[override]
        return self.family.modality

    @property
    def prune_targets(self) -> frozenset[str]:  # type: ignore[override]
        return self.family.prune_targets

    @property
    def exposes(self) -> frozenset[str]:  # type: ignore[override]
        return self.family.exposes

    @property
    def factorizable(self) -> bool:  # type: ignore[override]
        return self.family.factorize


class DropLayersSpec(SpecBase):
    """DistilBERT-style student: the teacher with encoder layers dropped, the kept ones' weights copied.

    ``keep``: ``every_other`` (layers 0, 2, 4, …), a list of layer indices, or a count ``N``: N layers spread
    evenly over the teacher's (the first of each of N equal blocks; a budget search varies this count).
    """

    modality: ClassVar[Modality | None] = None  # the teacher's: a text or an image transformer
    prune_targets: ClassVar[frozenset[str]] = frozenset({"heads", "ffn"})
    exposes: ClassVar[frozenset[str]] = frozenset({"hidden_states", "attentions", "qkv"})
    tags_tokens: ClassVar[bool] = True

    arch: Literal["drop_layers"]
    keep: Literal["every_other"] | list[Annotated[StrictInt, Field(ge=0)]] | Annotated[StrictInt, Field(ge=1)] = (
        "every_other")

    def layers_kept(self, total: int) -> list[int]:
        """The indices of the teacher's ``total`` layers this student keeps.

        A count ``N`` keeps the first layer of each of N equal blocks (``i * total // N``): 3 of 6 → 0, 2, 4,
        as ``every_other``; 2 of 6 → 0, 3. Raises :class:`ConfigError` (see :meth:`keep_problem`).
        """
        problem = self.keep_problem(total)
        if problem is not None:
            raise ConfigError(f"student.model.keep: {problem}")
        if isinstance(self.keep, int):
            return [i * total // self.keep for i in range(self.keep)]
        return list(range(0, total, 2)) if self.keep == "every_other" else list(self.keep)

    def kept(self, total: int) -> int:
        """How many layers this model keeps of a teacher of ``total`` layers."""
        if isinstance(self.keep, int):
            return self.keep
        return len(range(0, total, 2)) if self.keep == "every_other" else len(self.keep)

    def keep_problem(self, total: int, source: str = "teacher") -> str | None:
        """What is wrong with ``keep`` for a ``source`` model (the teacher, or an assistant) of ``total`` layers
        (indices beyond its layers, repeated indices, none, a count above ``total``), without the key; None when
        nothing is."""
        if isinstance(self.keep, int):
            return f"expected at most {total} layers (the {source}'s), got {self.keep}" if self.keep > total else None
        kept = list(range(0, total, 2)) if self.keep == "every_other" else list(self.keep)
        if any(i >= total for i in kept) or not kept or len(set(kept)) != len(kept):
            return f"expected distinct layer indices below {total} (the {source}'s layers), got {kept}"
        return None


class BiLSTMSpec(EmbeddingStudent):
    """Tang et al. (2019) student: embeddings, a bidirectional LSTM, max-pooling over time, an MLP head."""

    search_space: ClassVar[dict[str, list[Any]]] = {"embedding_dim": [64, 128, 300], "hidden": [64, 150]}

    arch: Literal["bilstm"]
    embedding_dim: Width = 300
    hidden: Width = 150
    layers: Depth = 1
    fc_hidden: Width = 200
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


class TextCNNSpec(EmbeddingStudent):
    """Kim (2014) CNN text classifier: embeddings, parallel 1-D convolutions, max-pooling, a linear head."""

    search_space: ClassVar[dict[str, list[Any]]] = {"embedding_dim": [64, 128], "filters": [50, 100]}

    arch: Literal["textcnn"]
    embedding_dim: Width = 128
    filters: Width = 100
    kernel_sizes: list[Annotated[PositiveInt, Field(le=64)]] = Field(default=[3, 4, 5], min_length=1)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


#: ``package.module:factory`` (dotted attribute names allowed after the colon).
IMPORT_PATH = spelt_pattern(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
    "an import path 'package.module:factory' (a module's dotted name, a colon, the callable's name; "
    "not a file path)")


class ModuleSpec(SpecBase):
    """The user's own ``torch.nn.Module``, returning logits ``[batch, classes]`` (or a dict/``ModelOutput`` with them).

    Built by calling ``factory(**kwargs)``, the ``package.module:factory`` the recipe names (nothing
    else is imported or run); its modality is the data's, its conv/linear channels are pruned through
    Torch-Pruning's dependency graph, and it exposes only logits (hidden-state losses are refused).
    ``instance`` stands for a module given to ``Pipeline(...)`` as an object (see
    :mod:`edgekd.models.user_module`); such a spec cannot be written to YAML nor rebuilt in another process.
    """

    modality: ClassVar[Modality | None] = None  # whatever the recipe's data gives
    prune_targets: ClassVar[frozenset[str]] = frozenset({"channels"})

    arch: Literal["module"]
    factory: str | None = Field(default=None, pattern=IMPORT_PATH,
                                description="'package.module:factory' returning the nn.Module.")
    kwargs: dict[str, JsonValue] = Field(default_factory=dict, description="Keyword arguments of the factory: JSON "
                                         "values (numbers, strings, lists, mappings), as a YAML recipe holds.")
    instance: str | None = Field(default=None, description="Set by Pipeline(...) for a module given as an object: "
                                 "its class and a digest of its initial weights.")
    shapes: LayerShapes | None = Field(default=None, description="Written by pruning: the layers' pruned shapes.")

    @model_validator(mode="after")
    def _factory_or_instance(self) -> ModuleSpec:
        if (self.factory is None) == (self.instance is None):
            raise ValueError("expected 'factory' ('package.module:factory') or, from Python, an nn.Module object")
        if self.instance is not None and self.kwargs:
            raise ValueError("'kwargs' apply to a factory; a module given as an object takes none")
        return self


class OnnxSpec(SpecBase):
    """A trained model as an ONNX file (``arch: onnx``): a teacher only, run by onnxruntime, never trained.

    Its inputs are matched to the data by the graph's input names (text: ``input_ids``, ``attention_mask``,
    ``token_type_ids``; images and features: its one input); it must return logits ``[batch, classes]``
    (``[batch, sequence, classes]`` per token). It exposes only its outputs, so losses comparing hidden
    states, attention maps or embeddings are refused, and it is neither pruned nor factorized
    (:mod:`edgekd.models.onnx_teacher`).
    """

    modality: ClassVar[Modality | None] = None  # whatever the recipe's data gives (matched to the graph's input)
    factorizable: ClassVar[bool] = False
    tags_tokens: ClassVar[bool] = True
    trainable: ClassVar[bool] = False

    arch: Literal["onnx"]
    path: LocalPath = Field(description="The .onnx file (relative paths: from the recipe's folder); external data "
                       "files beside it.")
    output: str | None = Field(default=None, description="The graph output holding the logits; default: 'logits' "
                               "when the graph names one, else the first output whose shape fits (with a warning "
                               "naming the others that fit too).")

    def content_digest(self) -> str | None:
        """The SHA-256 of the file and of its external data: a new file re-runs the teacher stage."""
        from edgekd.models.onnx_teacher import onnx_digest

        return onnx_digest(self.path)


def declared_config(spec: Any) -> Any | None:
    """The transformers config of a spec's model, read from its ``config`` or its checkpoint's ``config.json``
    without building it or loading weights; None when there is none here (a spec of edgekd's own architectures, a
    hub checkpoint not in the local cache, a config transformers cannot read)."""
    try:
        if getattr(spec, "pretrained", None) is not None:
            return families.built_config(families.read_config(spec.pretrained,
                                                              trust_remote_code=spec.trust_remote_code))
        if isinstance(spec, HFSpec) and spec.config is not None:
            return families.built_config(spec.config)
    except (ValueError, KeyError):
        return None
    return None


def declared_depth(spec: Any) -> int | None:
    """How many blocks a (teacher) spec's model has, read from its sizes or :func:`declared_config` without building
    it: what a ``drop_layers`` student keeps some of, known at ``edgekd validate``. None when only the built model
    can tell (a family without one stack of blocks, a model that is not a transformer)."""
    if isinstance(spec, BertSpec) and spec.pretrained is None:
        return spec.layers
    built = declared_config(spec)
    if built is None:
        return None
    depth = getattr(built, "num_hidden_layers", None)
    return depth if families.family(built.model_type).stacked and isinstance(depth, int) else None


def why_not_cut(spec: Any) -> str | None:
    """Why ``drop_layers`` cannot keep some layers of (teacher) ``spec``'s model, as a clause (ALBERT's shared
    layers, a CNN's stages, a model that is not a transformer); None when it can (one stack of transformer blocks)."""
    if isinstance(spec, HFSpec):
        return families.why_not_stacked(spec.model_type)
    return None if "hidden_states" in spec.exposes else "it is not a transformer"


def spec_of(recipe: Any, role: str) -> BaseModel:
    """The spec whose traits (``modality``, ``prune_targets``, ``exposes``) the model of ``role`` has.

    A ``drop_layers`` student is its teacher with layers removed, so it has the teacher's traits.
    """
    spec = {"teacher": recipe.teacher.model, "student": recipe.student.model,
            "assistant": recipe.assistant.model if recipe.assistant is not None else None}[role]
    if spec is None:
        raise ValueError(f"the recipe has no '{role}'")
    return recipe.teacher.model if spec.arch == "drop_layers" else spec
