"""Structured pruning, low-rank factorization and the LadaBERT-style hybrid on a BERT SST-2 classifier.

    python benchmarks/prune_sst2.py --data ../shared/data/sst2 --out benchmarks/results/prune_sst2.json

Trains the BERT-Small teacher of ``kd_sst2.py`` once (cached in ``--teachers``, shared with it), then compresses
it: the hybrid schedule (prune 20% of heads/FFN channels + SVD at 95% energy of the linear layers
and the embedding tables, one epoch of distillation recovery from the uncompressed teacher,
repeated) to 2×, 5× and 10× fewer parameters, and for comparison pruning alone and factorization
alone at two strengths each. Per point: params, MACs (PyTorch FLOP counter at batch 1 × 128
tokens), ONNX p50 on ``host-cpu`` (the stage times the model before and after in the same run),
dev accuracy, accuracy ratio and speed-up against the uncompressed model, and the hybrid's
step-by-step trajectory. Parameters include the embeddings (factorized, ALBERT-style; pruning
never touches them since the hidden size is kept); a point whose target the schedule cannot reach
within its steps says ``target_reached: false``.

``--quick`` shrinks everything (a 4 × 64 teacher, 2,000 training sentences, 300 dev sentences,
one epoch) to check the benchmark path in minutes; its accuracies mean nothing.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import edgekd
from edgekd.atomic import write_json
from edgekd.config import Recipe, validate_model

sys.path.insert(0, str(Path(__file__).parent))
from kd_sst2 import (  # noqa: E402  (shared SST-2 setup)
    data_missing,
    mode,
    recipe_dict,
    result_header,
    sst2_parser,
    teacher_recipe,
    teacher_weights,
    teachers_dir,
)

RECOVERY = {"epochs": 1, "batch_size": 32, "lr": 0.0001, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
            "losses": [{"kind": "hinton", "temperature": 2.0, "alpha": 0.5}]}
POINTS: dict[str, dict[str, Any]] = {
    **{f"hybrid-{x}x": {"stage": "hybrid", "target_params_ratio": 1 / x, "max_steps": 12,
                        "prune": {"ratio": 0.2}, "factorize": {"energy": 0.95, "embeddings": True}}
       for x in (2, 5, 10)},
    "prune-0.5": {"stage": "prune", "ratio": 0.5, "steps": 2},
    "prune-0.8": {"stage": "prune", "ratio": 0.8, "steps": 4},
    "factorize-0.5": {"stage": "factorize", "param_ratio": 0.5, "embeddings": True},
    "factorize-0.2": {"stage": "factorize", "param_ratio": 0.2, "embeddings": True},
}


def point_recipe(base: dict[str, Any], weights: Path, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    """The trained teacher, loaded and evaluated, then compressed in place (role ``teacher``) by ``stage``."""
    recipe = copy.deepcopy(base)
    recipe["name"] = f"sst2-{name}"
    recipe["teacher"]["weights"] = str(weights)
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] == "teacher"]
    recipe["stages"].append({**stage, "role": "teacher", "recovery": RECOVERY})
    return recipe


def point_row(name: str, figures: dict[str, Any]) -> dict[str, Any]:
    before = figures["before"]
    row = {
        "name": name,
        "params": figures["params"],
        "macs": figures["macs"],
        "onnx_p50_ms": figures["onnx_p50_ms"],
        "dev_accuracy": figures["accuracy"],
        "accuracy_ratio": figures["accuracy_ratio"],
        "speedup": figures["speedup"],
        "compression": before["params"] / figures["params"],
        "macs_ratio": figures["macs_ratio"],
        "uncompressed": {k: before[k] for k in ("params", "macs", "onnx_p50_ms", "accuracy")},
    }
    if "target_reached" in figures:
        row.update(target_reached=figures["target_reached"], trajectory=figures["trajectory"])
    return row


def main(argv: list[str] | None = None) -> int:
    parser = sst2_parser(__doc__.splitlines()[0], "runs/bench-prune-sst2", tuple(POINTS))
    args = parser.parse_args(argv)
    if data_missing(args.data):
        return 2
    started = time.perf_counter()
    work = args.work / mode(args)
    base = recipe_dict("sst2-distilbert-style", args.data.resolve(), quick=args.quick)
    trained = teachers_dir(args) / "teacher"
    edgekd.run(validate_model(teacher_recipe(base), Recipe, source="teacher"), out=trained, show_progress=False)
    weights = teacher_weights(trained)
    rows, timings = [], {}
    for name in args.only:
        begun = time.perf_counter()
        recipe = validate_model(point_recipe(base, weights, name, POINTS[name]), Recipe, source=name)
        result = edgekd.run(recipe, out=work / name, show_progress=False)
        rows.append(point_row(name, result.stages[-1].metrics["teacher"]))
        timings[name] = time.perf_counter() - begun
        print(f"{name}: {rows[-1]['compression']:.2f}× params, dev {rows[-1]['dev_accuracy']:.4f} "
              f"(ratio {rows[-1]['accuracy_ratio']:.3f}), speed-up {rows[-1]['speedup']:.2f}×", flush=True)
    write_json(args.out, {
        **result_header("prune_sst2", args, argv),
        "points": rows,
        "wall_seconds": timings,
        "total_seconds": time.perf_counter() - started,
    })
    print(json.dumps([{k: r[k] for k in ("name", "compression", "accuracy_ratio", "speedup")} for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
