"""``edgekd bundle MODEL.onnx``: the pipeline's mobile bundle, made from an ONNX file a user already has.

The bundle is the ``bundle`` stage's (:func:`edgekd.export.bundle.pack_model`): the model
converted to ``.ort`` as the export target says (parity-checked at the device's input shapes),
its reduced-operator configuration, ``manifest.json`` (inputs and outputs read from the graph)
and ``README.md``. What a run knows from its recipe comes from the user here: class names from
``--labels`` (one per line, as many as the model's output has classes) and the preprocessing from
``--preprocessing`` (a JSON or YAML mapping, stored in the manifest as given). The latency in the
manifest is the shipped file's, profiled on the device now, with its budget verdict.

``OUT`` receives ``bundle/``, ``bundle.zip`` and ``bundle.json`` (the command's record: source,
device, export target, parity, latency, verdict, files); it must be new, empty or an earlier
``edgekd bundle`` output.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from edgekd.atomic import write_json
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import read_yaml, validate_model
from edgekd.errors import ConfigError, DataError, EdgekdError, ModelError, first_line
from edgekd.export.bundle import converted_files, pack_model
from edgekd.export.bundle_record import BundleFile
from edgekd.export.config import BUNDLE_DIR, BUNDLE_ZIP, ExportTarget
from edgekd.export.manifest import is_single_score, other_scores, scored_output, tensor_specs
from edgekd.export.ort_format import random_feeds
from edgekd.export.parity import ParityResult, check_file_parity
from edgekd.model_file import convert_opset, default_opset, read_model, require_onnx
from edgekd.profile.budget import judge
from edgekd.profile.inputs import length_axes, specs_and_limits
from edgekd.profile.runner import ProfileResult, profile_onnx
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.rundir import check_source_outside, claimed
from edgekd.stage_record import Record
from edgekd.version import __version__

RECORD = "bundle.json"
log = logging.getLogger(__name__)


class BundleFileRecord(Record):
    """``bundle.json``, the record of ``edgekd bundle``: the source, device and export target, the .ort file's
    parity with the ONNX model, the shipped file's profile (without the per-run times) and budget verdict, and
    every file of the bundle."""

    edgekd_version: str
    command: Literal["bundle"]
    source: str
    labels: str | None
    preprocessing: str | None
    device: DeviceProfile
    target: ExportTarget
    format: Literal["onnx", "ort"]
    parity: ParityResult | None
    converted_from_opset: int | None = Field(
        default=None, description="The file's own opset when it was newer than the export target's and its graph was "
        "converted down to the target's (checked against the file at the device's input shapes); null otherwise.")
    notes: list[str] = Field(
        default_factory=list, description="What the bundle could not do as the export target says (a graph of a "
        "newer opset that ONNX's converter cannot take down to the target's is shipped as it is).")
    profile: ProfileResult
    profiled_file: str
    budget: BudgetVerdict
    directory: str
    zip: str
    zip_bytes: int
    files: dict[str, BundleFile]

    def to_json(self) -> dict[str, Any]:
        """``bundle.json``'s content: exactly the keys the record was built with."""
        return self.model_dump(mode="json", exclude_unset=True)


@dataclass(frozen=True)
class BundledFile:
    """What ``edgekd bundle`` wrote: the bundle directory, its zip and the command's record."""

    directory: Path
    zip_path: Path
    record_path: Path
    record: BundleFileRecord

    def to_json(self) -> dict[str, Any]:
        """The record (``bundle.json``'s content)."""
        return self.record.to_json()


def bundle_file(model: Path, device: DeviceProfile, out: Path, target: ExportTarget, *, labels: Path | None = None,
                preprocessing: Path | None = None, warmup: int = 20, runs: int = 200,
                scores: str | None = None) -> BundledFile:
    """Bundle the ONNX file ``model`` for ``device`` into ``out``; see the module docstring. ``scores`` names the
    output holding the model's answer (default: the one named ``logits``, else the first floating-point one)."""
    source = require_onnx(model, "edgekd bundle")
    _, outputs = tensor_specs(source)
    scored = scored_output(outputs, scores, source)  # a name the graph lacks is refused before any work
    read = scored or (outputs[0] if outputs else None)
    class_names = read_labels(labels, source, read) if labels is not None else []
    pre = read_preprocessing(preprocessing, source) if preprocessing is not None else None
    out = Path(out)
    check_source_outside(source, out, "edgekd bundle")
    with claimed(out, record=RECORD):
        with tempfile.TemporaryDirectory(prefix=".bundle-", suffix=".tmp", dir=out) as work:
            graph, converted_from, notes = _in_target_opset(source, target, device, Path(work) / "opset")
            if target.format == "ort":
                deploy, parity = converted_files(graph, target, device, Path(work))
            else:
                deploy, parity = {"onnx": graph}, None
            shipped = deploy.get("ort", source)
            profile = profile_onnx(shipped, device, warmup=warmup, runs=runs)
            verdict = judge(profile, device.budget)
            manifest = pack_model(out / BUNDLE_DIR, out / BUNDLE_ZIP, onnx_path=graph, deploy=deploy,
                                  name=source.stem, opset=_opset(graph), labels=class_names, preprocessing=pre,
                                  tokenizer=[], device=device, profile=profile, budget=verdict,
                                  accuracy=None, scores=scores)
        record = BundleFileRecord.model_validate({  # a mapping, so that every field given counts as set
            "edgekd_version": __version__,
            "command": "bundle",
            "source": str(source),
            "labels": str(labels) if labels is not None else None,
            "preprocessing": str(preprocessing) if preprocessing is not None else None,
            "device": device.model_dump(mode="json"),
            "target": target.model_dump(mode="json"),
            "format": manifest["model"]["format"],
            "parity": parity.to_json() if parity is not None else None,
            **({"converted_from_opset": converted_from} if converted_from is not None else {}),
            **({"notes": notes} if notes else {}),
            "profile": {**{key: value for key, value in profile.to_json().items() if key != "times_ms"},
                        "model": f"{BUNDLE_DIR}/{manifest['model']['file']}"},  # not the scratch copy it timed
            "profiled_file": shipped.name,
            "budget": verdict.to_json(),
            "directory": BUNDLE_DIR,
            "zip": BUNDLE_ZIP,
            "zip_bytes": (out / BUNDLE_ZIP).stat().st_size,
            "files": manifest["files"],
        })
        path = write_json(out / RECORD, record.to_json())
    return BundledFile(directory=out / BUNDLE_DIR, zip_path=out / BUNDLE_ZIP, record_path=path, record=record)


def read_labels(path: Path, model: Path, scored: dict[str, Any] | None) -> list[str]:
    """Class names, one per line (UTF-8, a byte-order mark allowed), distinct, as many as ``model``'s output
    ``scored`` (of :func:`tensor_specs`) has classes when that size is static (two for one score per example)."""
    if not path.is_file():
        raise DataError(f"{path}: labels file not found (expected one class name per line)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as UTF-8 text ({exc}); expected one class name per line") from None
    while lines and not lines[-1].strip():
        lines.pop()
    names = [line.strip() for line in lines]
    blank = next((number for number, name in enumerate(names, 1) if not name), None)
    if blank is not None or not names:
        where = f"line {blank} is blank" if blank is not None else "it is empty"
        raise DataError(f"{path}: {where}; expected one class name per line")
    repeated = next((number for number, name in enumerate(names, 1) if name in names[:number - 1]), None)
    if repeated is not None:
        first = names.index(names[repeated - 1]) + 1
        raise DataError(f"{path}: line {repeated} repeats line {first} ({names[repeated - 1]!r}); expected a distinct "
                        "class name per line")
    shape = scored["shape"] if scored else []
    if scored and is_single_score(shape):
        if len(names) != 2:
            raise DataError(f"{path}: {len(names)} labels, but {model}'s output {scored['name']!r} gives one score "
                            f"per example (shape {shape}); expected two lines, a binary classifier's classes (the "
                            f"second is the one its score is for){other_scores(model, scored['name'])}")
        return names
    classes = shape[-1] if shape else None
    if scored and isinstance(classes, int) and classes > 0 and classes != len(names):
        raise DataError(f"{path}: {len(names)} labels, but {model}'s output {scored['name']!r} has {classes} "
                        f"classes (shape {shape}); expected one line per class{other_scores(model, scored['name'])}")
    return names


class ImagePreprocessing(BaseModel):
    """What an ``image`` preprocessing description must hold, typed (the bundle README computes with it)."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    layout: Literal["NCHW", "NHWC"]
    channels: PositiveInt
    height: PositiveInt
    width: PositiveInt
    color: str
    pixel_range: tuple[float, float]
    scale: float
    mean: list[float]
    std: list[Annotated[float, Field(gt=0)]]
    formula: str
    byte_scale: float

    @model_validator(mode="after")
    def _one_mean_and_std_per_channel(self) -> ImagePreprocessing:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need one value per channel ({self.channels}); got {len(self.mean)} "
                             f"and {len(self.std)}")
        return self


class TextPreprocessing(BaseModel):
    """What a ``text`` preprocessing description must hold."""

    model_config = ConfigDict(extra="allow")

    max_length: PositiveInt
    pad_id: Annotated[int, Field(ge=0)]


def read_preprocessing(path: Path, model: Path) -> dict[str, Any]:
    """The manifest's ``preprocessing`` from a JSON or YAML mapping with a ``kind``; ``image``/``text`` ones typed
    and checked against ``model``'s graph inputs (:func:`_check_against_graph`)."""
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        keys = ", ".join(ImagePreprocessing.model_fields)
        raise ConfigError(f"{path}: expected a mapping with a 'kind' (e.g. kind: image, with {keys})")
    schema = {"image": ImagePreprocessing, "text": TextPreprocessing}.get(data["kind"])
    if schema is not None:
        _check_against_graph(validate_model(data, schema, source=str(path)), path, model)
    return data


def _check_against_graph(pre: BaseModel, path: Path, model: Path) -> None:
    """Refuse a description the graph cannot take, as the README's code would build its input from it: an image of
    other channels, height or width than the graph's static ones (its first 4-D input, read in the description's
    layout), or a text length other than the one its token ids fix."""
    if isinstance(pre, ImagePreprocessing):
        inputs, _ = tensor_specs(model)
        image = next((spec for spec in inputs if len(spec["shape"]) == 4), None)
        axes = {"NCHW": ("channels", "height", "width"), "NHWC": ("height", "width", "channels")}[pre.layout]
        if image is None:
            return
        wrong = [(key, getattr(pre, key), size) for key, size in zip(axes, image["shape"][1:], strict=True)
                 if isinstance(size, int) and size > 0 and getattr(pre, key) != size]
        if wrong:
            said = ", ".join(f"{key} {given}" for key, given, _ in wrong)
            graph = ", ".join(f"{key} {size}" for key, _, size in wrong)
            raise ConfigError(f"{path}: {said} ({pre.layout}), but {model}'s input {image['name']!r} is "
                              f"{image['shape']}: expected {graph}")
    elif isinstance(pre, TextPreprocessing):
        specs, limits = specs_and_limits(model)
        dims = {spec.name: spec.dims for spec in specs}
        for name, axis in length_axes(specs, limits).items():
            size = dims[name][axis]
            if isinstance(size, int) and size > 0 and size != pre.max_length:
                raise ConfigError(f"{path}: max_length {pre.max_length}, but {model}'s input {name!r} fixes {size} "
                                  f"tokens: expected max_length {size}")


def _in_target_opset(source: Path, target: ExportTarget, device: DeviceProfile,
                     work: Path) -> tuple[Path, int | None, list[str]]:
    """The graph to ship, the file's own opset when that graph is a conversion, and notes.

    A file whose opset is newer than the export target's (the operator set the app's runtime is built for) is
    converted down to the target's by ONNX's version converter and checked against the file at ``device``'s input
    shapes. The converter has no adapter for every operator and version (Relu from 14 to 13): a graph it cannot
    convert, or whose conversion answers otherwise, is shipped as it is, with a note (a runtime older than its
    opset cannot load it)."""
    import onnx

    opset = _opset(source)
    if opset is None or opset <= target.opset:
        return source, None, []
    work.mkdir()
    try:
        converted = convert_opset(source, onnx.load(str(source)), target.opset, work / f"{source.stem}.onnx",
                                  f"export target '{target.name}'")
        parity = check_file_parity(source, converted, random_feeds(source, device.inputs), target.parity_atol,
                                   rtol=target.parity_rtol, label=f"{source} converted to opset {target.opset}")
        if not parity.passed:
            raise ModelError(f"converted to opset {target.opset}, its answers differ by {parity.max_abs_diff:.3g}, "
                             f"more than {parity.tolerance_text()}")
    except EdgekdError as exc:
        return source, None, [f"shipped at its own opset {opset}, newer than the export target's {target.opset} "
                              f"('{target.name}'), which an app runtime built for opset {target.opset} cannot load: "
                              f"ONNX's version converter cannot take it down ({first_line(exc.__cause__ or exc)}); "
                              f"export it with opset {target.opset} for such a runtime"]
    log.info("%s: opset %d graph converted to opset %d, the export target's ('%s')", source, opset, target.opset,
             target.name)
    return converted, opset, []


def _opset(path: Path) -> int | None:
    """The model's ONNX operator set version (default domain)."""
    return default_opset(read_model(path))
