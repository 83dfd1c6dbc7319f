"""The dataset distillation methods, each ``learn(problem) -> SyntheticSet``; :data:`METHODS` names them."""

from __future__ import annotations

from collections.abc import Callable

from edgekd.dataset_distill.methods import distribution_matching, gradient_matching, meta
from edgekd.dataset_distill.problem import Problem, SyntheticSet

METHODS: dict[str, Callable[[Problem], SyntheticSet]] = {
    "meta": meta.learn,
    "gradient_matching": gradient_matching.learn,
    "distribution_matching": distribution_matching.learn,
}
