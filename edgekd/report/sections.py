"""The run report as a :class:`Document`, built from ``report.json`` alone (plus the plot file names).

Sections: the verdict and an overview, the models side by side, the budget checks, a budget
search's table and choice, dataset distillation's synthetic sets and scores
(:mod:`edgekd.report.dataset_distill`), a row per stage, the plots, where the final model's time goes
(onnxruntime operators), the mobile bundle, warnings and notes, and the recipe and device profile
in full.
"""

from __future__ import annotations

from typing import Any

import yaml

from edgekd.export.bundle_record import BundleRecord
from edgekd.profile.operators import OperatorTime
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.quantize.record import QuantizationDecision
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


def operators_table(operators: list[dict[str, Any]], limit: int = TOP_OPERATORS) -> Table:
    """The largest ``limit`` operator types of an onnxruntime profile (its :class:`OperatorTime` records): nodes,
    host ms per run, share."""
    rows = [OperatorTime.model_validate(op) for op in operators[:limit]]
    return Table(("operator", "nodes", "host ms / run", "share of kernel time"),
                 tuple((op.op_type, str(op.nodes), f"{op.ms_per_run:.4f}", f"{op.share * 100:.1f}%") for op in rows))


def run_document(report: dict[str, Any]) -> Document:
    """The run report's content, for every renderer."""
    recipe = report["recipe"]
    sections = [_models(report), _budget(report), search_section(report), dataset_distill_section(report),
                _stages(report),
                _plots(report.get("plots", {})),
                _operators(report), _bundle(report.get("bundle")), _warnings(report), _setup(report)]
    return Document(
        title=f"edgekd report: {recipe['name']}",
        intro=tuple(b for b in (Paragraph(recipe["description"]) if recipe.get("description") else None,
                                _verdict(report), _overview(report)) if b is not None),
        sections=tuple(s for s in sections if s is not None),
    )


def device_line(device: dict[str, Any]) -> str:
    """``Device profile: name — description``."""
    return f"Device profile: {device['name']}" + (f" — {device['description']}" if device.get("description") else "")


def cpu_line(cpu: dict[str, Any]) -> str:
    """A CPU as brand, architecture, cores and the instruction-set features that matter."""
    return (f"{cpu.get('brand', '?')} ({cpu.get('arch', '?')}, {cpu.get('physical_cores', '?')} cores; "
            f"ISA: {', '.join(cpu.get('isa', [])) or 'n/a'})")


def _verdict(report: dict[str, Any]) -> Verdict:
    budget, device = BudgetVerdict.model_validate(report["budget"]), report["device"]
    note = f"on {device['name']}"
    if report.get("final_model") and budget.measured:
        note = f"for the {report['final_model']} on {device['name']}"
        if budget.estimate:
            note += " (latency is an estimate from a host→device speed ratio)"
    return Verdict("Verdict", budget.verdict, note)


def _overview(report: dict[str, Any]) -> Bullets:
    device, cpu, recipe = report["device"], report["cpu"], report["recipe"]
    stages = " → ".join(row["stage"] for row in report["stages"])
    items = [
        device_line(device),
        f"Measured on: {cpu_line(cpu)}",
        f"Recipe: {recipe['name']}, seed {recipe['seed']}; stages {stages or 'none'}",
        f"Final model: {report.get('final_model') or '–'}",
        f"edgekd {report['edgekd_version']}",
    ]
    return Bullets(tuple(items))


def _models(report: dict[str, Any]) -> Section:
    roles = [r for r in report.get("roles", ("teacher", "student")) if r in report]
    table = Table(("", *roles), tuple((label, *[model_cell(report[r].get(key), pattern) for r in roles])
                                      for key, label, pattern in MODEL_ROWS
                                      if any(report[r].get(key) is not None for r in roles)))
    blocks: list[Block] = [table]
    comparison = report.get("comparison")
    if comparison:
        blocks.append(Paragraph("Student / teacher: " + ", ".join(
            f"{name.replace('_', ' ')} {fmt(value, '{:.3f}')}" for name, value in comparison.items())))
    return Section("Models", tuple(blocks))


def _budget(report: dict[str, Any]) -> Section:
    budget = BudgetVerdict.model_validate(report["budget"])
    if not budget.measured:
        return Section("Budget", (Verdict("Verdict", budget.verdict), Paragraph(budget.reason or "")))
    rows = tuple((c.name, f"{c.value:.3f} {c.unit}", f"{c.limit:.3f} {c.unit}", "pass" if c.passed else "fail")
                 for c in budget.checks)
    judged = f"Judged: the {budget.judged}." if budget.judged else ""
    return Section("Budget", (Verdict("Verdict", budget.verdict, judged),
                              Table(("limit", "measured", "budget", "result"), rows)))


def _stages(report: dict[str, Any]) -> Section:
    rows = []
    for row in report["stages"]:
        roles = row["changed"] or [None]
        for position, role in enumerate(roles):
            figures = row["models"].get(role, {}) if role else {}
            first = position == 0
            rows.append((
                str(row["index"]) if first else "", row["stage"] if first else "", role or "–",
                fmt(figures.get("accuracy"), "{:.4f}"), fmt(figures.get("params"), "{:,}"), si(figures.get("macs")),
                fmt(figures.get("size_mb"), "{:.3f}"), fmt(figures.get("p50_ms"), "{:.3f}"),
                fmt(figures.get("p90_ms"), "{:.3f}"), fmt(figures.get("p99_ms"), "{:.3f}"),
                fmt(figures.get("peak_memory_mb"), "{:.1f}"), fmt(row["wall_seconds"], "{:.1f}") if first else "",
                fmt(figures.get("budget_verdict")),
            ))
    headers = ("#", "stage", "model", "accuracy", "params", "MACs", "size (MB)", "p50 (ms)", "p90 (ms)",
               "p99 (ms)", "peak mem (MB)", "wall time (s)", "verdict")
    note = Paragraph("One row per model a stage produced or measured; figures are those of the model after the stage.")
    return Section("Stages", (Table(headers, tuple(rows)), note))


def _plots(plots: dict[str, str]) -> Section | None:
    figures = tuple(Figure(file, PLOT_CAPTIONS[key]) for key, file in plots.items() if key in PLOT_CAPTIONS)
    return Section("Plots", figures) if figures else None


def _operators(report: dict[str, Any]) -> Section | None:
    operators = report.get("operators") or []
    if not operators:
        return None
    note = Paragraph(f"onnxruntime's profiler on the final model ({report['final_model']}), after its graph "
                     "optimizations, on this machine with the device's threads and shapes; times are host times "
                     "(their shares carry over to the device).")
    return Section("Top operators", (operators_table(operators), note))


def _bundle(entry: dict[str, Any] | None) -> Section | None:
    if entry is None:
        return None
    bundle = BundleRecord.model_validate(entry)
    rows = tuple((name, f"{file.bytes:,}", file.sha256) for name, file in bundle.files.items())
    intro = Paragraph(f"The {bundle.role} packed for Android/iOS apps ({FORMAT_NAMES[bundle.format]}): "
                      f"{bundle.directory}/ and {bundle.zip} ({fmt(bundle.zip_bytes, '{:,}')} bytes), "
                      "with manifest.json and a README for app developers.")
    return Section("Mobile bundle", (intro, Table(("file", "bytes", "sha256"), rows)))


def _warnings(report: dict[str, Any]) -> Section | None:
    decisions = [QuantizationDecision.model_validate(d).line() for d in report.get("quantization", [])]
    blocks: list[Block] = []
    if report["warnings"]:
        blocks.append(Bullets(tuple(report["warnings"]), tone="warning"))
    if report.get("notes") or decisions:
        blocks.append(Bullets(tuple([*report.get("notes", []), *decisions])))
    return Section("Warnings and notes", tuple(blocks)) if blocks else None


def _setup(report: dict[str, Any]) -> Section:
    return Section("Recipe and device profile", (
        Code("recipe (as run)", yaml_text(report["recipe"]), "yaml"),
        Code(f"device profile {report['device']['name']}", yaml_text(report["device"]), "yaml"),
        Code("CPU measured on", yaml_text(report["cpu"]), "yaml"),
    ))


def yaml_text(data: Any) -> str:
    """``data`` as block-style YAML in its own key order (for recipes and device profiles)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
