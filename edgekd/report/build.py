"""Assemble ``report.json``, the machine record of a run, from its final artifact and stage records.

Everything here is read from what the stages recorded; nothing is measured. Top level: one
object per model role (``teacher``, ``student``, ...) with :data:`MODEL_FIELDS`, ``comparison``
(student/teacher ratios), ``budget`` (verdict, limits, checks), ``stages`` (one row per stage,
with the figures of every model after it and which models it changed), ``final_model``,
``operators`` (the final model's onnxruntime operator profile), ``bundle``, ``quantization``
(any ``decision``/``reason`` a quantize stage recorded), ``search`` (a search stage's latency table,
trained candidates and choice, else null), ``dataset_distill`` (each dataset_distill stage's
synthetic set and scores), ``trust_remote_code`` (the recipe keys of
models whose Hugging Face code was allowed to run, also said in ``warnings``), ``warnings``,
``notes``, ``cpu``, ``device``, ``recipe``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from edgekd.artifacts import Artifact, ModelArtifact
from edgekd.config.device import DeviceProfile
from edgekd.config.recipe import Recipe
from edgekd.export.bundle_record import read_bundle_record
from edgekd.model_metrics import ModelMetrics
from edgekd.profile.budget import judged_role
from edgekd.profile.inputs import batch_warning, length_warning
from edgekd.profile.record import LMProfileRecord, ProfiledModel, ProfileRecord, read_profile_record
from edgekd.profile.speed_ratio import MAX_SPREAD
from edgekd.profile.stability import stability_warning
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.prune.record import COMPRESS_STAGES, read_compression_stage
from edgekd.quantize.record import QuantizationDecision, quantization_decisions
from edgekd.report.dataset_distill import dataset_distill_summary
from edgekd.report.record import stage_figures
from edgekd.rundir import stage_dir_name
from edgekd.search.record import read_search_record
from edgekd.version import __version__

#: Per-model figures every report carries (``None`` when the stage that measures one did not run).
MODEL_FIELDS = ("accuracy", "val_accuracy", "params", "macs", "size_mb", "p50_ms", "p90_ms", "p99_ms", "mean_ms",
                "peak_memory_mb", "threads", "estimate", "parity_max_abs_diff", "precision", "quantization_reason")
#: Figures of multi-label, regression, token classification and causal-LM models, carried when present.
TASK_FIELDS = ("task", "primary_metric", "micro_f1", "macro_f1", "subset_accuracy", "val_micro_f1", "mse", "pearson",
               "spearman", "val_mse", "token_accuracy", "val_token_accuracy", "entity_micro_f1", "entity_precision",
               "entity_recall", "val_loss", "perplexity", "time_to_first_token_ms", "per_token_p50_ms",
               "per_token_p90_ms", "tokens_per_second")
#: The order models are shown in (others follow in the order the run made them).
ROLE_ORDER = ("teacher", "assistant", "student")


def build_report(recipe: Recipe, device: DeviceProfile, artifact: Artifact, records: list[dict[str, Any]],
                 cpu: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable record of a run: models, comparison, budget verdict, stages, CPU."""
    models = {role: _model_figures(artifact.get(role).metrics) for role in ordered_roles(artifact.models)}
    profile_stage = last_record(records, "profile")
    profile = read_profile_record(profile_stage) if profile_stage is not None else None
    final = final_role(artifact)
    remote_code = remote_code_models(recipe)
    report: dict[str, Any] = {
        "edgekd_version": __version__,
        "recipe": recipe.model_dump(mode="json"),
        "device": device.model_dump(mode="json"),
        "cpu": cpu,
        **models,
        "roles": list(models),
        "final_model": final,
        "budget": _budget(device, profile),
        "stages": [_stage_row(r) for r in records],
        "operators": _operators(profile, final),
        "bundle": _bundle(last_record(records, "bundle")),
        "quantization": [d.model_dump() for d in _quantization(records, artifact)],
        "search": _search(last_record(records, "search")),
        "dataset_distill": dataset_distill_summary(records),
        "trust_remote_code": list(remote_code),
        "warnings": [*_warnings(device, models, remote_code, profile), *_length_warnings(recipe, device, profile),
                     *_batch_warnings(device, profile),
                     *_compression_warnings(records)],
        "notes": _notes(device, cpu, profile),
    }
    if "teacher" in models and "student" in models:
        same_batch = _first_axes(profile, "teacher") == _first_axes(profile, "student")
        report["comparison"] = _comparison(models["teacher"], models["student"], same_batch=same_batch)
    return report


def final_role(artifact: Artifact) -> str | None:
    """The run's final model: the one judged against the budget (the student, else the last exported one)."""
    exported = [role for role, m in artifact.models.items() if m.onnx is not None]
    roles = exported or list(artifact.models)
    return judged_role(roles) if roles else None


def ordered_roles(roles: Iterable[str]) -> list[str]:
    """Model roles in display order: teacher, assistant, student, then any other."""
    roles = list(roles)
    return sorted(roles, key=lambda r: (ROLE_ORDER.index(r) if r in ROLE_ORDER else len(ROLE_ORDER), roles.index(r)))


def last_record(records: list[dict[str, Any]], stage: str) -> dict[str, Any] | None:
    """The record of the last ``stage`` stage of a run, if it has one."""
    return next((r for r in reversed(records) if r["stage"] == stage), None)


def remote_code_models(recipe: Recipe) -> dict[str, str | None]:
    """The recipe keys of models with ``trust_remote_code: true``, each with the Hugging Face model it names."""
    specs = {"teacher.model": recipe.teacher.model, "student.model": recipe.student.model,
             "assistant.model": recipe.assistant.model if recipe.assistant is not None else None}
    return {key: getattr(spec, "pretrained", None) for key, spec in specs.items()
            if getattr(spec, "trust_remote_code", False)}


def _model_figures(metrics: ModelMetrics) -> dict[str, Any]:
    """Every :data:`MODEL_FIELDS` figure (``None`` if unmeasured) and the :data:`TASK_FIELDS` figures measured."""
    figures = metrics.figures()
    return figures.model_dump(include={*MODEL_FIELDS, *(figures.model_fields_set & set(TASK_FIELDS))})


def _budget(device: DeviceProfile, profile: ProfileRecord | LMProfileRecord | None) -> dict[str, Any]:
    if profile is None or profile.budget is None:
        return BudgetVerdict(verdict="not measured", limits=device.budget,
                             reason="the recipe has no 'profile' stage, so latency and memory were not measured"
                             ).to_json()
    return profile.budget.to_json()


def _operators(profile: ProfileRecord | LMProfileRecord | None, final: str | None) -> list[dict[str, Any]]:
    """The final model's operator profile (empty when it was not profiled, or is a causal LM)."""
    figures = profile.models.get(final) if profile is not None and final is not None else None
    operators = figures.operators if isinstance(figures, ProfiledModel) else None
    return [op.to_json() for op in operators or []]


def _quantization(records: list[dict[str, Any]], artifact: Artifact) -> list[QuantizationDecision]:
    """Every quantize stage's decision for each model it quantized, and a budget search's for the model it chose:
    the chosen candidate's own quantize stage decided, in the candidate's run (its model carries the decision)."""
    decisions = quantization_decisions(records)
    if last_record(records, "search") is None:
        return decisions
    decided = {decision.role for decision in decisions}
    return decisions + [QuantizationDecision(stage="search", role=role, decision=model.metrics.precision,
                                             reason=model.metrics.quantization_reason)
                        for role, model in artifact.models.items()
                        if role not in decided and model.metrics.quantization_reason is not None]


def _search(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The search stage's record, checked (``None`` when the run did not search)."""
    return read_search_record(record).model_dump(mode="json") if record is not None else None


def _comparison(teacher: dict[str, Any], student: dict[str, Any], *, same_batch: bool = True) -> dict[str, Any]:
    """The student's figures over the teacher's; latencies and MACs only when both were measured on batches of one
    size (a graph that fixes its batch axis is timed and counted at its own batch)."""
    per_batch = ("macs", "p50_ms", "p90_ms", "per_token_p50_ms")

    def ratio(key: str) -> float | None:
        t, s = teacher.get(key), student.get(key)
        if key in per_batch and not same_batch:
            return None
        return s / t if isinstance(t, (int, float)) and isinstance(s, (int, float)) and t else None

    return {
        "accuracy_ratio": ratio("accuracy"),
        "params_ratio": ratio("params"),
        "macs_ratio": ratio("macs"),
        "size_ratio": ratio("size_mb"),
        "p50_latency_ratio": ratio("p50_ms"),
        "p90_latency_ratio": ratio("p90_ms"),
        "val_loss_ratio": ratio("val_loss"),
        "per_token_p50_ratio": ratio("per_token_p50_ms"),
    }


def _stage_row(record: dict[str, Any]) -> dict[str, Any]:
    before, after = record.get("inputs", {}), record["artifact"]
    return {
        "index": record["index"],
        "stage": record["stage"],
        "wall_seconds": record["wall_seconds"],
        "started_at": record["started_at"],
        "torch_threads": record.get("torch_threads"),  # absent from stage records written before it was kept
        "fingerprint": record["fingerprint"],
        "models": {role: stage_figures(ModelArtifact.from_json(m).metrics).model_dump(exclude_unset=True)
                   for role, m in after.items()},
        "changed": ordered_roles(role for role, m in after.items() if before.get(role) != m),
    }


def _bundle(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return read_bundle_record(record).model_dump()


def _warnings(device: DeviceProfile, models: dict[str, dict[str, Any]],
              remote_code: dict[str, str | None], profile: ProfileRecord | LMProfileRecord | None) -> list[str]:
    warnings = [f"{key}.trust_remote_code is true: Python code shipped with the Hugging Face model "
                f"'{pretrained}' was allowed to run on this machine." for key, pretrained in remote_code.items()]
    if device.reference is not None:
        ref = device.reference
        warnings.append(
            f"Latencies for '{device.name}' are estimates: measured on this CPU and scaled by the speed "
            f"ratio{_ratio_text(profile)} of reference model '{ref.model}' ({ref.latency_ms} ms published, "
            f"{ref.source})."
        )
    for role, figures in models.items():
        if figures.get("p50_ms") is None:
            warnings.append(f"The {role} was not profiled: no latency figures.")
        elif (unstable := stability_warning(f"the {role}", figures)) is not None:
            warnings.append(unstable)
    return warnings


def _compression_warnings(records: list[dict[str, Any]]) -> list[str]:
    """What the prune, factorize and hybrid stages warned of: a hybrid's target missed (and why it stopped), a
    factorization that changed no layer."""
    warnings = []
    for record in records:
        if record["stage"] in COMPRESS_STAGES:
            compressed = read_compression_stage(record)
            warnings += [f"{stage_dir_name(record['index'], record['stage'])}: {said}"
                         for said in (compressed.shortfall, compressed.unchanged) if said]
    return warnings


def _length_warnings(recipe: Recipe, device: DeviceProfile,
                     profile: ProfileRecord | LMProfileRecord | None) -> list[str]:
    """Text models the profile stage timed at another length than the device's ``inputs.sequence_length``: a graph
    that fixes its sequence axis (an ONNX teacher exported at 256 tokens) is timed at that length, so its latency,
    and the speed-ups against it, compare inputs of different lengths. The length timed is the profile record's
    ``sequence_length``, read from the token inputs by what they are (:func:`edgekd.profile.inputs.length_axes`), so
    another 2-D input (``[batch, k]`` features or a fixed count of ids) is not taken for one."""
    if not isinstance(profile, ProfileRecord) or recipe.data.modality != "text":
        return []
    return [warning for role, figures in profile.models.items()
            if (warning := length_warning(f"The {role}", figures.sequence_length, device.inputs.sequence_length,
                                          device.name)) is not None]


def _batch_warnings(device: DeviceProfile, profile: ProfileRecord | LMProfileRecord | None) -> list[str]:
    """Models the profile stage timed on another batch than the device's ``inputs.batch``: a graph that fixes its
    first axis (an ONNX teacher exported at batch 4) is timed and counted at that batch, so its latency and MACs
    compare with no model timed at the device's batch."""
    if not isinstance(profile, ProfileRecord):
        return []
    return [warning for role, figures in profile.models.items()
            if (warning := batch_warning(f"The {role}", figures.input_shapes, device.inputs.batch)) is not None]


def _first_axes(profile: ProfileRecord | LMProfileRecord | None, role: str) -> list[int] | None:
    """The first axes of the inputs ``role`` was timed on (None when the profile stage did not time it)."""
    if not isinstance(profile, ProfileRecord) or role not in profile.models:
        return None
    return sorted({shape[0] for shape in profile.models[role].input_shapes.values() if shape})


def _ratio_text(profile: ProfileRecord | LMProfileRecord | None) -> str:
    """`` 0.41 ± 0.02 (0.39–0.43 over the reference's timing rounds, spread 9%)`` from the profile stage's record."""
    timed = [m for m in (profile.models.values() if isinstance(profile, ProfileRecord) else ()) if m.speed_ratio]
    if not timed:
        return ""
    figures = timed[0]
    low_high, spread = figures.speed_ratio_range, figures.speed_ratio_spread
    if not low_high or spread is None:
        return f" {figures.speed_ratio:.3g}"
    low, high = low_high
    text = (f" {figures.speed_ratio:.3g} ± {(high - low) / 2:.2g} ({low:.3g}–{high:.3g} over the reference's "
            f"timing rounds here, spread {spread:.0%})")
    if spread > MAX_SPREAD:
        text += f", an unstable measurement (spread above {MAX_SPREAD:.0%}) that was not cached"
    return text


def _notes(device: DeviceProfile, cpu: dict[str, Any], profile: ProfileRecord | LMProfileRecord | None) -> list[str]:
    if profile is None or device.reference is not None:
        return []
    return [f"Latencies are measured, not estimated: timed with onnxruntime on {cpu.get('brand', 'this CPU')}, "
            f"which is the device '{device.name}'."]
