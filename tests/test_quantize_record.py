"""Quantize stages' decisions are read from their stage records into typed :class:`QuantizationDecision`s."""

from __future__ import annotations

import pytest

from edgekd.quantize.record import QuantizationDecision, quantization_decisions


def _record(stage: str, metrics: dict) -> dict:
    return {"stage": stage, "metrics": metrics}


@pytest.mark.parametrize("role", ["student", "teacher", "assistant"])
@pytest.mark.parametrize("decision,reason", [("int8", "int8 kept: 1.9× faster"), ("fp32", None), (None, "no variant")])
def test_per_model_decisions_are_read_by_role(role: str, decision: str | None, reason: str | None) -> None:
    scope = {k: v for k, v in (("decision", decision), ("reason", reason)) if v is not None}
    records = [_record("export", {role: {"decision": "ignored"}}),
               _record("quantize", {role: {**scope, "p50_ms": 1.0}, "other": 3})]
    found = quantization_decisions(records)
    assert found == [QuantizationDecision(stage="quantize", role=role, decision=decision, reason=reason)]
    line = found[0].line()
    assert line.startswith(f"Quantization of the {role}: {decision or 'no decision'}")
    assert (f" — {reason}" in line) == (reason is not None)


def test_a_stage_wide_decision_has_no_role_and_round_trips() -> None:
    found = quantization_decisions([_record("quantize", {"decision": "fp32", "reason": "fp32 kept: slower"}),
                                    _record("quantize", {"student": {"p50_ms": 2.0}})])
    assert [d.role for d in found] == [None]
    assert found[0].line() == "Quantization: fp32 — fp32 kept: slower"
    assert QuantizationDecision.model_validate(found[0].model_dump()) == found[0]


@pytest.mark.parametrize("entry", [{"stage": "quantize", "role": None, "decision": "int8"},
                                   {"stage": "quantize", "role": None, "decision": "int8", "reason": None, "x": 1},
                                   {"stage": "quantize", "role": 3, "decision": "int8", "reason": None}])
def test_a_decision_of_another_shape_is_refused(entry: dict) -> None:
    with pytest.raises(ValueError):
        QuantizationDecision.model_validate(entry)
