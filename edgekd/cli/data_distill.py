"""``edgekd distill-data``: a recipe's synthetic training set, learnt and compared with real subsets."""

from __future__ import annotations

from rich.table import Table

from edgekd.cli.common import FreshOpt, OutOpt, QuietOpt, RecipeArg, SetOpt, handle_errors
from edgekd.console import out


@handle_errors
def distill_data(recipe: RecipeArg, out_dir: OutOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False,
                 overrides: SetOpt = None) -> None:
    """Learn a recipe's synthetic training set (its dataset_distill stage) and compare it with real subsets.

    Example: edgekd distill-data pipelines/digits-dataset-distill.yaml --out runs/digits-dd
    """
    from edgekd.dataset_distill.api import distill_data as run_distill_data
    from edgekd.report.dataset_distill import dataset_distill_summary, steps_text
    from edgekd.report.record import DatasetDistillRun

    result = run_distill_data(recipe, out=out_dir, fresh=fresh, show_progress=not quiet, overrides=overrides)
    (learnt,) = (DatasetDistillRun.model_validate(entry) for entry in dataset_distill_summary([result.stages[-1].data]))
    table = Table(title=f"{learnt.method}, {learnt.images_per_class} per class "
                        f"({learnt.distill_seconds:.1f} s): test accuracy of fresh models")
    for column in ("training set", "mean", "std", "steps"):
        table.add_column(column)
    for name, score in learnt.accuracy.items():
        table.add_row(name, f"{score.mean:.4f}", f"{score.std:.4f}", steps_text(score))
    out.print(table)
    out.print(f"synthetic set: {result.run_dir / learnt.synthetic_set}")
