"""Assemble ``report.json`` from the run's final artifact and its stage records."""

from __future__ import annotations

from typing import Any

from edgekd import __version__
from edgekd.artifacts import Artifact
from edgekd.config import DeviceProfile, Recipe

#: Per-model figures every report carries (``None`` when the stage that measures one did not run).
MODEL_FIELDS = ("accuracy", "val_accuracy", "params", "size_mb", "p50_ms", "p90_ms", "p99_ms",
                "peak_memory_mb", "threads", "estimate", "parity_max_abs_diff")


def build_report(recipe: Recipe, device: DeviceProfile, artifact: Artifact, records: list[dict[str, Any]],
                 cpu: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable record of a run: models, comparison, budget verdict, stages, CPU."""
    models = {role: _model_figures(m.metrics) for role, m in artifact.models.items()}
    profile = next((r for r in records if r["stage"] == "profile"), None)
    report: dict[str, Any] = {
        "edgekd_version": __version__,
        "recipe": recipe.model_dump(mode="json"),
        "device": device.model_dump(mode="json"),
        "cpu": cpu,
        **models,
        "budget": _budget(device, profile),
        "stages": [_stage_row(r) for r in records],
        "warnings": _warnings(device, models),
    }
    if "teacher" in models and "student" in models:
        report["comparison"] = _comparison(models["teacher"], models["student"])
    return report


def _model_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics.get(key) for key in MODEL_FIELDS}


def _budget(device: DeviceProfile, profile: dict[str, Any] | None) -> dict[str, Any]:
    limits = device.budget.model_dump(mode="json")
    if profile is None or "budget" not in profile["metrics"]:
        return {"verdict": "not measured", "limits": limits,
                "reason": "the recipe has no 'profile' stage, so latency and memory were not measured"}
    return profile["metrics"]["budget"]


def _comparison(teacher: dict[str, Any], student: dict[str, Any]) -> dict[str, Any]:
    def ratio(key: str) -> float | None:
        t, s = teacher.get(key), student.get(key)
        return s / t if isinstance(t, (int, float)) and isinstance(s, (int, float)) and t else None

    return {
        "accuracy_ratio": ratio("accuracy"),
        "params_ratio": ratio("params"),
        "size_ratio": ratio("size_mb"),
        "p50_latency_ratio": ratio("p50_ms"),
        "p90_latency_ratio": ratio("p90_ms"),
    }


def _stage_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "index": record["index"],
        "stage": record["stage"],
        "wall_seconds": record["wall_seconds"],
        "started_at": record["started_at"],
        "fingerprint": record["fingerprint"],
        "models": {role: {k: v for k, v in m["metrics"].items() if k in MODEL_FIELDS}
                   for role, m in record["artifact"].items()},
    }


def _warnings(device: DeviceProfile, models: dict[str, dict[str, Any]]) -> list[str]:
    warnings = []
    if device.reference is not None:
        ref = device.reference
        warnings.append(
            f"Latencies for '{device.name}' are estimates: measured on this CPU and scaled by the speed "
            f"ratio of reference model '{ref.model}' ({ref.latency_ms} ms published, {ref.source})."
        )
    for role, figures in models.items():
        if figures.get("p50_ms") is None:
            warnings.append(f"The {role} was not profiled: no latency figures.")
    return warnings
