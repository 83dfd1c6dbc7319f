"""PyTorch → ONNX export with onnxruntime graph optimization and a parity gate.

:func:`export_onnx` traces the model with the TorchScript exporter (``dynamo=False``, the robust
path today; ops it gets wrong are patched for the trace, :mod:`edgekd.export.op_patches`) or, for a Hugging
Face model TorchScript cannot export (mixture-of-experts routing), with transformers' own exporter
(:mod:`edgekd.export.backends` picks, :mod:`edgekd.export.hf_exporter`), gives it a
dynamic batch axis, optionally lets onnxruntime optimize the graph
offline, validates it with ``onnx.checker`` and checks it against PyTorch on batches of 1 and
7 rows and on the whole sample. The file only appears at its path once all of that has passed:
an export that fails, crashes or misses the parity gate leaves no file (and no temporary file)
behind.

Optimization levels (``ExportTarget.optimization_level``), all run by onnxruntime on this CPU:

- ``disabled``: the graph exactly as PyTorch wrote it.
- ``basic``: constant folding, redundant-node elimination and simple fusions; only standard
  ONNX operators, so any ONNX runtime can load the file.
- ``extended``: also fusions into onnxruntime contrib operators (``com.microsoft`` domain, e.g.
  ``FusedConv``); the file then needs onnxruntime.
- ``all``: also layout optimizations (``com.microsoft.nchwc`` operators) chosen for this CPU's
  instruction set; the file should only be run on CPUs like the one that exported it.

The exported bytes are deterministic: the same weights, sample shape and target give the same
file. Models are serialized in memory, so they must be smaller than protobuf's 2 GB limit.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch

from edgekd.atomic import atomic_path, refuse_if_full
from edgekd.errors import EdgekdError, ExportError, is_out_of_memory
from edgekd.export import hf_exporter
from edgekd.export.backends import Exporter, Trace, exporters_for, graph_opset, write_first
from edgekd.export.config import ExportTarget
from edgekd.export.guard import describe, export_failures
from edgekd.export.later_shapes import check_later_shapes
from edgekd.export.op_patches import exportable_ops
from edgekd.export.parity import (
    DEFAULT_BATCH_SIZES,
    Batch,
    ParityResult,
    as_batch,
    batch_rows,
    check_parity,
    one_line,
    parity_batches,
)
from edgekd.export.torch_log import quiet_torch_exporter
from edgekd.models.call import call_logits, eval_mode, used_inputs
from edgekd.models.hf import usable_positions
from edgekd.models.weights import non_finite
from edgekd.ort_options import session_options
from edgekd.profile.inputs import ShapeLike

log = logging.getLogger(__name__)

_ORT_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
_BYTES_PER_MB = 1024 * 1024


@dataclass(frozen=True)
class ExportResult:
    """An exported ONNX file and what is known about it.

    ``size_mb`` is the file size in MiB (2**20 bytes); ``opset`` is the default-domain opset the
    file declares; ``input_shapes`` maps each graph input to its dimensions, with the name of
    the axis (``"batch"``) in place of a dynamic dimension.
    """

    path: Path
    size_mb: float
    opset: int
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    input_shapes: dict[str, tuple[int | str, ...]]
    parity: ParityResult
    exporter: Exporter = "torchscript"
    checked_shapes: tuple[dict[str, tuple[int, ...]], ...] = ()
    """The input shapes the graph was run at and compared with PyTorch: the parity gate's batches, then those of
    :func:`edgekd.export.later_shapes.check_later_shapes` (the device's inputs, a second sequence length)."""

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (paths as strings, shapes as lists)."""
        return {
            "path": str(self.path),
            "size_mb": self.size_mb,
            "opset": self.opset,
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "input_shapes": {name: list(dims) for name, dims in self.input_shapes.items()},
            "parity": self.parity.to_json(),
            "exporter": self.exporter,
            "checked_shapes": [{name: list(dims) for name, dims in shapes.items()} for shapes in self.checked_shapes],
        }


def export_onnx(
    model: torch.nn.Module,
    sample_input: torch.Tensor | Mapping[str, torch.Tensor],
    path: Path,
    target: ExportTarget,
    *,
    input_name: str = "input",
    output_name: str = "logits",
    extra_dynamic_axes: Mapping[str, Mapping[int, str]] | None = None,
    shape: ShapeLike | None = None,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` as ``target`` describes, and check it against PyTorch.

    ``sample_input`` is one input batch: a tensor (the graph input is then named ``input_name``)
    or a mapping of input names to tensors. The model is called by keyword with the entries its
    forward takes (:mod:`edgekd.models.call`), and only those become graph inputs, under their
    names (a DistilBERT or Llama graph has no ``token_type_ids``); a lone tensor is the forward's
    first parameter. Every input's first axis becomes the
    dynamic ``batch`` axis; ``extra_dynamic_axes`` names more, of inputs or of the output
    (``{"input_ids": {1: "sequence"}, "logits": {1: "sequence"}}``).
    The model must return one tensor or an object with ``.logits`` (a Hugging Face output).

    The model is exported in eval mode under ``torch.no_grad()`` (its train/eval modes are
    restored afterwards), optimized by onnxruntime unless ``target.optimization_level`` is
    ``"disabled"``, validated with ``onnx.checker``, and compared with PyTorch on batches of 1
    and 7 rows built from the sample and on the whole sample (so real inputs are checked in full). Given
    ``shape``, the input shape later stages feed (the device profile's ``inputs``), the graph is also compared
    with PyTorch there and, with a sequence axis, at a second length other than the traced one
    (:mod:`edgekd.export.later_shapes`), so a graph that fixed a length while it was traced is refused here, not by
    onnxruntime in a later stage. ``ExportResult.checked_shapes`` lists every input shape compared.

    The file is written atomically and only once every check has passed. Raises
    :class:`ExportError` (one line) when PyTorch cannot export the model, onnxruntime cannot
    optimize or run it, the checker rejects it, or the largest output difference exceeds
    ``target.parity_atol + target.parity_rtol × max |torch output|``, or anything else fails on the way
    (:mod:`edgekd.export.guard`); ``path`` is then left as it was.
    """
    path = Path(path)
    with export_failures(model, path):
        return _export_checked(model, sample_input, path, target, input_name, output_name, extra_dynamic_axes,
                               shape)


def _export_checked(
    model: torch.nn.Module,
    sample_input: torch.Tensor | Mapping[str, torch.Tensor],
    path: Path,
    target: ExportTarget,
    input_name: str,
    output_name: str,
    extra_dynamic_axes: Mapping[str, Mapping[int, str]] | None,
    shape: ShapeLike | None,
) -> ExportResult:
    """:func:`export_onnx` without its guard."""
    bad = non_finite(model.state_dict().items())
    if bad is not None:
        raise ExportError(f"{path}: not exported: the model's {bad} (training diverged or its weights are broken)")
    sample = used_inputs(model, as_batch(sample_input, input_name))
    _check_forward(model, sample, path)
    axes: dict[str, dict[int, str]] = {name: {0: "batch"} for name in (*sample, output_name)}
    for name, extra in (extra_dynamic_axes or {}).items():
        if name in axes:
            axes[name].update(extra)
    traces: dict[Exporter, Trace] = {
        "torchscript": lambda: _torch_export(model, sample, path, target.opset, axes, output_name),
        "transformers": lambda: hf_exporter.classifier_onnx(model, sample, axes, output_name, target.opset),
    }
    batches = parity_batches(sample, sorted({*DEFAULT_BATCH_SIZES, batch_rows(sample)}))
    later: list[dict[str, tuple[int, ...]]] = []

    def parity(tmp: Path) -> ParityResult:
        result = check_parity(model, tmp, batches, target.parity_atol, rtol=target.parity_rtol, label=path)
        if result.passed and shape is not None:
            later[:] = check_later_shapes(model, tmp, sample, axes, shape, target.parity_atol,
                                          rtol=target.parity_rtol, label=path, positions=_positions(model))
        return result

    proto, size_mb, parity_result, exporter = write_first(
        path, target, {name: traces[name] for name in exporters_for(model)}, parity)
    graph_inputs = {i.name for i in proto.graph.input}
    result = ExportResult(
        path=path,
        size_mb=size_mb,
        opset=graph_opset(proto),
        input_names=tuple(i.name for i in proto.graph.input),
        output_names=tuple(o.name for o in proto.graph.output),
        input_shapes={i.name: _dims(i) for i in proto.graph.input},
        parity=parity_result,
        exporter=exporter,
        checked_shapes=tuple({name: dims for name, dims in shapes.items() if name in graph_inputs}
                             for shapes in (*({n: tuple(t.shape) for n, t in b.items()} for b in batches), *later)),
    )
    log.info(
        "exported %s with the %s exporter (%.3f MB, opset %d, optimization %s, parity max diff %.2e)",
        path, exporter, size_mb, result.opset, target.optimization_level, parity_result.max_abs_diff,
    )
    return result


def _check_forward(model: torch.nn.Module, sample: Batch, path: Path) -> None:
    """Refuse (one line, naming the input shapes) a model whose own forward pass fails on the example input: every
    exporter runs it while tracing, so its failure was reported as the exporters' (an EfficientNet whose config's
    hidden_dim does not match its last conv's width fails in its batch norm)."""
    try:
        with eval_mode(model), torch.no_grad():
            call_logits(model, sample)
    except EdgekdError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        shapes = {name: list(tensor.shape) for name, tensor in sample.items()}
        raise ExportError(f"{path}: not exported: the forward pass of {describe(model)} itself fails on the example "
                          f"input {shapes}: {one_line(exc)}") from exc


def write_checked(
    onnx_bytes: bytes, path: Path, target: ExportTarget, parity: Callable[[Path], ParityResult], *,
    metadata: Mapping[str, str] | None = None, what: str = "",
) -> tuple[onnx.ModelProto, float, ParityResult]:
    """Write an exported graph to ``path`` as ``target`` says, only once it passes every check.

    The graph is optimized by onnxruntime at ``target.optimization_level``, given ``metadata`` (ONNX
    metadata properties), checked by the ONNX checker and by ``parity`` (called on the written temporary
    file; ``what`` says in the error what it compared), then renamed into place. Raises
    :class:`ExportError` (one line) otherwise, leaving ``path`` as it was. Returns the graph (without
    external data), its size in MiB and the parity result.
    """
    with atomic_path(path) as tmp:
        if target.optimization_level == "disabled":
            tmp.write_bytes(onnx_bytes)
        else:
            _ort_optimize(onnx_bytes, tmp, target.optimization_level, path)
        if metadata:
            graph = onnx.load(str(tmp))
            onnx.helper.set_model_props(graph, dict(metadata))
            onnx.save(graph, str(tmp))
        try:
            onnx.checker.check_model(str(tmp))
        except onnx.checker.ValidationError as exc:
            raise ExportError(f"{path}: the exported model is not valid ONNX: {one_line(exc)}") from exc
        result = parity(tmp)
        if not result.passed:
            raise ExportError(
                f"{path}: parity check failed: max |torch - onnxruntime| = {result.max_abs_diff:.3g} "
                f"exceeds {result.tolerance_text()}{what} (export target '{target.name}', "
                f"optimization '{target.optimization_level}'); the file was not written"
            )
        proto = onnx.load(str(tmp), load_external_data=False)
        size_mb = tmp.stat().st_size / _BYTES_PER_MB
    return proto, size_mb, result


class _LogitsOnly(torch.nn.Module):
    """Wraps a model so the traced graph takes its inputs in ``names`` order and has one output: its logits."""

    def __init__(self, model: torch.nn.Module, names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return call_logits(self.model, dict(zip(self.names, inputs, strict=True)))


def _torch_export(
    model: torch.nn.Module,
    sample: Batch,
    path: Path,
    opset: int,
    dynamic_axes: dict[str, dict[int, str]],
    output_name: str,
) -> bytes:
    """The ONNX bytes of the TorchScript export; any failure becomes a one-line ExportError."""
    buffer = io.BytesIO()
    try:
        with eval_mode(model), torch.no_grad(), warnings.catch_warnings(), quiet_torch_exporter(), exportable_ops():
            # The TorchScript exporter warns that it is deprecated; it is still the robust path.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # transformers' attention masks index with non-negative indices only; the warning does not apply
            warnings.filterwarnings("ignore", message="Exporting aten::index operator")
            torch.onnx.export(
                _LogitsOnly(model, tuple(sample)),
                tuple(sample.values()),
                buffer,
                opset_version=opset,
                dynamo=False,
                do_constant_folding=True,
                input_names=list(sample),
                output_names=[output_name],
                dynamic_axes=dynamic_axes,
            )
    except Exception as exc:
        raise ExportError(
            f"{path}: cannot export {describe(model)} to ONNX opset {opset}: {one_line(exc)}"
        ) from exc
    return buffer.getvalue()


def _ort_optimize(onnx_bytes: bytes, out: Path, level: str, path: Path) -> None:
    """Let onnxruntime optimize the graph at ``level`` and write the optimized model to ``out``."""
    options = session_options()  # quiet: at "all" onnxruntime warns on stderr that the layout is hardware-specific
    options.graph_optimization_level = _ORT_LEVELS[level]
    options.optimized_model_filepath = str(out)
    if level == "all":
        log.warning(
            "%s: optimization level 'all' writes CPU-specific layouts; run the file only on CPUs "
            "like this one",
            path,
        )
    try:
        ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        refuse_if_full(Path(out).parent, len(onnx_bytes), exc)
        raise ExportError(
            f"{path}: onnxruntime cannot optimize the exported graph (level '{level}'): {one_line(exc)}"
        ) from exc


def _positions(model: torch.nn.Module) -> int | None:
    """The most tokens a Hugging Face text model takes (None for other models, or when its config sets none)."""
    config = getattr(model, "config", None)
    return usable_positions(model) if config is not None and hasattr(config, "to_dict") else None


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    """A graph input's dimensions: sizes, or the axis name for dynamic ones."""
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_param if d.WhichOneof("value") == "dim_param" else d.dim_value for d in dims)
