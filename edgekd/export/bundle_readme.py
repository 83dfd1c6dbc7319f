"""The bundle's README.md for app developers, written from its manifest.

It says what each file is, what the model expects and returns, how fast it is on the target
device, and shows how to feed it with ONNX Runtime's Android API (Kotlin) and from Python. The
Python example is complete: run in the bundle directory, it classifies one input.
"""

from __future__ import annotations

from typing import Any

from edgekd.export.code_literals import kotlin_string
from edgekd.export.readme_answer import answer_kind, kotlin_answer, python_answer
from edgekd.export.readme_feeds import input_shapes, is_token_model, kotlin_classify, kotlin_inputs, python_feeds
from edgekd.export.readme_image import SCRIPT, image_python

_FILE_PURPOSES = {
    "ort": "the model in ONNX Runtime's mobile format: load this in the app",
    "onnx": "the same model as ONNX (for Netron, desktop tests and other runtimes)",
    "required_operators": "operators a minimal ONNX Runtime build needs (build.py --include_ops_by_config)",
}


def render_readme(manifest: dict[str, Any]) -> str:
    """README.md text for the bundle described by ``manifest`` (its ``files`` entry is not needed)."""
    model, latency = manifest["model"], manifest["latency"]
    lines = [
        f"# {manifest['name']}: on-device model bundle",
        "",
        f"Made by edgekd {manifest['edgekd_version']} for the device profile **{manifest['device']['name']}**"
        + (f" ({manifest['device']['description'].rstrip('.')})" if manifest["device"].get("description") else "")
        + ".",
        "",
        "| file | what it is |",
        "|---|---|",
        *[f"| `{path}` | {purpose} |" for path, purpose in _files(manifest)],
        "",
        "## The model",
        "",
        f"- Format: {model['format']} (opset {model['opset']}), made with onnxruntime {model['onnxruntime']}: "
        "run it with that version of ONNX Runtime or a newer one.",
        *[f"- Input `{t['name']}`: {t['dtype']} {_shape(t['shape'])}" for t in manifest["inputs"]],
        *[f"- Output `{t['name']}`: {t['dtype']} {_shape(t['shape'])}"
          + (f": {manifest['postprocessing']['note']}" if t["name"] == manifest["postprocessing"]["output"] else "")
          for t in manifest["outputs"]],
        f"- Labels ({len(manifest['labels'])}): {', '.join(manifest['labels'])}" if manifest["labels"] else
        "- Labels: none given (`edgekd bundle --labels FILE` names the classes); an index is the class",
        _test_figures(manifest),
        f"- Latency on {manifest['device']['name']}: p50 {_number(latency['p50_ms'], '{:.3f}')} ms, "
        f"p90 {_number(latency['p90_ms'], '{:.3f}')} ms ({latency['basis']})"
        + (f"; budget verdict: **{manifest['budget']['verdict']}**" if manifest.get("budget") else ""),
        "",
        *_preprocessing_lines(manifest.get("preprocessing"), tokenized=bool(manifest.get("tokenizer"))),
        "## Android (Kotlin, ONNX Runtime)",
        "",
        f"Add `implementation(\"com.microsoft.onnxruntime:onnxruntime-android:{model['onnxruntime']}\")` to the app's",
        f"dependencies and copy `{model['file']}` to `app/src/main/assets/`. The Java API has the same classes.",
        "",
        "```kotlin",
        *_kotlin(manifest),
        "```",
        "",
        "On iOS the same model runs with the `onnxruntime-objc` pod (`ORTSession` on the same file and inputs).",
        "",
        "## Python",
        "",
        *_python_intro(manifest.get("preprocessing") or {}),
        "```python",
        *_python(manifest),
        "```",
        "",
    ]
    return "\n".join(lines)


def _files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    model = manifest["model"]
    rows = [(model["file"], _FILE_PURPOSES[model["format"]])]
    if model.get("onnx_file") and model["onnx_file"] != model["file"]:
        rows.append((model["onnx_file"], _FILE_PURPOSES["onnx"]))
    if model.get("required_operators"):
        rows.append((model["required_operators"], _FILE_PURPOSES["required_operators"]))
    if manifest.get("tokenizer"):
        rows.append((manifest["tokenizer"]["directory"] + "/", "the tokenizer the model's token ids come from"))
    rows += [("manifest.json", "machine-readable description of all of this, with the sha256 of every file"),
             ("README.md", "this file")]
    return rows


def _preprocessing_lines(pre: dict[str, Any] | None, *, tokenized: bool) -> list[str]:
    if pre is None:
        return ["## Preprocessing", "", "Feed the inputs as the model was trained on them (see manifest.json).", ""]
    if pre["kind"] == "text":
        return ["## Preprocessing", "",
                ("Remove leading and trailing whitespace (training did), then t" if pre.get("strip") else "T")
                + ("okenize with the files in `tokenizer/`, p" if tokenized else "okenize as in training, p")
                + f"adding or truncating to {pre['max_length']} tokens (pad id {pre['pad_id']}).", ""]
    if pre["kind"] != "image":  # a user's own description (edgekd bundle --preprocessing), shown as given
        return ["## Preprocessing", "", f"As described in manifest.json's `preprocessing` (kind `{pre['kind']}`):",
                "", *[f"- `{key}`: {value}" for key, value in pre.items() if key != "kind"], ""]
    example = pre.get("example")
    lines = [
        "## Preprocessing",
        "",
        f"Images of {pre['height']}×{pre['width']} pixels ({pre['color']}), {pre['channels']} channel(s), "
        f"layout {pre['layout']}."
        + (f" The model was trained on pixel values {pre['pixel_range'][0]}..{pre['pixel_range'][1]}, not 0..255: "
           "scale an 8-bit bitmap first." if pre["byte_scale"] != 1 else ""),
        "",
        *[f"{number}. {step}" for number, step in enumerate(pre.get("steps", ()), start=1)],
        *([""] if pre.get("steps") else []),
        *([f"    pixel[y][x] = byte[y][x] * byte_scale   (byte_scale = {pre['byte_scale']!r}: 0..255 → "
           f"{pre['pixel_range'][0]}..{pre['pixel_range'][1]})"] if pre["byte_scale"] != 1 else []),
        f"    {pre['formula']}   (scale = {pre['scale']!r}, mean = {pre['mean']}, std = {pre['std']})",
        "",
    ]
    if example:
        rows = ["    " + " ".join(f"{v:3d}" for v in row) for row in example["pixels_8bit"]]
        lines += [
            "Example (in `manifest.json` as `preprocessing.example`, with the exact input and logits): this "
            f"8-bit image of a {example['dataset_label']}",
            "",
            *rows,
            "",
            f"must give the label `{example['label']}` and logits "
            f"{', '.join(f'{v:.4f}' for v in example['logits'])}; the Python example below prints both.",
            "",
        ]
    return lines


_KOTLIN_HEAD = """\
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
{imports}

val LABELS = arrayOf({labels})
val env: OrtEnvironment = OrtEnvironment.getEnvironment()
val session: OrtSession = env.createSession(
    context.assets.open("{model_file}").readBytes(), OrtSession.SessionOptions())
"""

_KOTLIN_FLOAT = """\
// {argument_doc}
fun classify({argument}): {returns} {{
    {convert}
    val shape = longArrayOf({shape})
    OnnxTensor.createTensor(env, FloatBuffer.wrap(input), shape).use {{ tensor ->
        session.run(mapOf({input_name} to tensor), setOf({output})).use {{ result ->
{answer}
        }}
    }}
}}"""

_PYTHON_HEAD = """\
import json

import numpy as np
import onnxruntime as ort

manifest = json.load(open("manifest.json"))
session = ort.InferenceSession("{model_file}")"""

_PYTHON_TEXT = """\
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{directory}")
sentence = "an example sentence"
sentence = sentence.strip()  # as in training: leading and trailing whitespace removed
encoded = tokenizer([sentence], padding="max_length", truncation=True, max_length={max_length},
                    return_tensors="np"{extra})"""


def _kotlin(manifest: dict[str, Any]) -> list[str]:
    returns, answer = kotlin_answer(manifest)
    answer_text = "\n".join(" " * 12 + line for line in answer)
    if is_token_model(manifest):
        buffers, body = kotlin_classify(manifest, returns, answer_text)
    elif len(manifest["inputs"]) != 1 or manifest["inputs"][0]["dtype"] != "float32":
        buffers, body = kotlin_inputs(manifest, returns, answer_text)
    else:
        buffers, body = ["FloatBuffer"], _kotlin_one_input(manifest, returns, answer_text)
    head = _KOTLIN_HEAD.format(imports="\n".join(f"import java.nio.{buffer}" for buffer in buffers),
                               labels=", ".join(kotlin_string(label) for label in manifest["labels"]),
                               model_file=manifest["model"]["file"])
    return [*head.splitlines(), "", *body]


def _kotlin_one_input(manifest: dict[str, Any], returns: str, answer: str) -> list[str]:
    """``classify`` of a model of one float input: an image's bytes (its preprocessing in Kotlin) or features."""
    pre = manifest.get("preprocessing") or {}
    if pre.get("kind") == "image":
        convert = "\n    ".join((
            f"val mean = floatArrayOf({_floats(pre['mean'])})",
            f"val std = floatArrayOf({_floats(pre['std'])})",
            f"val plane = {pre['height'] * pre['width']}  // pixels per channel",
            f"val input = FloatArray(bytes.size) {{ i -> "
            f"(bytes[i] * {pre['byte_scale']!r}f * {pre['scale']!r}f - mean[i / plane]) / std[i / plane] }}"))
        argument, doc = "bytes: IntArray", "\n// ".join((
            "bytes: 8-bit grey levels 0..255, row by row (ink bright on dark)"
            if pre["channels"] == 1 else
            f"bytes: 8-bit levels 0..255 of the {pre['channels']} channels, each channel's rows in turn (planar)",
            *_kotlin_steps(pre)))
    else:
        convert = "val input = features"
        argument, doc = "features: FloatArray", "features: the model's input, preprocessed as in training"
    first = manifest["inputs"][0]["name"]
    body = _KOTLIN_FLOAT.format(argument=argument, argument_doc=doc, returns=returns, convert=convert,
                                shape=", ".join(map(str, input_shapes(manifest)[first])),
                                input_name=kotlin_string(first),
                                answer=answer, output=kotlin_string(manifest["postprocessing"]["output"]))
    return body.splitlines()


def _kotlin_steps(pre: dict[str, Any]) -> list[str]:
    """The image steps before the bytes reach ``classify``, in order (the Python example carries them out)."""
    steps = pre.get("steps") or ()
    if not steps:
        return []
    return [f"of the {pre['height']}×{pre['width']} image these steps make of a decoded one (as the Python example "
            "below does; resample with the filter they name):",
            *[f"  {number}. {step}" for number, step in enumerate(steps, start=1)]]


def _python_intro(pre: dict[str, Any]) -> list[str]:
    """What the Python example of an image model does and how to run it."""
    if pre.get("kind") != "image":
        return []
    default = (" With no image it classifies the manifest's example bitmap and prints its logits too."
               if pre.get("example") else "")
    return [f"Save this as `{SCRIPT}` in the bundle directory and run `python {SCRIPT} IMAGE [IMAGE ...]` "
            "(`pip install onnxruntime numpy pillow`): it decodes each image file, makes the model's input with "
            "PIL and numpy exactly as the steps above say and prints the label and its probability, one line "
            f"per image.{default}", ""]


def _python(manifest: dict[str, Any]) -> list[str]:
    pre = manifest.get("preprocessing") or {}
    if pre.get("kind") == "image":
        return image_python(manifest, python_answer(manifest))
    body: list[str] = []
    tokenized = pre.get("kind") == "text" and bool(manifest.get("tokenizer"))
    if tokenized:
        extra = (", return_offsets_mapping=True,\n                    return_special_tokens_mask=True"
                 if answer_kind(manifest) == "tags" else "")
        body = _PYTHON_TEXT.format(directory=manifest["tokenizer"]["directory"], max_length=pre["max_length"],
                                   extra=extra).splitlines()
    return [*_PYTHON_HEAD.format(model_file=manifest["model"]["file"]).splitlines(), *body,
            *python_feeds(manifest, tokenized=tokenized), *python_answer(manifest)]


def _test_figures(manifest: dict[str, Any]) -> str:
    """The test figures line: a task's own metrics (regression has no accuracy), else the accuracy."""
    metrics = manifest.get("metrics") or {}
    if metrics:
        return "- Test " + ", ".join(f"{name} {_number(value, '{:.4f}')}" for name, value in metrics.items())
    return f"- Test accuracy: {_number(manifest['accuracy']['test'], '{:.4f}')}"


def _floats(values: list[float]) -> str:
    """Kotlin float literals, one per value (each channel keeps its own mean and std)."""
    return ", ".join(f"{float(v)!r}f" for v in values)


def _shape(shape: list[Any]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _number(value: Any, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)
