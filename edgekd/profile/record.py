"""The typed records the ``profile`` stages write into their ``stage.json`` metrics: each profiled model's figures
under its role, and the judged model's budget verdict (``budget``).

A classifier's figures (:class:`ProfiledModel`) are its timing under the device profile
(:class:`~edgekd.profile.runner.ProfileResult`) and its MACs and parameters
(:class:`~edgekd.profile.macs.GraphCount`); the judged model adds where its time goes (``operators``) and its
speed-up over each other model (``speedup``). A causal LM's (:class:`GeneratedModel`, in a record with the
device's ``generation`` shape) are its generation figures (:class:`~edgekd.profile.generate.GenerationFigures`),
memory and size; the judged model adds its per-token speed-up over each other model.
:func:`read_profile_record` reads either record back with one clear line when malformed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Discriminator, Field, RootModel, Tag, model_validator

from edgekd.config.device import GenerationShape
from edgekd.profile.bench import Speedup
from edgekd.profile.cpu import CpuInfo
from edgekd.profile.generate import GenerationFigures, PerTokenSpeedup
from edgekd.profile.macs import GraphCount
from edgekd.profile.operators import OperatorTime
from edgekd.profile.runner import ProfileResult
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.stage_record import FrozenRecord, RoleRecord, read_stage_record


class ProfiledModel(FrozenRecord, ProfileResult, GraphCount):
    """One classifier model profiled: its timing, MACs and parameters and, for the judged model, its operators and
    speed-ups."""

    operators: list[OperatorTime] | None = Field(
        default=None, description="The judged model's kernel time per operator type, largest first.")
    speedup: dict[str, Speedup] | None = Field(
        default=None, description="How many times faster the judged model ran than each other model, by role.")


class GeneratedModel(FrozenRecord, GenerationFigures):
    """One causal LM profiled: its generation figures, the memory its generation adds, its file size and, for
    the judged model, its per-token speed-ups."""

    peak_memory_mb: float
    size_mb: float
    estimate: bool
    speedup: dict[str, PerTokenSpeedup] | None = Field(
        default=None, description="How many times faster per token the judged model is than each other model.")


class ProfileRecord(RoleRecord):
    """The classifier profile stage's metrics: each profiled model under its role, and the budget verdict."""

    __pydantic_extra__: dict[str, ProfiledModel] = Field(init=False)

    budget: BudgetVerdict | None = None

    @model_validator(mode="after")
    def _some_model(self) -> ProfileRecord:
        """The stage profiles every model the run exported: a record of none (``metrics: {}``, a damaged file) was
        read as a finished stage, and every later run stopped at the bundle for want of the student's figures."""
        if not self.models:
            raise ValueError("no profiled model: expected the figures of each model the stage timed, by role")
        return self

    @property
    def cpu(self) -> CpuInfo | None:
        """The CPU the models were timed on (``None`` when none was profiled)."""
        return next((figures.cpu for figures in self.models.values()), None)


class LMProfileRecord(RoleRecord):
    """The causal-LM profile stage's metrics: the generation timed, its runs and threads, the CPU, each profiled
    model under its role, and the budget verdict."""

    __pydantic_extra__: dict[str, GeneratedModel] = Field(init=False)

    generation: GenerationShape
    runs: int
    threads: int
    cpu: CpuInfo
    budget: BudgetVerdict | None = None


def generation_task(value: Any) -> str:
    """``causal_lm`` for a stage record of a causal LM (one with the ``generation`` it timed), else
    ``classifier``: the discriminator of the profile and quantize records."""
    generation = value.get("generation") if isinstance(value, dict) else getattr(value, "generation", None)
    return "classifier" if generation is None else "causal_lm"


AnyProfileRecord = Annotated[Annotated[ProfileRecord, Tag("classifier")]
                             | Annotated[LMProfileRecord, Tag("causal_lm")], Discriminator(generation_task)]


class ProfileRecordOf(RootModel[AnyProfileRecord]):
    """Either profile record, told apart by ``generation``."""


def profile_record(metrics: dict[str, Any]) -> ProfileRecord | LMProfileRecord:
    """The profile stage's record of ``metrics`` (each role's figures, the verdict and, for causal LMs, the
    generation timed); a figure the stage did not mean to write fails here, where it is made."""
    return ProfileRecordOf.model_validate(metrics).root


def read_profile_record(record: dict[str, Any]) -> ProfileRecord | LMProfileRecord:
    """The profile stage ``record``'s metrics as a typed record; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(ProfileRecordOf, record).root
