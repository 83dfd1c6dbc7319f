"""``manifest.json`` of a mobile bundle: everything an app needs to feed the model and read its answer.

Schema (``schema_version`` 1)::

    schema_version, name, edgekd_version
    model            file, format ("ort" | "onnx"), opset, onnx_file, required_operators, onnxruntime
    inputs, outputs  [{name, dtype, shape}]; a dynamic axis is its name ("batch", "sequence")
    labels           class names, in the order of the output's last axis
    preprocessing    images: {kind: "image", layout, channels, height, width, color, pixel_range, scale, mean,
                     std, formula, byte_scale, formula_8bit, example}, image files also {channel_order, resize,
                     crop, processor, steps} (:mod:`edgekd.export.image_manifest`); text: {kind: "text",
                     max_length, pad_id, strip (leading/trailing whitespace removed, as training did)};
                     null if unknown. ``example`` is a real input (``pixels_8bit``: an 8-bit bitmap, row by row),
                     the exact model ``input`` the formulas make of it, and the model's ``logits`` and ``label``
    postprocessing   what the output is and how to turn it into a label; for a multi-label or regression
                     model (``task``): ``kind`` sigmoid (with ``threshold``) or identity, and the label list; for a
                     graph no recipe trained, :func:`graph_postprocessing`'s reading of it
    tokenizer        text models: {directory, files}; null for image models
    device           the device profile the model was tuned for
    latency          p50/p90/p99 ms on that device, estimate (true: host time × speed ratio), basis
    budget           the device budget's verdict and limits
    accuracy         test accuracy
    metrics          multi-label and regression models: their task's test metrics (F1, MSE, correlations)
    files            {path: {sha256, bytes}} of every other file of the bundle

Paths in ``model``, ``tokenizer`` and ``files`` are relative to the bundle directory.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from pathlib import Path
from typing import Any

import onnx

from edgekd.config.device import DeviceProfile
from edgekd.data.config import DataConfig, MemoryData, SklearnData
from edgekd.errors import ModelError
from edgekd.export.answer_shape import example_shape
from edgekd.export.image_manifest import image_file_preprocessing
from edgekd.models.onnx_teacher import score_activation
from edgekd.profile.runner import ProfileResult
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.version import __version__

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
#: Files a Hugging Face tokenizer's ``save_pretrained`` may write; the ones present are bundled.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model")
TOKENIZER_DIR = "tokenizer"


def tensor_specs(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The graph inputs (without initializers) and outputs of an ONNX file: name, dtype and shape."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> dict[str, Any]:
        if value.type.WhichOneof("value") != "tensor_type":  # a sequence, map or optional (sklearn-onnx's)
            return {"name": value.name, "dtype": type_name(value.type), "shape": []}
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.WhichOneof("value") == "dim_value" else (d.dim_param or "?")
                for d in tensor.shape.dim]
        return {"name": value.name, "dtype": type_name(value.type), "shape": dims}

    return ([spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output])


def scored_output(outputs: list[dict[str, Any]], chosen: str | None = None,
                  model: Path | None = None) -> dict[str, Any] | None:
    """The output (of :func:`tensor_specs`) a model's answer is read from: ``chosen`` when the user names one
    (``--scores``; a ModelError naming ``model`` and its outputs when the graph has no floating-point output of
    that name), else the one named ``logits``, else the first floating-point tensor (a scikit-learn-onnx
    classifier returns its int64 label first, then probabilities as a sequence of maps); None when no output is a
    floating-point tensor. Several floating-point outputs and none named ``logits`` are ambiguous: a warning (once
    per set of names) says which one is read."""
    if chosen is not None:
        return _chosen_output(outputs, chosen, model)
    named = [spec for spec in outputs if spec["name"] == "logits"]
    scores = [spec for spec in named or outputs if spec["dtype"] in FLOAT_DTYPES]
    if len(scores) > 1 and not named:
        _warn_several_scores(tuple(spec["name"] for spec in scores))
    return scores[0] if scores else None


@functools.cache
def _warn_several_scores(names: tuple[str, ...]) -> None:
    log.warning("outputs %s are all floating-point tensors and none is named 'logits': the first, '%s', is read as "
                "the model's scores (--scores NAME chooses another)",
                ", ".join(f"'{name}'" for name in names), names[0])


def other_scores(model: Path, read: str) -> str:
    """For a message about the output ``read``: the other floating-point outputs of ``model`` ``--scores`` could
    name instead (``; --scores OUTPUT reads another: 'out1' [batch, 2]``), or nothing when it has none."""
    _, outputs = tensor_specs(model)
    others = [f"'{spec['name']}' {spec['shape']}" for spec in outputs
              if spec["name"] != read and spec["dtype"] in FLOAT_DTYPES]
    return f"; --scores OUTPUT reads another: {', '.join(others)}" if others else ""


def _chosen_output(outputs: list[dict[str, Any]], chosen: str, model: Path | None) -> dict[str, Any]:
    """The output named ``chosen``; a ModelError listing the graph's outputs when there is none of that name or it
    is not a floating-point tensor of scores."""
    spec = next((spec for spec in outputs if spec["name"] == chosen), None)
    if spec is not None and spec["dtype"] in FLOAT_DTYPES:
        return spec
    what = ("is not an output of the graph" if spec is None
            else f"is a {spec['dtype']} output, not floating-point scores")
    listed = ", ".join(f"'{spec['name']}' ({spec['dtype']})" for spec in outputs)
    raise ModelError(f"{model or 'the model'}: scores: '{chosen}' {what} (its outputs: {listed})")


#: Floating-point tensor element types, as :func:`type_name` spells them.
FLOAT_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16"})


def type_name(value_type: onnx.TypeProto) -> str:
    """An ONNX value type as text: a tensor's numpy dtype name (``float32``), a non-tensor value spelt as
    onnxruntime spells it (``seq(map(int64,tensor(float)))`` reads ``sequence(map(int64, float32))``);
    ``unknown`` for a type left unset or an element type numpy has no name for."""
    kind = value_type.WhichOneof("value")
    if kind in ("tensor_type", "sparse_tensor_type"):
        elem_type = getattr(value_type, kind).elem_type
        try:
            name = onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
        except KeyError:  # UNDEFINED (0): the graph does not say
            name = "unknown"
        return name if kind == "tensor_type" else f"sparse({name})"
    if kind == "sequence_type":
        return f"sequence({type_name(value_type.sequence_type.elem_type)})"
    if kind == "optional_type":
        return f"optional({type_name(value_type.optional_type.elem_type)})"
    if kind == "map_type":
        key = onnx.helper.tensor_dtype_to_np_dtype(value_type.map_type.key_type).name
        return f"map({key}, {type_name(value_type.map_type.value_type)})"
    return "unknown"


def preprocessing(data: DataConfig, signature: dict[str, Any], inputs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How raw inputs become model inputs, as the recipe's data source prepared them for training.

    ``signature`` is the model directory's input signature (text: max length, pad id); ``inputs``
    are the model's graph inputs (:func:`tensor_specs`), whose dimensions give an image's size.
    """
    if signature.get("kind") == "text":
        text = {"kind": "text", "max_length": signature.get("max_length"), "pad_id": signature.get("pad_id")}
        if isinstance(data, MemoryData):
            return {**text, "note": "token ids, as the sets given in Python held them (edgekd saw no text and bundles "
                                    "no tokenizer): tokenize as training did; pad with pad_id up to max_length"}
        return {**text, "strip": True,  # the data loaders strip every text: a byte-level BPE reads a trailing space
                "note": "remove leading and trailing whitespace (as training did), tokenize with the bundled "
                        "tokenizer; pad or truncate to max_length"}
    if signature.get("preprocessing"):  # image files: as the data loader recorded it
        return image_file_preprocessing(signature["preprocessing"], inputs)
    if isinstance(data, SklearnData) and data.name == "digits":
        channels, height, width = inputs[0]["shape"][1:]
        top = DIGITS_PIXEL_MAX
        return {
            "kind": "image", "layout": "NCHW", "channels": channels, "height": height, "width": width,
            "color": "grayscale, ink bright on a dark background", "pixel_range": [0, top],
            "scale": 1 / top, "mean": [0.0] * channels, "std": [1.0] * channels,
            "formula": "input[0][c][y][x] = (pixel[y][x] * scale - mean[c]) / std[c]",
            "byte_scale": top / 255,
            "formula_8bit": f"pixel[y][x] = byte[y][x] * byte_scale (a 0..255 bitmap to the 0..{top} range the "
                            f"model was trained on; feeding bytes unscaled gives garbage)",
        }
    return None


DIGITS_PIXEL_MAX = 16
"""scikit-learn's digits count the inked pixels of 4×4 blocks: values 0..16."""
#: The dataset image the digits example is made from (a '0').
DIGITS_EXAMPLE_INDEX = 0


def image_example(pre: dict[str, Any], onnx_path: Path, input_spec: dict[str, Any],
                  labels: list[str]) -> dict[str, Any]:
    """A real digits image as an app would hold it (8-bit), the exact model input the manifest's formulas
    make of it, and what the model answers: an app checks its preprocessing by reproducing ``logits``."""
    import numpy as np
    import onnxruntime as ort
    from sklearn.datasets import load_digits

    pixels = load_digits().images[DIGITS_EXAMPLE_INDEX]
    pixels_8bit = np.rint(pixels * 255 / DIGITS_PIXEL_MAX).astype(np.int64)
    x = image_input(pre, pixels_8bit).astype(input_spec["dtype"])
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {input_spec["name"]: x})[0][0]
    return {"pixels_8bit": pixels_8bit.tolist(), "input": x[0].tolist(),
            "logits": [float(v) for v in logits], "label": labels[int(np.argmax(logits))],
            "dataset_label": str(int(load_digits().target[DIGITS_EXAMPLE_INDEX]))}


def image_input(pre: dict[str, Any], pixels_8bit: Any) -> Any:
    """The model input (batch 1, NCHW, float64) the manifest's formulas make of an 8-bit ``height × width`` bitmap."""
    import numpy as np

    pixel = np.asarray(pixels_8bit, dtype=np.float64) * pre["byte_scale"]
    channels = [(pixel * pre["scale"] - pre["mean"][c]) / pre["std"][c] for c in range(pre["channels"])]
    return np.stack(channels)[None]


def latency_entry(profile: ProfileResult) -> dict[str, Any]:
    """The manifest's ``latency`` from the profile figures of the bundled model."""
    threads = profile.threads
    basis = (f"estimate: measured on {profile.cpu.brand} ({threads} threads) and scaled by the speed ratio "
             f"{profile.speed_ratio or 0:.3g} of reference model '{profile.reference}'"
             if profile.estimate else f"measured on {profile.cpu.brand} with {threads} threads")
    return {**profile.model_dump(include={"p50_ms", "p90_ms", "p99_ms", "estimate"}), "basis": basis,
            "threads": threads, "batch_shapes": profile.input_shapes, "onnxruntime": profile.onnxruntime}


def file_entries(directory: Path, *, exclude: tuple[str, ...] = (MANIFEST,)) -> dict[str, dict[str, Any]]:
    """``{relative path: {sha256, bytes}}`` of every file below ``directory``, sorted by path."""
    entries = {}
    for path in sorted(directory.rglob("*"), key=lambda p: p.relative_to(directory).as_posix()):
        name = path.relative_to(directory).as_posix()
        if path.is_file() and name not in exclude:
            with open(path, "rb") as handle:
                digest = hashlib.file_digest(handle, "sha256").hexdigest()
            entries[name] = {"sha256": digest, "bytes": path.stat().st_size}
    return entries


def recipe_preprocessing(onnx_path: Path, data: DataConfig, signature: dict[str, Any],
                         labels: list[str]) -> dict[str, Any] | None:
    """The manifest's ``preprocessing`` for a model a recipe trained on ``data`` (with its image example)."""
    inputs, _ = tensor_specs(onnx_path)
    pre = preprocessing(data, signature, inputs)
    if pre is not None and pre["kind"] == "image" and isinstance(data, SklearnData):  # the digits example
        pre["example"] = image_example(pre, onnx_path, inputs[0], labels)
    return pre


def graph_postprocessing(onnx_path: Path, scored: dict[str, Any] | None, labels: int) -> dict[str, Any]:
    """How an app reads the ``scored`` output of a graph no recipe trained (the manifest's ``postprocessing``
    without its ``output``), from the graph's last op and shape and the number of ``labels`` given."""
    if scored is None:
        return {"kind": "as_given",
                "note": "the graph's outputs as they are (none is a floating-point tensor of scores)"}
    activation = score_activation(onnx_path, scored["name"])
    per_example = example_shape(scored["shape"])
    if len(per_example) > 1:
        return {"kind": "as_given", "note": f"{_shape_text(per_example)} values per example, as the graph gives them"}
    if is_single_score(scored["shape"]):
        if activation == "sigmoid":
            return {"kind": "binary_probability", "threshold": 0.5,
                    "note": "one probability per example, the second class's (the graph ends in a sigmoid): labels[1] "
                            "above the threshold, else labels[0]"}
        if labels == 2:
            return {"kind": "binary_logit", "threshold": 0.5,
                    "note": "one logit per example, the second class's: its sigmoid is that class's probability; "
                            "labels[1] above the threshold, else labels[0]"}
        return {"kind": "score", "note": "one value per example, as the graph gives it (`edgekd bundle --labels` with "
                                         "two labels reads it as a binary classifier's logit of the second)"}
    if activation == "softmax":
        return {"kind": "probabilities",
                "note": "probabilities, one per class (the graph ends in a softmax); the arg-max indexes labels"}
    return {"kind": "logits", "note": "softmax over the last axis gives probabilities; its argmax indexes labels"}


def is_single_score(shape: list[Any]) -> bool:
    """Whether an output of this shape gives one score per example (``[batch, 1]``, ``[batch]``, ``[1]``): a binary
    classifier's, or a regression's value."""
    return example_shape(shape) in ([], [1])


def _shape_text(shape: list[Any]) -> str:
    """A shape in words: ``sequence × 5``."""
    return " × ".join(map(str, shape))


def build_manifest(
    *,
    name: str,
    model: dict[str, Any],
    onnx_path: Path,
    labels: list[str],
    preprocessing: dict[str, Any] | None,
    tokenizer: dict[str, Any] | None,
    device: DeviceProfile,
    profile: ProfileResult,
    budget: BudgetVerdict | None,
    accuracy: float | None,
    postprocessing: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    scores: str | None = None,
) -> dict[str, Any]:
    """The manifest without ``files`` (added once every other file of the bundle is written).

    ``inputs`` and ``outputs`` are read from the graph of ``onnx_path``; ``preprocessing`` is taken as
    given (:func:`recipe_preprocessing` for a model a recipe trained, a user's file for ``edgekd bundle``);
    ``scores`` names the output an app reads (default: :func:`scored_output`'s choice).
    """
    inputs, outputs = tensor_specs(onnx_path)
    scored = scored_output(outputs, scores, onnx_path)
    read = scored or outputs[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "edgekd_version": __version__,
        "model": model,
        "inputs": inputs,
        "outputs": outputs,
        "labels": labels,
        "preprocessing": preprocessing,
        "postprocessing": {"output": read["name"],
                           **(postprocessing or graph_postprocessing(onnx_path, scored, len(labels)))},
        "tokenizer": tokenizer,
        "device": device.model_dump(mode="json"),
        "latency": latency_entry(profile),
        "budget": budget.manifest_entry() if budget is not None else None,
        "accuracy": {"test": accuracy},
        **({"metrics": metrics} if metrics else {}),
    }
