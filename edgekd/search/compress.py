"""``edgekd compress``: any recipe as a budget search, judged against the budget before anything trains.

:func:`search_recipe` turns a recipe into a search. One with a ``search`` stage is kept as it is.
Otherwise the result (named ``<name>-search``) keeps the recipe's data, teacher and teacher stage and
runs a ``search`` stage that distils with the recipe's own distill settings (its last distillation
into the student), exports with its export target and quantizes with its quantize settings, then its
profile stage (or a default one), its bundle stage if it has one, and a report. The search varies the
recipe's student, or the teacher's architecture when the student cannot be varied (a pretrained student, an
architecture without a search space) and the teacher's can; when neither can, compress refuses in one line naming
the students a search varies. A ``drop_layers`` student is varied by how many of the teacher's blocks it
keeps: every candidate starts from the trained teacher's weights (pretrained ones too), which a student of other
sizes would lack, and none is larger than the teacher.

:func:`preflight` builds the latency table (cached, so the search stage reuses it) and raises the
search's :class:`~edgekd.errors.BudgetError` when no candidate fits, before the teacher trains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.config import is_corpus
from edgekd.distill.stage import teacher_task_data
from edgekd.errors import ConfigError
from edgekd.models.architectures import SEARCHABLE
from edgekd.models.specs import SpecBase
from edgekd.pipeline import RunResult
from edgekd.quantize.config import QuantizeSettings
from edgekd.report.record import RunReport
from edgekd.search.build import Family
from edgekd.search.causal_lm import lm_preflight
from edgekd.search.config import SearchStage
from edgekd.search.layer_source import LayerSource
from edgekd.search.plan import plan_search
from edgekd.search.record import LMSearchRecord, SearchRecord, TableStats, read_search_record
from edgekd.search.space import LAYER_COPY, searchable_archs
from edgekd.stages import check_recipe

log = logging.getLogger(__name__)

#: Stages of a recipe a derived search keeps (the others are what the search does itself).
KEPT_STAGES = ("teacher", "profile", "bundle")


@dataclass(frozen=True)
class CompressResult:
    """A finished search run and how its latency table was obtained before training."""

    run: RunResult
    table: TableStats
    """The pre-flight table: ``profiled`` 0 and ``seconds`` 0 when every candidate came from the cache."""

    def report(self) -> dict[str, Any]:
        """The run's ``report.json`` as a dict; :meth:`report_record` is the typed one."""
        return self.run.report()

    def report_record(self) -> RunReport:
        """The run's ``report.json`` as its typed :class:`~edgekd.report.record.RunReport`."""
        return self.run.report_record()

    def search(self) -> SearchRecord | LMSearchRecord:
        """The search stage's typed record (latency table, trained candidates, choice)."""
        record = next(r for r in self.run.stages if r.stage == "search")
        return read_search_record(record.data)


def search_recipe(recipe: Recipe, source: str | None = None) -> Recipe:
    """``recipe`` as a budget search (see the module docstring). A refusal of the recipe it derives names ``recipe``'s
    file (``source``; default ``recipe '<name>'``) and keys, as :func:`check_search`'s do (:func:`in_users_terms`)."""
    if "search" in recipe.stage_names():
        return recipe
    parts = _parts(recipe)
    search: dict[str, Any] = {"stage": "search"}
    if "distill" in parts:
        search["distill"] = recipe.stages[parts["distill"]].model_dump(mode="json",
                                                                      exclude={"stage", "teacher", "student"})
    if "export" in parts:
        search["target"] = recipe.stages[parts["export"]].target
    if "quantize" in parts:
        search["quantize"] = recipe.stages[parts["quantize"]].model_dump(mode="json",
                                                                        include=set(QuantizeSettings.model_fields))
    stages = [search if kind == "search" else recipe.stages[parts[kind]] if kind in KEPT_STAGES and kind in parts
              else {"stage": kind} for kind in _derived_kinds(parts)]
    role = _varied_role(recipe)
    student = getattr(recipe, role).model
    source = source or f"recipe '{recipe.name}'"
    if role == "teacher":
        _vary_teacher_instead(recipe, source)
    # only the fields the recipe set: a default written out reads as given (data.color beside an image processor,
    # a pretrained teacher's default sizes beside its checkpoint)
    derived = {**recipe.model_dump(mode="json", exclude={"assistant", "student", "stages"}, exclude_unset=True),
               "name": f"{recipe.name}-search",
               "student": {"model": student.model_dump(mode="json", exclude_unset=True)},
               "stages": [s if isinstance(s, dict) else s.model_dump(mode="json") for s in stages]}
    with in_users_terms(recipe, source):
        return validate_model(derived, Recipe, source=source, expanded=True)


def _varied_role(recipe: Recipe) -> str:
    """Whose model the search varies (see the module docstring): the student's, or the teacher's architecture."""
    student = recipe.student.model
    if student.arch == LAYER_COPY:
        return "student"
    if not is_corpus(recipe.data) and _unsearchable(student):
        return "teacher"
    return "student"


def _unsearchable(spec: SpecBase) -> bool:
    """Whether a search cannot vary ``spec``'s sizes: an architecture without a search space, or a pretrained
    checkpoint (its sizes are the checkpoint's)."""
    return spec.arch not in SEARCHABLE or getattr(spec, "pretrained", None) is not None


def _vary_teacher_instead(recipe: Recipe, source: str) -> None:
    """Warn that the search varies the teacher's architecture, the recipe's student being one it cannot vary
    (:func:`_unsearchable`); when it cannot vary the teacher's either, refuse in one line naming the student's key
    and the students it does vary (:func:`~edgekd.search.space.searchable_archs`), ``drop_layers`` first among them
    where the teacher can be cut."""
    own, teacher = recipe.student.model, recipe.teacher.model
    archs = searchable_archs(recipe)
    searchable = f"searchable: {', '.join(archs)}"
    own_arch_searchable = own.arch in SEARCHABLE  # so its checkpoint is what the search cannot vary
    if not _unsearchable(teacher):
        log.warning("compress: the recipe's student (%s) cannot be varied by a search (%s), so the search varies "
                    "the teacher's architecture (%s) instead; a search stage of your own chooses otherwise", own.label,
                    "a pretrained checkpoint" if own_arch_searchable else searchable, teacher.label)
        return
    key = "student.model.pretrained" if own_arch_searchable else "student.model.arch"
    fix = "unset student.model.pretrained or set" if own_arch_searchable else "set"
    copies = (": drop_layers starts from the teacher's weights and varies how many of its layers the student keeps"
              if LAYER_COPY in archs else "")
    raise ConfigError(f"{source}: {key}: a search cannot vary the student ({_named(own)}), nor the teacher's "
                      f"architecture in its place ({_named(teacher)}); {fix} student.model.arch to one it varies "
                      f"({searchable}){copies}")


def _named(spec: SpecBase) -> str:
    """How :func:`_vary_teacher_instead` names a model: its label, and whether it is pretrained."""
    return f"{spec.label}, pretrained" if getattr(spec, "pretrained", None) is not None else spec.label


def _parts(recipe: Recipe) -> dict[str, int]:
    """The index in ``recipe.stages`` of each stage the search is made from (the last of each kind): the kept
    ``teacher``, ``profile``, ``bundle`` and ``report``, the ``distill`` into the student (the search's distill
    settings), the ``export`` (its target) and the ``quantize`` (its settings)."""
    parts: dict[str, int] = {}
    for index, stage in enumerate(recipe.stages):
        if stage.stage in (*KEPT_STAGES, "report", "export", "quantize") or (
                stage.stage == "distill" and stage.student == "student"):
            parts[stage.stage] = index
    return parts


def _derived_kinds(parts: dict[str, int]) -> list[str]:
    """The stages of the search recipe, in order: a bundle only where the recipe has one."""
    return ["teacher", "search", "profile", *(["bundle"] if "bundle" in parts else []), "report"]


def written_keys(recipe: Recipe) -> dict[str, str]:
    """Key paths of :func:`search_recipe`'s recipe (prefixes) → where ``recipe`` wrote them: the search's
    ``distill``, ``target`` and ``quantize`` are the recipe's distill, export and quantize stages', the kept stages
    are the recipe's own, the searched student's spec is the teacher's when the search varies the teacher's
    architecture; what compress adds (the search's space and table, a stage the recipe lacks) is named as
    compress's (``compress's search.space``)."""
    if "search" in recipe.stage_names():
        return {}
    parts = _parts(recipe)

    def at(kind: str, suffix: str = "", added: str = "") -> str:
        return f"stages[{parts[kind]}]{suffix}" if kind in parts else added or f"compress's {kind}"

    keys: dict[str, str] = {"student": "teacher"} if _varied_role(recipe) == "teacher" else {}
    for position, kind in enumerate(_derived_kinds(parts)):
        where = f"stages[{position}]"
        if kind != "search":
            keys[where] = at(kind)
            continue
        search = "compress's search"
        keys |= {where: search, f"{where}.distill": at("distill", added=f"{search}.distill"),
                 f"{where}.quantize": at("quantize", added=f"{search}.quantize"),
                 f"{where}.target": at("export", ".target", f"{search}.target"),
                 f"{where}.stage": at("distill", " (run by compress as a search)", search)}
    return keys


def as_written(key: str, keys: dict[str, str]) -> str:
    """``key`` (a key path of the derived recipe) renamed by its longest prefix in ``keys`` (:func:`written_keys`)."""
    for prefix in sorted(keys, key=len, reverse=True):
        if key == prefix or key.startswith(prefix) and key[len(prefix)] in ".[":
            return keys[prefix] + key[len(prefix):]
    return key


def check_search(search: Recipe, recipe: Recipe, source: str) -> None:
    """:func:`~edgekd.stages.check_recipe` of ``search`` (made from ``recipe`` by :func:`search_recipe`) with its
    refusals naming ``recipe``'s file (``source``) and keys: ``recipe.yaml: stages[3].target: …``, not the derived
    recipe's ``stages[1].target``, which the user never wrote (:func:`in_users_terms`)."""
    with in_users_terms(recipe, source):
        check_recipe(search, source)


@contextmanager
def in_users_terms(recipe: Recipe, source: str) -> Iterator[None]:
    """Re-raise a :class:`~edgekd.errors.ConfigError` about the search recipe made from ``recipe``
    (``source: key: message``, ``key`` one of the derived recipe) with its key renamed to where ``recipe`` wrote
    it (:func:`written_keys`). The one translation of :func:`search_recipe`'s and :func:`check_search`'s
    refusals."""
    try:
        yield
    except ConfigError as exc:
        head, _, rest = str(exc).partition(f"{source}: ")
        key, separator, message = rest.partition(": ")
        if head or not separator or not _KEY.fullmatch(key):
            raise
        keys = written_keys(recipe)
        told = _MENTION.sub(lambda mention: as_written(mention.group(0), keys), message)
        raise type(exc)(f"{source}: {as_written(key, keys)}: {told}") from None


#: A key path a refusal's message mentions (``student.model.arch``, ``stages[1].target``): renamed as its key is.
_MENTION = re.compile(r"\b(?:student|stages)(?:\[\d+\])*(?:\.[A-Za-z_]\w*(?:\[\d+\])*)+|\bstages\[\d+\]")


#: A key path as refusals write it: ``stages[1].distill.losses[0].kind``.
_KEY = re.compile(r"[A-Za-z_]\w*(\[\d+\])*(\.[A-Za-z_]\w*(\[\d+\])*)*")


def search_stage(recipe: Recipe) -> SearchStage | None:
    """The recipe's search stage, if it has one."""
    return next((stage for stage in recipe.stages if isinstance(stage, SearchStage)), None)


def preflight(recipe: Recipe, device: DeviceProfile, *, fresh: bool = False) -> TableStats | None:
    """Judge the recipe's search grid against ``device``'s budget before anything trains (None: no search).

    Builds (or reads) the latency table and raises :class:`~edgekd.errors.BudgetError` when no
    candidate fits, :class:`~edgekd.errors.ConfigError` when a default space holds nothing smaller than the
    teacher (counted on the untrained teacher: its size does not change with training); returns how the table was
    obtained.
    """
    stage = search_stage(recipe)
    if stage is None:
        return None
    if is_corpus(recipe.data):
        return lm_preflight(stage, recipe, device, fresh=fresh)
    data = teacher_task_data(recipe, recipe.seed)
    arch = recipe.student.model.arch
    untrained = LayerSource(spec=recipe.teacher.model)  # the teacher before training
    family = Family(arch, data.signature, data.class_names, untrained if arch == LAYER_COPY else None)
    teacher_params = untrained.model(data.signature, data.class_names).params if stage.space is None else None
    return plan_search(stage, recipe.student.model, family, device, fresh=fresh,
                       teacher_params=teacher_params).table.stats
