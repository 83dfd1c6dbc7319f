"""The typed record the ``export`` stage writes into its ``stage.json`` metrics: the export ``target`` it used
and, under each exported model's role, the ONNX file and its parity with PyTorch (and the ``.ort`` conversion,
for an ``ort`` target).

A classifier's graph (:class:`OnnxExportRecord`) lists its inputs, outputs and their shapes; a causal LM's
(:class:`KVCacheExportRecord`, ``kv_cache: true``) is a KV-cache graph optimized at the target's level.
:func:`read_export_record` reads the record back, and :func:`recorded_target` the target an export or a
budget search recorded, with one clear line when malformed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag

from edgekd.export.backends import Exporter
from edgekd.export.config import ExportTarget
from edgekd.export.parity import ParityResult
from edgekd.stage_record import FrozenRecord, read_stage_record


class OrtRecord(FrozenRecord):
    """The ``.ort`` conversion of an exported model and its parity with the ONNX model."""

    file: str
    size_mb: float
    parity: ParityResult
    operators_config: str | None = Field(description="The reduced-operator config written beside it, if any.")


class _Exported(FrozenRecord):
    """What every exported model records: its file (relative to the run directory), size, opset and parity."""

    path: str
    size_mb: float
    opset: int
    parity: ParityResult
    ort: OrtRecord | None = None
    exporter: Exporter | None = Field(
        default=None, description="The exporter that traced the graph (edgekd.export.backends); absent: torchscript.")


class OnnxExportRecord(_Exported):
    """A classifier's graph: its inputs and outputs, with each input's dimensions (an axis name when dynamic)."""

    input_names: list[str]
    output_names: list[str]
    input_shapes: dict[str, list[int | str]]
    checked_shapes: list[dict[str, list[int]]] = Field(
        default_factory=list, description="Every input shape the graph was compared with PyTorch at: the parity "
        "gate's batches, the device profile's inputs and, for text, a second sequence length "
        "(edgekd.export.later_shapes); empty in records written before it was recorded.")


class KVCacheExportRecord(_Exported):
    """A causal LM's KV-cache graph, checked over a prefix and cached steps."""

    kv_cache: Literal[True]
    optimization_level: Literal["disabled", "basic", "extended", "all"]
    checked_prompts: list[int] = Field(
        default_factory=list, description="The prompt lengths (tokens with an empty cache) the graph was compared "
        "with PyTorch at: the parity prefix and the device's generation.prompt_tokens; empty in records written "
        "before they were recorded.")


def _kind(value: Any) -> str:
    """``kv_cache`` for a causal LM's graph, else ``onnx``."""
    cached = value.get("kv_cache") if isinstance(value, dict) else getattr(value, "kv_cache", None)
    return "kv_cache" if cached else "onnx"


AnyExportRecord = Annotated[Annotated[OnnxExportRecord, Tag("onnx")]
                            | Annotated[KVCacheExportRecord, Tag("kv_cache")], Discriminator(_kind)]


class ExportRecord(FrozenRecord):
    """The export stage's metrics: the target and each exported model's record under its role."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, AnyExportRecord] = Field(init=False)

    target: ExportTarget

    @property
    def models(self) -> dict[str, OnnxExportRecord | KVCacheExportRecord]:
        """Each exported model's record, by role."""
        return dict(self.model_extra or {})


def export_record(target: ExportTarget, models: dict[str, dict[str, Any]]) -> ExportRecord:
    """The export stage's record of ``models`` (each role's figures) exported with ``target``."""
    return ExportRecord.model_validate({"target": target.model_dump(mode="json"), **models})


def read_export_record(record: dict[str, Any]) -> ExportRecord:
    """The export stage ``record``'s metrics as an :class:`ExportRecord`; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(ExportRecord, record)


def recorded_target(record: dict[str, Any]) -> ExportTarget:
    """The export target an ``export`` or ``search`` stage ``record`` used (both record it as ``target``)."""
    return read_stage_record(ExportTarget, record, "target")
