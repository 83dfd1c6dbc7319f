"""Decoded images → the float tensors a model takes, and a record of exactly how (for the model's signature).

Two ways, chosen by the data config (:class:`~edgekd.data.image_config.ImagePrep`):

- **an image processor** (``image_processor``: a Hugging Face ``AutoImageProcessor`` directory or hub id,
  slow PIL backend): images are converted to RGB (grey, when it normalises one channel) and the processor
  resizes, crops, rescales and normalises them as its ``preprocessor_config.json`` says;
- **plain**: converted to ``color`` (RGB or L), resized to ``image_size`` with bilinear resampling,
  scaled to [0, 1] and normalised per channel with ``mean``/``std`` (unset: the training images' own,
  measured after resizing; a channel of one value keeps std 1).

The record (:attr:`Preparer.record`) lists what an app must do to a decoded image, in order: colour
(channel order), resize (size, resample), centre crop, rescale factor, per-channel mean and std; it is
stored in the model's input signature and becomes the bundle manifest's ``preprocessing``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.data.image_config import ImagePrep
from edgekd.errors import DataError, first_line

if TYPE_CHECKING:
    from PIL import Image

#: Images handed to an image processor at a time (bounds the memory of its intermediate arrays).
CHUNK = 64
#: A channel whose std is below this is constant: it keeps std 1 instead of exploding.
MIN_STD = 1e-6
RESCALE = 1 / 255


@dataclass(frozen=True)
class Preparer:
    """Turns decoded images into a float32 array ``N × C × H × W``; :attr:`record` says how."""

    record: dict[str, Any]
    processor: Any = None

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """The model inputs of ``images`` (any sizes and modes)."""
        if not images:
            return np.zeros((0, *self.shape), dtype=np.float32)
        if self.processor is not None:
            color = self.record["color"]
            chunks = [self.processor(images=[in_color(image, color) for image in images[i:i + CHUNK]],
                                     return_tensors="np")["pixel_values"] for i in range(0, len(images), CHUNK)]
            return np.concatenate(chunks).astype(np.float32)
        scaled = _resized(images, self.record["color"], self.record["size"])
        mean = np.asarray(self.record["mean"], dtype=np.float32)[:, None, None]
        std = np.asarray(self.record["std"], dtype=np.float32)[:, None, None]
        return ((scaled - mean) / std).astype(np.float32)

    @property
    def shape(self) -> tuple[int, int, int]:
        """One input's shape, channels × height × width."""
        return (len(self.record["mean"]), *self.record["size"])


def make_preparer(config: ImagePrep, train: Sequence[Image.Image], *, trust_remote_code: bool = False) -> Preparer:
    """The preparer ``config`` asks for; a plain one measures its defaults (size, mean, std) on ``train``."""
    if isinstance(config.image_processor, str):
        return _processor_preparer(config.image_processor, trust_remote_code)
    size = _size(config.image_size) if config.image_size is not None else _common_size(train)
    record: dict[str, Any] = {"processor": None, "color": config.color, "channel_order": _order(config.color),
                              "size": list(size), "resize": {"height": size[0], "width": size[1],
                                                             "resample": "bilinear"},
                              "crop": None, "rescale_factor": RESCALE}
    if config.mean is None or config.std is None:
        scaled = _resized(train, config.color, size)
        mean = scaled.mean(axis=(0, 2, 3))
        std = scaled.std(axis=(0, 2, 3))
        std = np.where(std < MIN_STD, 1.0, std)
    record["mean"] = [float(v) for v in (config.mean if config.mean is not None else mean)]
    record["std"] = [float(v) for v in (config.std if config.std is not None else std)]
    record["mean_std_from"] = "given" if config.mean is not None and config.std is not None else "training images"
    return Preparer(record)


def _processor_preparer(name: str, trust_remote_code: bool) -> Preparer:
    """An ``AutoImageProcessor`` (the PIL backend: no torchvision needed) and its record."""
    from PIL import Image
    from transformers import AutoImageProcessor

    from edgekd.models.hf import quiet_transformers
    from edgekd.models.packaged import resolve_pretrained

    quiet_transformers()
    try:
        processor = AutoImageProcessor.from_pretrained(resolve_pretrained(name), backend="pil",
                                                       trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise DataError(f"image processor '{name}' (data.image_processor): cannot be loaded: {first_line(exc)}; "
                        "set data.image_processor: false for plain resizing") from None
    settings = processor.to_dict()
    normalize = bool(settings.get("do_normalize", True))
    # a processor normalising one channel is a grey model's (num_channels 1): it is given grey images
    grey = normalize and isinstance(settings.get("image_mean"), list | tuple) and len(settings["image_mean"]) == 1
    color = "L" if grey else "RGB"
    try:
        probe = processor(images=[Image.new(color, (64, 48))], return_tensors="np")["pixel_values"]
    except (ValueError, TypeError) as exc:
        raise DataError(f"image processor '{name}' (data.image_processor): fails on a {color} image: "
                        f"{first_line(exc)}") from None
    channels, height, width = probe.shape[1:]
    resample = settings.get("resample")
    record: dict[str, Any] = {
        "processor": settings.get("image_processor_type", type(processor).__name__), "source": name,
        "color": color, "channel_order": _order(color), "size": [int(height), int(width)],
        "resize": ({**dict(settings.get("size") or {}), "resample": _resample_name(resample)}
                   if settings.get("do_resize", True) else None),
        "crop": _crop(settings),
        "rescale_factor": float(settings.get("rescale_factor", RESCALE)) if settings.get("do_rescale", True) else 1.0,
        "mean": [float(v) for v in settings.get("image_mean", ())] if normalize else [0.0] * channels,
        "std": [float(v) for v in settings.get("image_std", ())] if normalize else [1.0] * channels,
        "mean_std_from": "image processor",
        "processor_config": json.loads(json.dumps(settings, default=str)),
    }
    return Preparer({**record, **(_measured_pixels(processor, record) if color == "RGB" else {})}, processor)


def _measured_pixels(processor: Any, record: dict[str, Any]) -> dict[str, Any]:
    """The channel order, mean and std the processor applies, where they differ from what its settings read as.

    A processor's keys do not say everything it does (MobileViT's ``do_flip_channel_order`` feeds B, G, R;
    a subclass may normalise without ``do_normalize``). Uniform images of three colours are run through it:
    each output channel is an affine function of one input channel (``(value × scale - mean) / std``),
    which gives its order, mean and std. Processors whose outputs are not such a function keep the record.
    """
    from PIL import Image

    colours = np.array([(10, 120, 230), (200, 40, 90), (70, 250, 5)], dtype=np.float64)
    outputs = [processor(images=[Image.new("RGB", (64, 48), tuple(int(v) for v in colour))],
                         return_tensors="np")["pixel_values"][0] for colour in colours]
    got = np.array([[float(channel[channel.shape[0] // 2, channel.shape[1] // 2]) for channel in output]
                    for output in outputs])
    if got.shape[1] != 3:
        return {}
    order, slopes, offsets = [], [], []
    for channel in range(3):
        for source in range(3):
            slope = (got[1, channel] - got[0, channel]) / (colours[1, source] - colours[0, source])
            offset = got[0, channel] - slope * colours[0, source]
            if abs(slope) > 1e-12 and np.allclose(got[:, channel], slope * colours[:, source] + offset, atol=1e-3):
                order.append(source)
                slopes.append(slope)
                offsets.append(offset)
                break
        else:
            return {}
    std = [record["rescale_factor"] / slope for slope in slopes]
    mean = [-offset * deviation for offset, deviation in zip(offsets, std, strict=True)]
    measured: dict[str, Any] = {}
    if order != [0, 1, 2]:
        measured["channel_order"] = "".join("RGB"[source] for source in order)
    if not np.allclose(mean, record["mean"], atol=1e-3) or not np.allclose(std, record["std"], atol=1e-3):
        measured |= {"mean": [round(v, 6) for v in mean], "std": [round(v, 6) for v in std]}
    return measured


def _crop(settings: dict[str, Any]) -> dict[str, Any] | None:
    """The centre crop a processor makes: its ``crop_size``, or ConvNeXt's ``crop_pct`` of the resized image."""
    if settings.get("do_center_crop") and settings.get("crop_size"):
        return {"center": True, **dict(settings["crop_size"])}
    size = settings.get("size") or {}
    if settings.get("crop_pct") is not None and "shortest_edge" in size:
        return {"center": True, "crop_pct": float(settings["crop_pct"]),
                "note": "below 384 px: resize the shortest edge to shortest_edge / crop_pct, then centre-crop "
                        "shortest_edge × shortest_edge (ConvNeXt)"}
    return None


def _resample_name(value: Any) -> str | None:
    from PIL import Image

    return None if value is None else Image.Resampling(int(value)).name.lower()


def _resized(images: Sequence[Image.Image], color: str, size: Sequence[int]) -> np.ndarray:
    """``images`` in ``color``, resized (bilinear) to ``size`` (height, width), scaled to [0, 1], N × C × H × W."""
    from PIL import Image

    height, width = size
    arrays = [np.asarray(in_color(image, color).resize((width, height), Image.Resampling.BILINEAR),
                         dtype=np.float32) for image in images]
    stacked = np.stack(arrays) * np.float32(RESCALE)
    return stacked[:, None] if stacked.ndim == 3 else stacked.transpose(0, 3, 1, 2)


def in_color(image: Image.Image, color: str) -> Image.Image:
    """``image`` converted to ``color`` (``RGB`` or ``L``), 8 bits a channel, its brightness kept.

    PIL's ``convert`` clips the 16-bit (``I;16``) and 32-bit integer (``I``) grey of a 16-bit PNG at 255, which
    turns nearly every pixel white, and truncates float (``F``) grey in [0, 1] to black; those modes are first
    scaled to 8 bits: integers from the 16-bit range (a 16-bit PNG's), floats from [0, 1] (or from 0..255 when a
    value exceeds 1).
    """
    from PIL import Image

    if image.mode.startswith("I") or image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") else (255.0 if values.max(initial=0) > 1 else 1.0)
        image = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), mode="L")
    return image.convert(color)


def _size(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def _common_size(images: Sequence[Image.Image]) -> tuple[int, int]:
    """The most common (height, width) of ``images``; of equally common ones, the largest."""
    counts = Counter((image.height, image.width) for image in images)
    return max(counts, key=lambda size: (counts[size], size[0] * size[1], size))


def _order(color: str) -> str:
    return "RGB" if color == "RGB" else "L"
