"""Plots for the report (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.atomic import write_with


def plot_accuracy_latency(report: dict[str, Any], path: Path) -> Path | None:
    """Accuracy vs p90 latency of each model, with the budget's p90 line; None if nothing was profiled."""
    points = [(role, report[role]) for role in ("teacher", "student")
              if role in report and report[role].get("p90_ms") is not None and report[role].get("accuracy") is not None]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for role, figures in points:
        ax.scatter(figures["p90_ms"], figures["accuracy"], s=60, label=role)
        ax.annotate(role, (figures["p90_ms"], figures["accuracy"]), textcoords="offset points", xytext=(6, 4))
    limit = report["budget"]["limits"]["p90_ms"]
    ax.axvline(limit, color="red", linestyle="--", label=f"budget p90 {limit:g} ms")
    estimate = " (estimate)" if any(f.get("estimate") for _, f in points) else ""
    ax.set_xlabel(f"p90 latency on {report['device']['name']} (ms){estimate}")
    ax.set_ylabel("test accuracy")
    ax.set_xscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return path
