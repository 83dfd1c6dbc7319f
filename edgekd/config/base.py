"""Base types every configuration model shares: strict, immutable models and constrained numbers."""

from __future__ import annotations

import os
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt

M = TypeVar("M", bound=BaseModel)

PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
#: A seed numpy, torch and Python's ``random`` all accept.
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]
#: A hub id or a local path, given as text or (from Python) as a ``pathlib.Path``: kept as text.
PathOrId = Annotated[str, BeforeValidator(lambda value: os.fspath(value) if isinstance(value, os.PathLike) else value)]


class StrictModel(BaseModel):
    """Base for all config models: unknown keys are errors, values are immutable, numbers are finite and an
    integer is never a boolean (``epochs: yes`` is a mistake, not 1)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
