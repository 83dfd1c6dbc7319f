"""Speculative decoding's speed-up over the teacher alone, per draft length, on one fixed draft/teacher pair.

Measures :func:`edgekd.profile.speculative_bench.measure_speculative` (greedy, one thread, speculative and
the teacher alone interleaved prompt by prompt in one run, greedy output checked identical) with the
edgekd found on ``PYTHONPATH``, and records it under ``--label`` in ``--out`` (other labels already there
are kept). Run it once with an older checkout first on the path and once with this one, on the same
models, to compare two versions of the generation loop: the file then holds both and, for the labels
``before`` / ``before-<n>`` and ``after`` / ``after-<n>`` (alternate the runs, the machine's load drifts),
every run's speed-ups and their medians side by side.

The pair is trained once into ``--pair`` and reused by later runs (so every label times the same models): the
recipe's
teacher size (GPT-2, 4 layers x 256) trained ``--teacher-steps`` AdamW steps on Tiny Shakespeare's
training split, and a one-layer, 64-wide draft trained by sequence-level KD (Kim & Rush 2016) on the
teacher's greedy continuations of training-text prompts, mixed with corpus windows.
Prompts are cut from the validation split (the last 10% of the text).

Adaptive drafting (:class:`edgekd.profile.speculative.DraftPolicy`) is compared with fixed-length drafting on
the same pair in one run: ``--draft-stop`` thresholds (a round ends after the draft's first proposal whose top
probability is below one) and ``--adaptive`` (the acceptance-driven length, alone and with each threshold) add
policies per draft length, timed interleaved with fixed γ and the teacher alone, prompt by prompt. Each draft's
record then gains ``best``: the fastest fixed and adaptive policies and their ratio. ``--clock thread`` times
the calling thread's CPU instead of the wall clock (onnxruntime runs on it with one thread), so on a shared
machine the time other processes hold the core is not counted; pin the run to one core (``taskset -c 0``).

    .venv/bin/python benchmarks/speculative_overhead.py --out benchmarks/results/speculative_overhead-<cpu>.json
    --label after [--pair runs/specdec-pair] [--gammas 1 2 3 4 5 6]
    [--repeats 3] [--prompts 16] [--prompt-tokens 32] [--new-tokens 64]
    [--draft-stop 0.3 0.5 0.7] [--adaptive] [--clock wall|thread]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
CONTEXT = 128
TEACHER = {"layers": 4, "width": 256, "heads": 4}
DRAFT = {"layers": 1, "width": 64, "heads": 2}

log = logging.getLogger("speculative_overhead")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON result file (updated in place)")
    parser.add_argument("--label", required=True, help="this run's key in the file, e.g. before / after")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a text file (default: Tiny Shakespeare)")
    parser.add_argument("--pair", type=Path, default=Path("runs") / "specdec-pair",
                        help="where the trained pair is kept (trained on first use)")
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--draft-steps", type=int, default=400)
    parser.add_argument("--gammas", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--draft-stop", type=float, nargs="+", default=[],
                        help="adaptive drafting: stop thresholds on the draft's top-token probability, each in [0, 1)")
    parser.add_argument("--adaptive", action="store_true",
                        help="adaptive drafting: also the acceptance-driven draft length (alone and with each stop)")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall",
                        help="wall-clock time, or the calling thread's CPU time (a shared machine)")
    args = parser.parse_args(argv)
    if not args.corpus.is_file():
        parser.error(f"--corpus {args.corpus}: file not found")
    bad = [stop for stop in args.draft_stop if not 0 <= stop < 1]
    if bad:
        parser.error(f"--draft-stop {bad[0]:g}: a threshold on the draft's top-token probability must be in [0, 1)")
    return args


def train_pair(folder: Path, corpus: Path, teacher_steps: int, draft_steps: int) -> dict[str, Any]:
    """The teacher and the drafts in ``folder`` (see the module docstring), each trained and exported unless
    already there; their record (``pair.json``)."""
    import torch

    from edgekd.export.causal_lm_onnx import export_causal_lm
    from edgekd.models.causal_lm import build_causal_lm, validation_loss, windows
    from edgekd.profile.generate import CachedGenerator

    tokenizer, train, validation = encoded_corpus(corpus)
    generator = torch.Generator().manual_seed(0)
    path = folder / "pair.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"corpus": str(corpus), "drafts": {}}

    def fit(name: str, sizes: dict[str, int], steps: int, batches, seed: int) -> dict[str, Any]:
        started = time.perf_counter()
        model = build_causal_lm("gpt2", vocab_size=len(tokenizer), context=CONTEXT, seed=seed, **sizes)
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.1)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.05)
        model.train()
        for step in range(steps):
            inputs, targets = batches()
            loss = torch.nn.functional.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), targets.flatten())
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            if step % 25 == 0:
                log.info("%s step %d/%d: loss %.3f", name, step, steps, loss.item())
        export_causal_lm(model.eval(), folder / f"{name}.onnx")
        return sizes | {"steps": steps, "seconds": time.perf_counter() - started,
                        "val_loss": validation_loss(model, validation, CONTEXT)}

    if "teacher" not in record:
        record["teacher"] = fit("teacher", TEACHER, teacher_steps, lambda: windows(train, 64, 16, generator), 0)
    drafts = record["drafts"]
    if "draft-sequence" not in drafts:
        # sequence-level KD: the teacher's greedy continuations of training prompts, mixed with corpus windows
        target = CachedGenerator(folder / "teacher.onnx")
        starts = torch.randint(train.numel() - 32, (256,), generator=generator).tolist()
        sequences = torch.tensor([train[s:s + 32].tolist() + target.generate(train[s:s + 32].tolist(), 64).tokens
                                  for s in starts])

        def mixed() -> tuple[torch.Tensor, torch.Tensor]:
            rows = sequences[torch.randint(len(sequences), (8,), generator=generator)]
            corpus_inputs, corpus_targets = windows(train, 95, 8, generator)
            return torch.cat([rows[:, :-1], corpus_inputs]), torch.cat([rows[:, 1:], corpus_targets])

        drafts["draft-sequence"] = fit("draft-sequence", DRAFT, draft_steps, mixed, 1) | {
            "trained_on": "the teacher's greedy continuations of 256 training prompts + corpus windows"}
    if "draft-corpus" not in drafts:
        drafts["draft-corpus"] = fit("draft-corpus", DRAFT, draft_steps, lambda: windows(train, 95, 16, generator),
                                     1) | {"trained_on": "corpus windows alone"}
    path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def encoded_corpus(corpus: Path) -> tuple[Any, Any, Any]:
    """The character tokenizer of the whole text (nanoGPT's convention) and the encoded 90/10 split."""
    from edgekd.data.corpus import build_char_tokenizer, encode, read_corpus

    split = read_corpus(corpus)
    tokenizer = build_char_tokenizer(split.train + split.validation)
    return tokenizer, encode(tokenizer, split.train, "train"), encode(tokenizer, split.validation, "validation")


def git_commit(path: Path) -> str | None:
    """The commit checked out where ``path`` lives (None outside a git checkout)."""
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    """Measure and record; 0 on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(argv)
    import edgekd
    from edgekd.atomic import write_json
    from edgekd.profile.generate import CachedGenerator
    from edgekd.profile.speculative_bench import measure_speculative

    args.pair.mkdir(parents=True, exist_ok=True)
    pair = train_pair(args.pair, args.corpus, args.teacher_steps, args.draft_steps)
    ids = encoded_corpus(args.corpus)[2].tolist()
    step = (len(ids) - args.prompt_tokens) // args.prompts
    prompts = [ids[k * step:k * step + args.prompt_tokens] for k in range(args.prompts)]
    library = Path(edgekd.__file__).resolve().parent.parent
    log.info("measuring with edgekd from %s", library)
    target = CachedGenerator(args.pair / "teacher.onnx", threads=1)
    records = {}
    for name in pair["drafts"]:
        log.info("draft %s", name)
        records[name] = measure_speculative(CachedGenerator(args.pair / f"{name}.onnx", threads=1), target, prompts,
                                            args.new_tokens, CONTEXT, gammas=args.gammas, repeats=args.repeats,
                                            draft_stops=args.draft_stop, adaptive=args.adaptive, clock=args.clock)
        records[name]["best"] = best_policies(records[name]["gammas"])
    result = json.loads(args.out.read_text(encoding="utf-8")) if args.out.is_file() else {
        "benchmark": "speculative_overhead", "runs": {}}
    result["pair"] = pair
    result["runs"][args.label] = {"edgekd": str(library), "commit": git_commit(library),
                                  "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                                  "drafts": records}
    groups = {group: [run["drafts"] for label, run in sorted(result["runs"].items()) if label.split("-")[0] == group]
              for group in ("before", "after")}
    if all(groups.values()):
        result["comparison"] = comparison(groups["before"], groups["after"])
    write_json(args.out, result)
    log.info("wrote %s", args.out)
    return 0


def best_policies(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest fixed-length and the fastest adaptive entry of one draft's record (by speed-up over the
    teacher alone, measured interleaved in the same run), and the adaptive one's speed-up over the fixed one."""
    def fastest(found: list[dict[str, Any]]) -> dict[str, Any] | None:
        if not found:
            return None
        entry = max(found, key=lambda e: e["speedup"])
        return {key: entry[key] for key in ("policy", "gamma", "draft_stop", "adaptive", "speedup", "acceptance_rate",
                                            "proposals_per_round", "tokens_per_round", "lossless")}

    fixed = fastest([e for e in entries if _fixed(e)])
    adaptive = fastest([e for e in entries if not _fixed(e)])
    return {"fixed": fixed, "adaptive": adaptive,
            "adaptive_over_fixed": adaptive["speedup"] / fixed["speedup"] if fixed and adaptive else None}


def comparison(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per draft and draft length: every run's speed-up over the teacher alone in each group (runs labelled
    ``before``/``before-<n>`` and ``after``/``after-<n>``, alternated in time so load drifts hit both alike),
    their medians, the acceptance rate and whether every run was lossless."""
    table: dict[str, list[dict[str, Any]]] = {}
    for name in set.intersection(*(set(run) for run in before + after)):
        gammas = sorted(set.intersection(*({e["gamma"] for e in run[name]["gammas"] if _fixed(e)}
                                           for run in before + after)))
        rows = []
        for gamma in gammas:
            entries = {group: [next(e for e in run[name]["gammas"] if e["gamma"] == gamma and _fixed(e))
                               for run in runs] for group, runs in (("before", before), ("after", after))}
            speedups = {group: [e["speedup"] for e in found] for group, found in entries.items()}
            rows.append({"gamma": gamma, "acceptance_rate": entries["after"][0]["acceptance_rate"],
                         "speedups_before": speedups["before"], "speedups_after": speedups["after"],
                         "median_speedup_before": statistics.median(speedups["before"]),
                         "median_speedup_after": statistics.median(speedups["after"]),
                         "lossless": all(e["lossless"] for found in entries.values() for e in found)})
        table[name] = rows
    return table


def _fixed(entry: dict[str, Any]) -> bool:
    """Whether a record's entry is fixed-length drafting (records written before adaptive drafting have only those)."""
    return not entry.get("draft_stop") and not entry.get("adaptive")


if __name__ == "__main__":
    sys.exit(main())
