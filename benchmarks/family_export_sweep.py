"""Which Hugging Face families edgekd exports: every model type of the installed transformers, tiny and random.

    python benchmarks/family_export_sweep.py [--task sequence image token causal_lm] [--only glm cohere ...]

For every ``model_type`` transformers maps to a ``…ForSequenceClassification``, ``…ForImageClassification``,
``…ForTokenClassification`` or ``…ForCausalLM`` class, a tiny random model is built from its config
(``AutoConfig.for_model`` with small sizes: only the size fields the family's config class has, shrunk by one
generic rule; a family whose constructor refuses them falls back to fewer overrides, then to its defaults) with
the eager attention edgekd builds every model with, and run through edgekd's own export path with its parity
gate: :func:`edgekd.export.onnx_export.export_onnx` on a right-padded batch (non-trivial attention masks) for the
classifiers, :func:`edgekd.export.causal_lm_stage.export_cached` (prefix then cached steps) for causal LMs; each
tries torch's TorchScript exporter, then transformers' own (:mod:`edgekd.export.backends`), and the record says
which one exported the case (``exporter``; records before it was added are TorchScript's).

Each case records ``ok`` (with the parity max difference and seconds), ``build`` (transformers cannot build or run
the family at small sizes: not an export question), or ``fail`` (the export path raised: the exception class
and its first line; a non-``ExportError`` is a bug, every export failure must be one line). The JSON goes to
``benchmarks/results/family_export_sweep-<cpu>.json`` (atomically, rewritten after every case so a long run
can be watched) and a summary is printed. ``edgekd/models/export_support.py`` holds the families this run finds
unexportable, with their reasons, so ``edgekd validate`` refuses them before training.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from edgekd.atomic import write_json  # noqa: E402
from edgekd.errors import first_line  # noqa: E402
from edgekd.export.causal_lm_stage import export_cached  # noqa: E402
from edgekd.export.config import load_export_target  # noqa: E402
from edgekd.export.onnx_export import export_onnx  # noqa: E402
from edgekd.profile.cpu import detect_cpu  # noqa: E402

TASKS = ("sequence", "token", "image", "causal_lm")
VOCAB, PAD, ROWS, LONGEST = 120, 0, 6, 14
#: Small values for size fields, applied only where the family's config class has the field.
SMALL: dict[str, Any] = {
    "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
    "num_key_value_heads": 2, "intermediate_size": 48, "max_position_embeddings": 128, "n_positions": 128,
    "n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 48, "d_model": 32, "n_layers": 2, "n_heads": 4,
    "dim": 32, "hidden_dim": 48, "ffn_dim": 48, "encoder_layers": 2, "decoder_layers": 2,
    "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 48, "decoder_ffn_dim": 48,
    "num_layers": 2, "num_heads": 4, "d_ff": 48, "d_kv": 8, "embedding_size": 32, "head_dim": 8,
    "word_embed_proj_dim": 32, "pad_token_id": PAD, "bos_token_id": 2, "eos_token_id": 3,
    "image_size": 32, "patch_size": 4, "num_channels": 3, "rotary_dim": 4,
}
#: Models larger than this are not built (a family whose size fields the sweep does not know keeps its defaults).
MAX_PARAMS = 60_000_000
#: Integer list fields of vision backbones (stage depths): each stage one block.
ONE_PER_STAGE = ("depths", "num_encoder_blocks")


class Timeout(Exception):
    """A case ran longer than its budget."""


def _alarm(_signum: int, _frame: Any) -> None:
    raise Timeout("timed out")


def model_types(task: str) -> list[str]:
    """The model types transformers maps to a class of ``task``."""
    from transformers.models.auto import modeling_auto as auto

    mapping = {"sequence": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
               "token": auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
               "image": auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
               "causal_lm": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES}[task]
    return sorted(mapping)


#: Fields that set a per-head size or head count: dropped at level 1 (families whose attention sizes follow other
#: fields, e.g. multi-head latent attention's rope/nope head sizes).
HEAD_FIELDS = ("head_dim", "d_kv", "num_key_value_heads", "rotary_dim", "num_attention_heads", "n_head", "n_heads",
               "num_heads", "encoder_attention_heads", "decoder_attention_heads")
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "n_layers", "encoder_layers", "decoder_layers", "num_layers")
LEVELS = 4


def small_sizes(model_type: str, level: int) -> dict[str, Any]:
    """Size overrides for ``model_type`` at ``level`` (0: every small size the config has; 1: not the head fields;
    2: layer counts and stage depths only; 3: none, the family's defaults). Per-layer lists of the defaults (layer
    types, sliding-window flags) are cut to the new layer count."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type)
    defaults = default.to_dict()
    if level == LEVELS - 1:
        return {}
    known = set(defaults) | set(getattr(default, "attribute_map", {}))
    sizes = {key: value for key, value in SMALL.items() if key in known
             and (level == 0 or (level == 1 and key not in HEAD_FIELDS) or key in LAYER_FIELDS)}
    for key in ONE_PER_STAGE:
        if isinstance(defaults.get(key), list):
            sizes[key] = [1] * len(defaults[key])
    layers = next((defaults[key] for key in LAYER_FIELDS if isinstance(defaults.get(key), int)), None)
    for key, value in defaults.items():
        if isinstance(value, list) and layers and len(value) == layers and key not in ONE_PER_STAGE:
            sizes[key] = value[:SMALL["num_hidden_layers"]]
    if defaults.get("is_encoder_decoder"):
        sizes["decoder_start_token_id"] = PAD
    if "head_dim" in sizes and "hidden_size" in sizes:
        sizes["head_dim"] = sizes["hidden_size"] // sizes.get("num_attention_heads", 4)
    return sizes


def build(model_type: str, task: str, sizes: dict[str, Any]) -> torch.nn.Module:
    """A random model of ``model_type`` for ``task`` with ``sizes``, eager attention, eval mode."""
    import transformers
    from transformers import AutoConfig

    auto = {"sequence": transformers.AutoModelForSequenceClassification,
            "token": transformers.AutoModelForTokenClassification,
            "image": transformers.AutoModelForImageClassification,
            "causal_lm": transformers.AutoModelForCausalLM}[task]
    # as edgekd builds them: a classifier with its labels, a causal LM with the data's context length
    labels = {"max_position_embeddings": 128} if task == "causal_lm" else {"num_labels": 3}
    sizes = {**sizes, **labels}
    config = AutoConfig.for_model(model_type, **sizes)
    with torch.device("meta"):  # count first: a family whose sizes the sweep cannot shrink may be huge
        params = sum(p.numel() for p in auto.from_config(config).parameters())
    if params > MAX_PARAMS:
        raise ValueError(f"{params / 1e6:.0f} M parameters at the sizes the sweep could set (limit "
                         f"{MAX_PARAMS / 1e6:.0f} M)")
    torch.manual_seed(0)
    return auto.from_config(config, attn_implementation="eager").eval()


def text_batch(vocab: int, end: int | None) -> dict[str, torch.Tensor]:
    """Right-padded token ids 2–``LONGEST`` long, each ending in the ``end`` token when the model has one (as a
    tokenizer adds it; BART-style classifiers pool it), their attention mask and zero token types."""
    generator = torch.Generator().manual_seed(0)
    lengths = torch.linspace(2, LONGEST, ROWS).long()[torch.randperm(ROWS, generator=generator)]
    ids = torch.randint(4, max(vocab, 5), (ROWS, LONGEST), generator=generator)
    if isinstance(end, int) and 0 <= end < vocab:
        ids[torch.arange(ROWS), lengths - 1] = end
    mask = (torch.arange(LONGEST)[None, :] < lengths[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def image_batch(config: Any) -> torch.Tensor:
    """Random pixels at the config's image size and channels."""
    size = getattr(config, "image_size", 32)
    height, width = (size, size) if isinstance(size, int) else tuple(size)[:2]
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, getattr(config, "num_channels", 3), height, width, generator=generator)


def sample_for(model: torch.nn.Module, task: str) -> Any:
    """The inputs a case is exported and checked on."""
    if task == "image":
        return image_batch(model.config)
    config = model.config
    return text_batch(getattr(config, "vocab_size", VOCAB) or VOCAB, getattr(config, "eos_token_id", None))


def runs(model: torch.nn.Module, task: str, sample: Any) -> None:
    """Raise unless the model runs on ``sample`` in PyTorch (so an export failure is an export failure)."""
    from edgekd.models.call import call_logits

    with torch.no_grad():
        if task == "causal_lm":
            model(input_ids=sample["input_ids"])
        else:
            call_logits(model, sample if isinstance(sample, dict) else {"pixel_values": sample})


def export_case(model: torch.nn.Module, task: str, sample: Any, directory: Path) -> tuple[float, str]:
    """Export through edgekd's path; the parity max difference and the exporter that made the graph
    (:mod:`edgekd.export.backends`)."""
    target = load_export_target("onnx-fp32")
    path = directory / "model.onnx"
    if task == "causal_lm":
        rows = sample["input_ids"][:4].clamp(min=4)
        cached = export_cached(model, rows, LONGEST // 2, path, target)
        return cached.parity.max_abs_diff, cached.exporter
    axes = {} if task == "image" else {name: {1: "sequence"} for name in sample}
    if task == "token":
        axes["logits"] = {1: "sequence"}
    result = export_onnx(model, sample, path, target, extra_dynamic_axes=axes)
    return result.parity.max_abs_diff, result.exporter


def build_case(model_type: str, task: str, timeout: int) -> tuple[torch.nn.Module, Any, int] | str:
    """The model and sample of the smallest sizes that build and run (and their level), or why none did."""
    errors: list[str] = []
    for level in range(LEVELS):
        signal.alarm(timeout)
        try:
            sizes = small_sizes(model_type, level)
            model = build(model_type, task, sizes)
            sample = sample_for(model, task)
            runs(model, task, sample)
        except Exception as exc:  # a family transformers cannot build or run at these sizes
            errors.append(f"{type(exc).__name__}: {first_line(exc)}"[:200])
            continue
        finally:
            signal.alarm(0)
        return model, sample, level
    return " | ".join(dict.fromkeys(errors))


def sweep_one(model_type: str, task: str, timeout: int) -> dict[str, Any]:
    """One case: the smallest sizes that build and run, then the export; its record."""
    start = time.perf_counter()
    case = build_case(model_type, task, timeout)
    if isinstance(case, str):
        return {"status": "build", "error": case, "seconds": round(time.perf_counter() - start, 2)}
    model, sample, level = case
    signal.alarm(timeout)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            diff, exporter = export_case(model, task, sample, Path(tmp))
    except Exception as exc:  # noqa: BLE001 - the sweep records every failure, ExportError or not
        return {"status": "fail", "sizes_level": level, "exception": type(exc).__name__,
                "error": first_line(exc)[:300], "seconds": round(time.perf_counter() - start, 2)}
    finally:
        signal.alarm(0)
    return {"status": "ok", "sizes_level": level, "parity_max_abs_diff": diff, "exporter": exporter,
            "seconds": round(time.perf_counter() - start, 2)}


def cpu_slug() -> str:
    """A file-name-safe name for this CPU, e.g. ``amd-epyc``."""
    return re.sub(r"[^a-z0-9]+", "-", detect_cpu().brand.lower()).strip("-") or "unknown-cpu"


def quiet_single_thread() -> None:
    """What a sweep process sets first: transformers' and Python's warnings off, one torch thread, case timeouts
    (:class:`Timeout` after ``signal.alarm``)."""
    from edgekd.models.hf import quiet_transformers

    quiet_transformers()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--only", nargs="+", help="these model types only")
    parser.add_argument("--timeout", type=int, default=180, help="seconds per build and per export")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--table", action="store_true",
                        help="print the failing families of the existing JSON as edgekd/models/export_support.py's "
                        "NOT_EXPORTED entries, and run nothing")
    args = parser.parse_args(argv)
    import transformers

    quiet_single_thread()
    out = args.out or ROOT / "benchmarks" / "results" / f"family_export_sweep-{cpu_slug()}.json"
    previous = json.loads(out.read_text()) if out.is_file() else {}
    if args.table:
        print(table(previous.get("results", {})))
        return 0
    results: dict[str, dict[str, Any]] = previous.get("results", {}) if args.only else {}
    for task in args.task:
        for model_type in model_types(task):
            if args.only and model_type not in args.only:
                continue
            record = sweep_one(model_type, task, args.timeout)
            results.setdefault(task, {})[model_type] = record
            print(f"{task:10s} {model_type:28s} {record['status']:5s} {record.get('exception', '')} "
                  f"{record.get('error', '')[:120]}", flush=True)
            write_json(out, {"transformers": transformers.__version__, "torch": torch.__version__,
                             "cpu": detect_cpu().to_json(), "results": results, "summary": summary(results)})
    print(json.dumps(summary(results), indent=1))
    return 0


UNSUPPORTED = re.compile(r"Exporting the operator '([\w:.]+)' to ONNX opset version \d+ is not supported")


HF_FAILED = "transformers' ONNX exporter failed: "
ALSO = re.compile(r"; (?:torch's TorchScript exporter|transformers' exporter) also failed: ")


def reason(error: str) -> str:
    """A failure's reason for the refusal table: each exporter's in the order they were tried
    (:func:`edgekd.export.backends.write_first` joins them), each the missing operator or the message after
    edgekd's prefix."""
    return ", and ".join(f"transformers' ONNX exporter fails on it ({_cut(part.split(HF_FAILED, 1)[1])})"
                         if HF_FAILED in part else one_reason(part) for part in ALSO.split(error))


def _cut(error: str) -> str:
    """A message short enough for the table, without temporary paths."""
    return re.sub(r"/tmp/\S+", "the graph", error)[:120]


def one_reason(error: str) -> str:
    """One exporter's failure as a reason: the missing operator, else the message after edgekd's prefix."""
    if "aten::histc" in error:
        return "torch's ONNX exporter has no export of its mixture-of-experts routing (aten::histc)"
    if "returns no key/value cache" in error or "linear-attention state" in error:
        return ("its model returns no attention key/value cache (an encoder's language-model head, or a recurrent or "
                "linear-attention state), which the KV-cache graph carries")
    missing = UNSUPPORTED.search(error)
    if missing:
        return f"torch's ONNX exporter has no export of {missing.group(1)}"
    if "onnxruntime failed on inputs of shapes" in error:
        return "its traced graph fails in onnxruntime on other batch sizes or lengths (a shape fixed while tracing)"
    for prefix in ("to ONNX opset 17: ", "with a KV cache failed: ", "): "):
        if prefix in error:
            error = error.split(prefix, 1)[1]
            break
    return re.sub(r"/tmp/\S+", "the graph", error).split("  [Caused by")[0][:150]


def table(results: dict[str, dict[str, Any]]) -> str:
    """The failing families as Python dict entries ``"family": {"task": "reason"}``, sorted."""
    failing: dict[str, dict[str, str]] = {}
    for task, cases in results.items():
        for name, record in cases.items():
            if record["status"] == "fail":
                failing.setdefault(name, {})[task] = reason(record["error"])
    return "\n".join(f"    {name!r}: {failing[name]!r}," for name in sorted(failing))


def summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Counts per task and status, and the failing families with their exception class."""
    return {task: {"counts": {status: sum(r["status"] == status for r in cases.values())
                              for status in ("ok", "fail", "build")},
                   "failing": {name: r["exception"] for name, r in cases.items() if r["status"] == "fail"}}
            for task, cases in results.items()}


if __name__ == "__main__":
    raise SystemExit(main())
