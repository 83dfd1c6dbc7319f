"""Base types every configuration model shares: strict, immutable models and constrained numbers."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    WrapSerializer,
    model_validator,
)

from edgekd.config.paths import escape_field, expand_field

M = TypeVar("M", bound=BaseModel)

#: What each spelt pattern of the config models asks for, in words (pydantic's message quotes the regular expression).
PATTERN_WORDS: dict[str, str] = {}


def spelt_pattern(pattern: str, words: str) -> str:
    """``pattern`` for a ``Field(pattern=...)``, registered so that a value not matching it is told ``words``."""
    PATTERN_WORDS[pattern] = words
    return pattern


PositiveInt = Annotated[StrictInt, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
#: Epochs of a training stage: at most :data:`MAX_EPOCHS`, so that a typo (``epochs: 30000000``) is told at validate
#: time instead of training for ever; early stopping (``patience``) ends a long run sooner.
MAX_EPOCHS = 100_000
Epochs = Annotated[StrictInt, Field(gt=0, le=MAX_EPOCHS)]
#: A seed numpy, torch and Python's ``random`` all accept.
Seed = Annotated[StrictInt, Field(ge=0, lt=2**32)]
#: How a measurement times a model: ``runs`` timed runs (at least :data:`MIN_RUNS`, which its percentiles need, and at
#: most :data:`MAX_RUNS`: a typo such as 10000000 would time for hours, and 10,000 runs already give stable p99s),
#: after ``warmup`` untimed ones, over ``rounds`` interleaved sessions. One bound for the CLI's ``--runs``,
#: ``--warmup`` and ``--rounds``, the API's timing arguments and the recipe's stages.
MIN_RUNS, MAX_RUNS = 10, 10_000
MAX_WARMUP = 1_000
MAX_ROUNDS = 20
TimedRuns = Annotated[StrictInt, Field(ge=MIN_RUNS, le=MAX_RUNS)]
WarmupRuns = Annotated[StrictInt, Field(ge=0, le=MAX_WARMUP)]
TimingRounds = Annotated[StrictInt, Field(ge=1, le=MAX_ROUNDS)]
#: A local file or folder, given as text or a ``pathlib.Path``: ``~`` and ``$VAR``/``${VAR}`` expanded
#: (:mod:`edgekd.config.paths`), then, in a recipe file, relative to its folder.
LocalPath = Annotated[Path, BeforeValidator(expand_field), WrapSerializer(escape_field)]
#: A hub id, a built-in name or a local path, given as text or (from Python) as a ``pathlib.Path``: kept as text,
#: ``~`` and ``$VAR``/``${VAR}`` expanded (:mod:`edgekd.config.paths`; a hub id or a name has neither).
PathOrId = Annotated[str, BeforeValidator(expand_field), WrapSerializer(escape_field)]


class _OneLineErrors(type(BaseModel)):  # type: ignore[misc]  # pydantic's model metaclass
    """Calling a config class with a wrong value (``Teacher(epochs=0)``) raises the recipe's one-line error, not
    pydantic's multi-line one. Only direct calls pass here: a recipe's nested models are validated by pydantic
    itself, which reports them with their key path in the recipe."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            from edgekd.config.loading import describe_validation_error
            from edgekd.errors import ConfigValueError

            raise ConfigValueError(describe_validation_error(exc, cls, source=cls.__name__)) from None


class StrictModel(BaseModel, metaclass=_OneLineErrors):
    """Base for all config models: unknown keys are errors, values are immutable, numbers are finite and an
    integer is never a boolean (``epochs: yes`` is a mistake, not 1); built in Python with a wrong value, a
    one-line :class:`~edgekd.errors.ConfigValueError`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _tags_given(self) -> Self:
        """A one-value ``Literal`` field (a stage's ``stage``) counts as given even when defaulted: it says which
        member of a union the model is, so a dump of the fields given (``exclude_unset``: the run record,
        ``Pipeline.to_yaml``) keeps it and validates back to the same model."""
        self.__pydantic_fields_set__.update(_tag_fields(type(self)))
        return self


@functools.cache
def _tag_fields(model: type[BaseModel]) -> frozenset[str]:
    """The one-value ``Literal`` fields of ``model``."""
    return frozenset(name for name, field in model.model_fields.items()
                     if get_origin(field.annotation) is Literal and len(get_args(field.annotation)) == 1)
