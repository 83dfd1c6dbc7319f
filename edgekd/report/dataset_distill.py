"""The report's dataset distillation section: the synthetic images per class and accuracy vs examples per class.

:func:`dataset_distill_summary` gives ``report.json``'s ``dataset_distill`` (one entry per
``dataset_distill`` stage, from its record); :func:`draw_dataset_distill_plots` draws the image grids
(from the ``.npz`` sets in the run directory) and the accuracy curve; :func:`dataset_distill_section`
is the section, built from the report alone. Several stages (e.g. 1 and 10 images per class) make
several points per curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.npz import load_npz
from edgekd.dataset_distill.record import LearntSet, SetScore, read_dataset_distill_record
from edgekd.report.document import Figure, Paragraph, Section, Table
from edgekd.report.plots import _pyplot, _save
from edgekd.report.record import DatasetDistillRun

#: The training sets every record compares, in plot and table order, with their labels.
SETS = {"synthetic": "synthetic (learnt)", "random_real": "random real subset", "coreset": "coreset",
        "full": "full training set"}
MAX_COLUMNS = 10


def plot_image_grid(path: Path, target: Path, title: str) -> Path:
    """One row per class of the set's images (at most :data:`MAX_COLUMNS` a row), grey, each class named."""
    data = load_npz(path)
    classes = sorted(set(data.labels.tolist()))
    columns = min(MAX_COLUMNS, max(int((data.labels == c).sum()) for c in classes))
    plt = _pyplot()
    fig, axes = plt.subplots(len(classes), columns, figsize=(max(3.2, 0.8 * columns + 0.6), 0.8 * len(classes) + 0.6),
                             squeeze=False)
    low, high = float(data.inputs.min()), float(data.inputs.max())
    for row, cls in enumerate(classes):
        images = data.inputs[data.labels == cls][:columns]
        for column, ax in enumerate(axes[row]):
            ax.set_xticks([])
            ax.set_yticks([])
            if column < len(images):
                picture = images[column].transpose(1, 2, 0)
                ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else np.clip(picture, 0, 1), cmap="gray",
                          vmin=low, vmax=high)
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(data.class_names[cls], rotation=0, labelpad=12, va="center")
    fig.suptitle(title, fontsize=9)
    return _save(fig, target)


def plot_accuracy_vs_examples(summary: list[DatasetDistillRun], target: Path) -> Path | None:
    """Test accuracy (mean ± std over inits) vs examples per class for each training set; None without data."""
    points = sorted(((e.images_per_class, e.accuracy) for e in summary), key=lambda point: point[0])
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    counts = [count for count, _ in points]
    for key, label in SETS.items():
        scored = [(count, accuracy[key]) for count, accuracy in points if key in accuracy]
        if not scored:
            continue
        x = [count for count, _ in scored]
        mean = np.array([100 * score.mean for _, score in scored])
        std = np.array([100 * score.std for _, score in scored])
        if key == "full":
            ax.axhline(mean.mean(), color="black", linestyle="--", label=f"{label} ({scored[0][1].examples} ex.)")
            continue
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("examples per class")
    ax.set_ylabel("test accuracy (%), mean ± std over fresh inits")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, target)


def steps_text(score: SetScore) -> str:
    """The steps each model of a set trained (``300``), the full set's with the validation accuracy of each length
    tried (``600 (val. 53.3% at 300, 95.0% at 600, 88.3% at 1200)``); empty for records that did not keep them."""
    if score.steps is None:
        return ""
    if not score.steps_tried:
        return str(score.steps)
    tried = ", ".join(f"{100 * t.validation_accuracy:.1f}% at {t.steps}" for t in score.steps_tried)
    return f"{score.steps} (val. {tried})"


#: ``report["plots"]`` key of the accuracy curve; each stage's image grid is ``dataset_distill_images_<index>``.
CURVE = "dataset_distill_accuracy"


def dataset_distill_summary(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per ``dataset_distill`` stage record: its index and the :class:`LearntSet` fields of its record."""
    return [{"index": r["index"], **read_dataset_distill_record(r).model_dump(
        mode="json", include=set(LearntSet.model_fields), exclude_unset=True)}
            for r in records if r["stage"] == "dataset_distill"]


def draw_dataset_distill_plots(summary: list[DatasetDistillRun], run_dir: Path, out_dir: Path) -> dict[str, str]:
    """Each stage's image grid and, with any stage, the accuracy curve, written to ``out_dir``; file names by key."""
    plots = {}
    for entry in summary:
        name = f"dataset_distill_{entry.index:02d}_{entry.images_per_class}_per_class.png"
        plot_image_grid(run_dir / entry.synthetic_set, out_dir / name,
                        f"{entry.method}: {entry.images_per_class} synthetic image(s) per class")
        plots[f"dataset_distill_images_{entry.index}"] = name
    curve = plot_accuracy_vs_examples(summary, out_dir / f"{CURVE}.png")
    if curve is not None:
        plots[CURVE] = curve.name
    return plots


def dataset_distill_section(summary: list[DatasetDistillRun], plots: dict[str, str]) -> Section | None:
    """The section for a report's ``dataset_distill`` entries and its ``plots`` (None when the run has none)."""
    if not summary:
        return None
    rows, figures = [], []
    for entry in summary:
        for key, label in SETS.items():
            score = entry.accuracy.get(key)
            if score is not None:
                rows.append((str(entry.images_per_class), entry.method if key == "synthetic" else "", label,
                             f"{100 * score.mean:.2f} ± {100 * score.std:.2f}", str(len(score.accuracies)),
                             steps_text(score)))
        grid = plots.get(f"dataset_distill_images_{entry.index}")
        if grid is not None:
            figures.append(Figure(grid, f"The learnt images, one row per class ({entry.synthetic_set}; "
                                        f"learnt in {entry.distill_seconds:.1f} s)."))
    if CURVE in plots:
        figures.append(Figure(plots[CURVE], "Test accuracy vs examples per class: fresh random inits of the family "
                                            "trained on each set alone."))
    table = Table(("per class", "method", "training set", "test accuracy (%)", "models", "steps"), tuple(rows))
    note = Paragraph("Every set is judged alike: fresh, randomly initialised models of the family trained on it "
                     "alone and scored on the test split (random real subsets: several draws × inits). The full "
                     "training set trains until it stops improving: never fewer steps than a small set, doubled "
                     "while a model's validation accuracy rose (in brackets: that accuracy at each length tried).")
    return Section("Dataset distillation", (table, note, *figures))
