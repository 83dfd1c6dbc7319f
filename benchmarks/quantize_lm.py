"""Does dynamic INT8 pay for a causal LM's KV-cache decoder on this CPU? The quantize stage's own measurements.

For each size (Llama-style character LMs built from sizes), a model is trained briefly on Tiny
Shakespeare (``../shared/data/tinyshakespeare``; nanoGPT's 90/10 split, character vocabulary),
exported with its KV cache, quantized to dynamic INT8 for this CPU's ISA, and measured exactly as the
``quantize`` stage does (:mod:`edgekd.quantize.causal_lm`): validation loss, next-token accuracy and
top-1 agreement over onnxruntime on validation windows, then greedy generation of ``--new`` tokens after
a ``--prompt``-token prompt with FP32 and INT8 interleaved over ``--rounds`` rounds (per-token speed-up
paired over the rounds with its interval, and its min–max range), and the decision the stage would take
with its default settings. One thread (``OMP_NUM_THREADS=1``), the CPU recorded.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quantize_lm.py [--quick] [--out FILE.json]

``--quick`` measures the smallest size with a few training steps (a minute).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
#: name → (layers, width, heads)
SIZES = {"2x64": (2, 64, 4), "4x256": (4, 256, 4), "6x512": (6, 512, 8)}


def measure(name: str, shape: tuple[int, int, int], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Train, export, quantize and measure one size; the stage's figures and decision."""
    import torch
    import torch.nn.functional as F

    from edgekd.config.device import DeviceProfile
    from edgekd.data.config import CorpusData
    from edgekd.data.lm_data import prepare_lm_data
    from edgekd.export.causal_lm_onnx import export_causal_lm
    from edgekd.models.causal_lm import build_causal_lm
    from edgekd.quantize.causal_lm import INT8, judge_int8, validation_windows
    from edgekd.quantize.config import QuantizeStage
    from edgekd.quantize.model import int8_options
    from edgekd.quantize.quantizers import quantize_dynamic_int8

    layers, width, heads = shape
    data = prepare_lm_data(CorpusData(source="corpus", path=args.corpus, context=args.context), None)
    model = build_causal_lm("llama", vocab_size=len(data.tokenizer), context=args.context + args.new + args.prompt,
                            layers=layers, width=width, heads=heads, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    model.train()
    for step, (_, inputs, targets) in enumerate(data.windows().batches(16, shuffle=True, generator=generator)):
        if step == args.steps:
            break
        loss = F.cross_entropy(model(**inputs).logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    train_seconds = time.perf_counter() - started
    model.eval()
    fp32 = export_causal_lm(model, work / f"{name}.onnx")
    config = QuantizeStage(stage="quantize", rounds=args.rounds)
    device = DeviceProfile.model_validate({"name": "host-1-thread", "threads": 1,
                                           "budget": {"p90_ms": 1000, "size_mb": 10_000, "peak_memory_mb": 10_000},
                                           "generation": {"prompt_tokens": args.prompt, "new_tokens": args.new}})
    options = int8_options(config, device)
    int8 = quantize_dynamic_int8(fp32, work / f"{name}.{INT8}.onnx", options)
    windows = validation_windows(data.validation.numpy(), args.context, config.loss_windows)
    judged = judge_int8(fp32, int8, windows, data.validation[:args.prompt].tolist(), device, config)
    record = judged.record({"fp32": fp32.name, INT8: int8.name})
    return {"layers": layers, "width": width, "heads": heads, "params": sum(p.numel() for p in model.parameters()),
            "train_steps": args.steps, "train_seconds": train_seconds, "windows": len(windows),
            "int8_settings": options.settings.to_json(), **record}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the smallest size, 30 training steps")
    parser.add_argument("--out", type=Path, help="JSON file (default benchmarks/results/quantize_lm-<cpu>.json)")
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekd-quantize-lm"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--prompt", type=int, default=32)
    parser.add_argument("--new", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if not args.corpus.is_file():
        print(f"{args.corpus}: no such corpus file (--corpus)", file=sys.stderr)
        return 2
    if args.quick:
        args.steps = min(args.steps, 30)
    import onnxruntime

    from edgekd.atomic import write_json
    from edgekd.profile.cpu import detect_cpu

    args.work.mkdir(parents=True, exist_ok=True)
    sizes = dict(list(SIZES.items())[:1]) if args.quick else SIZES
    cases = {name: measure(name, shape, args, args.work) for name, shape in sizes.items()}
    cpu = detect_cpu()
    result = {"benchmark": "quantize_lm", "quick": args.quick, "cpu": cpu.to_json(),
              "onnxruntime": onnxruntime.__version__, "threads": 1,
              "settings": {key: getattr(args, key) for key in ("steps", "lr", "context", "prompt", "new", "rounds")},
              "cases": cases,
              "summary": {name: {"speedup": case["variants"]["int8-dynamic"]["speedup"],
                                 "loss_change": case["loss_change"], "decision": case["decision"]}
                          for name, case in cases.items()}}
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.brand.lower()).strip("-")
    out = args.out or REPO / "benchmarks" / "results" / f"quantize_lm{'-quick' if args.quick else ''}-{slug}.json"
    write_json(out, result)
    print(json.dumps(result["summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
