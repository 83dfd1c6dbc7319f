"""What kind of model file a path holds: ONNX (protobuf) or ONNX Runtime's ORT format (flatbuffer).

onnxruntime loads both, so commands that only run a model (``profile``, ``bench``) take either;
commands that rewrite the graph (``quantize``, ``bundle``, ``export``) need the ONNX file. The
check is by extension and content: a ``.ort`` file must carry the ORT flatbuffer identifier
(``ORTM`` at byte 4); any other file must carry it or parse as an ONNX ``ModelProto`` with a
graph. Every failure is a one-line :class:`~edgekd.errors.ModelError` naming the file.

An ONNX file may keep its weights in external data files beside it; :func:`copy_model` copies such a
model into one self-contained file, so a copy made elsewhere (a bundle, a command's output) still runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Literal

from edgekd.atomic import atomic_path, write_with
from edgekd.errors import ModelError, first_line

ModelFormat = Literal["onnx", "ort"]
#: The flatbuffer file identifier of ORT format models, at bytes 4..8 of the file.
ORT_IDENTIFIER = b"ORTM"
ORT_SUFFIX = ".ort"
#: Protobuf's limit on one serialized message: a model whose weights exceed it keeps them external.
PROTOBUF_LIMIT = 2**31 - 1


def is_ort_file(path: Path) -> bool:
    """Whether ``path`` starts like an ORT format model: a flatbuffer's root offset (a little-endian uint32 that points
    into the first few hundred bytes, so its upper two bytes are zero), then the identifier ``ORTM``. An ONNX file
    whose producer name starts with ``ORTM`` has those four letters at byte 4 too, after protobuf's field tags."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    return head[4:8] == ORT_IDENTIFIER and head[2:4] == b"\0\0"


def load_as_ort_if_needed(path: str | Path, options: Any) -> Any:
    """``options`` (an ``onnxruntime.SessionOptions``) told to read ``path`` as ORT format when its content is.

    onnxruntime tells the format by the file name alone (``.ort``); this makes an ORT format model
    under any other name load too. Returns ``options``.
    """
    if Path(path).suffix.lower() != ORT_SUFFIX and is_ort_file(Path(path)):
        options.add_session_config_entry("session.load_model_format", "ORT")
    return options


def model_format(path: str | Path) -> ModelFormat:
    """``onnx`` or ``ort`` for a readable model file; a missing, unreadable or foreign file is a ModelError."""
    return "ort" if read_model(path) is None else "onnx"


def default_opset(model: Any) -> int | None:
    """The default-domain (``ai.onnx``) operator set an ``onnx.ModelProto`` declares; None when it declares none."""
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def read_model(path: str | Path):  # noqa: ANN201 - onnx.ModelProto | None, onnx imported lazily
    """The ONNX model of ``path`` (without external weights, whose files must be beside it), or None for an ORT format
    model; see the module."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: not a file (expected an .onnx or .ort model)")
    try:
        ort_format = is_ort_file(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if ort_format:
        return None
    if path.suffix.lower() == ORT_SUFFIX:
        raise ModelError(f"{path}: not an ORT format model (no 'ORTM' flatbuffer identifier at byte 4); "
                         "expected a file written by onnxruntime's converter (edgekd export)")
    model = load_onnx_graph(path)
    missing = [name for name in external_data_locations(model) if not (path.parent / name).is_file()]
    if missing:  # every verb says so, before onnxruntime's own message about its directory check
        raise ModelError(f"{path}: external data file '{missing[0]}' not found beside it")
    return model


def load_onnx_graph(path: Path):  # noqa: ANN201 - onnx.ModelProto, imported lazily
    """The ONNX model of ``path`` without external weights; not ONNX (or no graph nodes) is a ModelError."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ... for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None
    if not model.HasField("graph") or len(model.graph.node) == 0:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    return model


def require_onnx(path: str | Path, command: str) -> Path:
    """``path`` checked to be an ONNX file of a model that takes inputs; an ORT format model is refused, since
    ``command`` rewrites the graph, and so is a graph without inputs (a constant: nothing to quantize or feed)."""
    path = Path(path)
    model = read_model(path)
    if model is None:
        raise ModelError(f"{path}: an ORT format model; {command} needs the ONNX file it was converted from")
    weights = {tensor.name for tensor in model.graph.initializer}
    if not [value for value in model.graph.input if value.name not in weights]:
        raise ModelError(f"{path}: the graph has no inputs (its outputs are constants); {command} needs a model "
                         "that computes its outputs from inputs")
    return path


def external_data_locations(model: Any) -> list[str]:
    """The external data files (relative to the model's folder) the ONNX ``model``'s tensors are stored in."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    return sorted({entry.value for tensor in _get_all_tensors(model) if uses_external_data(tensor)
                   for entry in tensor.external_data if entry.key == "location"})


def copy_model(source: str | Path, target: str | Path) -> Path:
    """Atomically copy the model file ``source`` to ``target`` so that the copy stands alone.

    An ORT format model or an ONNX file with its weights inside is copied byte for byte. An ONNX file
    with external data gets its weights embedded (they are read from ``source``'s folder); weights
    beyond protobuf's 2 GiB go to one external file named ``<target name>.data`` beside ``target``.
    A missing external data file is a :class:`ModelError` naming it (:func:`read_model`).
    """
    source, target = Path(source), Path(target)
    model = read_model(source)
    locations = external_data_locations(model) if model is not None else []
    if not locations:
        return write_with(target, lambda tmp: shutil.copyfile(source, tmp))
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    try:
        load_external_data_for_model(model, str(source.parent))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: cannot read its external data ({first_line(exc)})") from None
    embedded = sum((source.parent / name).stat().st_size for name in locations) + source.stat().st_size
    if embedded < PROTOBUF_LIMIT:
        return write_with(target, lambda tmp: onnx.save_model(model, str(tmp)))
    return write_with(target, lambda tmp: onnx.save_model(model, str(tmp), save_as_external_data=True,
                                                          all_tensors_to_one_file=True,
                                                          location=f"{target.name}.data"))


def convert_opset(source: Path, model: Any, opset: int, target: Path, purpose: str) -> Path:
    """The graph of ``source`` (loaded as ``model``) converted to default-domain ``opset`` by ONNX's version
    converter, written to ``target``; a ModelError naming ``source`` and what needs that opset (``purpose``) when
    the converter cannot convert it (it has no adapter for every operator and version)."""
    import onnx
    from onnx import version_converter

    before = default_opset(model)
    try:
        converted = version_converter.convert_version(model, opset)
        with atomic_path(target) as tmp:
            onnx.save(converted, str(tmp))
    except Exception as exc:  # the converter raises plain RuntimeErrors on ops it has no adapter for
        raise ModelError(f"{source}: its opset {before} graph cannot be converted to opset {opset}, which {purpose} "
                         f"needs ({first_line(exc)}); export it with opset {opset}") from exc
    return target
