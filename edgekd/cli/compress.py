"""``edgekd compress``: the budget search (latency table, trained candidates, the choice) and its printout."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgekd.cli.common import (
    BudgetOpt,
    DeviceOpt,
    JsonOpt,
    QuietOpt,
    RecipeArg,
    SetOpt,
    ThreadsOpt,
    add_columns,
    api,
    handle_errors,
)
from edgekd.cli.run import print_run, run_json
from edgekd.console import out, print_json, shown
from edgekd.report.document import fmt
from edgekd.report.search_section import LM_TRAINED_COLUMNS, lm_trained_rows
from edgekd.search.record import LMSearchRecord

if TYPE_CHECKING:
    from edgekd.search.compress import CompressResult


@handle_errors
def compress(
    recipe: RecipeArg,
    device: DeviceOpt = None,
    budget_ms: BudgetOpt = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default runs/<recipe name>-search).")] = None,
    threads: ThreadsOpt = None,
    fresh: Annotated[bool, typer.Option(
        "--fresh", help="Time the latency table again and ignore finished stages of an earlier run.")] = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
    overrides: SetOpt = None,
) -> None:
    """Find the most accurate student that fits a device's budget: latency table first, training second.

    Candidates (the recipe's search stage, or a default grid around its student) are timed with random weights.

    Those over budget are dropped; the largest feasible ones are distilled; the most accurate within budget wins.

    Example: edgekd compress demo-digits --device host-cpu --budget-ms 0.02
    """
    result = api().compress(recipe, device=device, budget_ms=budget_ms, out=out_dir, threads=threads, fresh=fresh,
                            show_progress=not (quiet or as_json), overrides=overrides)
    if as_json:
        print_json({**run_json(result.run), "table": result.table.to_json(), "search": result.search().to_json()})
        return
    _print_search(result)
    print_run(result.run, as_json=False)


def _print_search(result: CompressResult) -> None:
    """The latency table's origin, the trained candidates and the choice of a search run."""
    table = result.table
    out.print(f"latency table: {table.entries} candidates, "
              + (f"{table.profiled} timed now in {table.seconds:.1f} s, " if table.profiled else "")
              + f"{table.reused} from the cache ({shown(table.path)})", soft_wrap=True)
    search = result.search()
    if isinstance(search, LMSearchRecord):
        _print_lm_search(search, table.entries)
        return
    trained = Table(title=f"trained candidates ({search.table.feasible} of {table.entries} fit the budget "
                          f"p90 {search.budget.p90_ms:g} ms on {shown(search.device)})")
    add_columns(trained, ("candidate", f"val {search.metric}", f"test {search.metric}", "p90 ms", "size MB", "verdict"),
                left=("candidate",))
    for m in search.measured:
        trained.add_row(shown(m.label), fmt(m.val_score, "{:.4f}"), fmt(m.score, "{:.4f}"), f"{m.p90_ms:.3f}",
                        f"{m.size_mb:.3f}", m.verdict)
    out.print(trained)
    out.print(f"chosen: [bold]{shown(search.chosen.label)}[/] — p90 {search.chosen.confirmed.p90_ms:.3f} ms on "
              f"re-profile" + (" (estimate)" if search.estimate else ""), soft_wrap=True)


def _print_lm_search(search: LMSearchRecord, entries: int) -> None:
    """A causal-LM search's trained candidates (per-token figures, validation loss) and its choice."""
    trained = Table(title=f"trained candidates ({search.table.feasible} of {entries} fit the budget "
                          f"{search.per_token_limit_ms:g} ms per token on {shown(search.device)}; chosen by "
                          f"{search.metric.description})")
    add_columns(trained, LM_TRAINED_COLUMNS, left=LM_TRAINED_COLUMNS[:1])
    for row in lm_trained_rows(search):
        trained.add_row(shown(row[0]), *row[1:])
    out.print(trained)
    out.print(f"chosen: [bold]{shown(search.chosen.label)}[/] — {search.chosen.confirmed.p90_ms:.3f} "
              "ms per token p90 on re-measurement" + (" (estimate)" if search.estimate else ""), soft_wrap=True)
