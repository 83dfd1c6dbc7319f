"""The report's dataset distillation section: the synthetic images per class and accuracy vs examples per class.

Built from the ``dataset_distill`` stages' records (their metrics) and the ``.npz`` sets they wrote;
:func:`dataset_distill_section` writes the plots into the report's directory and returns the section.
Several ``dataset_distill`` stages (e.g. 1 and 10 images per class) make several points per curve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd.data.npz import load_npz
from edgekd.report.document import Figure, Paragraph, Section, Table
from edgekd.report.plots import _pyplot, _save

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


def plot_accuracy_vs_examples(records: list[dict[str, Any]], target: Path) -> Path | None:
    """Test accuracy (mean ± std over inits) vs examples per class for each training set; None without data."""
    points = sorted((r["metrics"]["images_per_class"], r["metrics"]["accuracy"]) for r in records)
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
        mean = np.array([100 * score["mean"] for _, score in scored])
        std = np.array([100 * score["std"] for _, score in scored])
        if key == "full":
            ax.axhline(mean.mean(), color="black", linestyle="--", label=f"{label} ({scored[0][1]['examples']} ex.)")
            continue
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("examples per class")
    ax.set_ylabel("test accuracy (%), mean ± std over fresh inits")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, target)


def dataset_distill_section(records: list[dict[str, Any]], run_dir: Path, report_dir: Path) -> Section | None:
    """The section for a run's ``dataset_distill`` stage records (None when there are none); writes its plots."""
    records = [r for r in records if r.get("stage") == "dataset_distill"]
    if not records:
        return None
    rows, figures = [], []
    for record in records:
        metrics = record["metrics"]
        count = metrics["images_per_class"]
        for key, label in SETS.items():
            score = metrics["accuracy"].get(key)
            if score is not None:
                rows.append((str(count), metrics["method"] if key == "synthetic" else "", label,
                             f"{100 * score['mean']:.2f} ± {100 * score['std']:.2f}", str(len(score["accuracies"]))))
        name = f"dataset_distill_{count}_per_class.png"
        plot_image_grid(run_dir / metrics["synthetic_set"], report_dir / name,
                        f"{metrics['method']}: {count} synthetic image(s) per class")
        figures.append(Figure(name, f"The learnt images, one row per class ({metrics['synthetic_set']}; "
                                    f"learnt in {metrics['distill_seconds']:.1f} s)."))
    curve = plot_accuracy_vs_examples(records, report_dir / "dataset_distill_accuracy.png")
    if curve is not None:
        figures.append(Figure(curve.name, "Test accuracy vs examples per class: fresh random inits of the family "
                                          "trained on each set alone."))
    table = Table(("per class", "method", "training set", "test accuracy (%)", "models"), tuple(rows))
    note = Paragraph("Every set is judged alike: fresh, randomly initialised models of the family trained on it "
                     "alone and scored on the test split (random real subsets: several draws × inits).")
    return Section("Dataset distillation", (table, note, *figures))
