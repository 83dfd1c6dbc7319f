"""The bundle manifest's ``preprocessing`` for a model trained on image files (folders, CSV, ``hf_disk``).

It restates the record the data loader kept in the model's input signature (:mod:`edgekd.data.image_prep`)
in the manifest's image vocabulary (``channels``, ``height``, ``width``, ``scale``, ``mean``, ``std``,
``formula``, ``byte_scale``), which the bundle README and its Kotlin and Python snippets read, and adds
the steps before those formulas: colour conversion, resizing (size, resample filter) and centre crop.
"""

from __future__ import annotations

from typing import Any

COLOR_NAMES = {"RGB": "RGB, channels in the order R, G, B", "L": "grayscale (one channel)"}


def image_file_preprocessing(record: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest entry of signature ``record`` for a model whose first graph input is ``inputs[0]``."""
    channels, height, width = inputs[0]["shape"][1:]
    return {
        "kind": "image", "layout": "NCHW", "channels": channels, "height": height, "width": width,
        "color": color_name(record), "channel_order": record["channel_order"],
        "pixel_range": [0, 255], "byte_scale": 1.0, "scale": record["rescale_factor"],
        "mean": record["mean"], "std": record["std"], "mean_std_from": record["mean_std_from"],
        "resize": record["resize"], "crop": record["crop"], "processor": record["processor"],
        "steps": preprocessing_steps(record),
        "formula": "input[0][c][y][x] = (pixel[c][y][x] * scale - mean[c]) / std[c]",
        "formula_8bit": "pixel[c][y][x] = byte[c][y][x] (the decoded, resized 0..255 image as is)",
        **({"processor_config": record["processor_config"]} if record.get("processor_config") else {}),
    }


def color_name(record: dict[str, Any]) -> str:
    """The colour a model takes, in words: RGB with its channel order (B, G, R for a processor that flips), or grey."""
    order = record.get("channel_order", "RGB")
    if record["color"] == "RGB" and sorted(order) == sorted("RGB") and order != "RGB":
        return f"RGB, channels in the order {', '.join(order)}"
    return COLOR_NAMES[record["color"]]


def preprocessing_steps(record: dict[str, Any]) -> list[str]:
    """What to do to a decoded image, in order, as sentences."""
    steps = [f"decode the image and convert it to {color_name(record)}"]
    resize, crop = record.get("resize"), record.get("crop")
    if resize and "shortest_edge" in resize:
        steps += _shortest_edge_steps(resize, crop)
        crop = None
    elif resize:
        size = ", ".join(f"{key} {value}" for key, value in resize.items() if key != "resample")
        steps.append(f"resize it ({size}) with {resize.get('resample') or 'the default'} resampling")
    if crop:
        steps.append(crop.get("note") or "centre-crop it to "
                     + " × ".join(str(crop[key]) for key in ("height", "width") if key in crop))
    height, width = record["size"]
    steps.append(f"the model takes {height}×{width} pixels; multiply each 0..255 value by "
                 f"{record['rescale_factor']!r}, subtract mean[c] and divide by std[c] per channel")
    return steps


def _shortest_edge_steps(resize: dict[str, Any], crop: dict[str, Any] | None) -> list[str]:
    """A processor's ``shortest_edge`` resize (and ConvNeXt's ``crop_pct``) as the exact steps it takes: the
    shortest edge scaled to a number of pixels, the other side in proportion (rounded down), then the crop."""
    edge, resample = int(resize["shortest_edge"]), resize.get("resample") or "the default"
    pct = (crop or {}).get("crop_pct")
    if pct is not None and edge >= 384:  # ConvNeXt warps large sizes to a square, uncropped
        return [f"resize it (height {edge}, width {edge}) with {resample} resampling"]
    scaled = int(edge / pct) if pct is not None else edge
    how = f" ({edge} / crop_pct {pct}, rounded down)" if pct is not None else ""
    steps = [f"resize it so that its shortest edge is {scaled} pixels{how}, the other side in proportion "
             f"(int({scaled} × long side / short side)), with {resample} resampling"
             + (f", at most {resize['longest_edge']} pixels on the longest edge" if resize.get("longest_edge")
                else "")]
    if pct is not None:
        steps.append(f"centre-crop it to {edge} × {edge} (offsets: (width − {edge}) // 2, (height − {edge}) // 2)")
    elif crop:
        steps.append("centre-crop it to " + " × ".join(str(crop[key]) for key in ("height", "width") if key in crop))
    return steps
