"""``edgekd validate``'s rules for multi-label, regression and token classification recipes: what does not
apply is refused by key.

The task is the recipe's ``data.task``, or the one local data's labels read as (a TSV/CSV training
file, a ``save_to_disk`` directory, an ``.npz`` set; :mod:`edgekd.data.label_kind`); a hub dataset's
is known only when the run loads it. For a multi-label or regression task these are
refused before anything trains, each with its key path:

- stages whose decisions are made on arg-max classes: ``quantize`` (accuracy and agreement gates),
  ``prune``/``factorize``/``hybrid`` (accuracy per step), ``search`` (chosen by validation accuracy),
  ``dataset_distill`` (images per class);
- ``teacher.ensemble`` (members averaged as class probabilities), a distill stage's ``augment`` (its
  sentences are unlabelled, which only single-label cross-entropy can skip), and ``data.eval_data``
  (scikit-learn's digits are single-label).

Token classification (:mod:`edgekd.token_rules`) also needs TSV/CSV data, Hugging Face transformer models
(one output per token) and logit-level distillation losses.
"""

from __future__ import annotations

from edgekd.data.config import HFDiskData, NpzData, TaskKind, TextFileData
from edgekd.errors import DataError
from edgekd.stage_kind import PlanState
from edgekd.token_rules import check_token_classification

#: Stages refused for multi-label and regression tasks, with why.
CLASS_ONLY_STAGES = {
    "quantize": "its accuracy and agreement gates compare arg-max classes",
    "prune": "its steps are judged by classification accuracy",
    "factorize": "its steps are judged by classification accuracy",
    "hybrid": "its steps are judged by classification accuracy",
    "search": "it chooses students by validation accuracy",
    "dataset_distill": "it learns images per class",
}


def check_task(state: PlanState) -> None:
    """Refuse, by key path, what a multi-label or regression recipe cannot run (see the module docstring)."""
    recipe = state.recipe
    task = recipe_task(recipe.data)
    if task in (None, "single_label"):
        return
    told = f"data.task is {task}" if getattr(recipe.data, "task", None) else f"the labels read as {task}"
    if getattr(recipe.data, "eval_data", None) is not None:
        raise state.fail("data.eval_data", f"scikit-learn's digits are single-label but {told}; leave it unset")
    if recipe.teacher.ensemble is not None:
        raise state.fail("teacher.ensemble", f"an ensemble averages class probabilities, but {told}; leave it unset")
    for index, stage in enumerate(recipe.stages):
        if stage.stage in CLASS_ONLY_STAGES:
            raise state.fail(f"stages[{index}].stage", f"'{stage.stage}' is for single-label classifiers "
                             f"({CLASS_ONLY_STAGES[stage.stage]}), but {told}")
        if getattr(stage, "augment", None) is not None:
            raise state.fail(f"stages[{index}].augment", f"augmented sentences are unlabelled, which only "
                             f"single-label training can skip, but {told}; leave it unset")
    if task == "token_classification":
        check_token_classification(state)


def recipe_task(data: object) -> TaskKind | None:
    """The recipe's task: ``data.task``, else inferred from a local training file; None when not knowable now."""
    task = getattr(data, "task", None)
    if task is not None:
        return task
    try:
        if isinstance(data, TextFileData) and data.train.is_file():
            from edgekd.data.text import text_file_task

            return text_file_task(data)
        if isinstance(data, HFDiskData) and data.path.is_dir():
            from edgekd.data.text import load_text_dataset

            return load_text_dataset(data, 0).task  # cached: the run reads it again for free
        if isinstance(data, NpzData) and data.path.is_file():
            from edgekd.data.npz import load_npz, npz_task

            return npz_task(load_npz(data.path, None).labels)
    except DataError:
        return None  # a broken file is reported, with its line, when the data is loaded
    return None
