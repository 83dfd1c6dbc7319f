"""Render ``report.json`` as readable Markdown."""

from __future__ import annotations

from typing import Any

_MODEL_ROWS = (
    ("accuracy", "accuracy (test)", "{:.4f}"),
    ("params", "parameters", "{:,}"),
    ("size_mb", "ONNX size (MB)", "{:.3f}"),
    ("p50_ms", "p50 latency (ms)", "{:.3f}"),
    ("p90_ms", "p90 latency (ms)", "{:.3f}"),
    ("p99_ms", "p99 latency (ms)", "{:.3f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.1f}"),
    ("parity_max_abs_diff", "ONNX vs PyTorch max abs diff", "{:.2e}"),
)


def _fmt(value: Any, pattern: str = "{}") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    try:
        return pattern.format(value)
    except (ValueError, TypeError):
        return str(value)


def render_markdown(report: dict[str, Any], plot_file: str | None = None) -> str:
    """The report as Markdown: summary, budget verdict, per-stage table, warnings."""
    recipe, device, cpu = report["recipe"], report["device"], report["cpu"]
    roles = [r for r in ("teacher", "student") if r in report]
    lines = [
        f"# edgekd report: {recipe['name']}",
        "",
        f"- Device profile: **{device['name']}** — {device.get('description', '')}".rstrip(" —"),
        f"- Measured on: {cpu.get('brand', '?')} ({cpu.get('arch', '?')}, "
        f"{cpu.get('physical_cores', '?')} cores; ISA: {', '.join(cpu.get('isa', [])) or 'n/a'})",
        f"- edgekd {report['edgekd_version']}, seed {recipe['seed']}",
        "",
        "## Models",
        "",
        "| | " + " | ".join(roles) + " |",
        "|---|" + "---|" * len(roles),
    ]
    for key, label, pattern in _MODEL_ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(report[r].get(key), pattern) for r in roles) + " |")
    comparison = report.get("comparison")
    if comparison:
        lines += ["", "Student / teacher: " + ", ".join(
            f"{name.replace('_', ' ')} {_fmt(value, '{:.3f}')}" for name, value in comparison.items())]
    lines += ["", *_budget_lines(report["budget"])]
    if plot_file:
        lines += ["", f"![accuracy vs p90 latency]({plot_file})"]
    lines += ["", "## Stages", "", "| # | stage | wall time (s) | started |", "|---|---|---|---|"]
    for row in report["stages"]:
        lines.append(f"| {row['index']} | {row['stage']} | {row['wall_seconds']:.1f} | {row['started_at']} |")
    if report["warnings"]:
        lines += ["", "## Warnings", "", *[f"- {w}" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


def _budget_lines(budget: dict[str, Any]) -> list[str]:
    verdict = budget["verdict"]
    lines = ["## Budget", "", f"Verdict: **{verdict.upper()}**"]
    if "checks" not in budget:
        return lines + ["", budget.get("reason", "")]
    if budget.get("estimate"):
        lines[-1] += " (latency is an estimate from a host→device speed ratio)"
    lines += ["", "| limit | measured | budget | |", "|---|---|---|---|"]
    for check in budget["checks"]:
        mark = "pass" if check["passed"] else "FAIL"
        lines.append(f"| {check['name']} | {check['value']:.3f} {check['unit']} | "
                     f"{check['limit']:.3f} {check['unit']} | {mark} |")
    return lines
