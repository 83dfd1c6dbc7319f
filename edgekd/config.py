"""Typed configuration: recipes, device profiles and export targets, loaded from YAML.

Every model here forbids unknown keys. Loading goes through :func:`load_yaml_model`, which turns
YAML syntax errors and pydantic validation errors into a one-line :class:`ConfigError` naming the
file, the key path and what was expected (with a "did you mean" for misspelled keys).

This module only describes and validates; it runs nothing and imports no ML library.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgekd.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- device profile


class InputShape(StrictModel):
    """Input shapes the device runs: dynamic axes of a model are filled from these."""

    batch: PositiveInt = 1
    sequence_length: PositiveInt = 128
    image_size: PositiveInt | None = Field(
        default=None, description="Side of a square image input; null keeps the model's own size."
    )


class Budget(StrictModel):
    """What the exported model must fit in on the device."""

    p90_ms: PositiveFloat
    size_mb: PositiveFloat
    peak_memory_mb: PositiveFloat


class ReferenceFigure(StrictModel):
    """A published latency of a public model on the device, used to derive a host→device ratio."""

    model: Literal["mobilebert-seq128", "bert-base-seq128", "mobilenet-v2-int8-224"]
    latency_ms: PositiveFloat
    threads: PositiveInt
    source: str = Field(min_length=10, description="Where the figure was published.")


class DeviceProfile(StrictModel):
    """A target device: how it runs the model, what it must fit, and how to estimate its speed."""

    name: str = Field(min_length=1)
    description: str = ""
    threads: PositiveInt | Literal["auto"] = "auto"
    inputs: InputShape = InputShape()
    budget: Budget
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    isa: list[str] | Literal["detect"] = Field(
        default="detect", description="Instruction-set features; 'detect' reads them from this CPU."
    )
    reference: ReferenceFigure | None = Field(
        default=None,
        description="Set for devices edgekd cannot run on: latencies are then estimates.",
    )

    @property
    def is_estimate(self) -> bool:
        """True when latencies on this device are estimated from the host through a speed ratio."""
        return self.reference is not None


# --------------------------------------------------------------------------- export target


class ExportTarget(StrictModel):
    """How a model is exported: format, opset, graph optimization and the parity gate."""

    name: str = Field(min_length=1)
    description: str = ""
    format: Literal["onnx", "ort"] = Field(
        default="onnx", description="'ort': also convert to ONNX Runtime's .ort format (ORT Mobile)."
    )
    opset: Annotated[int, Field(ge=13, le=21)] = 17
    optimization_level: Literal["disabled", "basic", "extended", "all"] = "basic"
    parity_atol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    parity_rtol: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=1e-4, description="Added to parity_atol, times the largest |output| of the reference model: float32 "
        "rounding grows with the outputs' scale.")
    keep_onnx: bool = Field(default=True, description="'ort' only: ship the .onnx file beside the .ort.")
    reduced_operator_config: bool = Field(
        default=True, description="'ort' only: write the operator list a minimal ONNX Runtime build needs."
    )
    ort_optimization_level: Literal["disabled", "basic", "extended", "all"] = Field(
        default="all", description="'ort' only: optimizations baked into the .ort (never CPU-specific layouts)."
    )

    @model_validator(mode="after")
    def _ort_fields_need_ort(self) -> ExportTarget:
        ort_only = [name for name in ("keep_onnx", "reduced_operator_config", "ort_optimization_level")
                    if getattr(self, name) != type(self).model_fields[name].default]
        if self.format != "ort" and ort_only:
            raise ValueError(f"{', '.join(ort_only)}: only for format 'ort' (this target's format is '{self.format}')")
        return self


# --------------------------------------------------------------------------- recipe: data and models


class SplitSeed(StrictModel):
    """The seed of the train/validation(/test) split, when it must not follow the recipe's seed."""

    split_seed: int | None = Field(
        default=None,
        description="Seed of the data split (default: the recipe's seed). Fix it to compare training seeds "
        "on identical splits, or to reuse a teacher trained on one split.",
    )


class SklearnData(SplitSeed):
    """A dataset bundled with scikit-learn (no download needed)."""

    source: Literal["sklearn"]
    name: Literal["digits"]
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2
    limit: PositiveInt | None = Field(default=None, description="Use only this many samples.")


class TextSplitsConfig(SplitSeed):
    """What every labelled text source shares: columns, the held-out validation slice, limits."""

    text_column: str = "sentence"
    label_column: str = "label"
    val_examples: PositiveInt = Field(
        default=1000, description="Examples held out of the training split to pick the best epoch."
    )
    limit_train: PositiveInt | None = Field(
        default=None, description="Use only N training examples (the first N of the seeded order, after val)."
    )
    limit_test: PositiveInt | None = None


class TextFileData(TextSplitsConfig):
    """Labelled text in local TSV or CSV files with a header line (e.g. GLUE SST-2)."""

    source: Literal["tsv", "csv"]
    train: Path
    test: Path = Field(description="Labelled file the reported accuracy is measured on (SST-2: dev.tsv).")


class HFDiskData(TextSplitsConfig):
    """A dataset saved with ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``."""

    source: Literal["hf_disk"]
    path: Path
    train_split: str = "train"
    test_split: str = "validation"


class HubData(TextSplitsConfig):
    """A dataset from the Hugging Face hub (needs network at run time)."""

    source: Literal["hub"]
    id: str = Field(min_length=1)
    config: str | None = None
    train_split: str = "train"
    test_split: str = "validation"


DataConfig = Annotated[
    Union[SklearnData, TextFileData, HFDiskData, HubData], Field(discriminator="source")  # noqa: UP007
]


class TokenizerConfig(StrictModel):
    """Token ids for text data: a Hugging Face tokenizer, or a WordPiece one trained on the training split."""

    pretrained: str | None = Field(
        default=None, description="A hub id or a local tokenizer directory; unset trains WordPiece offline."
    )
    vocab_size: Annotated[int, Field(ge=100)] = 8000
    lowercase: bool = True
    max_length: Annotated[int, Field(ge=8)] = 128


class CNNSpec(StrictModel):
    """A plain image CNN: conv-BN-ReLU blocks (each halving the image), then an MLP head."""

    arch: Literal["cnn"]
    channels: list[PositiveInt] = Field(min_length=1)
    hidden: PositiveInt = 64
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


class MLPSpec(StrictModel):
    """A multilayer perceptron over the flattened input."""

    arch: Literal["mlp"]
    hidden: list[PositiveInt] = Field(min_length=1)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0


#: Layer shapes a pruned image model is rebuilt with: module name → [in, out] (conv: [in, out, groups]).
LayerShapes = dict[str, list[PositiveInt]]


class ResNetSpec(StrictModel):
    """He et al. (2016) ResNet (``transformers``' implementation); the defaults are ResNet-18."""

    arch: Literal["resnet"]
    block: Literal["basic", "bottleneck"] = "basic"
    depths: list[PositiveInt] = Field(default=[2, 2, 2, 2], min_length=1)
    widths: list[PositiveInt] = Field(default=[64, 128, 256, 512], min_length=1)
    stem: PositiveInt = Field(default=64, description="Channels of the 7 × 7 stem convolution.")
    shapes: LayerShapes | None = Field(default=None, description="Written by pruning: the layers' pruned shapes.")

    @model_validator(mode="after")
    def _one_width_per_stage(self) -> ResNetSpec:
        if len(self.depths) != len(self.widths):
            raise ValueError(f"depths ({len(self.depths)} stages) and widths ({len(self.widths)}) must match")
        return self


class MobileNetV2Spec(StrictModel):
    """Sandler et al. (2018) MobileNetV2 (``transformers``' implementation)."""

    arch: Literal["mobilenet_v2"]
    width_multiplier: Annotated[float, Field(gt=0, le=4)] = 1.0
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.2
    shapes: LayerShapes | None = Field(default=None, description="Written by pruning: the layers' pruned shapes.")


class BertSpec(StrictModel):
    """A BERT-family sequence classifier: from ``pretrained`` (hub id or local directory) or a fresh config."""

    arch: Literal["bert"]
    pretrained: str | None = None
    trust_remote_code: bool = Field(default=False, description="Run code shipped with a hub model. Never default.")
    layers: PositiveInt = 4
    hidden: PositiveInt = 512
    heads: PositiveInt = 8
    ffn: PositiveInt | None = Field(default=None, description="Feed-forward width; default 4 × hidden.")
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1

    @model_validator(mode="after")
    def _sizes_fit(self) -> BertSpec:
        sized = self.model_fields_set & {"layers", "hidden", "heads", "ffn"}
        if self.pretrained is not None and sized:
            raise ValueError(f"give either 'pretrained' or sizes ({', '.join(sorted(sized))}), not both")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self


class DropLayersSpec(StrictModel):
    """DistilBERT-style student: the teacher with encoder layers dropped, the kept ones' weights copied."""

    arch: Literal["drop_layers"]
    keep: Literal["every_other"] | list[Annotated[int, Field(ge=0)]] = "every_other"


class BiLSTMSpec(StrictModel):
    """Tang et al. (2019) student: embeddings, a bidirectional LSTM, max-pooling over time, an MLP head."""

    arch: Literal["bilstm"]
    embedding_dim: PositiveInt = 300
    hidden: PositiveInt = 150
    layers: PositiveInt = 1
    fc_hidden: PositiveInt = 200
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


class TextCNNSpec(StrictModel):
    """Kim (2014) CNN text classifier: embeddings, parallel 1-D convolutions, max-pooling, a linear head."""

    arch: Literal["textcnn"]
    embedding_dim: PositiveInt = 128
    filters: PositiveInt = 100
    kernel_sizes: list[PositiveInt] = Field(default=[3, 4, 5], min_length=1)
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1


ModelSpec = Annotated[
    Union[CNNSpec, MLPSpec, ResNetSpec, MobileNetV2Spec, BertSpec, DropLayersSpec, BiLSTMSpec,  # noqa: UP007
          TextCNNSpec],
    Field(discriminator="arch"),
]


class EnsembleConfig(StrictModel):
    """Several teachers of the same architecture trained with different seeds; soft targets are averaged."""

    members: Annotated[int, Field(ge=2)] = 3
    weighting: Literal["uniform", "accuracy"] | list[PositiveFloat] = Field(
        default="accuracy", description="'accuracy' weights each member by its validation accuracy."
    )


class TeacherConfig(StrictModel):
    """The teacher: an architecture and, optionally, trained weights (else the ``teacher`` stage trains it)."""

    model: ModelSpec
    weights: Path | list[Path] | None = Field(
        default=None, description="A .safetensors file of trained weights; for an ensemble, one per member."
    )
    ensemble: EnsembleConfig | None = None

    @field_validator("weights")
    @classmethod
    def _weights_are_safetensors(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        for path in value if isinstance(value, list) else [value] if value is not None else []:
            if path.suffix != ".safetensors":
                raise ValueError(f"expected a .safetensors file, got '{path}'")
        return value

    @model_validator(mode="after")
    def _one_file_per_member(self) -> TeacherConfig:
        members = self.ensemble.members if self.ensemble else 1
        given = len(self.weights) if isinstance(self.weights, list) else 1
        if self.weights is not None and given != members:
            expected = f"a list of {members} .safetensors files (one per ensemble member)" if self.ensemble \
                else "one .safetensors file"
            raise ValueError(f"weights: expected {expected}, got {given}")
        return self

    @property
    def weight_files(self) -> list[Path]:
        """The given weight files, one per member (one without an ensemble); empty when none are given."""
        if self.weights is None:
            return []
        return list(self.weights) if isinstance(self.weights, list) else [self.weights]


class StudentConfig(StrictModel):
    """The architecture of a model that distillation trains (the student, or a teacher assistant)."""

    model: ModelSpec


# --------------------------------------------------------------------------- recipe: stages


class TrainingConfig(StrictModel):
    """Optimizer settings shared by every stage that trains (AdamW, linear warm-up then linear decay)."""

    epochs: PositiveInt = 10
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    max_grad_norm: PositiveFloat | None = Field(default=None, description="Clip the gradient norm to this.")
    patience: PositiveInt | None = Field(
        default=None, description="Stop after this many epochs without a better validation accuracy."
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Autocast forward passes to this precision (accelerate); 'fp16' needs CUDA GPUs."
    )
    gradient_accumulation_steps: PositiveInt = Field(
        default=1,
        description="Compute each batch of batch_size examples in this many sequential parts per process "
        "(less memory, same batch).",
    )

    @field_validator("gradient_accumulation_steps")
    @classmethod
    def _parts_fit_batch(cls, steps: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and steps > batch_size:
            raise ValueError(f"{steps} accumulation steps for a batch_size of {batch_size} leave some steps without "
                             f"examples; expected at most {batch_size}")
        return steps


class LayerMap(StrictModel):
    """Which teacher layer each student layer learns from (layers counted from 1; 0 is the embeddings)."""

    kind: Literal["uniform", "skip", "last", "explicit"] = "uniform"
    k: PositiveInt | None = Field(
        default=None,
        description="'skip': every k-th teacher layer; 'last': how many top layers to pair (default: all).",
    )
    pairs: list[tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]] | None = Field(
        default=None, description="'explicit': [student_layer, teacher_layer] pairs."
    )

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> LayerMap:
        if self.kind == "skip" and self.k is None:
            raise ValueError("kind 'skip' needs k (use every k-th teacher layer)")
        if self.kind == "explicit" and not self.pairs:
            raise ValueError("kind 'explicit' needs pairs: [[student_layer, teacher_layer], ...]")
        if self.k is not None and self.kind not in ("skip", "last"):
            raise ValueError(f"k applies only to kinds 'skip' and 'last', not '{self.kind}'")
        if self.pairs is not None and self.kind != "explicit":
            raise ValueError(f"pairs apply only to kind 'explicit', not '{self.kind}'")
        return self


class WeightedLoss(StrictModel):
    """What every distillation loss has: how much it counts in the stage's weighted sum."""

    weight: PositiveFloat = 1.0


class HintonLoss(WeightedLoss):
    """Hinton et al.: ``alpha`` · T² · KL(soft teacher ‖ soft student) + (1 − alpha) · CE(hard labels)."""

    kind: Literal["hinton"]
    temperature: PositiveFloat = 4.0
    alpha: Annotated[float, Field(ge=0, le=1)] = 0.7


class LogitMSELoss(WeightedLoss):
    """Tang et al.: mean squared error between student and teacher logits."""

    kind: Literal["logit_mse"]


class HiddenLoss(WeightedLoss):
    """FitNets / TinyBERT / Patient KD: hidden states of mapped layers, projected when widths differ."""

    kind: Literal["hidden"]
    metric: Literal["mse", "cosine"] = "mse"
    layer_map: LayerMap = LayerMap()


class PKDLoss(WeightedLoss):
    """Patient KD: MSE between L2-normalised [CLS] vectors of mapped layers."""

    kind: Literal["pkd"]
    layer_map: LayerMap = LayerMap(kind="skip", k=2)


class AttentionLoss(WeightedLoss):
    """TinyBERT: attention distributions of mapped layers (heads averaged when head counts differ)."""

    kind: Literal["attention"]
    metric: Literal["mse", "kl"] = "mse"
    layer_map: LayerMap = LayerMap()


class EmbeddingLoss(WeightedLoss):
    """TinyBERT: the embedding-layer outputs (projected when widths differ)."""

    kind: Literal["embedding"]
    metric: Literal["mse", "cosine"] = "mse"


class CosineLoss(WeightedLoss):
    """DistilBERT: cosine alignment of the last hidden states."""

    kind: Literal["cosine"]


class MiniLMLoss(WeightedLoss):
    """MiniLM: last-layer self-attention distributions and value relations (any hidden sizes)."""

    kind: Literal["minilm"]
    relation_heads: PositiveInt = Field(default=8, description="Heads Q/K/V are split into for the relations.")


LossConfig = Annotated[
    Union[HintonLoss, LogitMSELoss, HiddenLoss, PKDLoss, AttentionLoss, EmbeddingLoss,  # noqa: UP007
          CosineLoss, MiniLMLoss],
    Field(discriminator="kind"),
]


class AugmentConfig(StrictModel):
    """Tang et al. (2019) transfer-set augmentation: masked tokens and n-gram samples, labelled by the teacher."""

    copies: PositiveInt = Field(default=10, description="Augmented sentences per training sentence.")
    p_mask: Annotated[float, Field(ge=0, le=1)] = 0.1
    p_ngram: Annotated[float, Field(ge=0, le=1)] = 0.25
    max_ngram: PositiveInt = 5


class TeacherStage(TrainingConfig):
    """Train the teacher on the hard labels, or load and evaluate ``teacher.weights`` when given."""

    stage: Literal["teacher"]


class DistillSettings(TrainingConfig):
    """How a student is distilled: training settings, the weighted ``losses`` and the transfer set."""

    losses: list[LossConfig] = Field(default_factory=lambda: [HintonLoss(kind="hinton")], min_length=1)
    cache_teacher: bool = Field(
        default=True, description="Compute the teacher outputs the losses read once, memory-mapped on disk "
        "(float16 hidden states/attention maps: turn off for transfer sets too large for the disk)."
    )
    teacher_cache_dir: Path | None = Field(
        default=None, description="Keep cached teacher outputs here, shared between runs (a subdirectory per "
        "teacher, transfer set and stored layers); default: inside the stage, deleted after training."
    )
    augment: AugmentConfig | None = None


class DistillStage(DistillSettings):
    """Distil ``student`` from ``teacher`` with a weighted sum of ``losses``."""

    stage: Literal["distill"]
    teacher: Literal["teacher", "assistant"] = "teacher"
    student: Literal["student", "assistant"] = "student"

    @model_validator(mode="after")
    def _roles_differ(self) -> DistillStage:
        if self.teacher == self.student:
            raise ValueError(f"teacher and student must be different models, both are '{self.teacher}'")
        return self


class ExportStage(StrictModel):
    """Export every model so far to ONNX and check it against PyTorch."""

    stage: Literal["export"]
    target: str = Field(default="onnx-fp32", description="A preset name from exporters/ or a YAML path.")


class ProfileStage(StrictModel):
    """Time every exported model with onnxruntime under the device profile."""

    stage: Literal["profile"]
    warmup: Annotated[int, Field(ge=0)] = 20
    runs: Annotated[int, Field(ge=10)] = 200


class QuantizeSettings(StrictModel):
    """How models are quantized (onnxruntime INT8 / FP16 weights) and when a variant is kept.

    Every variant is evaluated on the validation split (accuracy and agreement with FP32), timed
    against FP32 in the same run under the device profile, and kept only when it is faster (or
    fits a size budget FP32 misses) within ``tolerance``; otherwise FP32 is kept and the reason said.
    """

    modes: list[Literal["auto", "dynamic", "static", "fp16"]] = Field(
        default=["auto"], min_length=1,
        description="Variants to try; auto picks by model kind, device ISA and precision preference.")
    calibration_samples: PositiveInt = Field(default=256, description="Training examples that calibrate static INT8.")
    calibration_methods: list[Literal["minmax", "entropy", "percentile"]] = Field(default=["minmax"], min_length=1)
    per_channel: bool = True
    symmetric_activations: bool = False
    symmetric_weights: bool = True
    tolerance: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.01, description="Largest validation accuracy drop vs FP32 (absolute) a variant may have.")
    agreement: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.99, description="Fraction of validation inputs on which a variant must predict as FP32 does.")
    max_retries: Annotated[int, Field(ge=0, le=10)] = Field(
        default=3, description="Retries excluding the most sensitive nodes (1, 2, 4, ... of them) from INT8.")
    min_speedup: Annotated[float, Field(ge=1)] = Field(
        default=1.05, description="How much faster than FP32 a variant must be to be kept for speed.")
    warmup: Annotated[int, Field(ge=0)] = 20
    runs: Annotated[int, Field(ge=10)] = 200
    rounds: Annotated[int, Field(ge=1, le=20)] = Field(
        default=4, description="Timing sessions per variant, interleaved with the others'.")


class QuantizeStage(QuantizeSettings):
    """Quantize the exported models and keep a variant only where it pays (see :class:`QuantizeSettings`)."""

    stage: Literal["quantize"]
    roles: list[Literal["teacher", "student"]] = Field(default=["student"], min_length=1)


class RecoveryConfig(TrainingConfig):
    """Short distillation from the teacher after a prune/factorize step (LadaBERT's recovery)."""

    epochs: PositiveInt = 1
    losses: list[LossConfig] = Field(default_factory=lambda: [HintonLoss(kind="hinton")], min_length=1)


class PruneConfig(StrictModel):
    """Structured pruning with Torch-Pruning's dependency graph (Fang et al., DepGraph, 2023).

    ``ratio`` is the fraction of attention heads, FFN channels or conv/MLP channels removed (of
    the model's current ones). A transformer's hidden (model) width is never pruned.
    """

    ratio: Fraction = 0.5
    targets: list[Literal["heads", "ffn", "channels"]] = Field(
        default=["heads", "ffn", "channels"], min_length=1,
        description="heads/ffn: BERT-family attention heads and feed-forward channels; channels: CNN/MLP widths.")
    importance: Literal["l1", "l2", "taylor", "random"] = Field(
        default="l2", description="Magnitude (L1/L2 norm), first-order Taylor, or random as a control.")
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: every layer loses `ratio`; global: ranked across layers.")


class FactorizeConfig(StrictModel):
    """Low-rank factorization: each ``nn.Linear`` → two thinner ones from a truncated SVD.

    The rank of a layer keeps ``energy`` of its squared singular values, or gives ``param_ratio`` of
    its parameters; layers whose factorized form would keep more than ``max_size_ratio`` of their
    parameters (too high a rank to be smaller and faster) are left dense.
    """

    energy: Fraction = 0.9
    param_ratio: Fraction | None = Field(default=None, description="Set to choose ranks by size instead of energy.")
    max_size_ratio: Fraction = 0.8
    embeddings: bool = Field(
        default=False, description="Also factorize embedding tables (ALBERT-style thin table + projection): "
        "the word embeddings are a quarter of a small BERT's parameters."
    )

    @model_validator(mode="after")
    def _one_rank_rule(self) -> FactorizeConfig:
        if self.param_ratio is not None and "energy" in self.model_fields_set:
            raise ValueError("give either 'energy' or 'param_ratio', not both")
        return self


class _CompressStage(StrictModel):
    """What the prune, factorize and hybrid stages share: the model they change and its recovery."""

    role: Literal["student", "teacher", "assistant"] = "student"
    recovery: RecoveryConfig | None = Field(
        default=None, description="Distil from the teacher after each step to recover accuracy.")


class PruneStage(_CompressStage, PruneConfig):
    """Physically remove heads/channels in ``steps`` iterative steps (recovery after each)."""

    stage: Literal["prune"]
    steps: PositiveInt = 1


class FactorizeStage(_CompressStage, FactorizeConfig):
    """Replace linear layers by truncated-SVD factor pairs."""

    stage: Literal["factorize"]


class HybridStage(_CompressStage):
    """LadaBERT-style (Mao et al., 2020) schedule: prune and factorize a little, recover by distillation, repeat.

    Stops once every target given is met (parameters or MACs as a ratio of the input model's, p50
    ONNX latency on the device profile) or after ``max_steps``.
    """

    stage: Literal["hybrid"]
    prune: PruneConfig = PruneConfig(ratio=0.2)
    factorize: FactorizeConfig = FactorizeConfig(energy=0.95)
    target_params_ratio: Fraction | None = None
    target_macs_ratio: Fraction | None = None
    target_latency_ms: PositiveFloat | None = None
    max_steps: PositiveInt = 10
    measure_latency: bool = Field(default=True, description="Time each step's ONNX export on the device profile.")

    @model_validator(mode="after")
    def _has_target(self) -> HybridStage:
        if (self.target_params_ratio, self.target_macs_ratio, self.target_latency_ms) == (None, None, None):
            raise ValueError("give a target: target_params_ratio, target_macs_ratio or target_latency_ms")
        if self.target_latency_ms is not None and not self.measure_latency:
            raise ValueError("target_latency_ms needs measure_latency: true")
        return self


class LatencyTableConfig(StrictModel):
    """How each candidate of a search's latency table is timed: interleaved sessions, as ``edgekd bench`` does."""

    warmup: Annotated[int, Field(ge=0)] = 10
    runs: Annotated[int, Field(ge=10)] = 100
    rounds: Annotated[int, Field(ge=1, le=20)] = Field(
        default=2, description="Timing sessions per candidate, interleaved with the other candidates'.")


class SearchStage(StrictModel):
    """Budget-driven search: the most accurate student that fits the device's budget, found by measuring.

    Candidates are the product of ``space`` (student spec fields → values, around the recipe's
    ``student.model``), ``prune``, ``factorize`` and ``precision``. Each is built with random
    weights, exported and timed on the device profile into a latency table (cached per
    architecture family, device profile, input shape and CPU); those over the budget (p90 with
    ``latency_margin``, size, memory) are dropped before any training. The ``top_k`` feasible
    architectures with the most capacity (``rank_by``) are distilled, pruned/factorized and
    quantized as asked, exported for real and timed again; the most accurate one within the budget
    is re-profiled to confirm it and becomes the student.
    """

    stage: Literal["search"]
    space: dict[str, Annotated[list[Any], Field(min_length=1)]] | None = Field(
        default=None, description="Student spec fields → values to try; unset: the defaults for the student's arch.")
    prune: list[Annotated[float, Field(ge=0, lt=1)]] = Field(
        default=[0.0], min_length=1, description="Structured prune ratios applied after distillation (0: none).")
    factorize: list[Fraction | None] = Field(
        default=[None], min_length=1, description="Low-rank param_ratio values tried after distillation (null: none).")
    precision: list[Literal["fp32", "int8"]] = Field(default=["fp32", "int8"], min_length=1)
    top_k: PositiveInt = Field(default=3, description="Feasible architectures trained, the largest by rank_by first.")
    rank_by: Literal["macs", "params"] = Field(
        default="macs", description="The capacity heuristic that decides which feasible candidates are trained.")
    latency_margin: Annotated[float, Field(ge=0, lt=1)] = Field(
        default=0.1, description="In the table, a candidate's p90 must be this share under the budget (noise).")
    max_candidates: PositiveInt = Field(default=200, description="Refuse grids larger than this.")
    distill: DistillSettings = Field(default_factory=DistillSettings, description="How each candidate is distilled.")
    recovery: RecoveryConfig = Field(default_factory=RecoveryConfig, description="Distillation after prune/factorize.")
    quantize: QuantizeSettings = Field(default_factory=QuantizeSettings, description="How int8 candidates are made.")
    target: str = Field(default="onnx-fp32", description="Export preset from exporters/ or a YAML path.")
    table: LatencyTableConfig = Field(default_factory=LatencyTableConfig)
    confirm_runs: Annotated[int, Field(ge=10)] = Field(
        default=200, description="Timed runs of the re-profile that confirms the chosen model.")


class BundleStage(StrictModel):
    """Pack the final model for an Android/iOS app: bundle/ (model, manifest.json, README.md) and bundle.zip."""

    stage: Literal["bundle"]


class ReportStage(StrictModel):
    """Write report.json, report.md, report.html and their plots to the run directory."""

    stage: Literal["report"]


StageConfig = Annotated[
    Union[TeacherStage, DistillStage, PruneStage, FactorizeStage, HybridStage, SearchStage,  # noqa: UP007
          ExportStage, QuantizeStage, ProfileStage, BundleStage, ReportStage],
    Field(discriminator="stage"),
]


class Recipe(StrictModel):
    """A compression recipe: data, teacher, student and the stages to run, in order."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    seed: Annotated[int, Field(ge=0)] = 0
    device: str = Field(default="host-cpu", description="A profile name from devices/ or a YAML path.")
    threads: PositiveInt | Literal["auto"] = Field(
        default="auto", description="torch threads for training; auto = the physical cores this process may use.")
    data: DataConfig
    tokenizer: TokenizerConfig | None = Field(default=None, description="For text data; default trains WordPiece.")
    teacher: TeacherConfig
    assistant: StudentConfig | None = Field(default=None, description="A teacher assistant between the two.")
    student: StudentConfig
    stages: list[StageConfig] = Field(min_length=1)

    def stage_names(self) -> list[str]:
        """The stage kinds in run order."""
        return [s.stage for s in self.stages]


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> Any:
    """Parse a YAML file with the safe loader; errors name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read file ({exc})") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML: {where}{problem}") from exc


def load_yaml_model(path: Path, model: type[M], *, base_dir: Path | None = None) -> M:
    """Load ``path`` into ``model``; relative ``Path`` fields are resolved against ``base_dir``.

    ``base_dir`` defaults to the file's own directory, so a recipe can name files beside it.
    """
    path = Path(path)
    data = read_yaml(path)
    return validate_model(data, model, source=str(path), base_dir=base_dir or path.parent)


def validate_model(data: Any, model: type[M], *, source: str, base_dir: Path | None = None) -> M:
    """Validate a parsed mapping into ``model``, raising a one-line :class:`ConfigError`."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {kind}")
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, model, source)) from None
    return _resolve_paths(obj, base_dir) if base_dir is not None else obj


def _resolve_paths(obj: M, base_dir: Path) -> M:
    def resolved(path: Path) -> Path:
        return path if path.is_absolute() else (base_dir / path).resolve()

    updates: dict[str, Any] = {}
    for name, value in obj:
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = resolved(value)
        elif isinstance(value, list) and any(isinstance(item, Path) for item in value):
            updates[name] = [resolved(item) if isinstance(item, Path) else item for item in value]
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base_dir)
    return obj.model_copy(update=updates) if updates else obj


def _describe_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    parent, shown = _walk(model, loc[:-1]) if loc else (model, [])
    last = loc[-1] if loc else None
    explained = 1  # errors the message covers
    if first["type"] == "extra_forbidden":
        key_parts, message = shown + [last], f"unknown key '{last}'"
        if parent is not None:
            valid = list(parent.model_fields)
            close = difflib.get_close_matches(str(last), valid, n=1)
            message += f" (did you mean '{close[0]}'?)" if close else f"; valid keys: {', '.join(valid)}"
    elif first["type"] == "union_tag_invalid":
        ctx = first.get("ctx", {})
        key_parts = shown + ([last] if last is not None else []) + [ctx.get("discriminator", "").strip("'")]
        tag, expected = ctx.get("tag"), ctx.get("expected_tags", "")
        options = [t.strip(" '") for t in str(expected).split(",")]
        close = difflib.get_close_matches(str(tag), options, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        message = f"unknown value '{tag}'{hint}; expected one of {expected}"
    elif first["type"] == "union_tag_not_found":
        _, key_parts = _walk(model, loc)
        key_parts.append(first.get("ctx", {}).get("discriminator", "").strip("'"))
        message = "required key is missing"
    else:
        _, key_parts = _walk(model, loc)
        if first["type"] == "missing":
            message = "required key is missing"
        elif first["type"] == "value_error":
            message = first["msg"].removeprefix("Value error, ")
        else:  # a value a union rejects fails each member at the same key: say every alternative
            alternatives = [e["msg"] for e in errors if _walk(model, tuple(e["loc"]))[1] == key_parts]
            explained = len(alternatives)
            message = f"{' or '.join(dict.fromkeys(alternatives))} (got {first.get('input')!r})"
    others = len(errors) - explained
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    key = _format_loc(key_parts)
    where = f"{key}: " if key else ""
    return f"{source}: {where}{message}{more}"


def _format_loc(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + str(part)
    return text


def _walk(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[type[BaseModel] | None, list[Any]]:
    """Follow a pydantic error location through fields, lists and tagged unions.

    Returns the model class at the end of ``loc`` (or None) and the location as a user wrote it,
    without the union tags pydantic inserts (``stages[1].distill.alpha`` → ``stages[1].alpha``).
    """
    current: Any = model
    shown: list[Any] = []
    for part in loc:
        current = _unwrap(current)
        is_model = isinstance(current, type) and issubclass(current, BaseModel)
        member = None if is_model and str(part) in current.model_fields else _union_member(current, str(part))
        if member is not None:
            current = member
            continue
        if typing.get_origin(current) in (Union, types.UnionType) and isinstance(part, str):
            current = None  # pydantic's name of a union member ('constrained-int'), not a key the user wrote
            continue
        if is_model:
            field = current.model_fields.get(str(part))
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) is list and isinstance(part, int):
            current = typing.get_args(current)[0]
        else:
            current = None
        shown.append(part)
    current = _unwrap(current)
    found = current if isinstance(current, type) and issubclass(current, BaseModel) else None
    return found, shown


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [m for m in typing.get_args(annotation) if m is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _union_member(annotation: Any, tag: str) -> type[BaseModel] | None:
    """The member of a tagged union (or a lone tagged model) whose Literal tag equals ``tag``."""
    is_union = typing.get_origin(annotation) in (Union, types.UnionType)
    for member in typing.get_args(annotation) if is_union else (annotation,):
        if not (isinstance(member, type) and issubclass(member, BaseModel)):
            continue
        for field in member.model_fields.values():
            if typing.get_origin(field.annotation) is Literal and tag in typing.get_args(field.annotation):
                return member
    return None
