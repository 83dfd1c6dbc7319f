"""Write a run's report files: ``report.json``, ``report.md``, ``report.html`` and the plots.

The report stage calls :func:`write_run_report` with the stage records before it;
:func:`rebuild_report` (``edgekd report RUN_DIR``) does the same from a run directory alone,
without re-running anything.

Every file is first written in a staging directory (the report stage's ``.NN-report.partial/``, or
``.report.partial/`` for a rebuild) and then renamed into the run directory, so a process killed
while plotting or writing leaves no temporary file at the top of the run directory. They are listed in
``run.json`` before they are renamed there (:func:`~edgekd.rundir.note_outputs`); those an earlier report wrote that
this one does not (a latency plot, once the run has no profile stage) are removed after.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from edgekd.artifacts import Artifact
from edgekd.atomic import write_json, write_text
from edgekd.config.device import DeviceProfile
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.profile.cpu import detect_cpu
from edgekd.profile.record import LMProfileRecord, ProfiledModel, ProfileRecord, read_profile_record
from edgekd.report.build import build_report, last_record
from edgekd.report.config import REPORT
from edgekd.report.dataset_distill import draw_dataset_distill_plots
from edgekd.report.document import Document
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.plots import (
    plot_accuracy_latency,
    plot_latency_distribution,
    plot_search_pareto,
    plot_size_per_stage,
)
from edgekd.report.record import RunReport, check_report
from edgekd.report.sections import run_document
from edgekd.rundir import claimed, note_outputs, recorded_outputs, remove_outputs

PLOT_FILES = {"accuracy_vs_latency": "accuracy_vs_latency.png", "size_per_stage": "size_per_stage.png",
              "latency_distribution": "latency_distribution.png", "search_pareto": "search_pareto.png"}


REBUILD_STAGING = ".report.partial"


def write_run_report(run_dir: Path, recipe: Recipe, device: DeviceProfile, artifact: Artifact,
                     records: list[dict[str, Any]], staging: Path | None = None) -> RunReport:
    """Write the report of a run whose finished stages are ``records``; returns ``report.json``'s content, typed.

    Its ``files`` lists the names of every file written (to ``run_dir``). The files are made in ``staging``
    (a directory on the same filesystem; default ``run_dir/.report.partial``, removed afterwards) and renamed
    into ``run_dir`` one by one once all of them are complete.
    """
    owned = staging is None
    staging = Path(run_dir) / REBUILD_STAGING if staging is None else Path(staging)
    if owned:
        shutil.rmtree(staging, ignore_errors=True)  # what a killed rebuild left
    staging.mkdir(parents=True, exist_ok=True)
    report = check_report(build_report(recipe, device, artifact, records, measured_cpu(records)))
    report.plots = {**_draw_plots(report, records, staging),
                    **draw_dataset_distill_plots(report.dataset_distill, Path(run_dir), staging)}
    report.files = document_files("report", report.plots)
    write_documents(staging, "report", run_document(report), report.to_json())
    note_outputs(Path(run_dir), add=report.files)  # listed before they are there: a kill leaves none unlisted
    for name in report.files:
        os.replace(staging / name, Path(run_dir) / name)
    _remove_earlier_files(Path(run_dir), report.files)
    if owned:
        shutil.rmtree(staging)
    return report


def _remove_earlier_files(run_dir: Path, files: list[str]) -> None:
    """Delete the report files an earlier report of ``run_dir`` wrote that this one, ``files``, does not replace (a
    latency plot, once the recipe has no profile stage): the directory's report files are all of one report."""
    earlier = [name for name in recorded_outputs(run_dir) or [] if REPORT.writes(name) and name not in files]
    note_outputs(run_dir, drop=remove_outputs(run_dir, earlier))


def document_files(stem: str, plots: dict[str, str]) -> list[str]:
    """The files :func:`write_documents` leaves for ``stem``: its JSON, Markdown and HTML, then the ``plots``."""
    return [f"{stem}.json", f"{stem}.md", f"{stem}.html", *plots.values()]


def write_documents(out_dir: Path, stem: str, document: Document, record: dict[str, Any]) -> None:
    """Write ``<stem>.md`` and ``<stem>.html`` of ``document``, then ``record`` (the JSON) as ``<stem>.json``."""
    write_text(out_dir / f"{stem}.md", render_markdown(document))
    write_text(out_dir / f"{stem}.html", render_html(document, out_dir))
    write_json(out_dir / f"{stem}.json", record)


def rebuild_report(run_dir: Path) -> list[Path]:
    """Rebuild the report files of a finished (or partly finished) run directory; returns their paths."""
    from edgekd.pipeline import damaged_stage, load_run
    from edgekd.run_plan import check_recipe_matches

    run_dir = Path(run_dir)
    load_run(run_dir)  # a directory that is not a run is refused before anything (a lock file) is written in it
    with claimed(run_dir):  # and a run's report is not rebuilt while that run is writing into the directory
        recipe, device, records = load_run(run_dir)
        damaged = damaged_stage(run_dir)
        if damaged is not None:  # its stage and those after it would be left out of the report, silently
            raise ConfigError(f"{run_dir}: cannot rebuild the report: {damaged}; run the recipe again into this "
                              "directory (it redoes that stage and the report); the report files are kept as they were")
        check_recipe_matches(run_dir, recipe, device, records, "cannot rebuild the report (its files are kept)")
        records = [r for r in records if r["stage"] != "report"]
        if not records:
            raise ConfigError(f"{run_dir}: no finished stage to report on (run the recipe first)")
        artifact = Artifact.from_json(records[-1]["artifact"])
        return [run_dir / name for name in write_run_report(run_dir, recipe, device, artifact, records).files]


def measured_cpu(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The CPU the run's latencies were measured on (from its profile stage), else this machine's."""
    profile = _profile(records)
    cpu = profile.cpu if profile is not None else None
    return (cpu or detect_cpu()).to_json()


def _profile(records: list[dict[str, Any]]) -> ProfileRecord | LMProfileRecord | None:
    """The run's last profile stage's record, if it has one."""
    record = last_record(records, "profile")
    return read_profile_record(record) if record is not None else None


def _draw_plots(report: RunReport, records: list[dict[str, Any]], run_dir: Path) -> dict[str, str]:
    limits, final = report.budget.limits, report.final_model
    profile = _profile(records)
    figures = profile.models.get(final) if profile is not None and final else None
    times = list(figures.times_ms) if isinstance(figures, ProfiledModel) else []
    final_figures = report.figures(final)
    estimate = " (estimate)" if final_figures is not None and final_figures.estimate else ""
    written = {
        "accuracy_vs_latency": plot_accuracy_latency(report, run_dir / PLOT_FILES["accuracy_vs_latency"]),
        "size_per_stage": plot_size_per_stage(_sizes(report), limits.size_mb,
                                              run_dir / PLOT_FILES["size_per_stage"]),
        "latency_distribution": plot_latency_distribution(
            {final: times} if final else {}, limits.p90_ms,
            f"latency per run on {report.device.name} (ms){estimate}",
            run_dir / PLOT_FILES["latency_distribution"]),
        "search_pareto": plot_search_pareto(report.search, report.figures("teacher"),
                                            run_dir / PLOT_FILES["search_pareto"]) if report.search else None,
    }
    return {key: path.name for key, path in written.items() if path is not None}


def _sizes(report: RunReport) -> list[tuple[str, float]]:
    """(``stage: model``, MB) for each stage that wrote a model file, and the bundle's model file."""
    sizes: list[tuple[str, float]] = []
    last: dict[str, float] = {}
    for row in report.stages:
        for role in row.changed:
            figures = row.models.get(role)
            size = figures.size_mb if figures is not None else None
            if size is not None and size != last.get(role):
                sizes.append((f"{row.stage}\n{role}", size))
                last[role] = size
    if report.bundle is not None:
        bundle = report.bundle
        sizes.append((f"bundle\n{bundle.role} {bundle.model_file}", bundle.files[bundle.model_file].bytes / 2**20))
    return sizes
