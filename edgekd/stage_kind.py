"""What a stage kind is: its config model, the recipe fields it reads, its rules and its run function.

Each stage package defines its kinds once, beside its config (``edgekd/<package>/config.py``), and
:mod:`edgekd.stages` collects them into the registry that the recipe's stage union, ``edgekd
validate`` and the pipeline are built from. Run functions are named as ``"module:function"`` and
imported only when the stage runs, so validating a recipe does not import torch.

A stage sees the recipe only through a :class:`RecipeView` of the fields it declares in ``reads``:
reading another field raises, so a test that runs the stage proves that its fingerprint (made of
exactly those fields) covers everything its result depends on.
"""

from __future__ import annotations

import fnmatch
import importlib
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from edgekd.errors import ConfigError, StorageError
from edgekd.stage_record import stage_record_file

if TYPE_CHECKING:
    from edgekd.artifacts import Artifact, StageContext, StageOutput
    from edgekd.config.device import DeviceProfile
    from edgekd.config.recipe import Recipe

#: ``reads`` of a stage that reads the whole recipe (the report shows it).
ALL_FIELDS = ("*",)


@dataclass
class PlanState:
    """What the stages before the one being checked provide, for the rules that span stages."""

    recipe: Recipe
    source: str
    seen: list[str] = field(default_factory=list)
    trained: set[str] = field(default_factory=set)
    """Model roles (``teacher``, ``assistant``, ``student``) an earlier stage trains."""

    def fail(self, where: str, message: str) -> ConfigError:
        """A :class:`ConfigError` for ``where`` (a key path such as ``stages[1].weighting``) in this recipe."""
        return ConfigError(f"{self.source}: {where}: {message}")


Check = Callable[[Any, PlanState, str], None]
"""``check(stage_config, state, where)``: raise ``state.fail(...)`` for a rule the stage breaks."""


@dataclass(frozen=True)
class StageKind:
    """One kind of stage, defined once (see the module docstring)."""

    config: type[BaseModel]
    """The stage's config model; its ``stage`` field is a one-value ``Literal`` naming the kind."""
    run: str
    """``"module:function"`` of ``run(config, artifact, ctx) -> StageOutput``."""
    reads: tuple[str, ...] | Callable[[Any], tuple[str, ...]] = ()
    """Top-level recipe fields the stage reads (its fingerprint hashes exactly these); ``ALL_FIELDS`` for all;
    or a function of the stage's config giving them (a distill stage reads the spec of the role it trains)."""
    uses_device: bool = False
    device_ignores: tuple[str, ...] = ()
    """Dotted fields of the device profile a stage that uses it never reads (left out of its fingerprint): the
    quantize stage's decision reads the size budget, not the latency ones."""
    device_fields: tuple[str, ...] = ()
    """Fields of the device profile a stage that does not use all of it reads (its fingerprint hashes these): the
    export stage checks its graphs at the device's ``inputs`` (a causal LM's at its ``generation`` prompt)."""
    cacheable: bool = True
    shareable: bool = False
    """Its finished result is kept in the shared stage store and reused by other run directories
    (:mod:`edgekd.stage_store`): for stages whose outputs depend on their fingerprint alone."""
    data_parallel: bool = False
    """Runs in every process of a data-parallel run (see :mod:`edgekd.distributed`); else in rank 0 alone."""
    extra_inputs: Callable[[Any, Recipe], dict[str, Any]] | None = None
    """More things the result depends on (file digests, the measuring CPU), hashed into the fingerprint."""
    after: tuple[str, ...] = ()
    """At least one of these kinds must come earlier (empty: no such rule)."""
    after_reason: str = ""
    repeatable: bool = False
    followed_only_by: tuple[str, ...] | None = None
    """When set, only these kinds may follow this one."""
    followed_reason: str = ""
    check: Check | None = None
    trains: Callable[[Any], str | None] | None = None
    """The model role this stage trains (recorded for later stages' rules)."""
    record: str | None = None
    """``"module:function"`` of ``read(stage_record) -> typed record``: reads the metrics of the kind's
    ``stage.json`` back, raising a one-line :class:`~edgekd.errors.StorageError` when malformed (None: the kind
    writes no typed record, e.g. ``report``, which every run makes again)."""
    outputs: tuple[str, ...] = ()
    """What a stage of this kind writes at the top of the run directory, beside the stage directories (``bundle``,
    ``bundle.zip``; the report's ``report.json`` and ``*.png`` plots), as :func:`fnmatch.fnmatchcase` patterns of
    names. The stage lists each name in ``run.json`` before writing it (:meth:`StageContext.output
    <edgekd.artifacts.StageContext.output>`); a run whose recipe has no stage of this kind removes those an earlier
    run wrote before its first stage runs, so they are never taken for its own."""
    rejudge: str | None = None
    """``"module:function"`` of ``rejudge(stage_record, device) -> stage_record``: a reused finished stage's record
    judged again against this run's device profile, for what the record states of device fields its fingerprint
    leaves out (``device_ignores``): the profile stage's budget verdict, so that another budget judges the stored
    timings instead of timing again. It returns the record itself when nothing changed (None: never judged again)."""

    @property
    def name(self) -> str:
        """The kind's tag, from its config model's ``stage`` literal."""
        return typing.get_args(self.config.model_fields["stage"].annotation)[0]

    def writes(self, name: str) -> bool:
        """Whether a stage of this kind may write ``name`` at the top of the run directory (:attr:`outputs`)."""
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.outputs)

    def runner(self) -> Callable[[Any, Artifact, StageContext], StageOutput]:
        """Import and return the stage's run function."""
        return _imported(self.run)

    def record_problem(self, record: dict[str, Any]) -> str | None:
        """What is wrong with the metrics of a finished stage ``record`` of this kind, read back as its typed
        record (``metrics.student.losses: Input should be a valid list``), or None when they read back."""
        if self.record is None:
            return None
        try:
            _imported(self.record)(record)
        except StorageError as exc:
            return str(exc).removeprefix(f"{stage_record_file(record)}: ")
        return None

    def rejudged(self, record: dict[str, Any], device: DeviceProfile) -> dict[str, Any]:
        """A reused finished stage's ``record`` judged again against ``device`` (:attr:`rejudge`); ``record``
        itself when the kind judges nothing or nothing changed."""
        return record if self.rejudge is None else _imported(self.rejudge)(record, device)

    def reads_of(self, config: Any) -> tuple[str, ...]:
        """The recipe fields a stage with this config reads."""
        return self.reads(config) if callable(self.reads) else self.reads

    def view(self, recipe: Recipe, config: Any) -> RecipeView:
        """The recipe as a stage with this config may read it."""
        return RecipeView(recipe, self.name, self.reads_of(config))

    def fingerprint_inputs(self, recipe: Recipe, config: Any) -> dict[str, Any]:
        """The recipe fields this stage reads, as JSON (what its fingerprint hashes from the recipe)."""
        return self.view(recipe, config).model_dump(mode="json")


def _imported(reference: str) -> Any:
    """The function a ``"module:function"`` reference names, imported now."""
    module, function = reference.split(":")
    return getattr(importlib.import_module(module), function)


class UndeclaredReadError(AttributeError):
    """A stage read a recipe field it does not declare in ``reads`` (a bug in edgekd, not the user's)."""


class RecipeView:
    """Read-only access to the recipe fields a stage declares; any other field raises :class:`UndeclaredReadError`."""

    def __init__(self, recipe: Recipe, stage: str, reads: Iterable[str]) -> None:
        reads = tuple(reads)
        self._recipe = recipe
        self._stage = stage
        self._reads = tuple(type(recipe).model_fields) if reads == ALL_FIELDS else reads
        unknown = set(self._reads) - set(type(recipe).model_fields)
        if unknown:
            raise ValueError(f"stage '{stage}' declares unknown recipe fields: {', '.join(sorted(unknown))}")

    @property
    def reads(self) -> tuple[str, ...]:
        """The recipe fields visible through this view."""
        return self._reads

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._reads:
            raise UndeclaredReadError(
                f"stage '{self._stage}' read recipe.{name} but declares only {', '.join(self._reads) or 'nothing'}; "
                "add it to the stage kind's reads so its fingerprint covers it")
        return getattr(self._recipe, name)

    def model_dump(self, *, mode: str = "python", include: set[str] | None = None,
                   exclude_unset: bool = False) -> dict[str, Any]:
        """The declared fields (or the ``include``d ones among them) as a dict; ``exclude_unset``: only the values
        the recipe set, as pydantic's own ``model_dump``."""
        wanted = set(self._reads) if include is None else set(include)
        for name in wanted - set(self._reads):
            getattr(self, name)  # raises for an undeclared field
        return self._recipe.model_dump(mode=mode, include=wanted, exclude_unset=exclude_unset)


def measuring_host(_config: Any, _recipe: Recipe) -> dict[str, Any]:
    """Extra input of stages that decide by timing: the CPU and onnxruntime they measured on (another host re-runs)."""
    from importlib.metadata import version

    from edgekd.profile.cpu import detect_cpu

    return {"cpu": detect_cpu().to_json(), "onnxruntime": version("onnxruntime")}


def check_losses_fit(losses: Iterable[Any], student: str, teacher: str, state: PlanState, where: str) -> None:
    """Each loss compares only outputs that both models have (a ``hidden`` loss needs two transformers)."""
    from edgekd.distill.losses.registry import losses_applying
    from edgekd.models.specs import spec_of

    for index, loss in enumerate(losses):
        for role in (student, teacher):
            spec = spec_of(state.recipe, role)
            missing = loss.needs - spec.exposes
            if missing:
                # a transformers family has them, but edgekd does not read them from its layout
                lacks = (f"edgekd does not read from a {spec.label} {role}" if spec.arch == "hf"
                         else f"a {spec.label} {role} does not have")
                raise state.fail(f"{where}[{index}].kind", f"loss '{loss.kind}' compares the models' "
                                 f"{', '.join(sorted(missing))}, which {lacks}; {losses_applying(spec.exposes)}")
