"""Structured pruning, low-rank factorization and the LadaBERT-style hybrid on a BERT SST-2 classifier.

    python benchmarks/prune_sst2.py --data ../shared/data/sst2 --out benchmarks/results/prune_sst2.json

Trains the BERT-Small teacher of ``kd_sst2.py`` once (cached in ``--teachers``, shared with it),
then compresses it: the hybrid schedule (prune 20% of heads/FFN channels + SVD at 95% energy of
the linear layers and the embedding tables, one epoch of distillation recovery from the
uncompressed teacher, repeated) run once to 10× fewer parameters, reporting the first steps that
reach 2× and 5× on the way (the steps do not depend on the target, so a run to 2× is this run's
prefix); and for comparison pruning alone and factorization alone at two strengths each. Per
point: params, MACs (on the ONNX graph at batch 1 × 128 tokens), dev accuracy, accuracy ratio,
compression, ONNX p50 on ``host-cpu`` and speed-up against the uncompressed model. The final
models are exported and, at the end, timed side by side with the uncompressed one in interleaved
sessions (``"latency": "interleaved"``); the hybrid's intermediate steps keep the p50 timed right
after each step (``"latency": "trajectory"``). Parameters include the embeddings (factorized,
ALBERT-style; pruning never touches them since the hidden size is kept); a schedule that cannot
reach its target within its steps reports ``hybrid-final`` with ``target_reached: false``. The JSON
is rewritten after every point (``"complete": false`` until the end).

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

import numpy as np
import onnxruntime as ort
import torch

import edgekd
from edgekd.atomic import write_json
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.models.logits import model_logits
from edgekd.models.task_model import TaskModel
from edgekd.pipeline import RunResult

sys.path.insert(0, str(Path(__file__).parent))
from kd_sst2 import (  # noqa: E402  (shared SST-2 setup)
    data_missing,
    log_progress,
    mode,
    recipe_dict,
    result_header,
    shown_path,
    sst2_parser,
    teacher_recipe,
    teacher_weights,
    teachers_dir,
    time_side_by_side,
)

RECOVERY = {"epochs": 1, "batch_size": 32, "lr": 0.0001, "warmup_ratio": 0.1, "max_grad_norm": 1.0,
            "losses": [{"kind": "hinton", "temperature": 2.0, "alpha": 0.5}]}
#: Real sentences on which a reloaded compressed model must agree with its ONNX export.
RELOAD_SENTENCES = ["a gripping , beautifully acted film .", "the plot is thin and the jokes fall flat .",
                    "not bad at all", "one of the year 's worst"]
#: The hybrid's reported compressions: the first step of its one schedule reaching each.
HYBRID_COMPRESSIONS = (2, 5, 10)
POINTS: dict[str, dict[str, Any]] = {
    "hybrid": {"stage": "hybrid", "target_params_ratio": 1 / max(HYBRID_COMPRESSIONS), "max_steps": 12,
               "prune": {"ratio": 0.2}, "factorize": {"energy": 0.95, "embeddings": True}},
    "prune-0.5": {"stage": "prune", "ratio": 0.5, "steps": 2},
    "factorize-0.5": {"stage": "factorize", "param_ratio": 0.5, "embeddings": True},
    "factorize-0.2": {"stage": "factorize", "param_ratio": 0.2, "embeddings": True},
    "prune-0.8": {"stage": "prune", "ratio": 0.8, "steps": 4},
}


def point_recipe(base: dict[str, Any], weights: Path, name: str, stage: dict[str, Any]) -> dict[str, Any]:
    """The trained teacher, loaded and evaluated, compressed in place (role ``teacher``) by ``stage``, exported."""
    recipe = copy.deepcopy(base)
    recipe["name"] = f"sst2-{name}"
    recipe["teacher"]["weights"] = str(weights)
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("teacher", "export")]
    recipe["stages"].insert(1, {**stage, "role": "teacher", "recovery": RECOVERY})
    return recipe


def point_row(name: str, figures: dict[str, Any], onnx: Path) -> dict[str, Any]:
    """A compressed model's row: its figures and ratios against the uncompressed model (step 0)."""
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
        "onnx": shown_path(onnx),
    }
    if "target_reached" in figures:
        row.update(target_reached=figures["target_reached"], trajectory=figures["trajectory"])
    return row


def hybrid_steps(figures: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the first step of the hybrid's trajectory reaching each of :data:`HYBRID_COMPRESSIONS`.

    The schedule's steps do not depend on its target (each prunes 20% and factorizes at 95%
    energy, then recovers), so a run stopped at 2× is this run's prefix. Their p50 and speed-up are
    the trajectory's (each step's export timed right after it, against step 0's).
    """
    start = figures["trajectory"][0]
    rows = []
    for factor in HYBRID_COMPRESSIONS:
        step = next((s for s in figures["trajectory"] if s["params"] * factor <= start["params"]), None)
        if step is None:
            continue
        rows.append({
            "name": f"hybrid-{factor}x",
            "step": step["step"],
            "params": step["params"],
            "macs": step["macs"],
            "onnx_p50_ms": step["onnx_p50_ms"],
            "dev_accuracy": step["accuracy"],
            "accuracy_ratio": step["accuracy"] / start["accuracy"],
            "speedup": start["onnx_p50_ms"] / step["onnx_p50_ms"],
            "compression": start["params"] / step["params"],
            "macs_ratio": step["macs"] / start["macs"],
            "latency": "trajectory",
        })
    return rows


def interleaved_speedups(rows: list[dict[str, Any]], teacher_onnx: Path, *, quick: bool) -> dict[str, Any]:
    """Time the uncompressed ONNX model and every final point's side by side; set their p50 and speed-up."""
    timed = [row for row in rows if "onnx" in row]
    results = time_side_by_side([teacher_onnx, *(Path(row["onnx"]) for row in timed)], quick=quick)
    for row, result in zip(timed, results[1:], strict=True):
        row.update(onnx_p50_ms=result.p50_ms, speedup=results[0].p50_ms / result.p50_ms, latency="interleaved")
    return {"onnx_p50_ms": results[0].p50_ms, "onnx_p90_ms": results[0].p90_ms}


def reload_check(result: RunResult) -> dict[str, Any]:
    """Reload a compressed model directory (Hugging Face ``from_pretrained`` of its reshaping class) and
    compare its logits on a few real sentences with the exported ONNX model's."""
    model_ref = result.artifact.get("teacher")
    model = TaskModel.load(result.run_dir / model_ref.weights)
    encoded = model.tokenizer(RELOAD_SENTENCES, return_tensors="pt", padding=True)
    inputs = {"token_type_ids": torch.zeros_like(encoded["input_ids"]), **encoded}
    with torch.no_grad():
        reloaded = model_logits(model.module(*(inputs[name] for name in model.signature.names))).numpy()
    session = ort.InferenceSession(str(result.run_dir / model_ref.onnx), providers=["CPUExecutionProvider"])
    (exported,) = session.run(None, {i.name: inputs[i.name].numpy() for i in session.get_inputs()})
    return {"loaded_by": f"{type(model.module).__name__}.from_pretrained",
            "max_abs_diff_vs_onnx": float(np.abs(reloaded - exported).max())}


def main(argv: list[str] | None = None) -> int:
    parser = sst2_parser(__doc__.splitlines()[0], "runs/bench-prune-sst2", tuple(POINTS))
    args = parser.parse_args(argv)
    if data_missing(args.data):
        return 2
    log_progress()
    started = time.perf_counter()
    work = args.work / mode(args)
    base = recipe_dict("sst2-distilbert-style", args.data.resolve(), quick=args.quick)
    trained = teachers_dir(args) / "teacher"
    teacher = edgekd.run(validate_model(teacher_recipe(base), Recipe, source="teacher"), out=trained,
                         show_progress=False)
    teacher_onnx = trained / teacher.artifact.get("teacher").onnx
    weights = teacher_weights(trained)
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    uncompressed: dict[str, Any] = {"onnx": shown_path(teacher_onnx)}
    checks: dict[str, Any] = {}

    def write(complete: bool) -> None:
        write_json(args.out, {**result_header("prune_sst2", args, argv), "complete": complete,
                              "uncompressed": uncompressed, "points": rows, "checks": checks, "wall_seconds": timings,
                              "total_seconds": time.perf_counter() - started})

    for name in args.only:
        begun = time.perf_counter()
        recipe = validate_model(point_recipe(base, weights, name, POINTS[name]), Recipe, source=name)
        result = edgekd.run(recipe, out=work / name, show_progress=False)
        figures = next(s for s in result.stages if s.stage == POINTS[name]["stage"]).metrics["teacher"]
        if name == "hybrid":  # the steps reaching 2× and 5× on the way, then the final model
            steps, final = hybrid_steps(figures), figures["trajectory"][-1]["step"]
            rows.extend(row for row in steps if row["step"] != final)
            name = next((row["name"] for row in reversed(steps) if row["step"] == final), "hybrid-final")
        rows.append(point_row(name, figures, result.run_dir / result.artifact.get("teacher").onnx))
        rows[-1]["reload"] = reload_check(result)
        timings[name] = time.perf_counter() - begun
        print(f"{name}: {rows[-1]['compression']:.2f}× params, dev {rows[-1]['dev_accuracy']:.4f} "
              f"(ratio {rows[-1]['accuracy_ratio']:.3f})", flush=True)
        write(complete=False)
    uncompressed.update(interleaved_speedups(rows, teacher_onnx, quick=args.quick))
    half = next((row for row in rows if row["name"] == "prune-0.5"), None)
    if half is not None:  # the check: 50% of heads and FFN channels pruned is >= 1.6x faster
        checks["half_heads_and_ffn_1.6x_faster"] = {"speedup": half["speedup"], "met": half["speedup"] >= 1.6,
                                                     "reloads": half["reload"]["max_abs_diff_vs_onnx"] < 1e-3}
    write(complete=True)
    print(json.dumps([{k: r[k] for k in ("name", "compression", "accuracy_ratio", "speedup")} for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
