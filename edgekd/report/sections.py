"""The run report as a :class:`Document`, built from the typed ``report.json`` (:class:`RunReport`) alone.

Sections: the verdict and an overview, the models side by side, the budget checks, a budget
search's table and choice, dataset distillation's synthetic sets and scores
(:mod:`edgekd.report.dataset_distill`), a row per stage, the plots, where the final model's time goes
(onnxruntime operators), the mobile bundle, warnings and notes, and the recipe and device profile
in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from edgekd.config.device import DeviceProfile
from edgekd.export.bundle_record import BundleRecord
from edgekd.profile.cpu import CpuInfo
from edgekd.profile.operators import OperatorTime
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.report.dataset_distill import dataset_distill_section
from edgekd.report.document import (
    Block,
    Bullets,
    Code,
    Document,
    Figure,
    Paragraph,
    Section,
    Table,
    Verdict,
    fmt,
    si,
)
from edgekd.report.record import RunReport, StageFigures, StageRow
from edgekd.report.search_section import search_section

#: Rows of the models table: report key, label, format.
MODEL_ROWS = (
    ("accuracy", "accuracy (test)", "{:.4f}"),
    ("task", "task", "{}"),
    ("micro_f1", "micro-F1 (test)", "{:.4f}"),
    ("macro_f1", "macro-F1 (test)", "{:.4f}"),
    ("mse", "MSE (test, lower is better)", "{:.4f}"),
    ("pearson", "Pearson r (test)", "{:.4f}"),
    ("spearman", "Spearman rho (test)", "{:.4f}"),
    ("token_accuracy", "token accuracy (test)", "{:.4f}"),
    ("entity_micro_f1", "entity micro-F1 (test, BIO spans)", "{:.4f}"),
    ("val_loss", "validation loss (nats/token)", "{:.4f}"),
    ("perplexity", "validation perplexity", "{:.3f}"),
    ("params", "parameters", "{:,}"),
    ("macs", "MACs per inference", None),
    ("size_mb", "ONNX size (MB)", "{:.3f}"),
    ("p50_ms", "p50 latency (ms)", "{:.3f}"),
    ("p90_ms", "p90 latency (ms)", "{:.3f}"),
    ("p99_ms", "p99 latency (ms)", "{:.3f}"),
    ("time_to_first_token_ms", "time to first token (ms)", "{:.3f}"),
    ("per_token_p50_ms", "per-token p50 latency (ms)", "{:.3f}"),
    ("per_token_p90_ms", "per-token p90 latency (ms)", "{:.3f}"),
    ("tokens_per_second", "tokens per second", "{:.0f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.1f}"),
    ("parity_max_abs_diff", "ONNX vs PyTorch max abs diff", "{:.2e}"),
    ("precision", "precision kept by quantize", "{}"),
)
#: Captions of the plots, by their key in ``report["plots"]``.
PLOT_CAPTIONS = {
    "accuracy_vs_latency": "Accuracy vs p90 latency of each model; the dashed line is the budget.",
    "size_per_stage": "Model file size after each stage that wrote a model.",
    "latency_distribution": "Per-run latency of the final model: p50 (solid), p90 (dashed), p99 (dotted).",
}
TOP_OPERATORS = 10
FORMAT_NAMES = {"ort": "ONNX Runtime Mobile .ort model", "onnx": "ONNX model"}


def model_cell(value: Any, pattern: str | None) -> str:
    """One model figure formatted for a table (MACs with an SI suffix)."""
    return si(value) if pattern is None else fmt(value, pattern)


#: What the operator tables' times are (the run and bench reports).
PROFILER_NOTE = ("Times are host times under onnxruntime's profiler, whose own recording adds to every kernel, so on a "
                 "small model they add up to more than the latency measured without it: compare operators by their "
                 "share, which carries over to the device.")


def operators_table(operators: Sequence[OperatorTime], limit: int = TOP_OPERATORS) -> Table:
    """The largest ``limit`` operator types of an onnxruntime profile: nodes, profiled host ms per run, share."""
    return Table(("operator", "nodes", "profiled ms / run", "share of kernel time"),
                 tuple((op.op_type, str(op.nodes), f"{op.ms_per_run:.4f}", f"{op.share * 100:.1f}%")
                       for op in operators[:limit]))


def run_document(report: RunReport) -> Document:
    """The run report's content, for every renderer."""
    recipe = report.recipe
    sections = [_models(report), _budget(report.budget),
                search_section(report.search, report.plots.get("search_pareto")),
                dataset_distill_section(report.dataset_distill, report.plots), _stages(report.stages),
                _plots(report.plots), _operators(report.operators, report.final_model), _bundle(report.bundle),
                _warnings(report), _setup(report)]
    return Document(
        title=f"edgekd report: {recipe['name']}",
        intro=tuple(b for b in (Paragraph(recipe["description"]) if recipe.get("description") else None,
                                _verdict(report), _overview(report)) if b is not None),
        sections=tuple(s for s in sections if s is not None),
    )


def device_line(device: DeviceProfile) -> str:
    """``Device profile: name — description``."""
    return f"Device profile: {device.name}" + (f" — {device.description}" if device.description else "")


def cpu_line(cpu: CpuInfo) -> str:
    """A CPU as brand, architecture, cores and the instruction-set features that matter."""
    return f"{cpu.brand} ({cpu.arch}, {cpu.physical_cores} cores; ISA: {', '.join(cpu.isa) or 'n/a'})"


def _verdict(report: RunReport) -> Verdict:
    budget, device = report.budget, report.device
    note = f"on {device.name}"
    if report.final_model and budget.measured:
        note = f"for the {report.final_model} on {device.name}"
        if budget.estimate:
            note += " (latency is an estimate from a host→device speed ratio)"
    return Verdict("Verdict", budget.verdict, note)


def _overview(report: RunReport) -> Bullets:
    recipe = report.recipe
    stages = " → ".join(row.stage for row in report.stages)
    items = [
        device_line(report.device),
        f"Measured on: {cpu_line(report.cpu)}",
        f"Recipe: {recipe['name']}, seed {recipe['seed']}; stages {stages or 'none'}",
        f"Final model: {report.final_model or '–'}",
        f"edgekd {report.edgekd_version}",
    ]
    return Bullets(tuple(items))


def _models(report: RunReport) -> Section:
    models = report.models()
    table = Table(("", *models), tuple((label, *[model_cell(getattr(f, key), pattern) for f in models.values()])
                                       for key, label, pattern in MODEL_ROWS
                                       if any(getattr(f, key) is not None for f in models.values())))
    blocks: list[Block] = [table]
    ratios = report.comparison.model_dump(exclude_none=True) if report.comparison is not None else {}
    if ratios:  # a classifier has no loss or per-token ratios, models timed at other batches no latency ratios
        blocks.append(Paragraph("Student / teacher: " + ", ".join(
            f"{name.replace('_', ' ')} {fmt(value, '{:.3f}')}" for name, value in ratios.items())))
    return Section("Models", tuple(blocks))


def _budget(budget: BudgetVerdict) -> Section:
    if not budget.measured:
        return Section("Budget", (Verdict("Verdict", budget.verdict), Paragraph(budget.reason or "")))
    rows = tuple((c.name, f"{c.value:.3f} {c.unit}", f"{c.limit:.3f} {c.unit}", "pass" if c.passed else "fail")
                 for c in budget.checks)
    judged = f"Judged: the {budget.judged}." if budget.judged else ""
    return Section("Budget", (Verdict("Verdict", budget.verdict, judged),
                              Table(("limit", "measured", "budget", "result"), rows)))


def _stages(stages: list[StageRow]) -> Section:
    rows = []
    for row in stages:
        roles = row.changed or [None]
        for position, role in enumerate(roles):
            figures = row.models.get(role) if role else None
            figures = figures if figures is not None else StageFigures()
            first = position == 0
            rows.append((
                str(row.index) if first else "", row.stage if first else "", role or "–",
                fmt(figures.accuracy, "{:.4f}"), fmt(figures.params, "{:,}"), si(figures.macs),
                fmt(figures.size_mb, "{:.3f}"), fmt(figures.p50_ms, "{:.3f}"),
                fmt(figures.p90_ms, "{:.3f}"), fmt(figures.p99_ms, "{:.3f}"),
                fmt(figures.peak_memory_mb, "{:.1f}"), fmt(row.wall_seconds, "{:.1f}") if first else "",
                fmt(figures.budget_verdict),
            ))
    headers = ("#", "stage", "model", "accuracy", "params", "MACs", "size (MB)", "p50 (ms)", "p90 (ms)",
               "p99 (ms)", "peak mem (MB)", "wall time (s)", "verdict")
    note = Paragraph("One row per model a stage produced or measured; figures are those of the model after the stage.")
    return Section("Stages", (Table(headers, tuple(rows)), note))


def _plots(plots: dict[str, str]) -> Section | None:
    figures = tuple(Figure(file, PLOT_CAPTIONS[key]) for key, file in plots.items() if key in PLOT_CAPTIONS)
    return Section("Plots", figures) if figures else None


def _operators(operators: list[OperatorTime], final_model: str | None) -> Section | None:
    if not operators:
        return None
    note = Paragraph(f"onnxruntime's profiler on the final model ({final_model}), after its graph "
                     f"optimizations, on this machine with the device's threads and shapes. {PROFILER_NOTE}")
    return Section("Top operators", (operators_table(operators), note))


def _bundle(bundle: BundleRecord | None) -> Section | None:
    if bundle is None:
        return None
    rows = tuple((name, f"{file.bytes:,}", file.sha256) for name, file in bundle.files.items())
    intro = Paragraph(f"The {bundle.role} packed for Android/iOS apps ({FORMAT_NAMES[bundle.format]}): "
                      f"{bundle.directory}/ and {bundle.zip} ({fmt(bundle.zip_bytes, '{:,}')} bytes), "
                      "with manifest.json and a README for app developers.")
    return Section("Mobile bundle", (intro, Table(("file", "bytes", "sha256"), rows)))


def _warnings(report: RunReport) -> Section | None:
    decisions = [decision.line() for decision in report.quantization]
    blocks: list[Block] = []
    if report.warnings:
        blocks.append(Bullets(tuple(report.warnings), tone="warning"))
    if report.notes or decisions:
        blocks.append(Bullets(tuple([*report.notes, *decisions])))
    return Section("Warnings and notes", tuple(blocks)) if blocks else None


def _setup(report: RunReport) -> Section:
    return Section("Recipe and device profile", (
        Code("recipe (as run)", yaml_text(report.recipe), "yaml"),
        Code(f"device profile {report.device.name}", yaml_text(report.device.model_dump(mode="json")), "yaml"),
        Code("CPU measured on", yaml_text(report.cpu.to_json()), "yaml"),
    ))


def yaml_text(data: Any) -> str:
    """``data`` as block-style YAML in its own key order (for recipes and device profiles)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
