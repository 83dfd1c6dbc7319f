"""Every distillation loss edgekd knows, by the ``kind`` a recipe names it with."""

from __future__ import annotations

import importlib
import inspect
from typing import Annotated, Union

from pydantic import Field

from edgekd.distill.losses.base import DistillationLoss, WeightedLoss
from edgekd.distill.outputs import ModelInfo
from edgekd.errors import ConfigError

#: The loss modules; each defines one concrete :class:`DistillationLoss` (with its ``config_model``).
LOSS_MODULES = (
    "edgekd.distill.losses.hinton",
    "edgekd.distill.losses.logit_mse",
    "edgekd.distill.losses.hidden",
    "edgekd.distill.losses.pkd",
    "edgekd.distill.losses.attention",
    "edgekd.distill.losses.embedding",
    "edgekd.distill.losses.cosine",
    "edgekd.distill.losses.minilm",
)


def _defined_losses(module_name: str) -> list[type[DistillationLoss]]:
    module = importlib.import_module(module_name)
    return [cls for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, DistillationLoss) and cls.__module__ == module_name and "config_model" in cls.__dict__]


#: The losses of causal language models (next-token logits ``[B, T, V]``), in their own registry.
GENERATION_LOSS_MODULES = (
    "edgekd.distill.losses.token_kl",
    "edgekd.distill.losses.sequence_level",
)

#: Every classifier loss class, by kind.
LOSSES: dict[str, type[DistillationLoss]] = {cls.kind: cls for name in LOSS_MODULES for cls in _defined_losses(name)}

#: Every causal-LM loss class, by kind.
GENERATION_LOSSES: dict[str, type[DistillationLoss]] = {
    cls.kind: cls for name in GENERATION_LOSS_MODULES for cls in _defined_losses(name)}

#: A recipe's loss entry: the tagged union of every loss's config (``edgekd validate`` checks that the
#: recipe's task takes it: classifier losses for classifiers, generation losses for causal LMs).
LossConfig = Annotated[Union[tuple(cls.config_model for cls in (LOSSES | GENERATION_LOSSES).values())],  # noqa: UP007
                       Field(discriminator="kind")]


def losses_applying(exposes: frozenset[str]) -> str:
    """Which classifier losses apply to a model that ``exposes`` these intermediate outputs (beyond its logits),
    as a clause: ``losses on the logits and its attentions, hidden_states apply to it (hinton, …)``."""
    compared = f"the logits and its {', '.join(sorted(exposes))}" if exposes else "the logits alone"
    kinds = ", ".join(kind for kind, cls in LOSSES.items() if cls.needs <= exposes)
    return f"losses on {compared} apply to it ({kinds})"


def build_loss(config: WeightedLoss, student: ModelInfo, teacher: ModelInfo) -> DistillationLoss:
    """The loss ``config`` describes, sized for ``student`` and ``teacher``.

    Raises :class:`ConfigError` when the loss cannot apply, e.g. a hidden-state loss with a student
    that has no transformer encoder (a recipe gets this from ``edgekd validate``, before training).
    Seed torch first: learned projections are initialised randomly.
    """
    cls = (LOSSES | GENERATION_LOSSES)[config.kind]
    for role, info in (("student", student), ("teacher", teacher)):
        if cls.needs and info.layers == 0:
            raise ConfigError(
                f"loss '{config.kind}' compares the models' {', '.join(sorted(cls.needs))}, but the {role} "
                f"has no transformer encoder; {losses_applying(frozenset())}"
            )
    return cls.from_config(config, student, teacher)
