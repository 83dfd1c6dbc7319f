"""The bundle README's Python example for an image model: image files in, the model's answer out.

It carries out the manifest's ``preprocessing`` steps with PIL and numpy exactly as training made its inputs
(:mod:`edgekd.data.image_prep`, or the Hugging Face image processor it recorded): colour conversion (16-bit and
float grey first brought to 8 bits, as :func:`edgekd.data.image_prep.in_color` does), the resize (a fixed size,
or the shortest edge with the other side in proportion), the centre crop, the rescale, the per-channel mean/std
normalisation, channels first (NCHW), a batch axis of one when the graph's input has one. The code is generated
for the manifest's own resize and crop, with their numbers written out, so an app developer can port it line by
line. Image paths come from the command line; a bundle whose manifest holds an example bitmap (scikit-learn
digits) uses it when none is given.
"""

from __future__ import annotations

from typing import Any

from edgekd.export.code_literals import python_string
from edgekd.export.readme_answer import python_row

#: Run as ``python classify.py IMAGE...`` in the bundle directory.
SCRIPT = "classify.py"

_HEAD = """\
import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

manifest = json.load(open("manifest.json"))
session = ort.InferenceSession("{model_file}")
pre = manifest["preprocessing"]
mean = np.array(pre["mean"])[:, None, None]
std = np.array(pre["std"])[:, None, None]


def model_input(image):
    \"\"\"The model's input ({dims}) of a decoded image, by the manifest's steps.\"\"\"
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit or float grey: to 8 bits first, as in training
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I") else (255.0 if values.max(initial=0) > 1 else 1.0)
        image = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8))
    image = image.convert("{mode}")  # {color}"""

_TAIL = """\
    pixel = np.asarray(image, dtype=np.float64)
    pixel = pixel[None] if pixel.ndim == 2 else pixel.transpose(2, 0, 1)  # channels first: C × H × W
    x = (pixel * pre["byte_scale"] * pre["scale"] - mean) / std  # byte_scale: 0..255 → the range trained on
    return x{layout}{batch}.astype(np.{dtype})  # layout {layout_name}{batch_note}


"""

_SHORTEST_EDGE = """\
    width, height = image.size  # the shortest edge to {edge} pixels, the other side in proportion (rounded down)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = {edge}, int({edge} * long / short)"""

_LONGEST_CAP = """\
    if new_long > {cap}:  # at most {cap} pixels on the longest edge
        new_short, new_long = int({cap} * new_short / new_long), {cap}"""

_CROP = """\
    left, top = (image.width - {width}) // 2, (image.height - {height}) // 2  # centre crop to {height}×{width}
    image = image.crop((left, top, left + {width}, top + {height}))"""

_EXACT_SIZE = """\
    if image.size != ({width}, {height}):
        sys.exit(f"the model takes {width}×{height} images (width×height), "
                 f"this one is {{image.width}}×{{image.height}}: it has no resize step")"""

_LOOP_EXAMPLE = """\
if len(sys.argv) > 1:
    images = [Image.open(path) for path in sys.argv[1:]]
else:  # the manifest's example bitmap (preprocessing.example.pixels_8bit)
    images = [Image.fromarray(np.array(pre["example"]["pixels_8bit"], dtype=np.uint8))]
for image in images:"""

_LOOP_FILES = """\
if len(sys.argv) < 2:
    sys.exit("usage: python {script} IMAGE [IMAGE ...]")
for path in sys.argv[1:]:
    image = Image.open(path)"""


def image_python(manifest: dict[str, Any], answer: list[str]) -> list[str]:
    """The complete Python example for an image bundle; ``answer`` turns ``logits`` into the printed answer."""
    pre, first = manifest["preprocessing"], manifest["inputs"][0]
    nhwc = str(pre.get("layout", "NCHW")).upper() == "NHWC"
    sizes = (pre["height"], pre["width"], pre["channels"]) if nhwc else (pre["channels"], pre["height"], pre["width"])
    batched = len(first["shape"]) > len(sizes)  # the graph's input has a batch axis before the image's
    dims = ((1,) if batched else ()) + sizes
    head = _HEAD.format(model_file=manifest["model"]["file"], dims=" × ".join(map(str, dims)), mode=_pil_mode(pre),
                        color=pre["color"])
    loop = _LOOP_EXAMPLE if pre.get("example") else _LOOP_FILES.format(script=SCRIPT)
    body = [f'    logits = session.run([{python_string(manifest["postprocessing"]["output"])}], '
            f'{{{python_string(first["name"])}: model_input(image)}})[0]',
            *("    " + line for line in answer)]
    if pre.get("example"):
        body += ["    if len(sys.argv) < 2:  # the example's logits, to compare with preprocessing.example.logits",
                 f'        print(" ".join(f"{{v:.4f}}" for v in {python_row(manifest)}))']
    tail = _TAIL.format(dtype=first["dtype"], layout=".transpose(1, 2, 0)" if nhwc else "",
                        layout_name="NHWC" if nhwc else "NCHW", batch="[None]" if batched else "",
                        batch_note=", batch of one" if batched else " (the graph's input has no batch axis)"
                        ).splitlines()
    order = str(pre.get("channel_order", ""))
    if order != "RGB" and sorted(order) == sorted("RGB"):  # decoded as R, G, B; the model takes another order
        tail.insert(2, f"    pixel = pixel[{['RGB'.index(c) for c in order]}]  # channels in the order "
                       f"{', '.join(order)}")
    return [*head.splitlines(), *_resize_and_crop(pre), *tail, *loop.splitlines(), *body]


def _pil_mode(pre: dict[str, Any]) -> str:
    """PIL's mode for the manifest's colour: its channel order (``RGB``, ``L``), else by the channel count."""
    order = pre.get("channel_order")
    if order in ("RGB", "L"):
        return order
    return {1: "L", 3: "RGB", 4: "RGBA"}.get(int(pre["channels"]), "RGB")


def _resize_and_crop(pre: dict[str, Any]) -> list[str]:
    """The lines resizing and cropping ``image`` as the manifest's ``resize`` and ``crop`` say."""
    resize, crop = pre.get("resize"), pre.get("crop") or None
    if not resize:  # nothing recorded (scikit-learn digits, a described model): the model's own size, as it is
        return (_crop_lines(crop, None) if isinstance(crop, dict) else []) \
            or _EXACT_SIZE.format(width=pre["width"], height=pre["height"]).splitlines()
    if not isinstance(resize, dict) or not isinstance(crop, dict | None):
        return [_not_written(f"resize {resize!r}, crop {crop!r}")]
    filter_name = str(resize.get("resample") or "bilinear").upper()
    resample = f"Image.Resampling.{filter_name}"
    if "shortest_edge" in resize:
        edge, pct = int(resize["shortest_edge"]), (crop or {}).get("crop_pct")
        if pct is not None and edge >= 384:  # ConvNeXt warps large sizes to a square, uncropped
            return [f"    image = image.resize(({edge}, {edge}), {resample})"]
        scaled = int(edge / pct) if pct is not None else edge
        lines = _SHORTEST_EDGE.format(edge=scaled).splitlines()
        if pct is not None:
            lines.insert(0, f"    # {scaled} = int({edge} / crop_pct {pct}): the size before the {edge}×{edge} crop")
        if resize.get("longest_edge"):
            lines += _LONGEST_CAP.format(cap=int(resize["longest_edge"])).splitlines()
        lines += ["    size = (new_short, new_long) if width <= height else (new_long, new_short)",
                  f"    image = image.resize(size, {resample})"]
        return lines + _crop_lines(crop, edge if pct is not None else None)
    if "height" in resize and "width" in resize:
        return [f"    image = image.resize(({int(resize['width'])}, {int(resize['height'])}), {resample})",
                *_crop_lines(crop, None)]
    return [_not_written(f"resize {resize!r}")]


def _not_written(what: str) -> str:
    """A line stopping the example where the manifest's resize is of a form it does not carry out."""
    return f"    sys.exit({f'the preprocessing steps ({what}) are not written out here: follow the README list'!r})"


def _crop_lines(crop: dict[str, Any] | None, square: int | None) -> list[str]:
    """A centre crop to ``crop``'s height × width, or to ``square`` pixels a side (ConvNeXt's crop_pct)."""
    if square is not None:
        return _CROP.format(height=square, width=square).splitlines()
    if not crop or "height" not in crop or "width" not in crop:
        return []
    return _CROP.format(height=int(crop["height"]), width=int(crop["width"])).splitlines()
