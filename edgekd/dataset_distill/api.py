"""``edgekd distill-data RECIPE``: run a recipe up to its ``dataset_distill`` stage, checked before anything trains."""

from __future__ import annotations

from pathlib import Path

from edgekd.catalog import find
from edgekd.config.device import load_device
from edgekd.config.overrides import Overrides, no_overrides_of_object
from edgekd.config.paths import user_path
from edgekd.config.recipe import Recipe, load_recipe
from edgekd.dataset_distill.config import DatasetDistillStage
from edgekd.dataset_distill.run import check_class_sizes
from edgekd.errors import ConfigError
from edgekd.pipeline import RunResult, run_pipeline
from edgekd.stages import check_recipe
from edgekd.threads import training_threads


def distill_data(recipe: str | Path | Recipe, *, out: str | Path | None = None, fresh: bool = False,
                 show_progress: bool = False, overrides: Overrides = None) -> RunResult:
    """Run ``recipe``'s stages up to and including its first ``dataset_distill`` stage (a teacher first, if listed).

    Bad input stops before anything trains, in one line: no such stage, text data, a family that
    takes token ids, ``images_per_class`` above the smallest class. ``out`` defaults to
    ``runs/<recipe name>-distill-data``; the synthetic set is ``NN-dataset_distill/synthetic.npz`` there.
    ``overrides`` (``KEY=VALUE`` texts, ``--set``: :mod:`edgekd.config.overrides`) change a recipe file's keys
    before it is validated, as for :func:`edgekd.run`.
    """
    if isinstance(recipe, Recipe):
        no_overrides_of_object(overrides)
    loaded = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, overrides)
    source = f"recipe '{loaded.name}'" if isinstance(recipe, Recipe) else str(find("pipelines", recipe))
    index = next((i for i, s in enumerate(loaded.stages) if isinstance(s, DatasetDistillStage)), None)
    if index is None:
        raise ConfigError(f"{source}: stages: no 'dataset_distill' stage; expected one to run")
    partial = loaded.model_copy(update={"stages": loaded.stages[:index + 1]})
    check_recipe(partial, source)
    check_class_sizes(partial, source)
    run_dir = user_path(out, "out") if out is not None else Path("runs") / f"{loaded.name}-distill-data"
    with training_threads(loaded.threads):
        return run_pipeline(partial, load_device(loaded.device), run_dir, fresh=fresh, show_progress=show_progress)
