"""Knowledge distillation on GLUE SST-2: every shipped SST-2 recipe against its hard-label twin.

    python benchmarks/kd_sst2.py --data ../shared/data/sst2 --out benchmarks/results/kd_sst2.json

Trains the BERT-Small teacher (4 × 512, 8 heads) from scratch once (cached in ``--teachers``;
the ensemble recipe adds two more teachers with seeds 1 and 2), then for each student recipe and
seed: distils the student, and trains the same student on the hard labels only (``<name>-hard``:
same architecture, data and epochs). Seeds change initialisation, dropout and batch order only:
every run uses the same train/validation split (``data.split_seed``), so the teachers' tokenizer
and weights apply, and teacher outputs are cached once per teacher and transfer set
(``distill.teacher_cache_dir``) and shared by all runs. Every model is evaluated on SST-2 dev,
exported to ONNX and profiled on ``host-cpu``. The JSON lists, per model, parameters, mean/std dev
accuracy over seeds, ONNX p50/p90, size, and accuracy ratio and speed-up against the teacher, plus
how many (pooled) standard deviations each distilled student beats its twin by, and the issue's
targets with whether they were met.

``--quick`` shrinks everything (a 4 × 64 teacher, 2,000 training sentences, 300 dev sentences,
one epoch, one seed) to check the whole benchmark path in a few minutes; its accuracies mean
nothing (the teacher barely leaves chance level).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import edgekd
from edgekd.atomic import write_json
from edgekd.catalog import find
from edgekd.config import Recipe, read_yaml, validate_model
from edgekd.profile.cpu import detect_cpu

STUDENT_RECIPES = ("sst2-distilbert-style", "sst2-tinybert-style", "sst2-bilstm", "sst2-assistant", "sst2-ensemble")
HARD_LABELS = [{"kind": "hinton", "alpha": 0.0}]  # the Hinton loss with alpha 0 is plain cross-entropy


def recipe_dict(name: str, data: Path, *, quick: bool) -> dict[str, Any]:
    """A shipped SST-2 recipe with the data paths pointed at ``data`` (and shrunk for ``--quick``)."""
    recipe = read_yaml(find("pipelines", name))
    recipe["data"].update(train=str(data / "train.tsv"), test=str(data / "dev.tsv"))
    if quick:
        recipe["data"].update(limit_train=2000, val_examples=200, limit_test=300)
        recipe["tokenizer"]["vocab_size"] = 1000
        recipe["teacher"]["model"].update(layers=4, hidden=64, heads=2, ffn=128)
        if recipe["teacher"].get("ensemble"):
            recipe["teacher"]["ensemble"]["members"] = 2
        for stage in recipe["stages"]:
            if "epochs" in stage:
                stage["epochs"] = 1
            if stage["stage"] == "profile":
                stage.update(warmup=5, runs=50)
            if stage.get("augment"):
                stage["augment"]["copies"] = 1
    return recipe


def run(recipe: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run one recipe dict through the pipeline; return its report."""
    loaded = validate_model(recipe, Recipe, source=recipe["name"])
    return edgekd.run(loaded, out=out, show_progress=False).report()


def model_row(name: str, reports: list[dict[str, Any]], role: str, seeds: list[int]) -> dict[str, Any]:
    accuracies = [r[role]["accuracy"] for r in reports]
    first = reports[0][role]
    return {
        "name": name,
        "params": first["params"],
        "dev_accuracy": statistics.fmean(accuracies),
        "dev_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "dev_accuracies": accuracies,
        "seeds": seeds,
        "onnx_p50_ms": first["p50_ms"],
        "onnx_p90_ms": first["p90_ms"],
        "size_mb": first["size_mb"],
    }


def teacher_recipe(base: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """The teacher alone: train, export, profile, report (shared by every student recipe).

    ``seed`` trains another teacher (an ensemble member) on the same split as the first.
    """
    recipe = copy.deepcopy(base)
    recipe["name"] = "sst2-teacher"
    recipe["teacher"].pop("ensemble", None)
    recipe["stages"] = [s for s in recipe["stages"] if s["stage"] in ("teacher", "export", "profile", "report")]
    if seed is not None:
        recipe["seed"] = seed
        recipe["data"]["split_seed"] = base["seed"]
    return recipe


def with_trained_teacher(recipe: dict[str, Any], weights: list[Path], seed: int, hard: bool,
                         cache: Path) -> dict[str, Any]:
    """``recipe`` reusing the benchmark's teacher weights (one per ensemble member), at ``seed``.

    The split stays the one the teachers were trained on; teacher outputs are cached under ``cache``.
    ``hard`` swaps in the hard-label twin.
    """
    recipe = copy.deepcopy(recipe)
    recipe["data"]["split_seed"] = recipe["seed"]
    recipe["seed"] = seed
    members = recipe["teacher"].get("ensemble", {}).get("members", 1)
    recipe["teacher"]["weights"] = [str(w) for w in weights[:members]] if members > 1 else str(weights[0])
    for stage in recipe["stages"]:
        if stage["stage"] == "distill":
            stage["teacher_cache_dir"] = str(cache)
            if hard:
                stage["losses"] = HARD_LABELS
                stage.pop("augment", None)
    if hard:
        recipe["name"] += "-hard"
    return recipe


def targets(by_name: dict[str, dict[str, Any]], gains: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, each with the figures it was judged on and whether it was met."""
    students = [row for name, row in by_name.items() if not name.startswith("teacher") and name in gains]
    fast = [row["name"] for row in students if row["speedup"] >= 10 and row["accuracy_ratio"] >= 0.97]
    result: dict[str, Any] = {
        "10x_faster_at_97pct": {"met": bool(fast), "students": fast},
        "kd_beats_hard_labels": {"met": bool(gains) and all(g["gain_points"] > 0 for g in gains.values()),
                                 "gain_points": {name: g["gain_points"] for name, g in gains.items()}},
    }
    teachers = [row["dev_accuracy"] for name, row in by_name.items() if name.startswith("teacher")]
    if "ensemble" in by_name:
        row = by_name["ensemble"]
        result["ensemble_student_vs_best_teacher"] = {
            "met": row["dev_accuracy"] >= max(teachers) and row["speedup"] >= 10,
            "student": row["dev_accuracy"], "best_teacher": max(teachers), "speedup": row["speedup"]}
    if "bilstm" in gains:
        result["bilstm_gain_at_least_1_point"] = {"met": gains["bilstm"]["gain_points"] >= 1,
                                                  "gain_points": gains["bilstm"]["gain_points"]}
    return result


def sst2_parser(description: str, work: str, only: tuple[str, ...]) -> argparse.ArgumentParser:
    """The arguments every SST-2 benchmark takes: data, output, work directory, --quick, --only."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help="directory with SST-2 train.tsv and dev.tsv")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--work", type=Path, default=Path(work), help="work directory (cached runs)")
    parser.add_argument("--teachers", type=Path, default=Path("runs/bench-sst2-teachers"),
                        help="work directory of the trained teachers, shared by the SST-2 benchmarks")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the benchmark path in minutes")
    parser.add_argument("--only", nargs="*", default=list(only), help="what to run")
    return parser


def mode(args: argparse.Namespace) -> str:
    """``quick`` or ``full``: the subdirectory each benchmark keeps this mode's runs in."""
    return "quick" if args.quick else "full"


def teachers_dir(args: argparse.Namespace) -> Path:
    """Where the teachers of this mode are trained and cached."""
    return args.teachers / mode(args)


def result_header(benchmark: str, args: argparse.Namespace, argv: list[str] | None,
                  device: str = "host-cpu") -> dict[str, Any]:
    """What every SST-2 benchmark's JSON starts with: its name, the command, the mode, the CPU, the device."""
    return {
        "benchmark": benchmark,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "cpu": detect_cpu().to_json(),
        "device": device,
    }


def teacher_weights(run_dir: Path) -> Path:
    """The weights file of the teacher a :func:`teacher_recipe` run trained."""
    return run_dir / "01-teacher" / "teacher" / "model.safetensors"


def data_missing(data: Path) -> bool:
    """True (after saying so) when ``data`` lacks the SST-2 training file."""
    if (data / "train.tsv").is_file():
        return False
    print(f"error: {data}/train.tsv not found (the SST-2 data; see ../shared/data/sst2/SOURCE.md)")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = sst2_parser(__doc__.splitlines()[0], "runs/bench-kd-sst2", STUDENT_RECIPES)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args(argv)
    if data_missing(args.data):
        return 2
    started = time.perf_counter()
    seeds = [0] if args.quick else list(range(args.seeds))
    work = args.work / mode(args)
    trained = teachers_dir(args)

    base = recipe_dict(STUDENT_RECIPES[0], args.data.resolve(), quick=args.quick)
    teacher_report = run(teacher_recipe(base), trained / "teacher")
    weights = [teacher_weights(trained / "teacher")]
    rows = [model_row("teacher", [teacher_report], "teacher", [base["seed"]])]
    timings = {"teacher": time.perf_counter() - started}
    recipes = {name: recipe_dict(name, args.data.resolve(), quick=args.quick) for name in args.only}
    members = max(((r["teacher"].get("ensemble") or {}).get("members", 1) for r in recipes.values()), default=1)
    for member in range(1, members):
        begun = time.perf_counter()
        report = run(teacher_recipe(base, seed=base["seed"] + member), trained / f"teacher-{member}")
        rows.append(model_row(f"teacher-{member}", [report], "teacher", [base["seed"] + member]))
        weights.append(teacher_weights(trained / f"teacher-{member}"))
        timings[f"teacher-{member}"] = time.perf_counter() - begun

    for name, recipe in recipes.items():
        short = name.removeprefix("sst2-")
        for hard in (False, True):
            label = f"{short}-hard" if hard else short
            begun = time.perf_counter()
            reports = [run(with_trained_teacher(recipe, weights, seed, hard, work / "teacher-outputs"),
                           work / f"{label}-seed{seed}") for seed in seeds]
            rows.append(model_row(label, reports, "student", seeds))
            timings[label] = time.perf_counter() - begun
            print(f"{label}: dev {rows[-1]['dev_accuracy']:.4f} ± {rows[-1]['dev_accuracy_std']:.4f}, "
                  f"p50 {rows[-1]['onnx_p50_ms']:.3f} ms", flush=True)

    teacher = rows[0]
    for row in rows:
        row["accuracy_ratio"] = row["dev_accuracy"] / teacher["dev_accuracy"]
        row["speedup"] = teacher["onnx_p50_ms"] / row["onnx_p50_ms"]
    by_name = {row["name"]: row for row in rows}
    gains = {}
    for row in rows:
        twin = by_name.get(f"{row['name']}-hard")
        if twin is not None:
            pooled = ((row["dev_accuracy_std"] ** 2 + twin["dev_accuracy_std"] ** 2) / 2) ** 0.5
            gain = row["dev_accuracy"] - twin["dev_accuracy"]
            gains[row["name"]] = {"gain_points": 100 * gain, "pooled_std_points": 100 * pooled,
                                  "gain_in_stds": gain / pooled if pooled > 0 else None}
    result = {
        **result_header("kd_sst2", args, argv),
        "models": rows,
        "distillation_gain_over_hard_labels": gains,
        "targets": targets(by_name, gains),
        "wall_seconds": timings,
        "total_seconds": time.perf_counter() - started,
    }
    write_json(args.out, result)
    print(json.dumps({"models": [{k: r[k] for k in ("name", "dev_accuracy", "speedup")} for r in rows],
                      "gains": gains}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
