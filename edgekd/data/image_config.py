"""Recipe configs of image files: a folder per class (``imagefolder``), a CSV of paths and labels (``image_csv``),
and how their pixels become model inputs (:class:`ImagePrep`, shared with ``hf_disk`` image datasets).

How images are prepared (see :mod:`edgekd.data.image_prep`): with an image processor (``image_processor``,
by default the one a Hugging Face ``pretrained`` checkpoint of the recipe ships, see
:mod:`edgekd.data.image_defaults`) exactly as its ``preprocessor_config.json`` says; else converted to
``color``, resized to ``image_size`` (bilinear), scaled to [0, 1] and normalised per channel with
``mean``/``std`` (unset: computed on the training images).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, StrictInt, model_validator

from edgekd.config.base import Fraction, LocalPath, PathOrId, PositiveFloat, PositiveInt, StrictModel

#: The source names whose examples are image files.
IMAGE_FILE_SOURCES = ("imagefolder", "image_csv")
#: ``image_size``: one side of a square, or [height, width].
ImageSize = PositiveInt | tuple[PositiveInt, PositiveInt]


class ImagePrep(StrictModel):
    """How image files become the float tensors a model takes (the preprocessing recorded in its bundle)."""

    image_processor: PathOrId | Literal[False] | None = Field(
        default=None, description="A hub id or local directory with a preprocessor_config.json (Hugging Face "
        "AutoImageProcessor: resize, crop, rescale, normalise as it says). Unset: the teacher's (else the "
        "assistant's, else the student's) pretrained checkpoint when it ships one; false: never.")
    image_size: ImageSize | None = Field(
        default=None, description="Without an image processor: resize every image to this (one side, or "
        "[height, width]). Unset: the image_size of a Hugging Face model's config, else the most common size "
        "of the training images.")
    color: Literal["RGB", "L"] = Field(default="RGB", description="Without an image processor: channels the "
                                       "images are converted to (RGB: 3, L: 1 grey).")
    mean: tuple[float, ...] | None = Field(default=None, description="Per-channel mean subtracted after scaling to "
                                     "[0, 1]; unset: computed on the training images.")
    std: tuple[PositiveFloat, ...] | None = Field(default=None, description="Per-channel std divided by; unset: "
                                            "computed on the training images.")

    @model_validator(mode="after")
    def _one_way_to_prepare(self) -> ImagePrep:
        plain = [key for key in ("image_size", "mean", "std") if getattr(self, key) is not None]
        if isinstance(self.image_processor, str) and (plain or "color" in self.model_fields_set):
            raise ValueError(f"image_processor decides size, colour and normalisation; drop "
                             f"{', '.join(plain + (['color'] if 'color' in self.model_fields_set else []))} or "
                             "set image_processor: false")
        channels = 3 if self.color == "RGB" else 1
        for key in ("mean", "std"):
            values = getattr(self, key)
            if values is not None and len(values) != channels:
                raise ValueError(f"{key}: {len(values)} values for {self.color} images; expected {channels} "
                                 "(one per channel)")
        return self


class ImageSplits(ImagePrep):
    """Validation from a ``val`` set or a seeded fraction of the training set, the split seed, a limit."""

    modality: ClassVar[Literal["image", "text"]] = "image"

    val_fraction: Fraction = Field(default=0.15, description="Share of train held out for validation (stratified, "
                                   "seeded) when no 'val' set is given.")
    split_seed: StrictInt | None = Field(default=None, description="Seed of the validation split (default: "
                                         "the recipe's seed).")


class ImageFolderData(ImageSplits):
    """Images in a folder per class (``train/cat/1.png``), the layout torchvision and ``datasets`` use."""

    source: Literal["imagefolder"]
    train: LocalPath = Field(description="A folder with one sub-folder of PNG/JPEG images per class.")
    test: LocalPath = Field(description="The same layout; the reported accuracy is measured on it.")
    val: LocalPath | None = Field(default=None, description="The same layout; unset: val_fraction of train.")


class ImageCsvData(ImageSplits):
    """CSV files (with a header line) of image paths and class labels; relative paths are from the CSV's folder."""

    source: Literal["image_csv"]
    train: LocalPath
    test: LocalPath
    val: LocalPath | None = Field(default=None, description="Unset: val_fraction of train.")
    path_column: str = "path"
    label_column: str = "label"
