"""Every export failure is one line: whatever torch, transformers or onnxruntime raise becomes an ``ExportError``.

Exporters raise what they like (the TorchScript exporter's own checks raise ``AssertionError``, a family's
forward ``TypeError`` or ``ValueError`` while it is traced, onnxruntime its own exceptions), and a raw one would
reach the user as a traceback. :func:`export_failures` is entered around each export path
(:func:`edgekd.export.onnx_export.export_onnx`, :func:`edgekd.export.causal_lm_stage.export_with_cache`), so the
CLI prints one line naming the file, the model's class and family, and the reason, and exits 2. A failed memory
allocation is left as it is (the CLI reports it as such).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from edgekd.errors import EdgekdError, ExportError, first_line, is_out_of_memory


def describe(model: nn.Module) -> str:
    """``GlmForCausalLM (model_type 'glm')`` for a Hugging Face model, the class name otherwise: of the module a
    wrapper holds as ``.module`` (a user's module inside edgekd's :class:`~edgekd.models.user_module.UserModule`)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return f"{type(model).__name__} (model_type '{model_type}')" if model_type else type(model).__name__


@contextmanager
def export_failures(model: nn.Module, path: Path) -> Iterator[None]:
    """Turn any exception but edgekd's own and out-of-memory into a one-line :class:`ExportError`."""
    try:
        yield
    except EdgekdError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise ExportError(f"{path}: cannot export {describe(model)}: {type(exc).__name__}: {first_line(exc)}") from exc
