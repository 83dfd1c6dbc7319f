"""Generative KD on Tiny Shakespeare: a teacher, four students over seeds, their speed and their use as drafts.

Everything trains through edgekd's own pipeline from the shipped recipe ``pipelines/shakespeare-char.yaml``
(its models, optimizer settings and losses), each run in its own run directory under ``--work``, so a re-run
resumes every finished stage:

1. The teacher run: the recipe's ``teacher`` stage alone (its wall time is the teacher's training time).
2. For each seed, four students of the recipe's student size, each a ``teacher`` stage that loads the
   trained teacher (``teacher.weights``, evaluated, not retrained) and a ``distill`` stage with the same
   optimizer settings and steps, differing only in the losses:
   - ``corpus``: next-token cross-entropy on the corpus alone (``token_kl`` at ``alpha: 0``; the teacher
     is never run), the baseline;
   - ``token``: the recipe's token-level KD (Kim & Rush §3.1);
   - ``sequence``: the corpus loss plus the recipe's sequence-level KD (Kim & Rush §3.2: the teacher's
     greedy continuations of corpus prompts, generated once per seed);
   - ``combined``: the recipe's two losses together (token-level + sequence-level KD).
   Every student is exported with its KV cache (the export stage's parity check included). ``--jobs``
   students train at once, each an ``edgekd run`` process with ``--threads`` torch threads (its log in
   ``--work``/logs).
3. The draft size: the recipe's student with ``--draft-config`` fields replaced (default: one layer, the
   drafts of speculative decoding are usually much smaller than the student a user ships), its four
   variants trained per seed as above (runs ``generative-kd-draft-…``).
   ``--variants`` trains a subset (the ``corpus`` baseline always).
4. Speed, once every training has finished: the first seed's ``combined`` run of each size (or of the first
   distilled variant trained) gains a profile stage
   (its other stages are reused) that times generation on ``host-cpu``: teacher and student
   interleaved, time to first token, per-token p50/p90, tokens per second, peak memory, and the
   student's per-token speed-up over the teacher as the median of the rounds' ratios.
5. Speculative decoding, alone on the machine as well: every student's ONNX model as the draft for the
   teacher's, greedy, one thread, γ = 1…8, on prompts cut from the validation text
   (:func:`edgekd.profile.speculative_bench.measure_speculative`: acceptance rate, tokens per second
   against the teacher alone interleaved, greedy output identical). ``--draft-stop`` thresholds and
   ``--adaptive`` add adaptive drafting policies per draft length (:class:`edgekd.profile.speculative.DraftPolicy`),
   timed interleaved with fixed γ; the summary's best speculative speed-up is then over every policy, and the
   fastest fixed-length one is kept beside it.

Validation losses are nats per character on the whole validation split (the last 10% of the text).

    .venv/bin/python benchmarks/generative_kd.py --out benchmarks/results/generative_kd-<cpu>.json
    [--quick] [--work DIR] [--corpus FILE] [--seeds 0 1 2] [--student-epochs N] [--jobs 2] [--threads 1]
    [--draft-config '{"n_layer": 1}' | --draft-config null] [--draft-stop 0.4 0.6 0.8] [--adaptive]
    [--variants corpus sequence]

``--quick`` runs tiny models for one epoch on the first 20,000 characters, one seed and three draft
lengths: a smoke run of the whole benchmark (the test runs it); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "pipelines" / "shakespeare-char.yaml"
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
#: The four students of each size, in the order they are started (the teacher-reading ones first).
VARIANTS = ("token", "combined", "corpus", "sequence")
DRAFT = {"n_layer": 1}
TARGETS = {"teacher_val_loss": 1.60, "per_token_speedup": 4.0, "acceptance_gain_points": 10.0,
           "speculative_speedup": 1.5}
FULL = {"prompts": 16, "prompt_tokens": 32, "new_tokens": 64, "gammas": list(range(1, 9))}
QUICK = {"prompts": 2, "prompt_tokens": 8, "new_tokens": 12, "gammas": [1, 2, 4], "corpus_chars": 20_000,
         "teacher": {"model_type": "gpt2", "n_embd": 32, "n_layer": 1, "n_head": 2},
         "student": {"model_type": "gpt2", "n_embd": 16, "n_layer": 1, "n_head": 2},
         "draft": {"n_embd": 8}, "epochs": 1, "batch_size": 16,
         "sequence_kd": {"prompts": 8, "prompt_tokens": 8, "new_tokens": 16}}

log = logging.getLogger("generative_kd")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON result file")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a text file (default: Tiny Shakespeare)")
    parser.add_argument("--work", type=Path, default=Path("runs") / "generative_kd",
                        help="run directories (re-running resumes finished stages)")
    parser.add_argument("--seeds", type=int, nargs="+", help="student seeds (default: 0 1 2; --quick: 0)")
    parser.add_argument("--student-epochs", type=int, help="the students' epochs (default: the recipe's)")
    parser.add_argument("--jobs", type=int, default=1, help="students trained at once, one process each")
    parser.add_argument("--threads", default="auto", help="torch training threads per run (default: auto)")
    parser.add_argument("--quick", action="store_true", help="tiny models, one epoch: a smoke run")
    parser.add_argument("--draft-config", help="JSON: student config fields of the draft size, null for none "
                        f"(default: {json.dumps(DRAFT)}; --quick: {json.dumps(QUICK['draft'])})")
    parser.add_argument("--draft-stop", type=float, nargs="+", default=[],
                        help="adaptive drafting: stop thresholds on the draft's top-token probability, each in [0, 1)")
    parser.add_argument("--adaptive", action="store_true",
                        help="adaptive drafting: also the acceptance-driven draft length (alone and with each stop)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="the student variants trained (default: all four; corpus, the baseline, always)")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: file not found")
    bad = [stop for stop in args.draft_stop if not 0 <= stop < 1]
    if bad:
        parser.error(f"--draft-stop {bad[0]:g}: a threshold on the draft's top-token probability must be in [0, 1)")
    try:
        args.draft_config = (json.loads(args.draft_config) if args.draft_config is not None
                             else QUICK["draft"] if args.quick else DRAFT)
    except json.JSONDecodeError as exc:
        parser.error(f"--draft-config: not JSON ({exc})")
    if args.draft_config is not None and not isinstance(args.draft_config, dict):
        parser.error(f"--draft-config: expected a JSON object of config fields or null, got {args.draft_config!r}")
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.variants = [variant for variant in VARIANTS if variant in args.variants or variant == "corpus"]
    if args.variants == ["corpus"]:
        parser.error("--variants: name at least one distilled variant (token, combined or sequence)")
    args.threads = args.threads if args.threads == "auto" else int(args.threads)
    return args


def base_recipe(corpus: Path, quick: bool, work: Path, student_epochs: int | None = None) -> dict[str, Any]:
    """The shipped recipe with this corpus (tiny sizes, one epoch and a slice of the text with ``quick``)."""
    recipe = yaml.safe_load(RECIPE.read_text(encoding="utf-8"))
    recipe["data"]["path"] = str(corpus.resolve())
    if student_epochs is not None:
        next(stage for stage in recipe["stages"] if stage["stage"] == "distill")["epochs"] = student_epochs
    if quick:
        sliced = work / "corpus-quick.txt"
        sliced.write_text(corpus.read_text(encoding="utf-8")[:QUICK["corpus_chars"]], encoding="utf-8")
        recipe["data"]["path"] = str(sliced.resolve())
        recipe["teacher"]["model"]["config"] = QUICK["teacher"]
        recipe["student"]["model"]["config"] = QUICK["student"]
        for stage in recipe["stages"]:
            if "epochs" in stage:
                stage.update(epochs=QUICK["epochs"], batch_size=QUICK["batch_size"])
            for loss in stage.get("losses", []):
                if loss["kind"] == "sequence_kd":
                    loss.update(QUICK["sequence_kd"])
    return recipe


def _stage(recipe: dict[str, Any], name: str) -> dict[str, Any]:
    return copy.deepcopy(next(stage for stage in recipe["stages"] if stage["stage"] == name))


def _recipe_loss(recipe: dict[str, Any], kind: str) -> dict[str, Any]:
    """The recipe's distill loss of ``kind``, at weight 1 unless the recipe combines it with another."""
    return next(loss for loss in _stage(recipe, "distill")["losses"] if loss["kind"] == kind)


def variant_losses(recipe: dict[str, Any], variant: str) -> list[dict[str, Any]]:
    """The distill losses of one student variant (see the module docstring)."""
    corpus = {"kind": "token_kl", "alpha": 0.0}
    token, sequence = _recipe_loss(recipe, "token_kl"), _recipe_loss(recipe, "sequence_kd")
    return {"corpus": [corpus], "token": [token], "sequence": [corpus, sequence],
            "combined": [token, sequence]}[variant]


def teacher_recipe(base: dict[str, Any]) -> dict[str, Any]:
    """The teacher run: the recipe's teacher stage alone."""
    return base | {"name": "generative-kd-teacher", "stages": [_stage(base, "teacher")]}


def student_recipe(base: dict[str, Any], variant: str, seed: int, teacher_weights: Path, cache: Path,
                   profile: bool, draft: dict[str, Any] | None = None) -> dict[str, Any]:
    """One student run: the trained teacher loaded, the variant's distill stage, export (and profile).

    ``draft``: config fields replacing the recipe student's (a draft-size run, named ``generative-kd-draft-…``).
    """
    distill = _stage(base, "distill") | {"losses": variant_losses(base, variant), "teacher_cache_dir": str(cache)}
    stages = [_stage(base, "teacher"), distill, {"stage": "export"}] + ([{"stage": "profile"}] if profile else [])
    teacher = base["teacher"] | {"weights": str(teacher_weights)}
    student, name = base["student"], f"generative-kd-{variant}-s{seed}"
    if draft is not None:
        model = student["model"] | {"config": student["model"]["config"] | draft}
        student, name = student | {"model": model}, f"generative-kd-draft-{variant}-s{seed}"
    return base | {"name": name, "seed": seed, "teacher": teacher, "student": student, "stages": stages}


def run_recipe(recipe: dict[str, Any], work: Path, threads: int | str) -> Path:
    """Write ``recipe`` beside its run directory and run it with ``edgekd run`` in its own process (finished
    stages are reused); its output goes to ``work/logs``. The run directory."""
    name = recipe["name"]
    path, run_dir, log_file = work / "recipes" / f"{name}.yaml", work / "runs" / name, work / "logs" / f"{name}.log"
    for directory in (path.parent, log_file.parent):
        directory.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    command = [sys.executable, "-m", "edgekd", "run", str(path), "--out", str(run_dir), "--threads", str(threads)]
    environment = os.environ | {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    log.info("%s: running (log: %s)", name, log_file)
    started = time.perf_counter()
    with log_file.open("w", encoding="utf-8") as output:
        code = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, env=environment, check=False).returncode
    if code != 0:
        tail = log_file.read_text(encoding="utf-8").strip().splitlines()[-5:]
        raise RuntimeError(f"{name}: edgekd run exited {code}; the end of {log_file}:\n" + "\n".join(tail))
    log.info("%s: done in %.0f s", name, time.perf_counter() - started)
    return run_dir


def stage_record(run_dir: Path, stage: str) -> dict[str, Any]:
    """What a run's stage recorded (its ``stage.json``)."""
    found = next(run_dir.glob(f"[0-9][0-9]-{stage}"))
    return json.loads((found / "stage.json").read_text(encoding="utf-8"))


def model_file(run_dir: Path, stage: str, name: str) -> Path:
    """A file a run's stage wrote."""
    return next(run_dir.glob(f"[0-9][0-9]-{stage}")) / name


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}


def student_row(run_dir: Path) -> dict[str, Any]:
    """What one student run measured."""
    from edgekd.distill.record import read_distill_record

    figures = read_distill_record(stage_record(run_dir, "distill")).figures
    keep = {"val_loss", "perplexity", "params", "train_seconds", "best_epoch", "epochs_run",
            "teacher_continuation_loss"}
    return figures.model_dump(mode="json", include=keep, exclude_unset=True)


def speculative_rows(student_runs: dict[str, dict[int, Path]], teacher_onnx: Path, validation: list[int],
                     settings: dict[str, Any], context: int) -> dict[str, dict[int, dict[str, Any]]]:
    """Every student as the teacher's draft: :func:`measure_speculative` on prompts from the validation text."""
    from edgekd.profile.generate import CachedGenerator
    from edgekd.profile.speculative_bench import measure_speculative

    step = (len(validation) - settings["prompt_tokens"]) // settings["prompts"]
    prompts = [validation[k * step:k * step + settings["prompt_tokens"]] for k in range(settings["prompts"])]
    target = CachedGenerator(teacher_onnx, threads=1)
    rows: dict[str, dict[int, dict[str, Any]]] = {}
    for variant, runs in student_runs.items():
        for seed, run_dir in runs.items():
            log.info("speculative decoding with the %s draft, seed %d", variant, seed)
            draft = CachedGenerator(model_file(run_dir, "export", "student.onnx"), threads=1)
            rows.setdefault(variant, {})[seed] = measure_speculative(
                draft, target, prompts, settings["new_tokens"], context, gammas=settings["gammas"],
                draft_stops=settings.get("draft_stops", ()), adaptive=settings.get("adaptive", False))
    return rows


def at_gamma(record: dict[str, Any], gamma: int) -> dict[str, Any]:
    """One draft length's fixed-length entry of a :func:`measure_speculative` record."""
    return next(entry for entry in record["gammas"]
                if entry["gamma"] == gamma and not entry.get("draft_stop") and not entry.get("adaptive"))


def fastest_policy(records: list[dict[str, Any]], fixed_only: bool = False) -> dict[str, Any]:
    """The drafting policy with the highest mean speed-up over ``records`` (one per seed, the same policies each;
    ``fixed_only``: among fixed-length ones), its draft length and whether every seed's output was lossless."""
    def is_fixed(entry: dict[str, Any]) -> bool:
        return not entry.get("draft_stop") and not entry.get("adaptive")

    entries: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        for entry in record["gammas"]:
            if is_fixed(entry) or not fixed_only:
                entries.setdefault(entry.get("policy", f"gamma {entry['gamma']}"), []).append(entry)
    speedups = {policy: statistics.fmean(entry["speedup"] for entry in found) for policy, found in entries.items()}
    best = max(speedups, key=speedups.get)
    return {"policy": best, "gamma": entries[best][0]["gamma"], "mean_speedup": speedups[best],
            "lossless": all(record["lossless"] for record in records)}


def summarize_size(students: dict[str, dict[int, dict[str, Any]]], timing: dict[str, Any],
                   speculative: dict[str, dict[int, dict[str, Any]]], gammas: list[int]) -> dict[str, Any]:
    """One student size: means over seeds, each distilled variant against the corpus baseline, the per-token
    speed-up, the acceptance gain at γ = 4 and the best speculative speed-up."""
    summary: dict[str, Any] = {"val_loss": {}, "acceptance_rate_at_gamma_4": {}, "best_speculative": {},
                               "best_fixed_speculative": {}}
    for variant, seeds in students.items():
        summary["val_loss"][variant] = mean_std([row["val_loss"] for row in seeds.values()])
        records = list(speculative[variant].values())
        if 4 in gammas:
            summary["acceptance_rate_at_gamma_4"][variant] = mean_std(
                [at_gamma(record, 4)["acceptance_rate"] for record in records])
        summary["best_speculative"][variant] = fastest_policy(records)
        summary["best_fixed_speculative"][variant] = fastest_policy(records, fixed_only=True)
    distilled = [variant for variant in students if variant != "corpus"]
    corpus_loss = summary["val_loss"]["corpus"]["mean"]
    summary["val_loss_vs_corpus"] = {variant: summary["val_loss"][variant]["mean"] - corpus_loss
                                     for variant in distilled}
    acceptance = summary["acceptance_rate_at_gamma_4"]
    summary["best_distilled"] = min(distilled, key=lambda variant: summary["val_loss"][variant]["mean"])
    summary["acceptance_gain_points_at_gamma_4"] = (
        100 * (max(acceptance[v]["mean"] for v in distilled) - acceptance["corpus"]["mean"]) if acceptance else None)
    summary["best_draft"] = max(distilled, key=lambda variant: summary["best_speculative"][variant]["mean_speedup"])
    summary["per_token_speedup"] = timing["per_token_speedup"]["ratio"]
    return summary


def targets(teacher: dict[str, Any], sizes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets; a student-size target is met when one size (``student``, ``draft``) meets it."""
    def met_by(check) -> list[str]:
        return [size for size, summary in sizes.items() if check(summary)]

    def beats_corpus(summary: dict[str, Any]) -> bool:
        return summary["val_loss_vs_corpus"][summary["best_distilled"]] < 0

    def speculative(summary: dict[str, Any]) -> dict[str, Any]:
        return summary["best_speculative"][summary["best_draft"]]

    gain = TARGETS["acceptance_gain_points"]
    return {
        "teacher_val_loss": {"value": teacher["val_loss"], "target": TARGETS["teacher_val_loss"],
                             "met": teacher["val_loss"] <= TARGETS["teacher_val_loss"]},
        "student_per_token_speedup": {
            "value": {size: summary["per_token_speedup"] for size, summary in sizes.items()},
            "target": TARGETS["per_token_speedup"],
            "met_by": met_by(lambda s: s["per_token_speedup"] >= TARGETS["per_token_speedup"] and beats_corpus(s))},
        "distillation_beats_corpus": {
            "value": {size: {s["best_distilled"]: s["val_loss_vs_corpus"][s["best_distilled"]]}
                      for size, s in sizes.items()},
            "met_by": met_by(beats_corpus)},
        "acceptance_gain_points_at_gamma_4": {
            "value": {size: s["acceptance_gain_points_at_gamma_4"] for size, s in sizes.items()}, "target": gain,
            "met_by": met_by(lambda s: (s["acceptance_gain_points_at_gamma_4"] or float("-inf")) >= gain)},
        "speculative_speedup": {
            "value": {size: {"variant": s["best_draft"], **speculative(s)} for size, s in sizes.items()},
            "target": TARGETS["speculative_speedup"],
            "met_by": met_by(lambda s: speculative(s)["lossless"]
                             and speculative(s)["mean_speedup"] >= TARGETS["speculative_speedup"])},
    }


def train_size(base: dict[str, Any], args: argparse.Namespace, weights: Path, cache: Path,
               draft: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe jobs of one student size: every (variant, seed) run and the profiled run of the first seed (of
    ``combined``, or of the first distilled variant trained)."""
    jobs = [(variant, seed) for seed in args.seeds for variant in args.variants]
    timed = "combined" if "combined" in args.variants else next(v for v in args.variants if v != "corpus")
    return {"jobs": jobs,
            "recipes": [student_recipe(base, variant, seed, weights, cache, False, draft) for variant, seed in jobs],
            "profile": student_recipe(base, timed, args.seeds[0], weights, cache, True, draft)}


def measure_size(size: dict[str, Any], trained: list[Path], profile_run: Path, validation: list[int],
                 settings: dict[str, Any], context: int) -> dict[str, Any]:
    """One student size's rows, its per-token timing (the profile stage) and its drafts' speculative decoding."""
    runs: dict[str, dict[int, Path]] = {}
    for (variant, seed), run_dir in zip(size["jobs"], trained, strict=True):
        runs.setdefault(variant, {})[seed] = run_dir
    from edgekd.profile.record import read_profile_record

    profile = read_profile_record(stage_record(profile_run, "profile"))
    student = profile.models["student"]
    timing = {"device": "host-cpu", "generation": profile.generation.model_dump(), "threads": profile.threads,
              "teacher": profile.models["teacher"].to_json(), "student": student.to_json(),
              "per_token_speedup": student.speedup["teacher"].to_json()}
    return {"students": {variant: {seed: student_row(run_dir) for seed, run_dir in seeds.items()}
                         for variant, seeds in runs.items()},
            "timing": timing,
            "speculative": speculative_rows(runs, model_file(profile_run, "export", "teacher.onnx"), validation,
                                            settings, context)}


def main(argv: list[str] | None = None) -> int:
    """Train, export, time, decode speculatively and write the JSON; 0 on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(argv)
    from edgekd.atomic import write_json
    from edgekd.config.recipe import load_recipe
    from edgekd.data.lm_data import prepare_lm_data
    from edgekd.distill.record import read_teacher_record
    from edgekd.models.causal_lm import load_tokenizer
    from edgekd.profile.cpu import detect_cpu

    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    base = base_recipe(args.corpus, args.quick, args.work, args.student_epochs)
    teacher_run = run_recipe(teacher_recipe(base), args.work, args.threads)
    teacher = read_teacher_record(stage_record(teacher_run, "teacher")).teacher.to_json()
    weights = model_file(teacher_run, "teacher", "teacher/model.safetensors")
    cache = args.work / "teacher-continuations"
    sizes = {"student": train_size(base, args, weights, cache)}
    if args.draft_config is not None:
        sizes["draft"] = train_size(base, args, weights, cache, args.draft_config)
    recipes = [recipe for size in sizes.values() for recipe in size["recipes"]]
    with ThreadPoolExecutor(args.jobs) as pool:  # each job is an edgekd process
        trained = list(pool.map(run_recipe, recipes, [args.work] * len(recipes), [args.threads] * len(recipes)))
    # timing and speculative decoding only once every training has finished: nothing else runs then
    profiled = {name: run_recipe(size["profile"], args.work, args.threads) for name, size in sizes.items()}
    settings = (QUICK if args.quick else FULL) | {"draft_stops": args.draft_stop, "adaptive": args.adaptive}
    recipe = load_recipe(args.work / "recipes" / f"{sizes['student']['profile']['name']}.yaml")
    tokenizer = load_tokenizer(model_file(profiled["student"], "distill", "student"))
    validation = prepare_lm_data(recipe.data, None, tokenizer=tokenizer).validation.tolist()
    measured, offset = {}, 0
    for name, size in sizes.items():
        runs, offset = trained[offset:offset + len(size["jobs"])], offset + len(size["jobs"])
        measured[name] = measure_size(size, runs, profiled[name], validation, settings, recipe.data.context)
    summary = {name: summarize_size(result["students"], result["timing"], result["speculative"], settings["gammas"])
               for name, result in measured.items()}
    draft = measured.get("draft")
    write_json(args.out, {
        "benchmark": "generative_kd", "quick": args.quick, "cpu": detect_cpu().to_json(),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "corpus": str(args.corpus), "recipe": str(RECIPE.relative_to(REPO)), "seeds": args.seeds,
        "student_epochs": _stage(base, "distill")["epochs"], "jobs": args.jobs, "threads": args.threads,
        "models": {"teacher": base["teacher"]["model"], "student": base["student"]["model"]},
        "variants": args.variants, "losses": {variant: variant_losses(base, variant) for variant in args.variants},
        "teacher": teacher,
        **measured["student"],
        "draft": None if draft is None else {"config": args.draft_config, **draft},
        "speculative_settings": {key: settings[key] for key in ("prompts", "prompt_tokens", "new_tokens", "gammas",
                                                                "draft_stops", "adaptive")},
        "summary": summary | {"targets": targets(teacher, summary)},
        "seconds": time.perf_counter() - started,
    })
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
