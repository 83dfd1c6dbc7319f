"""Does pruning or factorizing a causal LM's decoder pay per token on this CPU? The stages' own measurements.

A Llama-style character LM with grouped-query attention is trained briefly on Tiny Shakespeare
(``../shared/data/tinyshakespeare``; nanoGPT's 90/10 split) by a recipe run through the pipeline, then
pruned (``ratio`` of its KV groups and gated-MLP channels, one step, one epoch of recovery from the unpruned
model) and factorized (``param_ratio``, one epoch of recovery), each stage measuring its steps as it always
does (:mod:`edgekd.prune.causal_lm`): validation loss (nats per token), parameters, MACs, the KV-cache
export's parity, and greedy generation of ``--new`` tokens after a ``--prompt``-token prompt with the
stage's graphs interleaved (per-token speed-up over the stage's input, paired over the rounds with its
interval). One thread (``OMP_NUM_THREADS=1``), the CPU recorded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prune_lm.py [--quick] [--out FILE.json]

``--quick`` uses a 2-layer, 64-wide model on the corpus's first 100,000 characters (about a minute);
``--chars N`` limits a full run to the first N characters.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
#: name → (layers, width, query heads, KV heads)
SIZES = {"2x64": (2, 64, 4, 2), "4x256": (4, 256, 8, 4)}
#: Characters of the corpus ``--quick`` uses.
QUICK_CHARS = 100_000
KEPT = ("val_loss", "perplexity", "params", "macs", "parity_max_abs_diff", "time_to_first_token_ms",
        "per_token_p50_ms", "per_token_p90_ms", "tokens_per_second")


def recipe(size: str, corpus: Path, device: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The benchmark's recipe: teacher → prune → factorize, all on the teacher role."""
    layers, width, heads, kv_heads = SIZES[size]
    model = {"arch": "hf", "config": {"model_type": "llama", "hidden_size": width, "num_hidden_layers": layers,
                                      "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                                      "intermediate_size": 4 * width}}
    train = {"batch_size": 32, "lr": 3e-3}
    recovery = {"epochs": 1, "batch_size": 32, "lr": 1e-3}
    return {
        "name": f"prune-lm-{size}", "seed": 0, "threads": 1, "device": str(device),
        "data": {"source": "corpus", "path": str(corpus), "context": args.context},
        "teacher": {"model": model}, "student": {"model": model},
        "stages": [{"stage": "teacher", "epochs": args.epochs, **train},
                   {"stage": "prune", "role": "teacher", "ratio": args.ratio, "targets": ["heads", "ffn"],
                    "recovery": recovery},
                   {"stage": "factorize", "role": "teacher", "param_ratio": args.param_ratio,
                    "recovery": recovery}],
    }


def summary(record: dict[str, Any]) -> dict[str, Any]:
    """A compress stage's before/after figures of the teacher and its per-token speed-up, read from the stage's
    typed record (a malformed one raises :class:`StorageError` naming its stage.json and field)."""
    from edgekd.errors import StorageError
    from edgekd.prune.record import LMCompressionRecord, read_compression_record

    stage = read_compression_record(record, "teacher")
    if not isinstance(stage, LMCompressionRecord):
        raise StorageError(f"{record['index']:02d}-{record['stage']}/stage.json: not a causal LM's compression")
    speedups = stage.model_dump(mode="json", include={"speedup_interval", "speedup_range"})
    return {"before": stage.before.model_dump(include=set(KEPT)), "after": stage.model_dump(include=set(KEPT)),
            "params_ratio": stage.params_ratio, "macs_ratio": stage.macs_ratio,
            "val_loss_change": stage.val_loss_change, "speedup": speedups["speedup_interval"],
            "speedup_range": speedups["speedup_range"]}


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (see the module docstring) and write its JSON; 0 on success."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--size", choices=sorted(SIZES), default="4x256")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--chars", type=int, help="Use only the corpus's first CHARS characters (default: all).")
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--param-ratio", type=float, default=0.5)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from edgekd.api import run
    from edgekd.distill.record import read_teacher_record
    from edgekd.profile.cpu import detect_cpu

    size = "2x64" if args.quick else args.size
    cpu = detect_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = CORPUS
        chars = QUICK_CHARS if args.quick else args.chars
        if chars is not None:  # the first characters, split 90/10 as the whole corpus is
            corpus = work / "input.txt"
            corpus.write_text(CORPUS.read_text(encoding="utf-8")[:chars], encoding="utf-8")
        device = work / "device.yaml"
        budget = {"p90_ms": 1000, "size_mb": 1000, "peak_memory_mb": 4000}  # not judged: no profile stage
        device.write_text(yaml.safe_dump({"name": "host-1t", "threads": 1, "budget": budget,
                                          "generation": {"prompt_tokens": args.prompt, "new_tokens": args.new}}))
        path = work / "recipe.yaml"
        path.write_text(yaml.safe_dump(recipe(size, corpus, device, args)))
        started = time.perf_counter()
        run(path, out=work / "run", show_progress=False)
        seconds = time.perf_counter() - started
        records = {name: json.loads((next((work / "run").glob(f"*-{name}")) / "stage.json").read_text())
                   for name in ("teacher", "prune", "factorize")}
    teacher = read_teacher_record(records["teacher"]).teacher
    result = {"benchmark": "prune_lm", "quick": args.quick, "cpu": cpu.to_json(), "threads": 1, "size": size,
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "corpus": CORPUS.name,
              "seconds": seconds, "teacher": {"val_loss": teacher.val_loss, "params": teacher.params},
              "prune": summary(records["prune"]), "factorize": summary(records["factorize"])}
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.brand.lower()).strip("-")
    out = args.out or REPO / "benchmarks" / "results" / f"prune_lm-{'quick' if args.quick else slug}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"out": str(out), "prune": result["prune"]["speedup"],
                      "factorize": result["factorize"]["speedup"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
