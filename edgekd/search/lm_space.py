"""The candidate grid of a causal-LM budget search: decoder sizes × precision, from a transformers config.

A causal LM's student is ``arch: hf`` with a ``config`` (any decoder family transformers builds: gpt2,
llama, qwen2, mistral...). Its ``space`` keys are config attributes under transformers' canonical names
(:data:`SIZE_KEYS`); each is written into the structure's config under the family's own name, through the
config class's ``attribute_map`` (GPT-2: ``n_layer``, ``n_embd``, ``n_head``). A family has the sizes its
config has: GPT-2 no ``intermediate_size`` (its MLP is 4 × the width) nor ``num_key_value_heads``.

Unset, the space is derived from the student: half, the same and twice its layers and its width, none above
the teacher's (its config's layers and width, when it has them: a student larger than its teacher is no
compression). When the space varies ``hidden_size`` but not ``intermediate_size``, the MLP follows the
width at the student's ratio. Combinations a decoder cannot take are left out (a width not divisible by
the heads, heads not divisible by the KV heads, an odd rotary head size or an odd number of rotary
dimensions per head, a spec over edgekd's size limit).

This module imports transformers' config classes only (no torch): validating a recipe checks its space here.
"""

from __future__ import annotations

import difflib
import itertools
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from edgekd.config.loading import brief
from edgekd.errors import ConfigError
from edgekd.models.specs import HFSpec, declared_config
from edgekd.search.space import Candidate, Structure

if TYPE_CHECKING:
    from edgekd.search.config import SearchStage
    from edgekd.stage_kind import PlanState

#: The decoder sizes a causal-LM search varies, by transformers' canonical attribute names.
SIZE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "num_key_value_heads")


@cache
def family_names(model_type: str) -> dict[str, str]:
    """Canonical size name → the family's own config key, for the sizes the family's config has."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config_class = CONFIG_MAPPING[model_type]
    defaults = config_class().to_dict()
    names = {key: config_class.attribute_map.get(key, key) for key in SIZE_KEYS}
    return {key: own for key, own in names.items() if own in defaults}


def student_sizes(student: HFSpec) -> dict[str, Any]:
    """The student's canonical sizes (defaults filled in by its config class) and whether it is rotary."""
    from transformers import AutoConfig

    given = {key: value for key, value in (student.config or {}).items() if key != "model_type"}
    built = AutoConfig.for_model(student.model_type, **given)
    sizes = {key: getattr(built, key) for key in family_names(student.model_type)}
    sizes["rotary"] = any(getattr(built, name, None) is not None for name in ("rope_parameters", "rope_theta"))
    sizes["head_dim_given"] = "head_dim" in given
    return sizes


def lm_space_for(stage: SearchStage, student: HFSpec, teacher: Any = None) -> dict[str, list[Any]]:
    """The space a causal-LM search varies: its own, else the student's layers and width halved, kept and doubled,
    the doubled ones only up to the ``teacher`` spec's (see the module docstring)."""
    if stage.space is not None:
        return stage.space
    sizes = student_sizes(student)
    built = declared_config(teacher) if teacher is not None else None
    space = {}
    for key in ("num_hidden_layers", "hidden_size"):
        own = sizes[key]
        ceiling = getattr(built, key, None)
        doubled = [2 * own] if not isinstance(ceiling, int) or 2 * own <= ceiling else []
        space[key] = sorted({max(1, own // 2), own, *doubled})
    return space


def check_lm_search(stage: SearchStage, state: PlanState, where: str) -> None:
    """A causal-LM search distils with generation losses over a space of the student's decoder sizes."""
    from edgekd.distill.losses.registry import GENERATION_LOSSES

    for index, loss in enumerate(stage.distill.losses):
        if loss.kind not in GENERATION_LOSSES:
            raise state.fail(f"{where}.distill.losses[{index}].kind", f"loss '{loss.kind}' does not apply to a causal "
                             f"language model; expected {', '.join(GENERATION_LOSSES)}")
    check_lm_space(stage, state.recipe.student.model, f"{state.source}: {where}", state.recipe.teacher.model)


def check_lm_space(stage: SearchStage, student: HFSpec, where: str, teacher: Any = None) -> None:
    """Raise a one-line :class:`ConfigError` (prefixed by ``where``) for a search a causal-LM student cannot take.

    Checked: the student is built from a config, the search compresses by sizes and precision only, every
    ``space`` key is a size of the student's family (did-you-mean, also from a family's own spelling), every
    value is a positive whole number, and the grid has a valid candidate and at most ``max_candidates``.
    """
    if not isinstance(student, HFSpec) or student.pretrained is not None or student.config is None:
        raise ConfigError(f"{where}: a search varies the student's sizes; student.model needs a transformers "
                          "'config' (model_type and sizes), not 'pretrained'")
    for name, default in (("prune", [0.0]), ("factorize", [None])):
        if any(value != default[0] for value in getattr(stage, name)):
            raise ConfigError(f"{where}.{name}: a causal-LM search varies sizes and precision; leave {name} unset "
                              "(prune or factorize the chosen student with their own stages in a later run)")
    names = family_names(student.model_type)
    for key, values in lm_space_for(stage, student, teacher).items():
        if key not in names:
            raise ConfigError(f"{where}.space.{key}: not a size of a '{student.model_type}' config"
                              f"{_hint(key, student.model_type, names)}")
        for index, value in enumerate(values):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{where}.space.{key}[{index}]: expected a positive whole number "
                                  f"(got {brief(value)})")
    lm_candidates(stage, student, where, teacher)


def lm_candidates(stage: SearchStage, student: HFSpec, where: str = "search", teacher: Any = None) -> list[Candidate]:
    """Every valid candidate of the causal-LM grid, in a stable order (see the module docstring); ``teacher``: its
    spec, which bounds the default space.

    Raises :class:`ConfigError` (prefixed by ``where``) when no combination is valid or the grid exceeds
    ``max_candidates``.
    """
    space = lm_space_for(stage, student, teacher)
    names = family_names(student.model_type)
    keys = [key for key in SIZE_KEYS if key in space]  # canonical order, for stable labels
    sizes = student_sizes(student)
    structures: list[Structure] = []
    rejected: list[str] = []
    for values in itertools.product(*(dict.fromkeys(space[key]) for key in keys)):
        combination = dict(zip(keys, values, strict=True))
        changed = dict(combination)
        if "hidden_size" in changed and "intermediate_size" in names and "intermediate_size" not in space:
            changed["intermediate_size"] = max(1, round(sizes["intermediate_size"] * changed["hidden_size"]
                                                        / sizes["hidden_size"]))
        problem = size_problem({**sizes, **changed})
        replaced = {name for key in changed for name in (key, names[key])}
        config = {**{k: v for k, v in (student.config or {}).items() if k not in replaced},
                  **{names[key]: value for key, value in changed.items()}}
        if problem is None:
            try:
                spec = HFSpec.model_validate({"arch": "hf", "config": config}).model_dump(mode="json",
                                                                                          exclude_unset=True)
            except ValidationError as exc:
                problem = exc.errors(include_url=False)[0]["msg"].replace("Value error, ", "")
        if problem is not None:
            rejected.append(f"{_label(combination)}: {problem}")
            continue
        structures.append(Structure(spec, varied=tuple(combination.items())))
    if not structures:
        raise ConfigError(f"{where}.space: no combination makes a valid decoder (e.g. {rejected[0]})")
    grid = [Candidate(s, precision) for s in structures for precision in dict.fromkeys(stage.precision)]
    if len(grid) > stage.max_candidates:
        raise ConfigError(f"{where}: the grid has {len(grid)} candidates, over max_candidates {stage.max_candidates}; "
                          "narrow space or precision (or raise max_candidates)")
    return grid


def size_problem(sizes: dict[str, Any]) -> str | None:
    """Why a decoder cannot have these canonical sizes, or None."""
    width, heads = sizes["hidden_size"], sizes["num_attention_heads"]
    kv_heads = sizes.get("num_key_value_heads") or heads
    if width % heads and not sizes["head_dim_given"]:
        return f"hidden_size {width} is not divisible by num_attention_heads {heads}"
    if heads % kv_heads:
        return f"num_attention_heads {heads} is not divisible by num_key_value_heads {kv_heads}"
    if sizes["rotary"] and not sizes["head_dim_given"] and (width // heads) % 2:
        return f"rotary positions need an even head size, not {width} / {heads} = {width // heads}"
    return None


def _hint(key: str, model_type: str, names: dict[str, str]) -> str:
    """``(did you mean 'x'?)`` from a canonical name or the family's own spelling; else the family's sizes."""
    own = {value: canonical for canonical, value in names.items() if value != canonical}
    if key in own:
        return f" (did you mean '{own[key]}'? space keys are transformers' canonical names)"
    close = difflib.get_close_matches(key, list(names), n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; a '{model_type}' search varies {', '.join(names)}"


def _label(combination: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in combination.items())
