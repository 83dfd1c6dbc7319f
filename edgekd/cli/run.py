"""``edgekd run``, ``validate`` and ``report``: running a recipe (or planning it with --dry-run), checking one,
rebuilding a run's report; and the printout of a finished run that ``demo`` and ``compress`` share."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from edgekd import catalog
from edgekd.cli.common import (
    BudgetOpt,
    DeviceOpt,
    FreshOpt,
    JsonOpt,
    OutOpt,
    QuietOpt,
    RecipeArg,
    SetOpt,
    ThreadsOpt,
    api,
    handle_errors,
)
from edgekd.console import out, print_json, shown
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from edgekd.pipeline import RunResult

T = TypeVar("T")


@handle_errors
def run(recipe: RecipeArg, device: DeviceOpt = None, out_dir: OutOpt = None, budget_ms: BudgetOpt = None,
        threads: ThreadsOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False, as_json: JsonOpt = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Only say which stages would be cached, run or re-run (and what changed).")] = False,
        overrides: SetOpt = None) -> None:
    """Run a recipe's stages; finished stages of an earlier run are skipped.

    Example: edgekd run pipelines/demo-digits.yaml --device host-cpu --out runs/demo --set stages.teacher.epochs=2
    """
    if dry_run:
        plans = api().plan(recipe, device=device, out=out_dir, budget_ms=budget_ms, fresh=fresh,
                           overrides=overrides)
        if as_json:
            print_json([stage.to_json() for stage in plans])
            return
        for stage in plans:
            out.print(shown(stage.describe()), highlight=False)
        return
    run_and_print(recipe, device=device, out_dir=out_dir, budget_ms=budget_ms, threads=threads, fresh=fresh,
                  quiet=quiet, as_json=as_json, overrides=overrides)


def run_and_print(recipe: str, *, out_dir: Path | None, threads: int | str | None, fresh: bool, quiet: bool,
                  as_json: bool, device: str | None = None, budget_ms: float | None = None,
                  overrides: list[str] | None = None) -> None:
    """Run a recipe through the API and print it (see :func:`print_run`): ``edgekd run`` and ``edgekd demo``.
    Only the main process of a data-parallel run prints."""
    result = api().run(recipe, device=device, out=out_dir, budget_ms=budget_ms, threads=threads, fresh=fresh,
                       show_progress=not (quiet or as_json), overrides=overrides)
    if result.is_main_process:
        print_run(result, as_json)


@handle_errors
def validate(recipe: RecipeArg, device: DeviceOpt = None, budget_ms: BudgetOpt = None,
             as_json: JsonOpt = False, overrides: SetOpt = None) -> None:
    """Check a recipe (keys, types, names, stage order, files) without running it; with --device or --budget-ms,
    against the device and budget a run would be given.

    Example: edgekd validate pipelines/demo-digits.yaml --device android-midrange-cpu
    """
    loaded = api().validate(recipe, device=device, budget_ms=budget_ms, overrides=overrides)
    checked = device or str(loaded.device)
    if as_json:
        print_json({"ok": True, "recipe": loaded.name, "source": str(catalog.find("pipelines", recipe)),
                    "stages": loaded.stage_names(), "device": checked})
        return
    out.print(f"[green]ok[/]: recipe '{shown(loaded.name)}' with stages {', '.join(loaded.stage_names())} "
              f"on device '{shown(checked)}'", soft_wrap=True)


@handle_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory (edgekd run/demo --out).")],
           as_json: JsonOpt = False) -> None:
    """Rebuild a run's report.json, report.md, report.html and plots from its records, re-running nothing.

    Example: edgekd report runs/demo
    """
    paths = api().report(run_dir)
    if as_json:
        print_json({"run_dir": str(run_dir), "files": [str(path) for path in paths]})
        return
    for path in paths:
        out.print(f"wrote {shown(path)}", soft_wrap=True)


def run_json(result: RunResult) -> dict[str, Any]:
    """A run's stages and, when it has one, its report.json, as one JSON-ready mapping."""
    stages = [{"index": r.index, "stage": r.stage, "directory": r.directory, "skipped": r.skipped,
               "wall_seconds": r.wall_seconds} for r in result.stages]
    return {"run_dir": str(result.run_dir), "stages": stages, "report": _own_report(result.report)}


def _own_report(read: Callable[[], T]) -> T | None:
    """``read()`` of a run's report.json, or None when the run has no report of its own (no report stage, or the
    file an earlier run of the directory left, built from stages since replaced: both a ConfigError); a damaged
    file still raises its StorageError."""
    try:
        return read()
    except ConfigError:
        return None


def print_run(result: RunResult, as_json: bool) -> None:
    """The run's stage table and, when it has a report, the teacher/student summary and budget verdict."""
    if as_json:
        print_json(run_json(result))
        return
    table = Table(title=f"run {shown(result.run_dir)}")
    for column in ("#", "stage", "status", "seconds"):
        table.add_column(column)
    for record in result.stages:
        status = "[dim]skipped (cached)[/]" if record.skipped else "[green]ran[/]"
        table.add_row(str(record.index), record.stage, status, f"{record.wall_seconds:.1f}")
    out.print(table)
    report = _own_report(result.report_record)
    if report is None:
        return
    summary = Table(title="teacher vs student")
    summary.add_column("")
    models = {role: figures for role in ("teacher", "student") if (figures := report.figures(role)) is not None}
    for role in models:
        summary.add_column(role, justify="right")
    rows = ((("val_loss", "{:.4f}"), ("perplexity", "{:.3f}"), ("params", "{:,}"), ("size_mb", "{:.3f}"),
             ("time_to_first_token_ms", "{:.3f}"), ("per_token_p50_ms", "{:.3f}"), ("per_token_p90_ms", "{:.3f}"),
             ("tokens_per_second", "{:.0f}"))
            if any(figures.task == "causal_lm" for figures in models.values()) else
            (("accuracy", "{:.4f}"), ("params", "{:,}"), ("size_mb", "{:.3f}"), ("p50_ms", "{:.3f}"),
             ("p90_ms", "{:.3f}")))
    for field, pattern in rows:
        summary.add_row(field, *["–" if (value := getattr(figures, field)) is None else pattern.format(value)
                                 for figures in models.values()])
    out.print(summary)
    comparison = report.comparison
    if comparison is not None and comparison.p50_latency_ratio is not None:  # no accuracy ratio for regression
        ratios = (("accuracy", comparison.accuracy_ratio), ("p50 latency", comparison.p50_latency_ratio))
        out.print("student/teacher: " + ", ".join(f"{name} ratio {value:.3f}" for name, value in ratios
                                                  if value is not None), soft_wrap=True)
    budget = report.budget
    colour = "green" if budget.passed else "red"
    out.print(f"budget on {shown(report.device.name)}: [{colour}]{budget.verdict}[/]"
              + (" (latency estimated)" if budget.estimate else ""), soft_wrap=True)
    out.print(f"report: {shown(result.run_dir / 'report.html')} (and report.md)", soft_wrap=True)
    if (result.run_dir / "bundle.zip").is_file():
        out.print(f"mobile bundle: {shown(result.run_dir / 'bundle')} and bundle.zip", soft_wrap=True)
