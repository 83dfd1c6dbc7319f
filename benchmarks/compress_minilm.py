"""`edgekd compress sst2-minilm` at budgets set from the fine-tuned MiniLM teacher's own p90, and on a phone profile.

    python benchmarks/compress_minilm.py --data ../shared/data/sst2 --out benchmarks/results/compress_minilm.json

The shipped recipe ``sst2-minilm`` (all-MiniLM-L6-v2 fine-tuned on SST-2, a ``drop_layers`` student)
is run through the budget search as ``edgekd compress`` runs it: the search varies how many of the
teacher's six layers the student keeps (FP32 and INT8), distils the largest feasible ones with the
recipe's own distillation and keeps the most accurate within the budget. The teacher is fine-tuned
once (``--teachers``, shared with ``kd_sst2.py --teacher minilm`` and, through edgekd's stage store,
with the searches), exported and timed on ``host-cpu``; each budget is a fraction of that p90
(``--fractions``, default a tenth, a fifth and a half), then each ``--devices`` profile is searched at
its own budget. All searches share one run directory, so a structure trained for one budget is not
trained again for the next. At the end the teacher and every chosen model are timed again side by
side on ``host-cpu`` (interleaved), which gives the speed-ups; ``--compare`` adds the rows of
``kd_sst2.py`` results (hand-written students, their speed-ups measured against the same teacher
in their own runs) for the table the README shows. ``--top-k 1`` trains only the largest feasible
structure per search (compress trains three) when time is short.

``--quick`` shrinks the data and epochs (2,000 training sentences, one epoch) to check the path in
minutes; its accuracies mean nothing.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import edgekd
from edgekd.atomic import write_json
from edgekd.config.device import load_device
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import BudgetError
from edgekd.search.compress import search_recipe
from edgekd.search.config import SearchStage
from edgekd.search.record import SearchRecord, search_record

sys.path.insert(0, str(Path(__file__).parent))
from kd_sst2 import (  # noqa: E402  (shared SST-2 setup)
    data_missing,
    log_progress,
    mode,
    read_result,
    recipe_dict,
    result_header,
    shown_path,
    sst2_parser,
    teacher_recipe,
    teachers_dir,
    time_side_by_side,
)

RECIPE = "sst2-minilm"
HOST = "host-cpu"
FRACTIONS = (0.1, 0.2, 0.5)
DEVICES = ("android-midrange-cpu",)


def teacher_onnx(base: dict[str, Any], directory: Path) -> tuple[Path, float]:
    """Fine-tune (or reuse) the teacher alone and return its ONNX file and dev accuracy."""
    result = edgekd.run(validate_model(teacher_recipe(base), Recipe, source="teacher"), out=directory)
    return result.run_dir / result.artifact.get("teacher").onnx, result.report()["teacher"]["accuracy"]


def search(recipe: Recipe, device: str, budget_ms: float | None, run_dir: Path, chosen_dir: Path) -> dict[str, Any]:
    """One ``edgekd compress`` in the shared run directory: what it chose, measured how, and what it trained.

    The chosen ONNX file is copied to ``chosen_dir`` (the next search replaces the run's search stage)."""
    started = time.perf_counter()
    try:
        found = edgekd.compress(recipe, device=device, budget_ms=budget_ms, out=run_dir)
    except BudgetError as exc:  # no candidate fits: the search's one-line answer is the row
        return {"device": device, "budget_p90_ms": budget_ms, "chosen": None, "refused": str(exc),
                "wall_seconds": time.perf_counter() - started}
    wall = time.perf_counter() - started
    stage = next(r for r in found.run.stages if r.stage == "search")
    record = search_record(stage.metrics["search"])
    assert isinstance(record, SearchRecord)
    report = found.report()
    student = report["student"]
    label = f"{device}-{budget_ms:g}ms" if budget_ms is not None else device
    onnx = chosen_dir / f"{label}.onnx"
    chosen_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found.run.run_dir / found.run.artifact.get("student").onnx, onnx)
    return {
        "device": device, "budget_p90_ms": record.budget.p90_ms, "budget": record.budget.model_dump(mode="json"),
        "estimated": bool(load_device(device).reference), "chosen": record.chosen.label,
        "precision": record.chosen.precision, "params": student["params"], "size_mb": student["size_mb"],
        "dev_accuracy": student["accuracy"], "val_accuracy": student["val_accuracy"],
        "confirmed_p90_ms": record.chosen.confirmed.p90_ms, "reprofiled_p90_ms": student["p90_ms"],
        "within_budget": report["budget"]["verdict"] == "pass",
        "feasible_candidates": record.table.feasible, "trained": [t.label for t in record.trained],
        "table": found.table.to_json(), "search_stage_seconds": stage.wall_seconds, "wall_seconds": wall,
        "onnx": shown_path(onnx),
    }


def with_top_k(recipe: Recipe, top_k: int | None) -> Recipe:
    """``recipe`` as compress makes it a search, training ``top_k`` structures per search (None: as compress does)."""
    if top_k is None:
        return recipe
    search = search_recipe(recipe, RECIPE)
    stages = [s.model_copy(update={"top_k": top_k}) if s.stage == "search" else s for s in search.stages]
    return search.model_copy(update={"stages": stages})


def hand_written(files: list[Path]) -> list[dict[str, Any]]:
    """The students of ``kd_sst2.py`` results: name, dev accuracy, accuracy ratio and speed-up (their own runs)."""
    rows = []
    for file in files:
        for row in read_result(file)["models"][1:]:
            rows.append({"name": row["name"], "dev_accuracy": row["dev_accuracy"],
                         "accuracy_ratio": row["accuracy_ratio"], "speedup": row["speedup"], "from": file.name})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = sst2_parser(__doc__.splitlines()[0], "runs/bench-compress-minilm", ())
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="host-cpu p90 budgets as fractions of the teacher's p90")
    parser.add_argument("--devices", nargs="*", default=list(DEVICES), help="profiles searched at their own budget")
    parser.add_argument("--compare", type=Path, nargs="*", default=[], help="kd_sst2.py results to list beside")
    parser.add_argument("--top-k", type=int, default=None,
                        help="structures each search trains (default: compress's, 3); 1 trains the largest feasible")
    args = parser.parse_args(argv)
    args.teacher = "minilm"
    if args.top_k is not None and args.top_k < 1:
        print(f"error: --top-k: expected at least 1, got {args.top_k}")
        return 2
    if any(not 0 < f <= 1 for f in args.fractions):
        print(f"error: --fractions: expected fractions of the teacher's p90 in (0, 1], got {args.fractions}")
        return 2
    compare = hand_written(args.compare)  # a bad file stops here, before hours of training
    if data_missing(args.data):
        return 2
    log_progress()
    started = time.perf_counter()
    base = recipe_dict(RECIPE, args.data.resolve(), quick=args.quick, teacher="minilm")
    teacher_file, teacher_accuracy = teacher_onnx(base, teachers_dir(args).resolve() / "teacher")
    teacher_p90 = time_side_by_side([teacher_file], quick=args.quick)[0].p90_ms
    recipe = with_top_k(validate_model(base, Recipe, source=RECIPE), args.top_k)
    work = (args.work / mode(args)).resolve()
    teacher_row = {"name": "teacher", "dev_accuracy": teacher_accuracy, "onnx": shown_path(teacher_file),
                   "p90_ms_for_budgets": teacher_p90}
    searches: list[dict[str, Any]] = []

    def write(*, final: bool) -> dict[str, Any]:
        """The result so far (rewritten after every search; ``complete`` once the interleaved timing is in)."""
        hosts = [s for s in searches if s["device"] == HOST and s["chosen"] is not None]
        result = {**result_header("compress_minilm", args, argv, HOST), "complete": final, "recipe": RECIPE,
                  "top_k": args.top_k or SearchStage.model_fields["top_k"].default,
                  "teacher_row": teacher_row, "searches": searches, "hand_written": compare,
                  "checks": {"host_choices_within_budget": all(s["within_budget"] for s in hosts),
                             "later_searches_timed_no_host_candidate": all(s["table"]["profiled"] == 0
                                                                           for s in hosts[1:])},
                  "total_seconds": time.perf_counter() - started}
        write_json(args.out, result)
        return result

    # the tightest budget first (the smallest structures train first), then the devices at their own budgets
    plan = [(HOST, round(f * teacher_p90, 3), f) for f in sorted(args.fractions)] + [(d, None, None)
                                                                                      for d in args.devices]
    for device, budget, fraction in plan:
        row = search(recipe, device, budget, work / "search", work / "chosen")
        searches.append({"fraction_of_teacher_p90": fraction, **row})
        print(f"{device} {row['budget_p90_ms']}: {row['chosen'] or row['refused']}", flush=True)
        write(final=False)

    chosen = [row for row in searches if row["chosen"] is not None]
    timed = time_side_by_side([teacher_file, *(Path(s["onnx"]) for s in chosen)], quick=args.quick)
    teacher_row.update(interleaved_p50_ms=timed[0].p50_ms, interleaved_p90_ms=timed[0].p90_ms)
    for row, measured in zip(chosen, timed[1:], strict=True):
        row.update(interleaved_p50_ms=measured.p50_ms, interleaved_p90_ms=measured.p90_ms,
                   speedup=timed[0].p50_ms / measured.p50_ms, accuracy_ratio=row["dev_accuracy"] / teacher_accuracy)
    result = write(final=True)
    print(json.dumps({"teacher_p90_ms": teacher_p90, "checks": result["checks"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
