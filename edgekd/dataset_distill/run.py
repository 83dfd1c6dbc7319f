"""Distil a recipe's training set into a synthetic one, judge it and save it: what the stage and CLI call."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from edgekd.config.recipe import Recipe
from edgekd.data.datasets import load_dataset
from edgekd.data.npz import NpzSet, save_npz
from edgekd.dataset_distill.compare import compare
from edgekd.dataset_distill.config import DatasetDistillStage
from edgekd.dataset_distill.methods import METHODS
from edgekd.dataset_distill.network import Family, image_family
from edgekd.dataset_distill.problem import Problem, SyntheticSet, check_images_per_class
from edgekd.errors import ConfigError
from edgekd.models.call import call_logits

log = logging.getLogger(__name__)

#: What the inputs of each image source mean (the preprocessing a synthetic set lives in).
PREPROCESSING: dict[str, dict[str, Any]] = {
    "digits": {"source": "sklearn digits", "layout": "NCHW", "formula": "input = pixel / 16", "pixel_range": [0, 16],
               "input_range": [0.0, 1.0]},
}


@dataclass(frozen=True)
class DistilledSet:
    """A learnt synthetic set, where it was saved and how it compares (see :func:`compare`)."""

    synthetic: SyntheticSet
    path: Path
    wall_seconds: float
    accuracy: dict[str, Any]


def distill_dataset(config: DatasetDistillStage, recipe: Recipe, seed: int, out: Path, *, where: str,
                    teachers: Sequence[torch.nn.Module] = (), teacher_weights: Sequence[float] = ()) -> DistilledSet:
    """Learn ``config.images_per_class`` synthetic examples per class of ``recipe``'s data, judge them, save ``out``.

    ``teachers`` (needed for ``labels: teacher``: one, or an ensemble's members with their ``teacher_weights``)
    label the synthetic images with their softened outputs, averaged by weight.
    """
    if config.labels == "teacher" and not teachers:
        raise ConfigError(f"{where}.labels: 'teacher' needs a trained teacher (a 'teacher' stage before it)")
    splits = load_dataset(recipe.data, data_seed(recipe, seed))
    spec = image_family(_spec(config, recipe), f"{where}.role ({config.role}.model)")
    family = Family(spec, splits.input_shape, splits.num_classes)
    check_images_per_class(splits, recipe.data, config.images_per_class, where)
    problem = Problem(splits.x_train, splits.y_train, family, config, seed)
    started = time.perf_counter()
    synthetic = METHODS[config.method](problem)
    wall = time.perf_counter() - started
    log.info("%s: %d synthetic examples learnt in %.1f s", config.method, len(synthetic.labels), wall)
    if teachers and config.labels == "teacher":
        with torch.no_grad():  # any image teacher, hf ones too
            synthetic.soft_labels = sum(weight * F.softmax(call_logits(member.eval(), {"input": synthetic.images})
                                                           / config.temperature, dim=1)
                                        for member, weight in zip(teachers, teacher_weights, strict=True))
    accuracy = compare(problem, synthetic, (splits.x_test, splits.y_test), (splits.x_val, splits.y_val))
    metadata = {"method": config.method, "config": config.model_dump(mode="json"), "seed": seed,
                "family": family.spec.model_dump(mode="json"), "learned_from": learned_from(recipe, seed),
                "preprocessing": _preprocessing(recipe, splits.preprocessing),
                "wall_seconds": wall, "accuracy": accuracy, "details": synthetic.details}
    soft = synthetic.soft_labels.numpy() if synthetic.soft_labels is not None else None
    save_npz(out, NpzSet(synthetic.images.numpy(), synthetic.labels.numpy(), splits.class_names, soft, metadata))
    return DistilledSet(synthetic, Path(out), wall, accuracy)


def _preprocessing(recipe: Recipe, loaded: dict[str, Any] | None) -> dict[str, Any]:
    """How the set's inputs are made from the source's images, so that it is trained on and tested with inputs of
    the same making: the image files' resizing and normalisation the data loader recorded (``loaded``), a bundled
    dataset's fixed scaling (:data:`PREPROCESSING`), else the inputs as the data gives them."""
    if loaded:
        return {"source": recipe.data.source, **loaded}
    return PREPROCESSING.get(getattr(recipe.data, "name", ""),
                             {"source": recipe.data.source, "note": "the inputs as the data gives them"})


def check_class_sizes(recipe: Recipe, source: str) -> None:
    """Refuse, before anything trains, a ``dataset_distill`` stage of ``recipe`` asking more images per class than
    the training split's smallest class holds, or data with a class of no training examples
    (:func:`~edgekd.dataset_distill.problem.check_images_per_class`); ``source`` names the recipe."""
    indices = [i for i, stage in enumerate(recipe.stages) if isinstance(stage, DatasetDistillStage)]
    if not indices:
        return
    splits = load_dataset(recipe.data, data_seed(recipe, recipe.seed))
    for index in indices:
        check_images_per_class(splits, recipe.data, recipe.stages[index].images_per_class, f"{source}: stages[{index}]")


def data_seed(recipe: Recipe, seed: int) -> int:
    """The seed the recipe's data is split with: ``data.split_seed`` if set, else ``seed``."""
    return recipe.data.split_seed if recipe.data.split_seed is not None else seed


def learned_from(recipe: Recipe, seed: int) -> dict[str, Any]:
    """The data (without its split seed) and the split seed whose training split the examples were learnt from.

    A recipe that trains on the set and tests on that data must split it the same way, or its test
    examples include images the set was learnt from (:func:`edgekd.data.datasets.check_held_out_split`).
    """
    return {"data": recipe.data.model_dump(mode="json", exclude={"split_seed"}), "split_seed": data_seed(recipe, seed)}


def _spec(config: DatasetDistillStage, recipe: Recipe) -> Any:
    return (recipe.student if config.role == "student" else recipe.teacher).model
