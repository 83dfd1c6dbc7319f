"""Settings of the ``profile`` stage."""

from __future__ import annotations

from typing import Literal

from edgekd.config.base import StrictModel, TimedRuns, WarmupRuns
from edgekd.stage_kind import StageKind


class ProfileStage(StrictModel):
    """Time every exported model with onnxruntime under the device profile."""

    stage: Literal["profile"] = "profile"
    warmup: WarmupRuns = 20
    runs: TimedRuns = 200


PROFILE = StageKind(ProfileStage, "edgekd.profile.stage:run_profile", reads=("data",), uses_device=True,
                    device_ignores=("description", "budget"), rejudge="edgekd.profile.rejudge:rejudge_profile",
                    after=("export", "search"), record="edgekd.profile.record:read_profile_record")
KINDS = (PROFILE,)
