"""The candidate grid of a budget search: student architectures × compression × precision.

A :class:`Structure` is what one training run makes: a student spec (the recipe's ``student.model``
with the search ``space``'s fields set) and the prune ratio and low-rank parameter ratio applied after
distilling it. A :class:`Candidate` is a structure exported at one precision. The grid is the product
of every ``space`` list, ``prune``, ``factorize`` and ``precision``; combinations a spec rejects
(e.g. a BERT width that is not a multiple of its head count) are left out.

This module only describes candidates (it trains nothing): validating a recipe checks its space here.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from edgekd.config.loading import brief, union_expectations
from edgekd.config.paths import ALREADY_EXPANDED
from edgekd.errors import ConfigError
from edgekd.models.architectures import SEARCHABLE, ModelSpec, spec_class
from edgekd.models.specs import declared_depth, spec_of, why_not_cut

if TYPE_CHECKING:
    from edgekd.search.config import SearchStage

#: The arch a search varies by how many of the teacher's blocks it keeps (its default space needs the teacher).
LAYER_COPY = "drop_layers"
#: Spec fields a search never varies.
FIXED_FIELDS = ("arch", "pretrained", "trust_remote_code")
#: Spec fields that do not change the exported graph (so not its latency either).
NOT_IN_GRAPH = ("dropout",)


@dataclass(frozen=True)
class Structure:
    """A student spec and the compression applied after distilling it; one training run makes it."""

    spec: dict[str, Any]
    prune: float = 0.0
    factorize: float | None = None
    varied: tuple[tuple[str, Any], ...] = ()
    """The space's fields and their values here (for the label)."""

    @property
    def key(self) -> str:
        """A short stable id of everything that shapes the exported graph."""
        graph = {k: v for k, v in self.spec.items() if k not in NOT_IN_GRAPH}
        encoded = json.dumps({"spec": graph, "prune": self.prune, "factorize": self.factorize}, sort_keys=True)
        return hashlib.sha256(encoded.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """``bert layers=2 hidden=256 heads=8 ffn=null prune=0.5 lowrank=0.3``: the arch (an hf config's model_type)
        and what the search set."""
        family = (self.spec.get("config") or {}).get("model_type") or self.spec["arch"]  # hf: gpt2, llama...
        parts = [family, *(f"{name}={_compact(value)}" for name, value in self.varied)]
        parts += [f"prune={self.prune:g}"] if self.prune else []
        parts += [f"lowrank={self.factorize:g}"] if self.factorize is not None else []
        return " ".join(parts)

    def model_spec(self) -> ModelSpec:
        """The spec as the config model a builder takes."""
        return TypeAdapter(ModelSpec).validate_python(self.spec)


@dataclass(frozen=True)
class Candidate:
    """A structure exported at one precision: one row of the latency table."""

    structure: Structure
    precision: str

    @property
    def key(self) -> str:
        """The structure's key and the precision."""
        return f"{self.structure.key}-{self.precision}"

    @property
    def label(self) -> str:
        """The structure's label and the precision."""
        return f"{self.structure.label} {self.precision}"


def space_for(stage: SearchStage, student: BaseModel, depth: int | None = None) -> dict[str, list[Any]]:
    """The space a search stage varies: its own, else the default for the student's arch.

    A ``drop_layers`` student's default is every count of the teacher's ``depth`` blocks below it, each spread
    evenly (:mod:`edgekd.search.layer_source`); without the depth (a recipe checked before its teacher exists) it is
    the student as written.
    """
    if stage.space is not None:
        return stage.space
    if student.arch == LAYER_COPY:
        return {"keep": list(range(1, depth))} if depth is not None else {}
    return type(student).search_space


def searchable_archs(recipe: Any) -> tuple[str, ...]:
    """The student archs a search of ``recipe`` can vary: the registered ones with a default space
    (:data:`~edgekd.models.architectures.SEARCHABLE`) that take the recipe's data, then ``drop_layers`` when the
    teacher is one stack of transformer blocks it can keep some of."""
    modality = recipe.data.modality
    own = tuple(arch for arch in SEARCHABLE if spec_class(arch).modality in (None, modality))
    return (*own, LAYER_COPY) if why_not_cut(recipe.teacher.model) is None else own


def check_space(stage: SearchStage, recipe: Any, where: str) -> None:
    """Raise a one-line :class:`ConfigError` (prefixed by ``where``) for a search ``recipe``'s student cannot take.

    Checked: the student's arch can be varied, every ``space`` key is a field of its spec and every
    value fits that field, pruning and factorizing are asked only of models that take them (a ``drop_layers``
    student's teacher's family), and the grid has at least one valid candidate and no more than ``max_candidates`` (a
    ``drop_layers`` grid against the teacher's depth, when validate can read it).
    """
    student = recipe.student.model
    arch = student.arch
    if arch not in (*SEARCHABLE, LAYER_COPY):
        raise ConfigError(f"{where}: student.model.arch '{arch}' is not one a search varies "
                          f"(searchable: {', '.join(searchable_archs(recipe))})")
    if getattr(student, "pretrained", None) is not None:
        raise ConfigError(f"{where}: a search varies the student's sizes; student.model.pretrained must be unset "
                          "(a 'drop_layers' student of a pretrained teacher is searched by how many layers it keeps)")
    traits = spec_of(recipe, "student")  # a drop_layers student is its teacher with blocks removed
    if any(ratio > 0 for ratio in stage.prune) and not traits.prune_targets:
        prunable = [name for name in SEARCHABLE if spec_class(name).prune_targets]
        what = f"'{arch}'" if traits is student else f"'{arch}' of a teacher {traits.label}"
        raise ConfigError(f"{where}.prune: structured pruning supports {', '.join(prunable)} students and the "
                          f"transformer families it knows, not {what}")
    if any(share is not None for share in stage.factorize) and not traits.factorizable:
        family = getattr(traits, "family", None)  # arch: hf: its family says why
        why = f" ({family.why_not})" if family is not None and family.why_not else ""
        raise ConfigError(f"{where}.factorize: a {traits.label} student cannot be factorized{why}; leave factorize "
                          "at [null]")
    depth = declared_depth(recipe.teacher.model) if arch == LAYER_COPY else None
    fields = [name for name in type(student).model_fields if name not in FIXED_FIELDS]
    template = student.model_dump(mode="json")
    for name, values in space_for(stage, student, depth).items():
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; fields: {', '.join(fields)}"
            raise ConfigError(f"{where}.space.{name}: not a field of a '{arch}' student{hint}")
        for index, value in enumerate(values):
            problem = _value_problem(type(student), template, name, value)
            if problem is not None:
                raise ConfigError(f"{where}.space.{name}[{index}]: {problem} (got {brief(value)})")
    candidates(stage, student, where, depth=depth)


def candidates(stage: SearchStage, student: BaseModel, where: str = "search", depth: int | None = None
               ) -> list[Candidate]:
    """Every valid candidate of the grid, in a stable order (see the module docstring); ``depth`` is a
    ``drop_layers`` student's teacher's block count (:func:`space_for`).

    Raises :class:`ConfigError` (prefixed by ``where``) when no combination is valid or the grid
    exceeds ``max_candidates``.
    """
    space = space_for(stage, student, depth)
    names = [name for name in type(student).model_fields if name in space]  # the spec's order, for stable labels
    template = student.model_dump(mode="json")
    structures: list[Structure] = []
    rejected: list[str] = []
    for values in itertools.product(*(_unique(space[name]) for name in names)):
        combination = dict(zip(names, values, strict=True))
        try:
            built = type(student).model_validate({**template, **combination}, context=ALREADY_EXPANDED)
            if depth is not None and student.arch == LAYER_COPY:
                built.layers_kept(depth)  # a count or index beyond the teacher's blocks
        except ValidationError as exc:
            rejected.append(f"{_compact(combination)}: {exc.errors(include_url=False)[0]['msg']}")
            continue
        except ConfigError as exc:
            rejected.append(f"{_compact(combination)}: {exc}")
            continue
        spec = built.model_dump(mode="json")
        for prune, factorize in itertools.product(_unique(stage.prune), _unique(stage.factorize)):
            structures.append(Structure(spec, prune, factorize, tuple(combination.items())))
    if not structures and not rejected:  # a list of the space is empty
        if student.arch == LAYER_COPY and depth is not None and depth <= 1:
            raise ConfigError(f"{where}: the teacher has {depth} layer, so a 'drop_layers' student has none to drop; "
                              "search a student architecture of its own (e.g. arch: bert) instead")
        empty = next(name for name in names if not space[name])
        raise ConfigError(f"{where}.space.{empty}: expected at least one value, got []")
    if not structures:
        example = rejected[0].replace("Value error, ", "")
        raise ConfigError(f"{where}.space: no combination makes a valid student (e.g. {example})")
    grid = [Candidate(s, precision) for s in structures for precision in _unique(stage.precision)]
    if len(grid) > stage.max_candidates:
        raise ConfigError(f"{where}: the grid has {len(grid)} candidates, over max_candidates {stage.max_candidates}; "
                          "narrow space, prune, factorize or precision (or raise max_candidates)")
    return grid


def _value_problem(spec_class: type[BaseModel], template: dict[str, Any], name: str, value: Any) -> str | None:
    """Why ``value`` cannot be the field ``name`` (checked alone; combinations are checked by :func:`candidates`)."""
    try:
        spec_class.model_validate({**template, name: value}, context=ALREADY_EXPANDED)
    except ValidationError as exc:
        own = [e for e in exc.errors(include_url=False) if e["loc"] and e["loc"][0] == name]
        return " or ".join(union_expectations(own)) if own else None
    return None


def _unique(values: list[Any]) -> list[Any]:
    """The values in order, each once."""
    seen: list[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))

