"""transformers' own ONNX exporter against edgekd's TorchScript path, family by family, on tiny random models.

    python benchmarks/hf_exporter.py [--only bert/sequence mixtral/causal_lm ...] [--runs 30]

Each case is a ``model_type`` and a use (``sequence``, ``token``, ``image`` classifier or ``causal_lm``), built
tiny and random by ``benchmarks/family_export_sweep.py``'s builders, and exported by each exporter on its own
(:mod:`edgekd.export.backends`: ``torchscript`` and ``transformers``) through edgekd's parity gate:

- classifiers: the sweep's right-padded batch (lengths 2–14, so the attention masks are non-trivial), its first
  row and 7 rows, and the batch cut to a shorter length (is the sequence axis really dynamic?);
- causal LMs: a 7-token prefix on an empty cache, then 7 cached one-token steps (edgekd's KV-cache layout).

Per exporter: ``ok`` with the export seconds, parity max difference, opset, the graph's input and output names and
their dimensions (an axis name where dynamic), or the one-line error. Where both export, the onnxruntime latency
(one thread, the padded batch; for causal LMs one cached step after a 12-token prompt) is timed interleaved
(``--runs`` rounds, each running both) and the ratio transformers / TorchScript of the medians given. The JSON goes
to ``benchmarks/results/hf_exporter-<cpu>.json``, rewritten after every case.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.family_export_sweep import LONGEST, build_case, cpu_slug, quiet_single_thread  # noqa: E402
from edgekd.atomic import write_json  # noqa: E402
from edgekd.errors import first_line  # noqa: E402
from edgekd.export import hf_exporter  # noqa: E402
from edgekd.export.backends import Exporter, write_first  # noqa: E402
from edgekd.export.causal_lm_onnx import causal_lm_onnx  # noqa: E402
from edgekd.export.causal_lm_stage import cached_parity  # noqa: E402
from edgekd.export.config import load_export_target  # noqa: E402
from edgekd.export.onnx_export import _torch_export  # noqa: E402
from edgekd.export.parity import check_parity, parity_batches  # noqa: E402
from edgekd.models.call import used_inputs  # noqa: E402
from edgekd.profile.cpu import detect_cpu  # noqa: E402
from edgekd.profile.generate import CachedGenerator  # noqa: E402

CASES = ("bert/sequence", "distilbert/sequence", "roberta/sequence", "deberta-v2/sequence", "llama/sequence",
         "qwen2/sequence", "gpt2/sequence", "bert/token", "vit/image", "convnext/image", "qwen2/causal_lm",
         "llama/causal_lm", "mixtral/sequence", "mixtral/causal_lm", "qwen2_moe/sequence", "qwen2_moe/causal_lm",
         "qwen3_moe/sequence", "qwen3_moe/causal_lm", "gpt_oss/sequence", "gpt_oss/causal_lm")
EXPORTERS: tuple[Exporter, ...] = ("torchscript", "transformers")
#: Causal LMs' parity: prefix tokens, then cached steps; latency: one cached step after a prompt this long.
PREFIX, STEPS, PROMPT = 7, 7, 12


def classifier_case(model: torch.nn.Module, task: str, sample: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The inputs a classifier is exported on (under the batch's names) with its dynamic axes, and its parity
    batches: the sample, 1 and 7 rows, and (text) the sample cut to a shorter length."""
    batch = used_inputs(model, {"input": sample} if task == "image" else sample)
    axes = {name: {0: "batch"} if task == "image" else {0: "batch", 1: "sequence"} for name in batch}
    if task == "token":
        axes["logits"] = {0: "batch", 1: "sequence"}
    batches = parity_batches(batch, [1, 7, len(next(iter(batch.values())))])
    if task != "image":
        batches.append({name: tensor[:, :LONGEST - 5] for name, tensor in batch.items()})
    return {"batch": batch, "axes": axes}, batches


def export_one(model: torch.nn.Module, task: str, sample: Any, exporter: Exporter, path: Path) -> dict[str, Any]:
    """Export with ``exporter`` alone through edgekd's checks; its record."""
    target = load_export_target("onnx-fp32")
    if task == "causal_lm":
        rows = sample["input_ids"][:4].clamp(min=4)
        trace: Callable[[], bytes] = {"torchscript": lambda: causal_lm_onnx(model, target.opset),
                                      "transformers": lambda: hf_exporter.causal_lm_onnx(model, target.opset)}[exporter]

        def parity(tmp: Path) -> Any:
            return cached_parity(model, CachedGenerator(tmp), rows, PREFIX, target)
    else:
        case, batches = classifier_case(model, task, sample)
        batch, axes = case["batch"], case["axes"]
        trace = {"torchscript": lambda: _torch_export(model, batch, path, target.opset, axes, "logits"),
                 "transformers": lambda: hf_exporter.classifier_onnx(model, batch, axes, "logits",
                                                                     target.opset)}[exporter]

        def parity(tmp: Path) -> Any:
            return check_parity(model, tmp, batches, target.parity_atol, rtol=target.parity_rtol, label=path)
    start = time.perf_counter()
    try:
        proto, size_mb, result, _ = write_first(path, target, {exporter: trace}, parity)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded
        return {"status": "fail", "exception": type(exc).__name__, "error": first_line(exc)[:400],
                "seconds": round(time.perf_counter() - start, 2)}
    dims = {value.name: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
            for value in (*proto.graph.input, *proto.graph.output)}
    return {"status": "ok", "seconds": round(time.perf_counter() - start, 2), "size_mb": round(size_mb, 4),
            "opset": next(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")),
            "parity_max_abs_diff": result.max_abs_diff, "argmax_agreement": result.argmax_agreement,
            "input_names": [value.name for value in proto.graph.input],
            "output_names": [value.name for value in proto.graph.output], "dims": dims}


def feeds_for(path: Path, task: str, sample: Any, model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The inputs one timed call gets: the padded batch, or one cached token after a ``PROMPT``-token prompt."""
    if task != "causal_lm":
        case, _ = classifier_case(model, task, sample)
        return {name: tensor.numpy() for name, tensor in case["batch"].items()}
    generator = CachedGenerator(path)
    prompt = np.arange(4, 4 + PROMPT, dtype=np.int64)[None] % model.config.vocab_size
    _, cache = generator.step(prompt, generator.empty_cache(1))
    return generator.feed(prompt[:, -1:], {name: np.array(value) for name, value in cache.items()})


def interleaved_latency(paths: dict[str, Path], feeds: dict[str, dict[str, np.ndarray]],
                        runs: int) -> dict[str, float]:
    """Median milliseconds per call of each graph, one onnxruntime thread, the graphs run in turn each round."""
    sessions = {}
    for name, path in paths.items():
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    times: dict[str, list[float]] = {name: [] for name in paths}
    for round_ in range(runs + 3):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, feeds[name])
            if round_ >= 3:  # warm-up rounds
                times[name].append((time.perf_counter() - start) * 1000)
    return {name: round(statistics.median(values), 4) for name, values in times.items()}


def run_case(name: str, runs: int, timeout: int) -> dict[str, Any]:
    """Both exporters on one case, and their latencies where both exported."""
    model_type, task = name.split("/")
    built = build_case(model_type, task, timeout)
    if isinstance(built, str):
        return {"status": "build", "error": built}
    model, sample, level = built
    record: dict[str, Any] = {"model_class": type(model).__name__, "sizes_level": level,
                              "params": sum(p.numel() for p in model.parameters())}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {exporter: Path(tmp) / f"{exporter}.onnx" for exporter in EXPORTERS}
        for exporter in EXPORTERS:
            record[exporter] = export_one(model, task, sample, exporter, paths[exporter])
            print(f"  {name:24s} {exporter:12s} {record[exporter]['status']} {record[exporter].get('seconds')} s "
                  f"{record[exporter].get('parity_max_abs_diff', record[exporter].get('error', ''))}", flush=True)
        if all(record[exporter]["status"] == "ok" for exporter in EXPORTERS):
            feeds = {exporter: feeds_for(paths[exporter], task, sample, model) for exporter in EXPORTERS}
            latency = interleaved_latency(paths, feeds, runs)
            record["latency_ms"] = latency
            record["latency_ratio_transformers_over_torchscript"] = round(
                latency["transformers"] / latency["torchscript"], 3)
            record["same_input_names"] = (record["torchscript"]["input_names"]
                                          == record["transformers"]["input_names"])
    return record


def main(argv: list[str] | None = None) -> int:
    """Run the cases and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=CASES, help="these cases only")
    parser.add_argument("--runs", type=int, default=30, help="timed rounds per case")
    parser.add_argument("--timeout", type=int, default=300, help="seconds to build a case")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import transformers

    quiet_single_thread()
    out = args.out or ROOT / "benchmarks" / "results" / f"hf_exporter-{cpu_slug()}.json"
    results: dict[str, Any] = {}
    for name in args.only or CASES:
        results[name] = run_case(name, args.runs, args.timeout)
        write_json(out, {"transformers": transformers.__version__, "torch": torch.__version__,
                         "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                         "onnxscript": _version("onnxscript"), "cpu": detect_cpu().to_json(),
                         "threads": 1, "runs": args.runs, "results": results, "summary": summary(results)})
    print(summary(results))
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """Which exporter exported which case, and the latency ratios where both did."""
    return {
        exporter: sorted(name for name, record in results.items() if record.get(exporter, {}).get("status") == "ok")
        for exporter in EXPORTERS
    } | {"latency_ratio": {name: record["latency_ratio_transformers_over_torchscript"]
                           for name, record in results.items() if "latency_ratio_transformers_over_torchscript"
                           in record}}


if __name__ == "__main__":
    raise SystemExit(main())
