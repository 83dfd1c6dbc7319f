"""The CPU benchmark report of ``edgekd bench``: several ONNX models side by side on one device profile.

Writes ``bench.json`` (the machine record: device, CPU, settings, every model's figures), and
``bench.md`` and ``bench.html`` from the same :class:`Document`, with a plot of the latency
distributions. The figures come from :func:`edgekd.profile.bench.bench_models`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.config.device import DeviceProfile
from edgekd.profile.inputs import batch_warning, length_warning
from edgekd.profile.stability import stability_warning
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.report.bench_record import BenchModel, BenchReport
from edgekd.report.document import Bullets, Code, Document, Figure, Paragraph, Section, Table, fmt, si
from edgekd.report.plots import plot_latency_distribution
from edgekd.report.sections import PROFILER_NOTE, cpu_line, device_line, operators_table, yaml_text
from edgekd.report.write import document_files, write_documents
from edgekd.version import __version__

LATENCY_PLOT = "bench_latency.png"
#: Rows of the side-by-side table: figure key, label, format (None: SI suffix).
BENCH_ROWS = (
    ("size_mb", "size (MB)", "{:.3f}"),
    ("params", "parameters", "{:,}"),
    ("macs", "MACs per inference", None),
    ("p50_ms", "p50 latency (ms)", "{:.4f}"),
    ("p90_ms", "p90 latency (ms)", "{:.4f}"),
    ("p99_ms", "p99 latency (ms)", "{:.4f}"),
    ("mean_ms", "mean latency (ms)", "{:.4f}"),
    ("min_ms", "min latency (ms)", "{:.4f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.1f}"),
    ("p50_vs_first", "p50 vs the first model", "{:.3f}×"),
    ("verdict", "budget verdict", "{}"),
)
TOP_OPERATORS = 5
BENCH_RECORD = "bench.json"
"""The record ``edgekd bench`` writes into its ``--out``; it marks the directory as an earlier bench's."""


def write_bench_report(models: list[dict[str, Any]], device: DeviceProfile, cpu: dict[str, Any],
                       settings: dict[str, Any], out_dir: Path) -> BenchReport:
    """Write the benchmark report of ``models`` (from ``bench_models``) to ``out_dir``; returns its typed record
    (:meth:`BenchReport.to_json` is bench.json's content)."""
    out_dir = Path(out_dir)
    names = display_names([Path(m["model"]) for m in models])
    baseline = models[0]["p50_ms"]
    rows = []
    for name, figures in zip(names, models, strict=True):
        budget = BudgetVerdict.model_validate(figures["budget"])
        rows.append(BenchModel.model_validate({**figures, "name": name, "budget": budget, "verdict": budget.verdict,
                                               "p50_vs_first": figures["p50_ms"] / baseline if baseline else None}))
    estimate = any(m.estimate for m in rows)
    report = BenchReport(
        edgekd_version=__version__, command="bench", device=device.model_dump(mode="json"), cpu=cpu,
        settings=settings, models=rows,
        warnings=([f"Latencies for '{device.name}' are estimates: host times × speed ratio "
                   f"{_ratio(rows[0])} of reference model '{rows[0].reference}'."] if estimate else [])
        + [w for m, figures in zip(rows, models, strict=True) if (w := stability_warning(m.name, figures)) is not None]
        + [w for m in rows if (w := batch_warning(m.name, m.input_shapes, device.inputs.batch)) is not None]
        + [w for m in rows if (w := length_warning(m.name, m.sequence_length, device.inputs.sequence_length,
                                                   device.name)) is not None],
    )
    plot = plot_latency_distribution({m.name: m.times_ms for m in rows}, device.budget.p90_ms,
                                     f"latency per run on {device.name} (ms)" + (" (estimate)" if estimate else ""),
                                     out_dir / LATENCY_PLOT)
    report.plots = {"latency_distribution": plot.name} if plot else {}
    report.files = document_files("bench", report.plots)
    write_documents(out_dir, "bench", bench_document(report), report.to_json())
    return report


def _ratio(model: BenchModel) -> str:
    """The speed ratio with the ± half-range of its reference's timing rounds."""
    if not model.speed_ratio_range:
        return f"{model.speed_ratio:.3g}"
    low, high = model.speed_ratio_range
    return f"{model.speed_ratio:.3g} ± {(high - low) / 2:.2g}"


def display_names(paths: list[Path]) -> list[str]:
    """Short unique names for model files: the file name, or more of the path where names repeat."""
    for depth in range(1, max(len(p.parts) for p in paths) + 1):
        names = ["/".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def bench_document(report: BenchReport) -> Document:
    """The benchmark report's content, for every renderer."""
    models, device, settings = report.models, report.device, report.settings
    names = [m.name for m in models]
    side_by_side = Table(("", *names), tuple(
        (label, *[si(getattr(m, key)) if pattern is None else fmt(getattr(m, key), pattern) for m in models])
        for key, label, pattern in BENCH_ROWS))
    shapes = ", ".join(f"{name} {'×'.join(map(str, dims))}" for name, dims in models[0].input_shapes.items())
    overview = Bullets((
        device_line(device),
        f"CPU: {cpu_line(report.cpu)}",
        f"{models[0].threads} thread(s), inputs {shapes}; {settings.runs} timed runs per "
        f"model in {settings.rounds} interleaved rounds (A B, B A, ...), {settings.warmup} warm-up runs each",
        f"edgekd {report.edgekd_version}, onnxruntime {models[0].onnxruntime}",
    ))
    files = Table(("model", "file"), tuple((m.name, m.model) for m in models))
    sections = [Section("Side by side", (side_by_side, files))]
    if report.plots:
        sections.append(Section("Latency distribution", (
            Figure(report.plots["latency_distribution"],
                   "Per-run latency of each model: p50 (solid), p90 (dashed), p99 (dotted)."),)))
    operator_blocks: list = [Paragraph(PROFILER_NOTE)]
    for model in models:
        operator_blocks += [Paragraph(model.name), operators_table(model.operators, TOP_OPERATORS)]
    sections.append(Section("Top operators", tuple(operator_blocks)))
    if report.warnings:
        sections.append(Section("Warnings", (Bullets(tuple(report.warnings), tone="warning"),)))
    sections.append(Section("Device profile", (
        Code(f"device profile {device.name}", yaml_text(device.model_dump(mode="json")), "yaml"),)))
    fastest = min(models, key=lambda m: m.p50_ms)
    verdicts = "; ".join(f"{m.name}: {m.verdict}" for m in models)
    return Document(
        title=f"edgekd CPU benchmark: {len(models)} model{'s' if len(models) > 1 else ''} on {device.name}",
        intro=(Paragraph(f"Fastest at p50: {fastest.name} ({fastest.p50_ms:.4f} ms). "
                         f"Budget verdicts on {device.name}: {verdicts}."), overview),
        sections=tuple(sections),
    )
