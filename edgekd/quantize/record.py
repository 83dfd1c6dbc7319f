"""The typed record of one quantize stage's decision, as ``report.json`` lists it under ``quantization``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class QuantizationDecision(BaseModel):
    """What one quantize stage kept for one model (or for the whole stage when ``role`` is null), and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    stage: str
    role: str | None = Field(description="The model the decision is about; null for a stage-wide decision.")
    decision: str | None
    reason: str | None

    def line(self) -> str:
        """The one sentence the report's notes show for this decision."""
        about = f" of the {self.role}" if self.role else ""
        return (f"Quantization{about}: {self.decision or 'no decision'}"
                + (f" — {self.reason}" if self.reason else ""))


def quantization_decisions(records: list[dict[str, Any]]) -> list[QuantizationDecision]:
    """Every ``decision``/``reason`` a quantize stage recorded, at the top of its metrics or per model."""
    found = []
    for record in records:
        if record["stage"] != "quantize":
            continue
        metrics = record["metrics"]
        scopes = [(None, metrics)] + [(key, value) for key, value in metrics.items() if isinstance(value, dict)]
        found += [QuantizationDecision(stage=record["stage"], role=role, decision=scope.get("decision"),
                                       reason=scope.get("reason"))
                  for role, scope in scopes if "decision" in scope or "reason" in scope]
    return found
