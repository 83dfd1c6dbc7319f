"""Settings of the ``profile`` stage."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt

from edgekd.config.base import StrictModel
from edgekd.stage_kind import StageKind


class ProfileStage(StrictModel):
    """Time every exported model with onnxruntime under the device profile."""

    stage: Literal["profile"] = "profile"
    warmup: Annotated[StrictInt, Field(ge=0)] = 20
    runs: Annotated[StrictInt, Field(ge=10)] = 200


PROFILE = StageKind(ProfileStage, "edgekd.profile.stage:run_profile", reads=("data",), uses_device=True,
                    after=("export", "search"))
KINDS = (PROFILE,)
