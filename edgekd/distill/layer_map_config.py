"""Which teacher layer each student layer learns from, as a recipe writes it (see :mod:`edgekd.distill.layer_map`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StrictInt, model_validator

from edgekd.config.base import PositiveInt, StrictModel


class LayerMap(StrictModel):
    """Which teacher layer each student layer learns from (layers counted from 1; 0 is the embeddings)."""

    kind: Literal["uniform", "skip", "last", "explicit"] = "uniform"
    k: PositiveInt | None = Field(
        default=None,
        description="'skip': every k-th teacher layer; 'last': how many top layers to pair (default: all).",
    )
    pairs: list[tuple[Annotated[StrictInt, Field(ge=0)], Annotated[StrictInt, Field(ge=0)]]] | None = Field(
        default=None, description="'explicit': [student_layer, teacher_layer] pairs."
    )

    @model_validator(mode="after")
    def _fields_fit_kind(self) -> LayerMap:
        if self.kind == "skip" and self.k is None:
            raise ValueError("kind 'skip' needs k (use every k-th teacher layer)")
        if self.kind == "explicit" and not self.pairs:
            raise ValueError("kind 'explicit' needs pairs: [[student_layer, teacher_layer], ...]")
        if self.k is not None and self.kind not in ("skip", "last"):
            raise ValueError(f"k applies only to kinds 'skip' and 'last', not '{self.kind}'")
        if self.pairs is not None and self.kind != "explicit":
            raise ValueError(f"pairs apply only to kind 'explicit', not '{self.kind}'")
        return self
