"""An exported graph run at the input shapes the later stages feed it, and compared with PyTorch there.

The parity gate's batches (:func:`edgekd.export.parity.parity_batches`) vary the batch size only: they keep the
sequence length (or image size) the graph was traced at. A graph that fixed that length while it was traced (a
reshape to a Python int read from the input's shape, a position table sliced to the traced length: Funnel
Transformer, Longformer, a user's module) passes them, then fails in the quantize, profile or bundle stage, or in
the user's app, with an onnxruntime shape error. So once the gate has passed, :func:`check_later_shapes` runs the
graph at the device profile's inputs, filled as the profiler fills them (:func:`edgekd.profile.inputs.spec_feeds`:
its ``sequence_length``, ``image_size`` and batch; token ids below the vocabulary the graph's embedding reads) and,
when the graph has a sequence axis, at a second length other than the traced one (half it, else half again as
long: the first PyTorch itself runs at), and compares each with PyTorch under the same tolerance. A graph that
cannot run there or disagrees is refused in one line naming the model, the length it was traced at and the length
that failed. A graph whose other axes are static (edgekd exports images at their fixed size) is checked at that
shape only: the device's shape resolves to it. A model file given as it is (an ONNX file to convert or bundle) has
no PyTorch model to compare with: :func:`check_file_runs` runs it at the device's inputs and refuses it in one line
when it does not run there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.config.device import InputShape
from edgekd.errors import EdgekdError, ExportError, first_line, is_out_of_memory
from edgekd.export.guard import describe
from edgekd.export.parity import Batch, ParityResult, check_parity, cpu_session, graph_feed, one_line
from edgekd.profile.inputs import InputSpec, ShapeLike, input_specs, sequence_axes, spec_feeds, specs_and_limits

#: Seed of the feeds (the profiler's own seed is 0: the same values it times).
FEED_SEED = 0
#: What a length that fails is, in the refusal.
_DEVICE_LENGTH = "the device profile's sequence_length, which the quantize, profile and bundle stages feed"
_SECOND_LENGTH = "a second length, to check the sequence axis is dynamic"

Shapes = dict[str, tuple[int, ...]]


def check_later_shapes(model: nn.Module, onnx_path: Path, sample: Batch, dynamic_axes: Mapping[str, Mapping[int, str]],
                       shape: ShapeLike, atol: float, *, rtol: float = 0.0, label: str | Path | None = None,
                       positions: int | None = None) -> list[Shapes]:
    """Compare ``model`` with the graph at ``onnx_path`` at the shapes later stages feed (see the module).

    ``sample`` is the batch the graph was traced at, ``dynamic_axes`` its dynamic axes (for inputs the forward takes
    that the graph dropped); ``shape`` is the device profile's ``inputs``; ``positions`` the most tokens the model
    takes, when known (lengths are kept within it). Returns the input shapes checked (those other than the
    sample's own). Raises a one-line :class:`ExportError` when the graph fails or disagrees at one of them.
    """
    shown = label if label is not None else onnx_path
    specs, limits = specs_and_limits(onnx_path)
    specs += [_sample_spec(name, tensor, dynamic_axes.get(name, {}))
              for name, tensor in sample.items() if name not in {spec.name for spec in specs}]
    try:
        traced = _traced_length(specs, sample, shape)
    except EdgekdError as exc:  # a dynamic axis the profiler could not fill either
        raise ExportError(f"{shown}: {describe(model)} cannot be fed the device profile's inputs: {exc}") from None
    traced_shapes = {name: tuple(tensor.shape[1:]) for name, tensor in sample.items()}
    session = cpu_session(onnx_path, shown)  # loaded once for every shape checked

    def check_at(length: int, why: str) -> Shapes | None:
        """The inputs at ``length`` compared (None: the traced shape, which the parity gate compared)."""
        wanted = InputShape(batch=shape.batch, sequence_length=length, image_size=shape.image_size)
        try:
            feeds = spec_feeds(specs, wanted, FEED_SEED, limits)
        except EdgekdError as exc:
            raise ExportError(f"{shown}: {describe(model)} cannot be fed the device profile's inputs: {exc}") from None
        shapes = {name: tuple(array.shape) for name, array in feeds.items()}
        if {name: dims[1:] for name, dims in shapes.items() if name in traced_shapes} == traced_shapes:
            return None
        batch = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in feeds.items()}
        refusal = _Refusal(describe(model), traced, length, why, shapes)
        result = _compare(model, onnx_path, session, batch, atol, rtol, shown, refusal)
        if not result.passed:
            raise ExportError(refusal.disagrees(shown, result))
        return shapes

    device, seconds = _lengths(traced, shape.sequence_length, positions)
    checked = [found for found in [check_at(device, _DEVICE_LENGTH)] if found is not None]
    for length in seconds:
        try:
            found = check_at(length, _SECOND_LENGTH)
        except _TorchFails:
            continue  # a length the model itself does not take (later stages never feed it): try the next
        checked += [found] if found is not None else []
        break
    return checked


def check_file_runs(path: Path, feeds: list[dict[str, np.ndarray]], shape: ShapeLike) -> bool:
    """Run a model file on ``feeds`` made at the device profile's inputs ``shape`` (a file given as it is: no PyTorch
    to compare it with), refusing in one line a graph that does not run there, with what to do, rather than the
    onnxruntime error of the conversion or the profile. Returns whether an output held NaN."""
    session = cpu_session(path, path)
    text = bool(sequence_axes(input_specs(session), shape))
    nan = False
    for feed in feeds:
        try:
            outputs = session.run(None, graph_feed(session, feed))
            nan = nan or any(isinstance(out, np.ndarray) and out.dtype.kind == "f" and bool(np.isnan(out).any())
                             for out in outputs)
        except Exception as exc:  # onnxruntime raises its own types for inputs a graph cannot take
            shapes = {name: tuple(array.shape) for name, array in feed.items()}
            if text:
                raise ExportError(
                    f"{path}: the graph does not run at {shape.sequence_length} tokens ({_DEVICE_LENGTH}): "
                    f"{one_line(exc)}; its sequence axis is dynamic, but a length was fixed in the graph when it was "
                    "traced: export it again with a length-independent forward, or give a device profile whose "
                    "inputs.sequence_length it runs at (--device my-device.yaml)") from None
            raise ExportError(f"{path}: the graph does not run at inputs {_show(shapes)} (the device profile's "
                              f"inputs): {one_line(exc)}; give a device profile whose inputs it takes (--device "
                              "my-device.yaml)") from None
    return nan


class _TorchFails(ExportError):
    """PyTorch itself cannot run the model at a checked shape."""


def _compare(model: nn.Module, onnx_path: Path, session: Any, batch: Batch, atol: float, rtol: float,
             shown: str | Path, refusal: _Refusal) -> ParityResult:
    """:func:`check_parity` on one batch; a failure of either side is the refusal's one line."""
    try:
        return check_parity(model, onnx_path, [batch], atol, rtol=rtol, label=shown, session=session)
    except ExportError as exc:  # onnxruntime cannot run the graph at this shape, or answers in another shape
        raise ExportError(refusal.fails(shown, str(exc).removeprefix(f"{shown}: "))) from None
    except Exception as exc:  # PyTorch itself cannot run the model at this shape
        if is_out_of_memory(exc):
            raise
        raise _TorchFails(refusal.torch_fails(shown, f"{type(exc).__name__}: {first_line(exc)}")) from None


class _Refusal:
    """The one-line refusals of a graph at one checked shape."""

    def __init__(self, who: str, traced: int | None, length: int, why: str, shapes: Shapes) -> None:
        self.who, self.traced, self.length, self.why, self.shapes = who, traced, length, why, shapes

    def _where(self) -> str:
        if self.traced is None:
            return f"inputs {_show(self.shapes)} (the device profile's inputs)"
        return f"{self.length} tokens ({self.why})"

    def _fix(self) -> str:
        if self.traced is None:
            return "export the model at the device profile's input shape, or give a device profile of the model's"
        return (f"its graph fixed the length while it was traced (a shape read from the input as a Python int, a "
                f"table sliced to the traced length), so it only runs at {self.traced} tokens; edgekd exports text "
                "models with a dynamic sequence axis, so make the forward independent of the input's length or "
                "choose another model")

    def fails(self, shown: str | Path, reason: str) -> str:
        """The graph does not run at this shape."""
        traced = f", traced at {self.traced} tokens," if self.traced is not None else ""
        return f"{shown}: {self.who}{traced} does not run at {self._where()}: {reason}; {self._fix()}"

    def disagrees(self, shown: str | Path, result: ParityResult) -> str:
        """The graph runs at this shape but its outputs differ from PyTorch's."""
        traced = f", traced at {self.traced} tokens," if self.traced is not None else ""
        return (f"{shown}: {self.who}{traced} disagrees with PyTorch at {self._where()}: max |torch - onnxruntime| "
                f"= {result.max_abs_diff:.3g} exceeds {result.tolerance_text()}; {self._fix()}")

    def torch_fails(self, shown: str | Path, reason: str) -> str:
        """PyTorch itself cannot run the model at this shape."""
        return (f"{shown}: {self.who} fails in PyTorch at {self._where()}: {reason}; give a device profile whose "
                "inputs the model takes (--device my-device.yaml; see docs/devices.md)")


def _lengths(traced: int | None, device: int, positions: int | None) -> tuple[int, list[int]]:
    """The device's length to check (within ``positions``) and, for a graph with a sequence axis (``traced``
    known), the candidates for a second length other than the traced one, in order: half of it, then half again as
    long within the positions (the first PyTorch runs at is checked)."""
    limit = positions or max(device, traced or 0)
    device = min(device, limit)
    if traced is None:
        return device, []
    candidates = (traced // 2, min(traced + max(1, traced // 2), limit))
    return device, [n for n in dict.fromkeys(candidates) if n >= 1 and n not in (traced, device)]


def _traced_length(specs: list[InputSpec], sample: Batch, shape: ShapeLike) -> int | None:
    """The sample's length along the graph's sequence axis (None when the graph has none)."""
    axes = sequence_axes(specs, shape)
    lengths = [int(sample[name].shape[axis]) for name, found in axes.items() if name in sample for axis in found]
    return max(lengths) if lengths else None


def _sample_spec(name: str, tensor: torch.Tensor, axes: Mapping[int, str]) -> InputSpec:
    """A forward input the graph does not take (it was unused while tracing), described as the graph would: its
    first axis the batch, its named dynamic axes dynamic."""
    dims: tuple[Any, ...] = tuple("batch" if axis == 0 else axes.get(axis, size)
                                  for axis, size in enumerate(tensor.shape))
    dtype = str(tensor.dtype).removeprefix("torch.").replace("float32", "float").replace("float64", "double")
    return InputSpec(name, dims, dtype)


def _show(shapes: Shapes) -> str:
    return ", ".join(f"{name} {list(dims)}" for name, dims in shapes.items())
