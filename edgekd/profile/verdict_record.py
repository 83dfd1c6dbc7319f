"""The typed budget verdict both profile stages write into their ``stage.json`` metrics (``budget``), and
``report.json`` repeats as ``budget``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from edgekd.config.device import Budget
from edgekd.stage_record import FullRecord


class BudgetCheck(FullRecord):
    """One budget limit and the judged model's value against it."""

    name: str
    value: float | None
    limit: float
    unit: str
    passed: bool | None


class BudgetVerdict(FullRecord):
    """``pass`` when every check is within its limit, ``not measured`` without a profile; ``estimate`` when
    latency came from a host→device ratio. Only the fields given are written (:meth:`to_json`)."""

    judged: str | None = Field(default=None, description="The model role judged (the run's final model).")
    verdict: Literal["pass", "fail", "not measured"]
    checks: list[BudgetCheck] = []
    limits: Budget
    estimate: bool = False
    reason: str | None = Field(default=None, description="Why nothing was judged (verdict 'not measured').")

    @property
    def passed(self) -> bool:
        """True when the verdict is ``pass``."""
        return self.verdict == "pass"

    @property
    def measured(self) -> bool:
        """True when a profile judged a model (the verdict has checks)."""
        return self.verdict != "not measured"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping of the fields given (``limits`` whole, with its unset limits as null)."""
        data = self.model_dump(mode="json")
        return {key: value for key, value in data.items() if key in self.model_fields_set}

    def manifest_entry(self) -> dict[str, Any]:
        """What a bundle's ``manifest.json`` says of the budget: the verdict, its checks and the limits."""
        return self.model_dump(mode="json", include={"verdict", "checks", "limits"})
