"""Input tensors for timing a model: shapes from the device profile, values that run anywhere.

Latency does not depend on the values fed, so the only rules are that every input has the
shape the device runs and values the model accepts: token ids in a small range (below 32, and
below the row count of the embedding table the ids index when the graph shows one: a character
model of 20 symbols gets ids below 20), attention masks of ones, token type ids of zeros, position
ids counting up (refused when the sequence is longer than their table), and random normal floats.

This module imports only numpy (and onnx when given a path), so the profiling worker stays
light; it accepts anything shaped like :class:`edgekd.config.device.InputShape`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgekd.errors import ModelError, first_line

TOKEN_ID_HIGH = 32
_SEQ_NAME = re.compile(r"seq|sequence|length|len|token|time|step", re.IGNORECASE)
_BATCH_NAME = re.compile(r"batch|^n$|^b$", re.IGNORECASE)
_SPATIAL_NAME = re.compile(r"height|width|^h$|^w$", re.IGNORECASE)
#: A key/value cache input of a causal LM's generation graph (``past_key_values.0.key``, ``past.0``, ``past_3``).
_CACHE_NAME = re.compile(r"^(past_key_values|past|cache)[._]?\d", re.IGNORECASE)

_NUMPY_DTYPES: dict[str, Any] = {
    "float": np.float32, "float16": np.float16, "double": np.float64,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}
# onnx.TensorProto data type numbers → the names onnxruntime uses in "tensor(<name>)".
_ONNX_TYPE_NAMES = {1: "float", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
                    8: "string", 9: "bool", 10: "float16", 11: "double", 16: "bfloat16"}

Dim = int | str | None


class ShapeLike(Protocol):
    """What :func:`make_feeds` reads from a device profile's ``inputs``."""

    batch: int
    sequence_length: int
    image_size: int | None


@dataclass(frozen=True)
class InputSpec:
    """One graph input: its name, declared dims (ints static, strings or None dynamic) and type."""

    name: str
    dims: tuple[Dim, ...]
    type_name: str


def input_specs(model: str | Path | Any) -> list[InputSpec]:
    """The graph inputs of an ONNX file or of an ``onnxruntime.InferenceSession``."""
    if isinstance(model, str | Path):
        return _specs_of(_load_graph(Path(model)))
    return [
        InputSpec(i.name, tuple(i.shape), str(i.type).removeprefix("tensor(").removesuffix(")"))
        for i in model.get_inputs()
    ]


def specs_and_limits(path: str | Path) -> tuple[list[InputSpec], dict[str, int]]:
    """:func:`input_specs` and :func:`token_id_limits` of the ONNX file at ``path``, which is parsed once for both.

    Raises :class:`ModelError` for a file onnx cannot read, as :func:`input_specs` does (where
    :func:`token_id_limits` alone runs the file instead).
    """
    graph = _load_graph(Path(path))
    return _specs_of(graph), _limits_of(graph)


def _load_graph(path: Path) -> Any:
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf raises several unrelated types for a bad file
        raise ModelError(f"{path}: not a readable ONNX model ({first_line(exc)})") from None


def _specs_of(graph: Any) -> list[InputSpec]:
    """The inputs a loaded ``onnx.GraphProto`` is fed (initializers listed as inputs are not)."""
    initializers = {t.name for t in graph.initializer}
    specs = []
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims: list[Dim] = []
        for d in tensor.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
        type_name = _ONNX_TYPE_NAMES.get(tensor.elem_type, f"type {tensor.elem_type}")
        specs.append(InputSpec(value.name, tuple(dims), type_name))
    return specs


def resolve_shape(spec: InputSpec, shape: ShapeLike) -> tuple[int, ...]:
    """The concrete shape ``spec`` gets on the device described by ``shape``.

    Static dims are kept. Dynamic dims are filled by name (``seq``/``length`` → sequence length,
    ``batch`` → batch, ``height``/``width`` → image size), then by position: the first other
    dynamic dim is the batch, the spatial dims of a 4-D float input are the image size, and the
    next dynamic dim of a 2-D or 3-D input is the sequence length (token ids ``[batch, sequence]``;
    frames or embeddings ``[batch, time, features]`` or ``[batch, channels, time]``). A model whose
    static image size differs from the profile's ``image_size``, or with a dynamic dim none of
    these rules fills, is a :class:`ModelError`, as is a causal LM's key/value cache input (its graph is timed
    per generated token by the causal-LM stages, never fed as one pass).
    """
    dims = spec.dims
    if _CACHE_NAME.search(spec.name):
        raise ModelError(
            f"input '{spec.name}' is a key/value cache: this is a causal LM's generation graph, which is not timed, "
            "quantized or bundled as one forward pass; run it through a recipe with data.source: corpus, whose "
            "stages do that per generated token (see docs/generation.md)"
        )
    image = _spatial_axes(spec)
    if image and shape.image_size is not None:
        static = [dims[a] for a in image if _is_static(dims[a])]
        if any(d != shape.image_size for d in static):
            raise ModelError(
                f"input '{spec.name}' has static shape {_show(dims)} but the device profile sets "
                f"image_size={shape.image_size}; export the model at {shape.image_size}x"
                f"{shape.image_size} or with dynamic height/width"
            )
    resolved: list[int] = []
    batch_taken = sequence_taken = False
    for axis, dim in enumerate(dims):
        if _is_static(dim):
            resolved.append(int(dim))  # type: ignore[arg-type]
            continue
        name = dim if isinstance(dim, str) else ""
        if _BATCH_NAME.search(name) and not _SEQ_NAME.search(name):
            value, batch_taken = shape.batch, True
        elif _SEQ_NAME.search(name):
            value, sequence_taken = shape.sequence_length, True
        elif axis in image or _SPATIAL_NAME.search(name):
            if shape.image_size is None:
                raise ModelError(
                    f"input '{spec.name}' has dynamic image size {_show(dims)}; give a device profile "
                    "that sets inputs.image_size (--device my-device.yaml; see docs/devices.md)"
                )
            value = shape.image_size
        elif not batch_taken:
            value, batch_taken = shape.batch, True
        elif len(dims) in (2, 3) and not sequence_taken:
            value, sequence_taken = shape.sequence_length, True
        else:
            raise ModelError(
                f"input '{spec.name}' has a dynamic dim {dim!r} at axis {axis} of {_show(dims)} "
                "that is neither batch, sequence length nor image size; export it with a static size"
            )
        resolved.append(value)
    return tuple(resolved)


# Nodes that carry token ids unchanged in value from a graph input to the embedding lookup.
_ID_CARRIERS = frozenset({"Cast", "Identity", "Reshape", "Unsqueeze", "Squeeze", "Flatten"})
# Nodes between a weight initializer and the lookup that reads it (a quantized or cast table).
_TABLE_CARRIERS = frozenset({"Cast", "Identity", "DequantizeLinear"})
# Lookups of a table by ids: for each op, which input's ids index which input's table. onnxruntime's fused BERT
# embedding (EmbedLayerNormalization: input, segment and position ids into the word, segment and position tables).
_LOOKUPS: dict[str, dict[int, int]] = {"Gather": {1: 0}, "EmbedLayerNormalization": {0: 2, 1: 4, 8: 3}}


def token_id_limits(path: str | Path) -> dict[str, int]:
    """For each graph input that indexes an embedding table, that table's row count.

    An input indexes a table when it reaches the ids of a lookup (a ``Gather``'s indices, the row count
    read along its ``axis``; the ids of onnxruntime's fused ``EmbedLayerNormalization``), directly or
    through casts and reshapes, and the lookup reads a weight (an initializer, possibly dequantized or
    cast). Inputs that index several tables get the smallest. A file onnx cannot read as a protobuf (an
    ``.ort`` file) is run instead (:func:`edgekd.profile.id_ceiling.probed_id_limits`).
    """
    try:
        return _limits_of(_load_graph(Path(path)))
    except ModelError:
        from edgekd.profile.id_ceiling import probed_id_limits

        return probed_id_limits(path)


def _limits_of(graph: Any) -> dict[str, int]:
    """:func:`token_id_limits` of a loaded ``onnx.GraphProto``."""
    shapes = {t.name: tuple(int(d) for d in t.dims) for t in graph.initializer if t.dims}
    producers = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def table_rows(node: Any, table: int) -> int | None:
        name = node.input[table] if table < len(node.input) else ""
        while name not in shapes and name in producers and producers[name].op_type in _TABLE_CARRIERS:
            name = producers[name].input[0]
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0) if node.op_type == "Gather" else 0
        dims = shapes.get(name, ())
        return dims[axis] if -len(dims) <= axis < len(dims) else None

    limits: dict[str, int] = {}
    for value in graph.input:
        found: list[int] = []
        frontier, seen = [value.name], {value.name}
        while frontier:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                tables = [table for ids, table in _LOOKUPS.get(node.op_type, {}).items()
                          if ids < len(node.input) and node.input[ids] == tensor]
                found.extend(rows for rows in (table_rows(node, table) for table in tables) if rows)
                if node.op_type in _ID_CARRIERS and node.input[0] == tensor and node.output[0] not in seen:
                    seen.add(node.output[0])
                    frontier.append(node.output[0])
        if found:
            limits[value.name] = min(found)
    return limits


def make_feeds(onnx_path_or_session: str | Path | Any, shape: ShapeLike, seed: int = 0,
               limits: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Input arrays for every graph input, shaped for the device (see :func:`resolve_shape`).

    Token ids stay below each input's ``limits`` entry (see :func:`token_id_limits`, read from
    the file when a path is given and ``limits`` is not; pass them with a session).
    Raises :class:`ModelError` for an input type that cannot be fed (strings, bfloat16, ...) and for position
    ids longer than the table they index.
    """
    path = str(onnx_path_or_session) if isinstance(onnx_path_or_session, str | Path) else None
    try:
        if path is None:
            specs, limits = input_specs(onnx_path_or_session), limits or {}
        elif limits is None:
            specs, limits = specs_and_limits(path)
        else:
            specs = input_specs(path)
        return spec_feeds(specs, shape, seed, limits)
    except ModelError as exc:
        if path is None or str(exc).startswith(path):
            raise
        raise ModelError(f"{path}: {exc}") from None  # name the file when the caller did not


def spec_feeds(specs: list[InputSpec], shape: ShapeLike, seed: int = 0,
               limits: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """:func:`make_feeds` of inputs already read: an array for each of ``specs`` shaped by :func:`resolve_shape`,
    token ids below its ``limits`` entry. Raises :class:`ModelError` as :func:`make_feeds` does."""
    rng = np.random.default_rng(seed)
    limits = limits or {}
    feeds: dict[str, np.ndarray] = {}
    for spec in specs:
        dtype = _NUMPY_DTYPES.get(spec.type_name)
        if dtype is None:
            supported = ", ".join(sorted(_NUMPY_DTYPES))
            raise ModelError(f"input '{spec.name}' has unsupported type {spec.type_name} "
                             f"(supported: {supported})")
        dims = resolve_shape(spec, shape)
        _check_positions(spec.name, dims, limits.get(spec.name))
        feeds[spec.name] = _values(spec.name, dims, np.dtype(dtype), rng, limits.get(spec.name))
    return feeds


def sequence_axes(specs: list[InputSpec], shape: ShapeLike) -> dict[str, tuple[int, ...]]:
    """For each input of ``specs``, the axes :func:`resolve_shape` fills with the sequence length (the dims that
    change with ``shape.sequence_length``, all else equal); inputs without one are left out."""
    other = _Shape(shape.batch, shape.sequence_length + 1, shape.image_size)
    axes = {}
    for spec in specs:
        first, second = resolve_shape(spec, shape), resolve_shape(spec, other)
        changed = tuple(axis for axis, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
        if changed:
            axes[spec.name] = changed
    return axes


@dataclass(frozen=True)
class _Shape:
    """A :class:`ShapeLike` of given values."""

    batch: int
    sequence_length: int
    image_size: int | None


def _check_positions(name: str, dims: tuple[int, ...], rows: int | None) -> None:
    """Position ids count up to the sequence length: one that outgrows the position table they index is refused
    (onnxruntime would stop with 'indices out of bounds')."""
    if "position" in name.lower() and dims and rows is not None and dims[-1] > rows:
        raise ModelError(f"input '{name}' indexes a table of {rows} positions but is fed {dims[-1]} (the sequence "
                         f"length); profile it with a device whose inputs.sequence_length is at most {rows}")


Role = str
"""What an input carries, by its name and type: ``floats``, ``mask``, ``positions``, ``segments`` (token types),
``bytes`` (an image's pixels) or ``ids`` (token ids, or any other integers)."""


def input_role(name: str, dtype: np.dtype, limit: int | None) -> Role:
    """What the input ``name`` of ``dtype`` carries (see :data:`Role`); ``limit`` is the row count of the table its
    ids index, if any. :func:`make_feeds` fills each role its own way, and :func:`length_axes` finds the token
    inputs' lengths by it."""
    name = name.lower()
    if dtype.kind == "f":
        return "floats"
    if dtype.kind == "b" or "mask" in name:
        return "mask"
    if "position" in name:
        return "positions"
    if "type" in name or "segment" in name:
        return "segments"
    if dtype == np.uint8 and limit is None:  # bytes (an image's pixels), not ids of a table
        return "bytes"
    return "ids"


def spec_role(spec: InputSpec, limit: int | None = None) -> Role:
    """:func:`input_role` of a graph input read by :func:`input_specs` (a type numpy lacks counts as floats)."""
    return input_role(spec.name, np.dtype(_NUMPY_DTYPES.get(spec.type_name, np.float32)), limit)


def length_axes(specs: list[InputSpec], limits: dict[str, int] | None = None) -> dict[str, int]:
    """The axis of each token input of a text graph that carries the sequence length, by what the input is.

    The token ids are ``input_ids``, else the 2-D integer input indexing an embedding table (``limits``, see
    :func:`token_id_limits`), else the first 2-D ``ids`` input (:func:`input_role`); their axis 1 is the length.
    Other inputs carry it where they share the ids' dynamic length dim (its ``dim_param``), and 2-D masks, token
    types and positions at axis 1 when it has the ids' static length. Any other input (a ``[batch, k]`` of features
    or of a fixed count of ids) carries no length. Empty for a graph without token ids (an image model)."""
    limits = limits or {}
    roles = {spec.name: spec_role(spec, limits.get(spec.name)) for spec in specs}
    ids = [spec for spec in specs if len(spec.dims) == 2 and roles[spec.name] == "ids"]
    tokens = next((spec for spec in ids if spec.name == "input_ids"), None) \
        or next((spec for spec in ids if spec.name in limits), None) or next(iter(ids), None)
    if tokens is None:
        return {}
    length = tokens.dims[1]
    axes = {tokens.name: 1}
    for spec in specs:
        if spec is tokens:
            continue
        if isinstance(length, str) and length in spec.dims:
            axes[spec.name] = spec.dims.index(length)
        elif len(spec.dims) == 2 and roles[spec.name] in ("mask", "segments", "positions") \
                and _is_static(length) and spec.dims[1] == length:
            axes[spec.name] = 1
    return axes


def fed_length(specs: list[InputSpec], feeds: dict[str, np.ndarray],
               limits: dict[str, int] | None = None) -> int | None:
    """The tokens per row ``feeds`` give a text graph of inputs ``specs`` (the longest of its :func:`length_axes`);
    None for a graph without token ids."""
    lengths = [feeds[name].shape[axis] for name, axis in length_axes(specs, limits).items() if name in feeds]
    return int(max(lengths)) if lengths else None


def _values(name: str, dims: tuple[int, ...], dtype: np.dtype, rng: np.random.Generator,
            limit: int | None) -> np.ndarray:
    """Values for one input (see the module docstring); ``limit`` is the row count of the table its ids index."""
    role = input_role(name, dtype, limit)
    if role == "floats":
        return rng.standard_normal(dims).astype(dtype)
    if role == "mask":
        return np.ones(dims, dtype=dtype)
    if role == "positions" and dims:
        return np.broadcast_to(np.arange(dims[-1], dtype=dtype), dims).copy()
    if role in ("segments", "positions"):
        return np.zeros(dims, dtype=dtype)
    if role == "bytes":
        return rng.integers(0, 256, dims, dtype=dtype)
    return rng.integers(0, max(1, min(TOKEN_ID_HIGH, limit or TOKEN_ID_HIGH)), dims, dtype=dtype)


def _spatial_axes(spec: InputSpec) -> tuple[int, ...]:
    """The (height, width) axes of a 4-D float image input, NCHW unless it looks NHWC."""
    dims = spec.dims
    if len(dims) != 4 or spec.type_name not in ("float", "float16", "double"):
        return ()
    channels_last = dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4)
    return (1, 2) if channels_last else (2, 3)


def _is_static(dim: Dim) -> bool:
    return isinstance(dim, int) and dim > 0


def _show(dims: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]"


def batch_warning(name: str, input_shapes: Mapping[str, list[int]], batch: int) -> str | None:
    """One sentence when ``name`` was timed on inputs whose first axis is not the device's ``batch`` (its graph fixes
    that axis, or has no batch axis): its latency is not a batch's, so it does not compare with models timed on
    the device's batch; None when every input's first axis is ``batch``."""
    firsts = sorted({shape[0] for shape in input_shapes.values() if shape})
    if not firsts or firsts == [batch]:
        return None
    shapes = ", ".join(f"{input_name} {shape}" for input_name, shape in input_shapes.items())
    return (f"{name} was timed on inputs {shapes}: its graph fixes their first axis, while the device profile feeds "
            f"batches of {batch}, so its latency (and MACs) are not a batch of {batch}'s (export it with a dynamic "
            "batch axis to compare it with models timed on the device's batch)")


def length_warning(name: str, sequence_length: int | None, device_length: int, device: str) -> str | None:
    """One sentence when the text model ``name`` was timed at ``sequence_length`` tokens per row, not at the
    device's ``device_length`` (its graph fixes its sequence axis: an ONNX file exported at 256 tokens is timed at
    256): its latency, and any speed-up against it, compare inputs of different lengths. None for a model timed at
    the device's length or without token ids (``sequence_length`` None)."""
    if sequence_length is None or sequence_length == device_length:
        return None
    return (f"{name} was timed at {sequence_length} tokens (its graph fixes that length), not at the device's "
            f"sequence_length {device_length} ('{device}'): its latency, and any speed-up over it, compare inputs of "
            "different lengths (export it with a dynamic sequence axis to time it at the device's length).")
