"""Base types every configuration model shares: strict, immutable models and constrained numbers."""

from __future__ import annotations

from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StrictInt

M = TypeVar("M", bound=BaseModel)

PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
#: A seed numpy, torch and Python's ``random`` all accept.
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, values are immutable, numbers are finite and an
    integer is never a boolean (``epochs: yes`` is a mistake, not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
