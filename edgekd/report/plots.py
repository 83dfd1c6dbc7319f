"""Plots for the reports (matplotlib, Agg backend: no display needed). Each is written atomically as PNG.

Each function returns the path it wrote, or None when there is nothing to plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.atomic import write_with
from edgekd.model_metrics import ModelFigures
from edgekd.report.record import RunReport
from edgekd.search.record import LMSearchRecord, SearchRecord

_DPI = 150


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight", pad_inches=0.1))
    _pyplot().close(fig)
    return path


def plot_accuracy_latency(report: RunReport, path: Path) -> Path | None:
    """Accuracy vs p90 latency of each model, with the budget's p90 line."""
    points = [(role, figures) for role, figures in report.models().items()
              if figures.p90_ms is not None and figures.accuracy is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.6), layout="constrained")
    for role, figures in points:
        ax.scatter(figures.p90_ms, figures.accuracy, s=70, label=role, zorder=3)
        ax.annotate(role, (figures.p90_ms, figures.accuracy), textcoords="offset points", xytext=(7, 5))
    limit = report.budget.limits.p90_ms
    ax.axvline(limit, color="tab:red", linestyle="--", label=f"budget p90 {limit:g} ms")
    estimate = " (estimate)" if any(f.estimate for _, f in points) else ""
    ax.set_xlabel(f"p90 latency on {report.device.name} (ms, log scale){estimate}")
    ax.set_ylabel("test accuracy")
    ax.set_title("Accuracy vs p90 latency")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.2)  # room for the labels next to the points
    ax.grid(True, alpha=0.3, which="both")
    fig.legend(loc="outside lower center", ncols=len(points) + 1, fontsize=9, frameon=False)  # clear of the points
    return _save(fig, path)


def plot_size_per_stage(rows: Sequence[tuple[str, float]], budget_mb: float, path: Path) -> Path | None:
    """Model file size after each stage that wrote a model file (``rows``: label, MB), with the budget line."""
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    labels, sizes = [label for label, _ in rows], [size for _, size in rows]
    bars = ax.bar(range(len(rows)), sizes, color="tab:blue", zorder=3)
    ax.bar_label(bars, labels=[f"{s:.3g} MB" for s in sizes], padding=2, fontsize=8)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    if max(sizes) / max(min(sizes), 1e-9) > 20:
        ax.set_yscale("log")
    title = "Model size per stage"
    if budget_mb <= 3 * max(sizes):
        ax.axhline(budget_mb, color="tab:red", linestyle="--", label=f"budget {budget_mb:g} MB")
        ax.legend(loc="upper right")
    else:
        title += f" (budget {budget_mb:g} MB, off the scale)"
    ax.set_title(title)
    ax.set_ylabel("model file size (MB)")
    ax.grid(True, axis="y", alpha=0.3, which="both")
    return _save(fig, path)


def plot_latency_distribution(series: dict[str, Sequence[float]], budget_ms: float | None, xlabel: str,
                              path: Path) -> Path | None:
    """Histogram of per-run latencies of each model, with its p50/p90/p99 marked and the budget line.

    The axis ends a little past the slowest model's 99.5th percentile (at most 4× its p90), so
    that a few runs disturbed by the machine do not squash the distribution; slower runs are
    counted in the last bin. Models whose medians differ over 3× share a logarithmic axis.
    """
    series = {name: np.asarray(times, dtype=float) for name, times in series.items() if len(times)}
    if not series:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    low = min(float(t.min()) for t in series.values())
    high = min(max(float(np.percentile(t, 99.5)) for t in series.values()) * 1.1,
               max(float(np.percentile(t, 90)) for t in series.values()) * 4)
    budget_shown = budget_ms is not None and budget_ms <= 3 * high
    if budget_shown:
        high = max(high, budget_ms * 1.05)
    medians = [float(np.median(t)) for t in series.values()]
    logarithmic = max(medians) > 3 * min(medians) > 0
    high = max(high, low * 1.01 + 1e-9)
    bins = np.geomspace(low, high, 60) if logarithmic else np.linspace(low, high, 60)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    percentile_styles = ((50, "-", "p50"), (90, "--", "p90"), (99, ":", "p99"))
    slower = 0
    for index, (name, times) in enumerate(series.items()):
        color = colors[index % len(colors)]
        slower += int((times > bins[-1]).sum())
        ax.hist(np.minimum(times, bins[-1]), bins=bins, alpha=0.55, color=color, label=name)
        for q, style, _ in percentile_styles:
            ax.axvline(np.percentile(times, q), color=color, linestyle=style, linewidth=1.2)
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], color="black", linestyle=style, linewidth=1.2) for _, style, _ in percentile_styles]
    labels += [label for _, _, label in percentile_styles]
    notes = [f"{slower} slower run{'s' if slower != 1 else ''} in the last bin"] if slower else []
    if budget_shown:
        ax.axvline(budget_ms, color="tab:red", linewidth=2)
        handles.append(plt.Line2D([], [], color="tab:red", linewidth=2))
        labels.append(f"budget p90 {budget_ms:g} ms")
    elif budget_ms is not None:
        notes.append(f"budget p90 {budget_ms:g} ms is off the scale")
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.set_title("Latency distribution" + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=11)
    if logarithmic:
        ax.set_xscale("log")
    ax.set_xlim(bins[0] / (1.05 if logarithmic else 1), bins[-1] * 1.02)  # a p99 past the last bin stays off it
    ax.set_xlabel(xlabel + (", log scale" if logarithmic else ""))
    ax.set_ylabel("runs")
    ax.grid(True, alpha=0.3, which="both")
    return _save(fig, path)


#: How a budget search's latency-table candidates are drawn in the strip under its Pareto plot.
_TABLE_STATUS = (("trained", "tab:blue"), ("feasible", "tab:green"), ("over budget", "tab:gray"),
                 ("not smaller than the teacher", "tab:brown"))


def plot_search_pareto(search: SearchRecord | LMSearchRecord, teacher: ModelFigures | None,
                       path: Path) -> Path | None:
    """A classifier's budget search Pareto plot: the task's validation metric (``search.metric``: accuracy,
    micro-F1, MSE, token accuracy) vs p90 of the trained candidates, the budget line drawn (``None`` for a
    causal LM's search or when no candidate has a validation figure).

    The choice is made on the validation metric, so that is what the markers, the Pareto front and the chosen
    star show; each candidate's test figure (what the report quotes) hangs below or above it as a hollow
    marker on a thin line. Below, every latency-table candidate's p90 by status (trained, feasible, over
    budget, not smaller than the teacher); the budget line on both. The legend sits under the plot, clear of the points.
    """
    if not isinstance(search, SearchRecord):
        return None
    metric, sign = search.metric, -1.0 if search.lower_is_better else 1.0
    measured = [m for m in search.measured if m.val_score is not None]
    if not measured:
        return None
    plt = _pyplot()
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(7.6, 6.4), sharex=True, layout="constrained",
                                    gridspec_kw={"height_ratios": [4, 1.2]})
    tested = [m for m in measured if m.score is not None]
    for m in tested:
        ax.plot([m.p90_ms] * 2, [m.val_score, m.score], color="tab:gray", linewidth=0.8, zorder=2)
    ax.scatter([m.p90_ms for m in tested], [m.score for m in tested], s=30, facecolors="none",
               edgecolors="tab:gray", zorder=3, label=f"test {metric} (reported)")
    for verdict, marker in (("pass", "o"), ("fail", "x")):
        points = [m for m in measured if m.verdict == verdict]
        if points:
            ax.scatter([m.p90_ms for m in points], [m.val_score for m in points], marker=marker, s=50,
                       color="tab:blue" if verdict == "pass" else "tab:red", zorder=4,
                       label=f"validation {metric}, {'within' if verdict == 'pass' else 'over'} budget")
    front, best = [], float("-inf")
    for m in sorted(measured, key=lambda m: m.p90_ms):
        if sign * m.val_score > best:
            front.append(m)
            best = sign * m.val_score
    ax.step([m.p90_ms for m in front], [m.val_score for m in front], where="post", color="tab:blue",
            alpha=0.5, label="Pareto front (validation)")
    chosen = search.chosen
    ax.scatter([chosen.p90_ms], [chosen.val_score], marker="*", s=300, color="gold", edgecolors="black",
               zorder=5, label="chosen: best validation within budget")
    ax.annotate(chosen.label, (chosen.p90_ms, chosen.val_score), textcoords="offset points",
                xytext=(10, 8), fontsize=9)
    teacher_score = getattr(teacher, f"val_{metric}", None)
    if teacher is not None and teacher.p90_ms is not None and teacher_score is not None:
        ax.scatter([teacher.p90_ms], [teacher_score], marker="D", s=60, color="tab:purple", zorder=4,
                   label="teacher (validation)")
    for level, (status, color) in enumerate(_TABLE_STATUS):
        times = [row.p90_ms for row in search.table.candidates if row.status == status]
        strip.scatter(times, [level] * len(times), marker="|", s=150, color=color)
    strip.set_yticks(range(len(_TABLE_STATUS)), [status for status, _ in _TABLE_STATUS], fontsize=9)
    strip.set_ylim(-0.7, len(_TABLE_STATUS) - 0.3)
    limit = search.budget.p90_ms
    for axis in (ax, strip):
        axis.axvline(limit, color="tab:red", linestyle="--")
        axis.grid(True, alpha=0.3, which="both")
    ax.plot([], [], color="tab:red", linestyle="--", label=f"budget p90 {limit:g} ms")
    estimate = " (estimate)" if search.estimate else ""
    strip.set_xscale("log")
    strip.set_xlabel(f"p90 latency on {search.device} (ms, log scale){estimate}")
    strip.set_title("latency table (random weights)", fontsize=10)
    ax.set_ylabel(metric + (" (lower is better)" if sign < 0 else ""))
    ax.set_title(f"Budget search: validation {metric} (the choice) vs p90 latency")
    ax.margins(x=0.12, y=0.15)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9, frameon=False)
    return _save(fig, path)
