"""A finished ``profile`` stage judged against another budget: its timings kept, its verdict made again.

A device's budget changes nothing the profile stage measures, only its verdict on the judged model, so the stage's
fingerprint leaves the budget out (``device_ignores``) and a run with another one (``edgekd run --budget-ms``, an
edited device profile) reuses the stored timings: the pipeline hands the reused record to :func:`rejudge_profile`
(the kind's :attr:`~edgekd.stage_kind.StageKind.rejudge`), which judges them against the new budget.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekd.artifacts import Artifact
from edgekd.config.device import DeviceProfile
from edgekd.profile.budget import judge, judge_generation, judged_role
from edgekd.profile.record import LMProfileRecord, ProfileRecord, read_profile_record
from edgekd.profile.verdict_record import BudgetVerdict

log = logging.getLogger("edgekd.stage.profile")


def rejudge_profile(stage: dict[str, Any], device: DeviceProfile) -> dict[str, Any]:
    """The finished profile stage's record ``stage`` (its ``stage.json``) with the judged model's verdict made
    against ``device``'s budget: the metrics' ``budget`` and the model's ``budget_verdict``. ``stage`` itself when
    it was judged against that budget already."""
    record = read_profile_record(stage)
    if record.budget is None or record.budget.limits == device.budget:
        return stage
    role = judged_role(list(record.models))
    verdict = budget_verdict(record, role, device)
    limits = ", ".join(f"{check.name} ≤ {check.limit:g} {check.unit}" for check in verdict.checks)
    log.info("profile: the stored timings judged against this run's budget (%s): %s, was %s", limits,
             verdict.verdict, record.budget.verdict)
    artifact = Artifact.from_json(stage["artifact"])
    artifact = artifact.with_model(artifact.get(role).updated(budget_verdict=verdict.verdict))
    return {**stage, "metrics": {**stage["metrics"], "budget": verdict.to_json()}, "artifact": artifact.to_json()}


def budget_verdict(record: ProfileRecord | LMProfileRecord, role: str, device: DeviceProfile) -> BudgetVerdict:
    """The verdict on the figures ``record`` holds of the model of ``role`` against ``device``'s budget, as the
    profile stage judges them (a causal LM by its per-token latency)."""
    figures = record.models[role]
    verdict = (judge_generation(figures.model_dump(), device) if isinstance(record, LMProfileRecord)
               else judge(figures, device.budget))
    return verdict.model_copy(update={"judged": role})
