"""Typed per-model metrics: what stages record of a model is checked, merged and written back unchanged."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edgekd.artifacts import ModelArtifact
from edgekd.model_metrics import ModelFigures, ModelMetrics

#: A value of the right type for each annotation a figure has.
SAMPLES = {"float | None": 0.25, "int | None": 7, "bool | None": True, "str | None": "int8-dynamic"}
FIELDS = sorted(ModelMetrics.model_fields)


@pytest.mark.parametrize("name", FIELDS)
def test_each_figure_is_typed_and_round_trips_alone(name: str) -> None:
    value = SAMPLES[str(ModelMetrics.model_fields[name].annotation)]
    metrics = ModelMetrics.from_json({name: value, "stage_note": [1, 2]})
    assert getattr(metrics, name) == value and metrics.to_json() == {name: value, "stage_note": [1, 2]}
    other = "accuracy" if name != "accuracy" else "params"
    assert metrics[name] == value and name in metrics and other not in metrics and metrics.get(other) is None
    if name in ModelFigures.model_fields:
        assert metrics.figures().model_dump(exclude_unset=True) == {name: value}
    else:
        assert metrics.figures().model_dump(exclude_unset=True) == {}
    if not isinstance(value, str):
        with pytest.raises(ValidationError, match=name):
            ModelMetrics.from_json({name: "many"})


def test_merged_replaces_earlier_figures_and_keeps_the_rest() -> None:
    first = ModelMetrics.from_json({"accuracy": 0.5, "params": 10, "members": [{"accuracy": 0.4}]})
    second = first.merged({"accuracy": 0.75, "size_mb": 0.1})
    assert second.to_json() == {"accuracy": 0.75, "params": 10, "members": [{"accuracy": 0.4}], "size_mb": 0.1}
    assert first.accuracy == 0.5 and dict(**second) == second.to_json()
    with pytest.raises(ValidationError):
        first.accuracy = 1.0  # type: ignore[misc]


def test_deploy_files_are_the_artifacts_field_and_an_update_keeps_or_replaces_them() -> None:
    model = ModelArtifact(role="student", weights="02-distill/student", metrics={"accuracy": 0.9})
    exported = model.updated(onnx="03-export/student.onnx", deploy_files={"ort": "03-export/student.ort"}, opset=17)
    assert isinstance(exported.metrics, ModelMetrics) and exported.metrics.opset == 17
    assert exported.to_json()["deploy_files"] == {"ort": "03-export/student.ort"}
    assert "deploy_files" not in model.to_json() and "deploy_files" not in exported.metrics
    profiled = exported.updated(p50_ms=1.5)
    assert profiled.deploy_files == exported.deploy_files and profiled.onnx == exported.onnx
    assert exported.updated(deploy_files=None).deploy_files is None
    assert ModelArtifact.from_json(profiled.to_json()) == profiled


def test_a_record_of_the_earlier_layout_loads_its_deploy_files() -> None:
    legacy = {"role": "teacher", "weights": "01-teacher/teacher", "onnx": "03-export/teacher.onnx", "members": [],
              "member_weights": [], "metrics": {"accuracy": 0.8, "deploy_files": {"ort": "03-export/teacher.ort"}}}
    model = ModelArtifact.from_json(legacy)
    assert model.deploy_files == {"ort": "03-export/teacher.ort"} and model.metrics.to_json() == {"accuracy": 0.8}
    assert ModelArtifact.from_json({**legacy, "metrics": {"accuracy": 0.8, "deploy_files": None}}).deploy_files is None
