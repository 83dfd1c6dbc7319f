"""Does INT8 earn its place here? edgekd's quantize variants against FP32 and against Optimum's peers.

Two cases, each measured in one interleaved timing run (edgekd's profiler, ``host-cpu`` profile):

* **bert-small-sst2**: a BERT-Small-shaped ``BertForSequenceClassification`` (4 layers × 512,
  8 heads, WordPiece vocabulary trained on SST-2), trained briefly on an SST-2 subset so that
  accuracy and agreement mean something (``../shared/data/sst2``; skipped with a reason when
  absent), exported with dynamic batch and sequence axes and timed at batch 1 × 128 tokens.
* **demo-cnn-teacher / demo-cnn-student**: the demo's digits CNNs (the ``demo-digits-int8``
  recipe run up to its export stage).

Rows per case: ``fp32``, ``fp32-optimized``, ``int8-dynamic`` (``int8-dynamic-fused`` for BERT:
quantized from the transformer-fused graph), ``int8-static-<method>`` for minmax, entropy and
percentile calibration, ``fp16``; each with ``p50_ms``, ``size_mb``, ``accuracy`` (test),
``agreement`` (test, with FP32) and the validation figures the gates use. Peer rows: the same
FP32 file through Optimum's ``ORTOptimizer`` (O1, O2) + ``ORTQuantizer`` and through
``ORTQuantizer`` alone, with the ``avx2`` preset and the preset of this CPU's instruction set; a
peer that crashes is recorded with its error.

Optimum (``optimum-onnx``) pins ``transformers<4.58`` and cannot be installed beside edgekd's
transformers 5, so it runs in its own virtual environment, given by ``--optimum-python``::

    python3 -m venv /tmp/optimum-venv
    /tmp/optimum-venv/bin/pip install 'optimum-onnx[onnxruntime]' 'torch>=2.4,<2.14' onnxruntime==<edgekd's>

The peer process only writes quantized files; every figure is measured by edgekd in this process.

    .venv/bin/python benchmarks/quantize.py --out benchmarks/results/quantize-<cpu>.json \\
        [--optimum-python /tmp/optimum-venv/bin/python] [--work DIR] [--sst2 DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BERT_SHAPE = {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "intermediate_size": 2048}
PEER_LEVELS = (None, 1, 2)  # None: ORTQuantizer alone; 1, 2: ORTOptimizer O1/O2 first


# --------------------------------------------------------------------------- the Optimum peer (own venv)


def peer_main(request_file: str) -> int:
    """Run in Optimum's venv: quantize one model dir per requested row; write paths or errors as JSON."""
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig, OptimizationConfig

    request = json.loads(Path(request_file).read_text())
    rows: dict[str, dict[str, Any]] = {}
    for row in request["rows"]:
        save = Path(request["out"]) / row["name"]
        started = time.perf_counter()
        try:
            model_dir, file_name = request["model_dir"], "model.onnx"
            if row["level"] is not None:
                optimizer = ORTOptimizer.from_pretrained(model_dir, file_names=[file_name])
                optimizer.optimize(save_dir=save, optimization_config=OptimizationConfig(
                    optimization_level=row["level"]))
                model_dir, file_name = str(save), "model_optimized.onnx"
            quantizer = ORTQuantizer.from_pretrained(model_dir, file_name=file_name)
            config = getattr(AutoQuantizationConfig, row["preset"])(is_static=False)
            quantizer.quantize(save_dir=save, quantization_config=config)
            path = save / f"{Path(file_name).stem}_quantized.onnx"
            rows[row["name"]] = {"path": str(path)}
        except Exception as exc:  # a crashing peer is a result, recorded with its error
            lines = [line for line in str(exc).splitlines() if line.strip()]
            rows[row["name"]] = {"error": f"{type(exc).__name__}: {lines[0] if lines else ''}"[:400]}
        rows[row["name"]].update(level=row["level"], preset=row["preset"],
                                 seconds=round(time.perf_counter() - started, 1))
    import optimum.version
    import transformers

    Path(request["result"]).write_text(json.dumps({"rows": rows, "optimum": optimum.version.__version__,
                                                   "transformers": transformers.__version__}))
    return 0


def host_preset(isa: list[str]) -> str:
    """Optimum's ``AutoQuantizationConfig`` preset matching an instruction set."""
    if any(f in isa for f in ("avx512_vnni", "amx_int8", "avx_vnni")):
        return "avx512_vnni"
    if "avx512f" in isa:
        return "avx512"
    return "arm64" if "neon" in isa else "avx2"


def run_peers(python: str | None, model_dir: Path, out: Path, isa: list[str]) -> dict[str, Any]:
    """Optimum's rows for ``model_dir/model.onnx``, or why there are none."""
    if python is None:
        return {"available": False, "reason": "no --optimum-python given (optimum-onnx needs transformers<4.58, "
                                              "so it cannot share edgekd's environment)", "rows": {}}
    presets = sorted({"avx2", host_preset(isa)})
    rows = [{"name": f"optimum-{'O' + str(level) + '-' if level else ''}{preset}", "level": level, "preset": preset}
            for level in PEER_LEVELS for preset in presets]
    request = {"model_dir": str(model_dir), "out": str(out), "rows": rows, "result": str(out / "peers.json")}
    out.mkdir(parents=True, exist_ok=True)
    (out / "request.json").write_text(json.dumps(request))
    done = subprocess.run([python, __file__, "--optimum-peer", str(out / "request.json")], capture_output=True,
                          text=True, cwd=out)
    if done.returncode != 0 or not (out / "peers.json").is_file():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"available": False, "reason": f"Optimum peer process failed: {tail}", "rows": {}}
    result = json.loads((out / "peers.json").read_text())
    return {"available": True, "host_preset": host_preset(isa), **result}


# --------------------------------------------------------------------------- cases


def bert_case(args: argparse.Namespace, work: Path) -> tuple[Path, Any, dict[str, Any]]:
    """Train (briefly) and export the BERT-Small classifier; returns the ONNX path, its QuantData and facts."""
    import numpy as np
    import torch
    import transformers

    from edgekd.data.tokenizer import load_or_train_tokenizer
    from edgekd.profile.references import export_encoder
    from edgekd.quantize.feeds import QuantData

    train = _read_tsv(args.sst2 / "train.tsv")
    dev = _read_tsv(args.sst2 / "dev.tsv")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    fit, held_out = [train[i] for i in order[: args.bert_train]], [train[i] for i in order[-args.bert_val:]]
    calibration = [train[i] for i in order[args.bert_train: args.bert_train + args.calibration]]
    tokenizer = load_or_train_tokenizer(None, [text for text, _ in fit])

    def batches(rows: list[tuple[str, int]], size: int, padding: str = "longest") -> list[tuple[dict, np.ndarray]]:
        out = []
        for start in range(0, len(rows), size):
            chunk = rows[start:start + size]
            enc = tokenizer([t for t, _ in chunk], padding=padding, truncation=True, max_length=128,
                            return_tensors="np")
            ids = enc["input_ids"].astype(np.int64)
            feeds = {"input_ids": ids, "attention_mask": enc["attention_mask"].astype(np.int64),
                     "token_type_ids": np.zeros_like(ids)}  # one sentence: segment 0 everywhere
            out.append((feeds, np.array([label for _, label in chunk], dtype=np.int64)))
        return out

    torch.manual_seed(args.seed)
    config = transformers.BertConfig(vocab_size=len(tokenizer), num_labels=2, max_position_embeddings=128,
                                     **BERT_SHAPE)
    config._attn_implementation = "eager"  # plain MatMul/Softmax in the exported graph
    model = transformers.BertForSequenceClassification(config)
    started = time.perf_counter()
    _train(model, batches(fit, 32), epochs=args.bert_epochs, seed=args.seed)
    facts = {"train_examples": len(fit), "epochs": args.bert_epochs, "val_examples": len(held_out),
             "test": "SST-2 dev", "test_examples": len(dev), "vocab_size": len(tokenizer),
             "train_seconds": round(time.perf_counter() - started, 1), **BERT_SHAPE}
    model_dir = work / "bert"
    model_dir.mkdir(parents=True, exist_ok=True)
    export_encoder(model, model_dir / "model.onnx", sequence_length=128, dynamic=True, output="logits")
    config.save_pretrained(model_dir)  # Optimum's peers read the model type from it
    # Entropy and percentile calibration pool activations across batches: one shape for all (the device's 128).
    data = QuantData(calibration=tuple(f for f, _ in batches(calibration, 16, padding="max_length")),
                     val=tuple(batches(held_out, 64)), test=tuple(batches(dev, 64)))
    return model_dir / "model.onnx", data, facts


def _read_tsv(path: Path) -> list[tuple[str, int]]:
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [(text.strip(), int(label)) for text, label in (line.rsplit("\t", 1) for line in lines if line.strip())]


def _train(model: Any, batches: list[Any], *, epochs: int, seed: int) -> None:
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for index in torch.randperm(len(batches), generator=generator).tolist():
            feeds, labels = batches[index]
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            loss = model(**inputs, labels=torch.from_numpy(labels)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()


def cnn_case(args: argparse.Namespace, work: Path) -> tuple[dict[str, Path], Any]:
    """The demo CNNs, trained and exported by the demo-digits-int8 recipe's first stages."""
    import edgekd
    from edgekd.config.device import load_device
    from edgekd.config.recipe import load_recipe
    from edgekd.data.task_data import prepare_task_data
    from edgekd.quantize.feeds import QuantData

    recipe = load_recipe("demo-digits-int8")
    export_only = recipe.model_copy(update={"stages": [s for s in recipe.stages
                                                      if s.stage in ("teacher", "distill", "export")]})
    path = work / "demo-recipe.json"
    path.write_text(json.dumps(export_only.model_dump(mode="json")))
    result = edgekd.run(_yaml(path), out=work / "demo-run")
    files = {role: result.run_dir / m.onnx for role, m in result.artifact.models.items()}
    return files, QuantData.from_dataset(prepare_task_data(recipe.data, recipe.seed), args.calibration,
                                        eval_batch=load_device("host-cpu").inputs.batch)


def _yaml(json_path: Path) -> Path:
    import yaml

    target = json_path.with_suffix(".yaml")
    target.write_text(yaml.safe_dump(json.loads(json_path.read_text())))
    return target


def measure(name: str, source: Path, data: Any, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """edgekd's variants and Optimum's peers of one model, timed together; the decision and the checks."""
    import shutil

    from edgekd.config.device import load_device
    from edgekd.profile.cpu import detect_cpu
    from edgekd.quantize.config import QuantizeStage
    from edgekd.quantize.model import builder_for, decide_for, gate_failure, time_variants

    device = load_device("host-cpu")
    config = QuantizeStage(stage="quantize", modes=["dynamic", "static", "fp16"],
                           calibration_methods=["minmax", "entropy", "percentile"],
                           calibration_samples=args.calibration,
                           warmup=args.warmup, runs=args.runs, rounds=args.rounds)
    out = work / name
    out.mkdir(parents=True, exist_ok=True)
    builder = builder_for(config, device, data)
    started = time.perf_counter()
    graphs, variants = builder.build(source, out, "model", precision=device.precision)
    build_seconds = time.perf_counter() - started
    peer_dir = out / "peer-input"
    peer_dir.mkdir(exist_ok=True)
    shutil.copy(source, peer_dir / "model.onnx")
    if (source.parent / "config.json").is_file():
        shutil.copy(source.parent / "config.json", peer_dir / "config.json")
    peers = run_peers(args.optimum_python, peer_dir, out / "peers", list(detect_cpu().isa))
    reference = builder.reference(source)
    peer_variants = [builder.evaluate(row, "int8", Path(info["path"]), reference)
                     for row, info in peers.get("rows", {}).items() if "path" in info]
    timed = time_variants([*variants, *peer_variants], device, config)
    ours, theirs = timed[: len(variants)], timed[len(variants):]
    decision = decide_for(ours, config, device)
    rows = {v.name: _row(v) for v in ours}
    for v in theirs:
        peers["rows"][v.name].update(_row(v))
    return {"source": str(source), "transformer": graphs.transformer, "fusions": graphs.fusions,
            "build_seconds": round(build_seconds, 1), "variants": rows, "peers": peers,
            "decision": decision.kept, "reason": decision.reason,
            "gate_failure": gate_failure(ours, config, label=name),
            "config": config.model_dump(mode="json"), "int8_settings": builder.options.settings.to_json()}


def _row(variant: Any) -> dict[str, Any]:
    keys = ("p50_ms", "size_mb", "accuracy", "agreement", "val_accuracy", "val_agreement", "excluded_nodes", "retries")
    row = {key: variant.to_json()[key] for key in keys}
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in row.items()}


def checks(cases: dict[str, Any]) -> dict[str, Any]:
    """The issue's checks on the measured figures (``None`` where a case was skipped)."""
    found: dict[str, Any] = {}
    teacher = cases.get("demo-cnn-teacher")
    if teacher:
        fp32, static = teacher["variants"]["fp32"], teacher["variants"]["int8-static-minmax"]
        found["cnn_static_int8_accuracy_drop"] = round(fp32["accuracy"] - static["accuracy"], 5)
        found["cnn_static_int8_size_ratio"] = round(fp32["size_mb"] / static["size_mb"], 3)
        found["cnn_static_int8_ok"] = (found["cnn_static_int8_accuracy_drop"] <= 0.01
                                       and found["cnn_static_int8_size_ratio"] >= 3)
    bert = cases.get("bert-small-sst2")
    if bert and "variants" in bert:
        fp32, chosen = bert["variants"]["fp32"], bert["variants"][bert["decision"]]
        found["bert_chosen_vs_fp32_p50_ratio"] = round(chosen["p50_ms"] / fp32["p50_ms"], 3)
        ours = min((v for name, v in bert["variants"].items() if name.startswith("int8")
                    and abs(v["val_accuracy"] - bert["variants"]["fp32"]["val_accuracy"]) <= 0.01),
                   key=lambda v: v["p50_ms"], default=None)
        preset = bert["peers"].get("host_preset")
        peers = [row for row in bert["peers"].get("rows", {}).values()
                 if row.get("preset") == preset and "p50_ms" in row]
        best_peer = min(peers, key=lambda row: row["p50_ms"], default=None)
        found["bert_edgekd_int8_vs_optimum_p50_ratio"] = (
            round(ours["p50_ms"] / best_peer["p50_ms"], 3) if ours and best_peer else None)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimum-peer", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="JSON file to write (default benchmarks/results/quantize-<cpu>.json)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgekd-quantize-bench"))
    parser.add_argument("--sst2", type=Path, default=REPO.parent / "shared" / "data" / "sst2")
    parser.add_argument("--optimum-python", help="python of a venv with optimum-onnx[onnxruntime]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bert-train", type=int, default=6000, help="SST-2 training sentences for BERT")
    parser.add_argument("--bert-val", type=int, default=1000, help="held-out training sentences (the gates' split)")
    parser.add_argument("--bert-epochs", type=int, default=1)
    parser.add_argument("--calibration", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    if args.optimum_peer:
        return peer_main(args.optimum_peer)

    import re

    import onnxruntime

    from edgekd.atomic import write_json
    from edgekd.config.device import load_device
    from edgekd.profile.cpu import detect_cpu, host_threads, resolve_threads

    cpu = detect_cpu()
    cases: dict[str, Any] = {}
    if (args.sst2 / "train.tsv").is_file():
        source, data, facts = bert_case(args, args.work)
        cases["bert-small-sst2"] = {"model": facts, **measure("bert-small-sst2", source, data, args, args.work)}
    else:
        cases["bert-small-sst2"] = {"skipped": f"SST-2 not found at {args.sst2} (train.tsv); pass --sst2 DIR"}
    files, data = cnn_case(args, args.work)
    for role, source in sorted(files.items()):
        cases[f"demo-cnn-{role}"] = measure(f"demo-cnn-{role}", source, data, args, args.work)
    result = {"benchmark": "quantize", "cpu": cpu.to_json(), "onnxruntime": onnxruntime.__version__,
              "device": "host-cpu", "threads": host_threads(resolve_threads(load_device("host-cpu"))),
              "cases": cases, "checks": checks(cases)}
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.brand.lower()).strip("-")
    out = args.out or REPO / "benchmarks" / "results" / f"quantize-{slug}.json"
    write_json(out, result)
    print(json.dumps(result["checks"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
