"""Dataset distillation on digits: the issue's target table, measured.

    OMP_NUM_THREADS=1 python benchmarks/dataset_distill.py --out benchmarks/results/dataset_distill-<cpu>.json

The settings are the ``digits-dataset-distill`` recipe's (ConvNet student ``cnn [32, 64]``, its
``dataset_distill`` stage), run at 1 and 10 images per class (``--ipc``). Each row: the method's
wall time (one torch thread), then the test accuracy (mean ± std) of fresh random inits trained on
the synthetic set, on random real subsets of the same size (several draws × inits), on a herding
coreset and on the full training set (trained until its validation accuracy stops rising, each row
recording its steps). INT8: the student trained on the full set, exported, static
INT8 (minmax) calibrated on the 10-per-class synthetic set vs on as many real training images vs
on 256 real ones (the quantize stage's default), each scored on the test split. ``targets`` says
which of the issue's targets are met. The JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgekd.atomic import write_json  # noqa: E402
from edgekd.config.recipe import load_recipe  # noqa: E402
from edgekd.data.datasets import load_dataset  # noqa: E402
from edgekd.dataset_distill.baselines import random_subset  # noqa: E402
from edgekd.dataset_distill.compare import compare  # noqa: E402
from edgekd.dataset_distill.config import DatasetDistillStage  # noqa: E402
from edgekd.dataset_distill.full_set import FullSet, judge_full_set  # noqa: E402
from edgekd.dataset_distill.int8 import export_fp32, onnx_accuracy, static_int8_accuracy  # noqa: E402
from edgekd.dataset_distill.methods import METHODS  # noqa: E402
from edgekd.dataset_distill.network import Family, image_family  # noqa: E402
from edgekd.dataset_distill.problem import Problem  # noqa: E402
from edgekd.profile.cpu import detect_cpu  # noqa: E402

RECIPE = REPO / "pipelines" / "digits-dataset-distill.yaml"


def distil_row(problem: Problem, test: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
               full: FullSet) -> dict[str, Any]:
    """Learn the set, time it, compare it with the baselines (``full``: the full training set's judgement)."""
    started = time.perf_counter()
    synthetic = METHODS[problem.config.method](problem)
    seconds = time.perf_counter() - started
    row = {"images_per_class": problem.config.images_per_class, "method": problem.config.method,
           "iterations": problem.config.iterations, "distill_seconds": round(seconds, 2),
           "details": synthetic.details}
    row["accuracy"] = compare(problem, synthetic, test, validation, full=full)
    return row | {"images": synthetic.images}


def int8_rows(problem: Problem, model: torch.nn.Module, synthetic: torch.Tensor,
              test: tuple[torch.Tensor, torch.Tensor], work: Path) -> dict[str, Any]:
    """``model`` (trained on the full set) in FP32 vs static INT8 calibrated on the synthetic set, on as many real
    images, on 256 real images."""
    fp32 = export_fp32(model, problem.images[:1], work / "fp32.onnx")
    real = problem.images[random_subset(problem.labels, problem.config.images_per_class, problem.num_classes,
                                        torch.Generator().manual_seed(problem.seed))]
    many = problem.images[torch.randperm(len(problem.labels), generator=torch.Generator().manual_seed(1))[:256]]
    rows = {"fp32": onnx_accuracy(fp32, *test)}
    for name, images in (("synthetic", synthetic), ("real_same_count", real), ("real_256", many)):
        rows[f"int8_{name}"] = static_int8_accuracy(fp32, images, test, work / f"int8-{name}.onnx")
    rows["calibration_examples"] = len(synthetic)
    return rows


def targets(rows: dict[int, dict[str, Any]], int8: dict[str, Any] | None) -> dict[str, Any]:
    """The issue's targets against the measured figures (None where not measured)."""
    def mean(ipc: int, key: str) -> float | None:
        return rows[ipc]["accuracy"][key]["mean"] if ipc in rows else None

    checks: dict[str, Any] = {}
    if 1 in rows:
        checks["ipc1_at_least_85"] = mean(1, "synthetic") >= 0.85
        checks["ipc1_15pt_above_random"] = mean(1, "synthetic") - mean(1, "random_real") >= 0.15
    if 10 in rows:
        checks["ipc10_at_least_95"] = mean(10, "synthetic") >= 0.95
        checks["ipc10_3pt_above_random"] = mean(10, "synthetic") - mean(10, "random_real") >= 0.03
        checks["ipc10_within_3pt_of_full"] = mean(10, "full") - mean(10, "synthetic") <= 0.03
        checks["ipc10_distilled_within_5_min"] = rows[10]["distill_seconds"] <= 300
    if int8 is not None:
        checks["int8_synthetic_within_half_pt_of_real"] = abs(int8["int8_synthetic"] - int8["int8_real_256"]) <= 0.005
    return checks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--ipc", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--method", default=None, help="default: the recipe's")
    parser.add_argument("--iterations", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    recipe = load_recipe(RECIPE)
    stage = next(s for s in recipe.stages if isinstance(s, DatasetDistillStage))
    overrides = {k: v for k, v in (("method", args.method), ("iterations", args.iterations)) if v is not None}
    splits = load_dataset(recipe.data, recipe.seed)
    family = Family(image_family(recipe.student.model, "student.model"), splits.input_shape, splits.num_classes)
    test, validation = (splits.x_test, splits.y_test), (splits.x_val, splits.y_val)
    cpu = detect_cpu()
    out = args.out or REPO / "benchmarks" / "results" / (
        "dataset_distill-" + (re.sub(r"[^a-z0-9]+", "-", cpu.brand.lower()).strip("-") or "cpu") + ".json")
    result: dict[str, Any] = {"recipe": recipe.name, "family": recipe.student.model.model_dump(mode="json"),
                              "train_examples": len(splits.y_train), "test_examples": len(splits.y_test),
                              "cpu": cpu.to_json(), "torch_threads": args.threads, "rows": []}
    rows: dict[int, dict[str, Any]] = {}
    full: FullSet | None = None
    int8: dict[str, Any] | None = None
    for ipc in args.ipc:
        config = stage.model_copy(update={"images_per_class": ipc, **overrides})
        problem = Problem(splits.x_train, splits.y_train, family, config, recipe.seed)
        full = full or judge_full_set(problem, validation, test)  # the same for every row
        row = distil_row(problem, test, validation, full)
        images = row.pop("images")
        rows[ipc] = row
        result["rows"].append(row)
        print(f"ipc {ipc}: " + ", ".join(f"{k} {100 * v['mean']:.2f}±{100 * v['std']:.2f}"
                                         for k, v in row["accuracy"].items()) + f"; {row['distill_seconds']} s",
              file=sys.stderr)
        if ipc == 10:
            with tempfile.TemporaryDirectory() as work:
                int8 = int8_rows(problem, full.reference.model, images, test, Path(work))
            result["int8"] = int8
            print(f"int8: {int8}", file=sys.stderr)
        result["targets"] = targets(rows, int8)
        write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
