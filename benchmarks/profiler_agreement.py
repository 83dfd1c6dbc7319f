"""Does ``edgekd``'s profiler report the latency a plain onnxruntime loop measures?

Builds a small real model (a random-weight 4-layer, 256-wide BERT encoder exported with
``torch.onnx.export``, opset 17), then times it alternately with

* a plain loop: a fresh ``python -c`` process with only numpy and onnxruntime, the same session
  options (intra-op threads of ``host-cpu``, one inter-op thread, sequential execution), the
  same input shapes, warmup and runs; and
* ``edgekd.profile.runner.profile_onnx`` on the ``host-cpu`` device profile (what
  ``edgekd profile ... --json`` reports),

alternating which goes first in each repeat so drift on a noisy machine hits both equally.
The agreement is the median over repeats of (edgekd p50 ÷ plain p50), each pair measured back
to back so that load from other processes, which comes and goes over seconds, mostly cancels;
it must be within ±5%. The ratio of the two medians is recorded too.

    python benchmarks/profiler_agreement.py [--out FILE.json] [--runs N] [--warmup N] [--repeats N]

Writes ``benchmarks/results/profiler_agreement-<cpu-slug>.json`` by default.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import onnxruntime

from edgekd.atomic import write_json
from edgekd.config.device import load_device
from edgekd.profile.cpu import detect_cpu, host_threads, resolve_threads
from edgekd.profile.references import export_encoder
from edgekd.profile.runner import profile_onnx
from edgekd.profile.timing import model_size_mb

TOLERANCE = 0.05
RESULTS = Path(__file__).resolve().parent / "results"
MODEL_CONFIG = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}

PLAIN_LOOP = r"""
import json, sys, time
import numpy as np
import onnxruntime as ort

args = json.loads(sys.argv[1])
options = ort.SessionOptions()
options.intra_op_num_threads = args["threads"]
options.inter_op_num_threads = 1
options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
session = ort.InferenceSession(args["model"], options, providers=["CPUExecutionProvider"])
shape = (args["batch"], args["sequence_length"])
feeds = {
    "input_ids": np.random.default_rng(0).integers(0, 32, shape, dtype=np.int64),
    "attention_mask": np.ones(shape, dtype=np.int64),
    "token_type_ids": np.zeros(shape, dtype=np.int64),
}
for _ in range(args["warmup"]):
    session.run(None, feeds)
times = []
for _ in range(args["runs"]):
    start = time.perf_counter()
    session.run(None, feeds)
    times.append((time.perf_counter() - start) * 1000.0)
print(json.dumps({"p50_ms": float(np.percentile(times, 50))}))
"""


def build_model(target: Path) -> None:
    """Export a random-weight small BERT encoder with dynamic batch and sequence axes."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(**MODEL_CONFIG)
    config._attn_implementation = "eager"
    export_encoder(transformers.BertModel(config), target, sequence_length=128, dynamic=True)


def plain_p50(model: Path, *, threads: int, batch: int, sequence_length: int, warmup: int, runs: int) -> float:
    """p50 latency (ms) from the plain onnxruntime loop in its own fresh process."""
    args = {"model": str(model), "threads": threads, "batch": batch, "sequence_length": sequence_length,
            "warmup": warmup, "runs": runs}
    out = subprocess.run([sys.executable, "-c", PLAIN_LOOP, json.dumps(args)], check=True,
                         capture_output=True, text=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["p50_ms"])


def cpu_slug() -> str:
    """A file-name-safe name for this CPU, e.g. ``intel-r-xeon-r-processor``."""
    return re.sub(r"[^a-z0-9]+", "-", detect_cpu().brand.lower()).strip("-") or "unknown-cpu"


def run(runs: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Build the model, time it both ways ``repeats`` times, return the JSON record."""
    device = load_device("host-cpu")
    threads = host_threads(resolve_threads(device))
    plain: list[float] = []
    edgekd: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "bert-small.onnx"
        build_model(model)
        size_mb = model_size_mb(model)
        shapes: dict[str, list[int]] = {}
        for repeat in range(repeats):
            order = ("plain", "edgekd") if repeat % 2 == 0 else ("edgekd", "plain")
            for which in order:
                if which == "plain":
                    plain.append(plain_p50(model, threads=threads, batch=device.inputs.batch,
                                           sequence_length=device.inputs.sequence_length,
                                           warmup=warmup, runs=runs))
                else:
                    result = profile_onnx(model, device, warmup=warmup, runs=runs)
                    edgekd.append(result.p50_ms)
                    shapes = result.input_shapes
            print(f"repeat {repeat + 1}/{repeats}: plain p50 {plain[-1]:.3f} ms, "
                  f"edgekd p50 {edgekd[-1]:.3f} ms, ratio {edgekd[-1] / plain[-1]:.3f}")
    pair_ratios = [e / p for e, p in zip(edgekd, plain, strict=True)]
    ratio = statistics.median(pair_ratios)
    return {
        "benchmark": "profiler_agreement",
        "command": " ".join(["python benchmarks/profiler_agreement.py", *sys.argv[1:]]),
        "cpu": detect_cpu().to_json(),
        "onnxruntime": onnxruntime.__version__,
        "python": sys.version.split()[0],
        "device": device.name,
        "model": {"arch": "bert (random weights)", **MODEL_CONFIG, "opset": 17, "size_mb": round(size_mb, 3)},
        "input_shapes": shapes,
        "threads": threads,
        "warmup": warmup,
        "runs": runs,
        "repeats": repeats,
        "plain_p50_ms": plain,
        "edgekd_p50_ms": edgekd,
        "per_repeat_ratio": pair_ratios,
        "p50_ratio": ratio,
        "ratio_of_medians": statistics.median(edgekd) / statistics.median(plain),
        "tolerance": TOLERANCE,
        "passed": abs(ratio - 1.0) <= TOLERANCE,
    }


def main() -> int:
    """Run the benchmark, write its JSON and exit 1 when the profilers disagree by more than 5%."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per measurement")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs before timing")
    parser.add_argument("--repeats", type=int, default=10, help="alternating measurement pairs")
    args = parser.parse_args()
    record = run(args.runs, args.warmup, args.repeats)
    out = args.out or RESULTS / f"profiler_agreement-{cpu_slug()}.json"
    write_json(out, record)
    verdict = "PASS" if record["passed"] else "FAIL"
    print(f"{verdict}: edgekd/plain p50 ratio {record['p50_ratio']:.4f} (tolerance ±{TOLERANCE:.0%}); wrote {out}")
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
