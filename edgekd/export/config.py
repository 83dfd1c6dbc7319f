"""Export presets (``exporters/*.yaml``) and the ``export`` and ``bundle`` stages' settings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, model_validator

from edgekd.catalog import UnknownEntryError, find
from edgekd.config.base import PathOrId, StrictModel
from edgekd.config.loading import load_yaml_model
from edgekd.stage_kind import PlanState, StageKind

#: Where a bundle goes in a run directory (or ``edgekd bundle``'s ``--out``).
BUNDLE_DIR = "bundle"
BUNDLE_ZIP = "bundle.zip"


class ExportTarget(StrictModel):
    """How a model is exported: format, opset, graph optimization and the parity gate."""

    name: str = Field(min_length=1)
    description: str = ""
    format: Literal["onnx", "ort"] = Field(
        default="onnx", description="'ort': also convert to ONNX Runtime's .ort format (ORT Mobile)."
    )
    opset: Annotated[StrictInt, Field(ge=13, le=21)] = 17
    optimization_level: Literal["disabled", "basic", "extended", "all"] = "basic"
    parity_atol: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-4
    parity_rtol: Annotated[float, Field(ge=0, allow_inf_nan=False)] = Field(
        default=1e-4, description="Added to parity_atol, times the largest |output| of the reference model: float32 "
        "rounding grows with the outputs' scale.")
    keep_onnx: bool = Field(default=True, description="'ort' only: ship the .onnx file beside the .ort.")
    reduced_operator_config: bool = Field(
        default=True, description="'ort' only: write the operator list a minimal ONNX Runtime build needs."
    )
    ort_optimization_level: Literal["disabled", "basic", "extended", "all"] = Field(
        default="all", description="'ort' only: optimizations baked into the .ort (never CPU-specific layouts)."
    )

    @model_validator(mode="after")
    def _ort_fields_need_ort(self) -> ExportTarget:
        ort_only = [name for name in ("keep_onnx", "reduced_operator_config", "ort_optimization_level")
                    if getattr(self, name) != type(self).model_fields[name].default]
        if self.format != "ort" and ort_only:
            raise ValueError(f"{', '.join(ort_only)}: only for format 'ort' (this target's format is '{self.format}')")
        return self


class ExportStage(StrictModel):
    """Export every model so far to ONNX and check it against PyTorch."""

    stage: Literal["export"] = "export"
    target: PathOrId = Field(default="onnx-fp32", description="A preset name from exporters/ or a YAML path.")


class BundleStage(StrictModel):
    """Pack the final model for an Android/iOS app: bundle/ (model, manifest.json, README.md) and bundle.zip."""

    stage: Literal["bundle"] = "bundle"


def load_export_target(name_or_path: str | Path) -> ExportTarget:
    """Load an export-target preset by built-in name (``onnx-fp32``) or path."""
    return load_yaml_model(find("exporters", name_or_path), ExportTarget)


def export_target_input(config: ExportStage, _recipe: Any) -> dict[str, Any]:
    """Extra input of a stage that exports: the export target's settings (a changed preset re-runs it; its
    description, shown in listings only, does not)."""
    return {"export_target": load_export_target(config.target).model_dump(mode="json", exclude={"description"})}


#: transformers config keys that give a mixture-of-experts model its number of experts.
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def check_export_target(config: Any, state: PlanState, where: str) -> None:
    """A stage that exports (``config.target``): the target names a built-in preset or a readable YAML file, and
    every model made so far can be exported: a mixture-of-experts model is refused now rather than after its
    training when transformers' exporter cannot run here (torch's TorchScript exporter has no export of the expert
    routing transformers uses, ``aten::histc``; :mod:`edgekd.export.backends`), and so is a family the export sweep
    found unexportable for this use (:mod:`edgekd.models.export_support`)."""
    from edgekd.export import hf_exporter
    from edgekd.models.export_support import export_refusal, recipe_use, refusal_message
    from edgekd.task_rules import role_config

    try:
        load_export_target(config.target)
    except UnknownEntryError as exc:
        raise state.fail(f"{where}.target", str(exc)) from None
    for role in sorted(state.trained):
        model = role_config(state.recipe, role) or {}
        experts = next((model[key] for key in EXPERT_KEYS if isinstance(model.get(key), int) and model[key] > 1), None)
        missing = hf_exporter.unavailable() if experts is not None else None
        if missing is not None:
            raise state.fail(f"{role}.model", f"'{model.get('model_type')}' is a mixture-of-experts model ({experts} "
                             "experts): torch's TorchScript exporter cannot export its expert routing (aten::histc) "
                             f"and {missing}, so its export ({where}) would fail after training; install onnxscript, "
                             "choose a dense model or drop the export")
        model_type = model.get("model_type")
        reason = export_refusal(model_type, recipe_use(state.recipe, model_type)) if model_type else None
        if reason is not None:
            raise state.fail(f"{role}.model", f"{refusal_message(model_type, reason)}, so its export ({where}) "
                             "would fail after training; choose another family or drop the export")


EXPORT = StageKind(
    ExportStage, "edgekd.export.stage:run_export", reads=("seed", "data"), device_fields=("inputs", "generation"),
    extra_inputs=export_target_input,
    after=("teacher", "distill"), check=check_export_target, record="edgekd.export.record:read_export_record")
BUNDLE = StageKind(
    BundleStage, "edgekd.export.bundle_stage:run_bundle", reads=("name", "data"), uses_device=True, cacheable=False,
    after=("profile",), after_reason="the manifest carries the latency",
    record="edgekd.export.bundle_record:read_bundle_record", outputs=(BUNDLE_DIR, BUNDLE_ZIP))
KINDS = (EXPORT, BUNDLE)
