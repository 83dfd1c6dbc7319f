"""What kind of model file a path holds: ONNX (protobuf) or ONNX Runtime's ORT format (flatbuffer).

onnxruntime loads both, so commands that only run a model (``profile``, ``bench``) take either;
commands that rewrite the graph (``quantize``, ``bundle``, ``export``) need the ONNX file. The
check is by extension and content: a ``.ort`` file must carry the ORT flatbuffer identifier
(``ORTM`` at byte 4); any other file must carry it or parse as an ONNX ``ModelProto`` with a
graph. Every failure is a one-line :class:`~edgekd.errors.ModelError` naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from edgekd.errors import ModelError, first_line

ModelFormat = Literal["onnx", "ort"]
#: The flatbuffer file identifier of ORT format models, at bytes 4..8 of the file.
ORT_IDENTIFIER = b"ORTM"
ORT_SUFFIX = ".ort"


def is_ort_file(path: Path) -> bool:
    """Whether ``path`` starts like an ORT format model (its flatbuffer identifier is ``ORTM``)."""
    with open(path, "rb") as handle:
        return handle.read(8)[4:8] == ORT_IDENTIFIER


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


def read_model(path: str | Path):  # noqa: ANN201 - onnx.ModelProto | None, onnx imported lazily
    """The ONNX model of ``path`` (without external weights), or None for an ORT format model; see the module."""
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
    return load_onnx_graph(path)


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
    """``path`` checked to be an ONNX file; an ORT format model is refused, since ``command`` rewrites the graph."""
    path = Path(path)
    if model_format(path) == "ort":
        raise ModelError(f"{path}: an ORT format model; {command} needs the ONNX file it was converted from")
    return path
