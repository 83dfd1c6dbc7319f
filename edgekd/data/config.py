"""Where a recipe's data comes from (scikit-learn, TSV/CSV, ``save_to_disk`` directories, the hub) and its tokenizer."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, StrictInt, ValidationInfo, field_validator, model_validator

from edgekd.config.base import Fraction, LocalPath, PathOrId, PositiveInt, StrictModel
from edgekd.config.paths import recorded_checkpoints
from edgekd.data.image_config import ImageCsvData, ImageFolderData, ImagePrep
from edgekd.models.checkpoint_files import check_local_path

#: What a model learns from the labels (see :mod:`edgekd.data.label_kind`).
TaskKind = Literal["single_label", "multi_label", "regression", "token_classification"]
TASK_DESCRIPTION = ("What the labels are: single_label (one class a row), multi_label (class names separated by "
                    "',' or '|', or a list literal ['a', 'b']; npz: N × classes 0/1 rows), regression (numbers), "
                    "token_classification (a tag per token, in tokens_column and tags_column). Unset: inferred from "
                    "the training labels, refused when ambiguous.")


class SplitSeed(StrictModel):
    """The seed of the train/validation(/test) split, when it must not follow the recipe's seed."""

    split_seed: StrictInt | None = Field(
        default=None,
        description="Seed of the data split (default: the recipe's seed). Fix it to compare training seeds "
        "on identical splits, or to reuse a teacher trained on one split.",
    )


class SklearnData(SplitSeed):
    """A dataset bundled with scikit-learn (no download needed)."""

    modality: ClassVar[Literal["image", "text"]] = "image"

    source: Literal["sklearn"]
    name: Literal["digits"]
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2
    limit: PositiveInt | None = Field(default=None, description="Use only this many samples.")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> SklearnData:
        _check_fractions(self.val_fraction, self.test_fraction)
        return self


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Validation and test together leave a training split."""
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"val_fraction + test_fraction is {val_fraction + test_fraction:g}; expected "
                         "less than 1 (the rest is the training split)")


class NpzData(SplitSeed):
    """Images and labels in a ``.npz`` file (``inputs`` N × C × H × W, ``labels``; see :mod:`edgekd.data.npz`).

    With ``eval_data``, the whole file is the training set (e.g. a synthetic set from ``dataset_distill``)
    and validation/test come from that source (prepared as it prepares its images); else the file is split like
    scikit-learn data.
    """

    modality: ClassVar[Literal["image", "text"]] = "image"

    source: Literal["npz"]
    path: LocalPath
    task: TaskKind | None = Field(default=None, description=TASK_DESCRIPTION)
    val_fraction: Fraction = 0.15
    test_fraction: Fraction = 0.2
    eval_data: Annotated[SklearnData | ImageFolderData | ImageCsvData, Field(discriminator="source")] | None = Field(
        default=None, description="Where validation and test examples come from (scikit-learn data, an image folder "
        "or an image CSV: the data the set was learnt from, split and prepared as it was); unset splits the file.")
    soft_labels: bool = Field(
        default=True, description="Train on the file's soft_labels (class probabilities) where it has them, "
        "as the set was evaluated; false: on its hard labels.")

    @model_validator(mode="after")
    def _splits_leave_training_data(self) -> NpzData:
        _check_fractions(self.val_fraction, self.test_fraction)
        return self


class TextSplitsConfig(SplitSeed):
    """What every labelled text source shares: columns, the held-out validation slice, limits."""

    modality: ClassVar[Literal["image", "text"]] = "text"

    text_column: str = "sentence"
    label_column: str = "label"
    tokens_column: str = Field(default="tokens", description="Token classification: the space-separated tokens.")
    tags_column: str = Field(default="tags", description="Token classification: one tag per token, space-separated.")
    task: TaskKind | None = Field(default=None, description=TASK_DESCRIPTION)
    val_examples: PositiveInt = Field(
        default=1000, description="Examples held out of the training split to pick the best epoch."
    )
    limit_train: PositiveInt | None = Field(
        default=None, description="Use only N training examples (the first N of the seeded order, after val)."
    )
    limit_test: PositiveInt | None = None


class TextFileData(TextSplitsConfig):
    """Labelled text in local files: TSV or CSV with a header line (e.g. GLUE SST-2), JSON (one object per line, or
    one array of objects; the keys are the columns) or Parquet (as the Hugging Face hub stores datasets)."""

    source: Literal["tsv", "csv", "json", "parquet"]
    train: LocalPath
    test: LocalPath = Field(description="Labelled file the reported accuracy is measured on (SST-2: dev.tsv).")

    @property
    def file_kind(self) -> str:
        """How messages name the files' format: ``TSV``, ``CSV``, ``JSON`` or ``Parquet``."""
        return "Parquet" if self.source == "parquet" else self.source.upper()


class HFDiskData(TextSplitsConfig, ImagePrep):
    """A dataset saved with ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``.

    Text by default; with ``image_column`` an image dataset (that column holds images, the image settings
    of :class:`~edgekd.data.image_config.ImagePrep` apply, ``val_examples`` of train are held out).
    """

    source: Literal["hf_disk"]
    path: LocalPath
    train_split: str = "train"
    test_split: str = "validation"
    image_column: str | None = Field(default=None, description="A column of images (datasets Image feature): "
                                     "the dataset is image data and text_column is not read.")

    @property
    def modality(self) -> Literal["image", "text"]:  # type: ignore[override]
        """Image with an ``image_column``, else text."""
        return "text" if self.image_column is None else "image"

    @model_validator(mode="after")
    def _image_settings_need_images(self) -> HFDiskData:
        given = sorted(set(ImagePrep.model_fields) & self.model_fields_set)
        if self.image_column is None and given:
            raise ValueError(f"{', '.join(given)}: image settings, but the dataset is read as text; set "
                             "image_column (the column of images)")
        return self


class HubData(TextSplitsConfig):
    """A dataset from the Hugging Face hub (needs network at run time)."""

    source: Literal["hub"]
    id: str = Field(min_length=1)
    config: str | None = None
    train_split: str = "train"
    test_split: str = "validation"


class CorpusData(StrictModel):
    """Plain text for a causal language model: a UTF-8 file, or a ``save_to_disk`` directory's text column.

    A file is split by characters (nanoGPT's split: the first ``train_fraction`` trains, the rest
    validates); a directory's ``train_split`` trains and its ``validation_split`` validates (rows joined
    by newlines), or, without one, its training text is split like a file.
    """

    modality: ClassVar[Literal["image", "text"]] = "text"

    source: Literal["corpus"]
    task: Literal["causal_lm"] = "causal_lm"
    path: LocalPath = Field(description="A UTF-8 text file, a folder of .txt files (read in path order, one "
                                        "text), or a datasets save_to_disk directory.")
    text_column: str = Field(default="text", description="The text column of a datasets directory.")
    train_split: str = "train"
    validation_split: str = "validation"
    train_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.9, description="Share of the text (in characters) that trains; the rest validates.")
    context: Annotated[StrictInt, Field(ge=8, le=32768)] = Field(
        default=128, description="Tokens per training window; a model built from sizes gets this context length.")


class MemoryData(SplitSeed):
    """Datasets or DataLoaders given to ``Pipeline(data={...})`` as objects (see :mod:`edgekd.data.memory`).

    Held in this process under ``digest``, the SHA-256 of their materialized tensors (part of every
    stage's fingerprint, so changed data re-runs the stages); such a recipe cannot be written to YAML.
    """

    source: Literal["memory"]
    kind: Literal["image", "text"] = Field(description="Set from the data: 'text' when it holds input_ids.")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", description="SHA-256 of the materialized tensors.")
    val_fraction: Fraction = Field(default=0.15, description="Share of train held out for validation when "
                                   "no 'val' set is given (seeded split).")

    @property
    def modality(self) -> Literal["image", "text"]:
        """The data's kind (a property here: it depends on what was given, not on the source)."""
        return self.kind


DataConfig = Annotated[
    Union[SklearnData, NpzData, TextFileData, HFDiskData, HubData, CorpusData, MemoryData, ImageFolderData,  # noqa: UP007
          ImageCsvData],
    Field(discriminator="source"),
]


def is_corpus(data: object) -> bool:
    """True for a causal language model's data (``source: corpus``)."""
    return isinstance(data, CorpusData)


class TokenizerConfig(StrictModel):
    """Token ids for text data: a Hugging Face tokenizer, or a WordPiece one trained on the training split."""

    pretrained: PathOrId | None = Field(
        default=None, description="A hub id or a local tokenizer directory; unset trains one offline (see kind)."
    )
    kind: Literal["wordpiece", "char", "bpe"] | None = Field(
        default=None, description="The tokenizer trained when no pretrained one is named: wordpiece (labelled "
        "text's default), char (one token per character, a corpus's default) or bpe (byte-level BPE of "
        "vocab_size tokens, for a corpus).")
    vocab_size: Annotated[StrictInt, Field(ge=100)] = 8000
    lowercase: bool = True
    max_length: Annotated[StrictInt, Field(ge=8)] = 128

    @field_validator("pretrained")
    @classmethod
    def _path_exists(cls, pretrained: str | None, info: ValidationInfo) -> str | None:
        if pretrained is not None and recorded_checkpoints(info) is None:  # a finished run's: checked when it began
            check_local_path(pretrained)
        return pretrained


def run_tokenizer(recipe: Any) -> TokenizerConfig:
    """The tokenizer a text recipe's run takes its token ids from: the recipe's ``tokenizer``; with none, a
    pretrained teacher's own (its checkpoint's tokenizer, as the teacher stage loads it); else a WordPiece trained
    on the data at the defaults. What ``validate`` checks the models' vocabularies against."""
    if recipe.tokenizer is not None:
        return recipe.tokenizer
    pretrained = getattr(recipe.teacher.model, "pretrained", None)
    return TokenizerConfig(pretrained=pretrained) if pretrained is not None else TokenizerConfig()
