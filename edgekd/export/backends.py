"""Which exporter traces a model, and the first one whose graph passes the checks.

Two exporters make ONNX graphs: torch's TorchScript exporter (``torchscript``, :mod:`edgekd.export.onnx_export`
and :mod:`edgekd.export.causal_lm_onnx`, every model) and transformers' own (``transformers``,
:mod:`edgekd.export.hf_exporter`, Hugging Face models only). A Hugging Face model is tried with TorchScript first
(the path the export sweep has measured on every family) and, when that fails to export or to pass the parity
gate, with transformers' exporter; a mixture-of-experts model the other way round (torch's TorchScript exporter has
no export of its routing, ``aten::histc``, and fails on it at once). Either graph goes through the same
onnxruntime optimization, ONNX checker and parity gate (:func:`edgekd.export.onnx_export.write_checked`), and the
export record says which exporter made it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

import onnx
from torch import nn

from edgekd.errors import ExportError, first_line
from edgekd.export.config import EXPERT_KEYS, ExportTarget
from edgekd.export.parity import ParityResult
from edgekd.model_file import default_opset

Exporter = Literal["torchscript", "transformers"]
#: What an exporter is asked for: the graph's bytes (raising on failure).
Trace = Callable[[], bytes]


def experts(model: nn.Module) -> int | None:
    """The expert count of a mixture-of-experts Hugging Face model (its config's :data:`EXPERT_KEYS`), else None."""
    config = getattr(model, "config", None)
    counts = (getattr(config, key, None) for key in EXPERT_KEYS)
    return next((count for count in counts if isinstance(count, int) and count > 1), None)


def exporters_for(model: nn.Module) -> tuple[Exporter, ...]:
    """The exporters tried on ``model``, in order (see the module docstring)."""
    from edgekd.export import hf_exporter

    if not hf_exporter.is_hf_model(model) or hf_exporter.unavailable():
        return ("torchscript",)
    if experts(model) is not None:
        return ("transformers", "torchscript")
    return ("torchscript", "transformers")


def write_first(
    path: Path, target: ExportTarget, traces: Mapping[Exporter, Trace], parity: Callable[[Path], ParityResult], *,
    metadata: Mapping[str, str] | None = None, what: str = "",
) -> tuple[onnx.ModelProto, float, ParityResult, Exporter]:
    """Write at ``path`` the graph of the first of ``traces`` that exports and passes every check
    (:func:`edgekd.export.onnx_export.write_checked` with ``parity``, ``metadata`` and ``what``); the graph, its
    size in MiB, its parity and the exporter that made it. When every one fails, one :class:`ExportError` line
    gives the first failure, and the others after it; ``path`` is then left as it was."""
    from edgekd.export.onnx_export import write_checked

    failures: list[str] = []
    first: ExportError | None = None
    for name, trace in traces.items():
        try:
            graph = _traced(trace, name, path)
            proto, size_mb, result = write_checked(graph, path, target, parity, metadata=metadata, what=what)
        except ExportError as exc:
            first = first or exc
            failures.append(f"{_LABEL[name]} also failed: {_after_path(exc, path)}" if failures else first_line(exc))
            continue
        return proto, size_mb, result, name
    assert first is not None, "write_first needs at least one exporter"
    raise ExportError("; ".join(failures)) from first


#: How a failure after the first names its exporter.
_LABEL: dict[Exporter, str] = {"torchscript": "torch's TorchScript exporter", "transformers": "transformers' exporter"}


def _traced(trace: Trace, name: Exporter, path: Path) -> bytes:
    """``trace()``; any failure of transformers' exporter becomes one :class:`ExportError` line (TorchScript's
    traces raise their own)."""
    try:
        return trace()
    except ExportError:
        raise
    except Exception as exc:
        if name == "torchscript":
            raise
        root = _root_cause(exc)
        raise ExportError(f"{path}: transformers' ONNX exporter failed: {type(root).__name__}: "
                          f"{first_line(root)}") from exc


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost exception ``exc`` was raised from: torch.export and onnxscript wrap the reason in errors that
    only name the pass it failed in."""
    seen = {id(exc)}
    while (cause := exc.__cause__ or exc.__context__) is not None and id(cause) not in seen:
        seen.add(id(cause))
        exc = cause
    return exc


def _after_path(exc: ExportError, path: Path) -> str:
    """An error's line without its leading ``<path>: `` (it is said once, at the start)."""
    return first_line(exc).removeprefix(f"{path}: ")


def graph_opset(proto: onnx.ModelProto) -> int:
    """The default-domain opset an exported graph declares (both exporters write one)."""
    opset = default_opset(proto)
    if opset is None:
        raise ExportError("the exported graph declares no default-domain (ai.onnx) opset")
    return opset
