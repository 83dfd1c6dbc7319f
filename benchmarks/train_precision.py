"""How much faster does bf16 autocast train the SST-2 BERT-Small teacher on this CPU than FP32?

    python benchmarks/train_precision.py --data ../shared/data/sst2 --out benchmarks/results/train_precision-CPU.json

Runs the SST-2 recipes' teacher stage (BERT-Small, 4 × 512, 8 heads; AdamW, batch 32) for one
epoch on the first ``--examples`` training sentences, once with ``mixed_precision: "no"`` and once
with ``"bf16"`` (accelerate's CPU autocast), ``--repeats`` times, alternating which goes first so
drift on a shared machine hits both. Each run starts fresh in its own directory and reports the
stage's training seconds (evaluation on 200 validation and 200 dev sentences included, a small
share). The JSON records the CPU (bf16 pays only where the CPU multiplies bf16 natively: AMX-BF16
or AVX512-BF16), the torch threads, every run, and the median per-pair ratio FP32 seconds ÷ bf16
seconds. Training time is what keeps ``kd_sst2.py`` above its 90-minute target; this measures one
lever against it. It measures time only: one epoch on a subset leaves the teacher near chance, so
the runs' dev accuracies say nothing about what bf16 does to accuracy.

``--quick`` shrinks the run (a 4 × 64 teacher, 300 sentences) to check the path in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

import edgekd
from edgekd.atomic import write_json
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe

sys.path.insert(0, str(Path(__file__).parent))
from kd_sst2 import data_missing, log_progress, recipe_dict, result_header, teacher_recipe  # noqa: E402

PRECISIONS = ("no", "bf16")
EVAL_EXAMPLES = 200  # validation and dev sentences: few, so the (FP32) evaluations barely count in the time
BF16_ISA = ("amx_bf16", "avx512_bf16", "bf16")


def timing_recipe(data: Path, precision: str, examples: int, *, quick: bool) -> Recipe:
    """The SST-2 teacher stage alone, one epoch on ``examples`` training sentences, at ``precision``."""
    recipe = teacher_recipe(recipe_dict("sst2-distilbert-style", data, quick=quick))
    recipe["name"] = f"train-precision-{precision}"
    recipe["data"].update(limit_train=examples, val_examples=EVAL_EXAMPLES, limit_test=EVAL_EXAMPLES)
    recipe["stages"] = [{**stage, "epochs": 1, "mixed_precision": precision}
                        for stage in recipe["stages"] if stage["stage"] == "teacher"]
    return validate_model(recipe, Recipe, source=recipe["name"])


def train_once(data: Path, precision: str, examples: int, *, quick: bool) -> dict[str, Any]:
    """One fresh teacher run; its training seconds and dev accuracy."""
    with tempfile.TemporaryDirectory(prefix="train-precision-") as work:
        result = edgekd.run(timing_recipe(data, precision, examples, quick=quick), out=Path(work) / precision,
                            show_progress=False)
    metrics = result.artifact.get("teacher").metrics
    return {"precision": precision, "train_seconds": metrics["train_seconds"], "dev_accuracy": metrics["accuracy"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="directory with SST-2 train.tsv and dev.tsv")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--examples", type=int, default=3000, help="training sentences per run")
    parser.add_argument("--repeats", type=int, default=2, help="FP32/bf16 pairs")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark path in seconds")
    args = parser.parse_args(argv)
    if data_missing(args.data):
        return 2
    log_progress()
    data, examples = args.data.resolve(), 300 if args.quick else args.examples
    runs, ratios = [], []
    for repeat in range(args.repeats):
        order = PRECISIONS if repeat % 2 == 0 else PRECISIONS[::-1]
        pair = {precision: train_once(data, precision, examples, quick=args.quick) for precision in order}
        runs.extend(pair.values())
        ratios.append(pair["no"]["train_seconds"] / pair["bf16"]["train_seconds"])
        print(f"repeat {repeat}: fp32 {pair['no']['train_seconds']:.1f} s, bf16 {pair['bf16']['train_seconds']:.1f} s",
              flush=True)
    header = result_header("train_precision", args, argv)
    write_json(args.out, {
        **header,
        "cpu_has_native_bf16": any(flag in header["cpu"]["isa"] for flag in BF16_ISA),
        "model": "BERT-Small teacher of the SST-2 recipes" if not args.quick else "4 x 64 teacher (quick)",
        "examples": examples,
        "torch_threads": torch.get_num_threads(),
        "runs": runs,
        "fp32_over_bf16_seconds": {"median": statistics.median(ratios), "per_pair": ratios},
    })
    print(f"fp32 / bf16 training time: median {statistics.median(ratios):.2f}x over {len(ratios)} pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
