"""The ``bundle`` stage of a causal language model: the KV-cache graph, its tokenizer, a manifest and a README.

The manifest says what an app needs to generate: the graph's inputs and outputs, the cache layout
(layers, key/value heads, head size, the names of the cache inputs and outputs), the context length,
the end-of-text token, and the generation figures the profile stage measured (time to first token,
per-token latency, tokens per second) with the budget verdict. The README spells out the generation
loop and gives it as runnable Python over onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.data.corpus import per_character
from edgekd.data.lm_data import prepare_lm_data
from edgekd.export.bundle import BUNDLE_NAMES, write_bundle
from edgekd.export.bundle_record import BundleRecord
from edgekd.export.causal_lm_onnx import CONTEXT_KEY, past_names, present_names
from edgekd.export.config import BUNDLE_DIR, BUNDLE_ZIP
from edgekd.export.manifest import SCHEMA_VERSION, TOKENIZER_DIR, TOKENIZER_FILES, tensor_specs
from edgekd.models.causal_lm import load_tokenizer
from edgekd.profile.record import LMProfileRecord
from edgekd.version import __version__


def run_causal_lm_bundle(artifact: Artifact, ctx: StageContext, role: str, profile: LMProfileRecord) -> StageOutput:
    """Pack the judged causal LM (``role``) with what the profile stage measured of it (``profile``)."""
    model = artifact.get(role)
    model_dir = ctx.resolve(model.weights)
    shipped = model.deploy_files or {"onnx": model.onnx}
    deploy = {kind: ctx.resolve(ref) for kind, ref in shipped.items()}
    fmt = "ort" if "ort" in deploy else "onnx"
    tokenizer = [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
    sources = {BUNDLE_NAMES[kind]: path for kind, path in deploy.items()}
    sources |= {f"{TOKENIZER_DIR}/{path.name}": path for path in tokenizer}
    loaded_tokenizer = load_tokenizer(model_dir)
    manifest = generation_manifest(
        name=f"{ctx.recipe.name}-{role}", onnx_path=ctx.resolve(model.onnx), model=model, fmt=fmt,
        tokenizer_files=[path.name for path in tokenizer], end_of_text_id=loaded_tokenizer.eos_token_id,
        device=ctx.device.model_dump(mode="json"), profile=profile, role=role)
    validation = prepare_lm_data(ctx.recipe.data, None, tokenizer=loaded_tokenizer).validation
    manifest["tokenizer"]["per_character"] = per_character(loaded_tokenizer)
    manifest["generation"]["example"] = example_prompt(validation, loaded_tokenizer,
                                                       manifest["generation"]["context_length"])
    manifest = write_bundle(ctx.output(BUNDLE_DIR), ctx.output(BUNDLE_ZIP), sources, manifest, render_readme)
    ctx.log.info("bundle of the %s (%s, KV cache) written to %s and %s", role, fmt, BUNDLE_DIR, BUNDLE_ZIP)
    record = BundleRecord(role=role, format=fmt, directory=BUNDLE_DIR, zip=BUNDLE_ZIP,
                          zip_bytes=(ctx.run_dir / BUNDLE_ZIP).stat().st_size, files=manifest["files"])
    return StageOutput(artifact=artifact, metrics=record.model_dump())


def generation_manifest(*, name: str, onnx_path: Path, model: ModelArtifact, fmt: str, tokenizer_files: list[str],
                        end_of_text_id: int | None, device: dict[str, Any], profile: LMProfileRecord,
                        role: str) -> dict[str, Any]:
    """The bundle manifest of a causal LM (see the module docstring), with the ``profile`` stage's figures of the
    bundled model (``role``)."""
    inputs, outputs = tensor_specs(onnx_path)
    past = [spec for spec in inputs if spec["name"].startswith("past_key_values.")]
    layers = len(past) // 2
    graph = onnx.load(str(onnx_path), load_external_data=False)
    context = {p.key: p.value for p in graph.metadata_props}.get(CONTEXT_KEY)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "edgekd_version": __version__,
        "task": "causal_lm",
        "model": {"file": BUNDLE_NAMES[fmt], "format": fmt, "opset": model.metrics.opset,
                  "onnxruntime": ort.__version__},
        "inputs": inputs,
        "outputs": outputs,
        "tokenizer": {"directory": TOKENIZER_DIR, "files": tokenizer_files},
        "generation": {
            "context_length": int(context) if context is not None else None,
            "end_of_text_id": end_of_text_id,
            "cache": {"layers": layers, "kv_heads": past[0]["shape"][1] if past else None,
                      "head_dim": past[0]["shape"][3] if past else None,
                      "inputs": past_names(layers), "outputs": present_names(layers),
                      "layout": "[batch, kv_heads, positions, head_dim]"},
        },
        "device": device,
        "latency": profile.models[role].model_dump(include={"time_to_first_token_ms", "per_token_p50_ms",
                                                            "per_token_p90_ms", "tokens_per_second", "estimate"})
        | {"basis": _basis(profile, role)},
        "budget": profile.budget.manifest_entry() if profile.budget is not None else None,
        "metrics": model.metrics.model_dump(include={"val_loss", "perplexity"}, exclude_unset=True),
    }


def example_prompt(validation: Any, tokenizer: Any, context: int | None) -> dict[str, Any]:
    """A prompt for the README's example, from the validation text, and how many tokens to generate after it
    within the model's context."""
    room = context or 64
    length = max(1, min(8, room // 4, validation.numel()))
    return {"prompt": tokenizer.decode(validation[:length].tolist()), "prompt_tokens": length,
            "new_tokens": max(1, min(40, room - length))}


def _basis(profile: LMProfileRecord, role: str) -> str:
    """Where the latency figures of the ``role`` model come from, in words."""
    shape = profile.generation
    measured = (f"{shape.new_tokens} new tokens after a {shape.prompt_tokens}-token prompt, "
                f"measured on {profile.cpu.brand} with {profile.threads} threads")
    return f"estimate from the host→device speed ratio: {measured}" if profile.models[role].estimate else measured


#: The README's words and code on a per-character tokenizer meeting a character it never saw: it would encode it
#: as its unknown token (the end-of-text id) and the model would go on from a wrong prompt.
_UNKNOWN_NOTE = (" (the tokenizer knows only the characters of the text the model learnt; any other character "
                 "would encode as its unknown token, so check for them first, as below)")
_UNKNOWN_CHECK = ["unknown = sorted(set(prompt) - set(tokenizer.get_vocab()))  # characters the model never saw",
                  "if unknown:",
                  "    raise SystemExit(f\"the prompt has characters the model does not know: {unknown}\")"]


def render_readme(manifest: dict[str, Any]) -> str:
    """README.md of a causal-LM bundle: files, the graph's inputs and cache, the generation loop, figures."""
    generation, latency, cache = manifest["generation"], manifest["latency"], manifest["generation"]["cache"]
    example, end = generation["example"], generation["end_of_text_id"]
    lines = [
        f"# {manifest['name']}: on-device text generator",
        "",
        f"Made by edgekd {manifest['edgekd_version']} for the device profile **{manifest['device']['name']}**.",
        "",
        f"- `{manifest['model']['file']}`: the model ({manifest['model']['format']}, opset "
        f"{manifest['model']['opset']}, onnxruntime {manifest['model']['onnxruntime']} or newer), with a KV cache.",
        f"- `{manifest['tokenizer']['directory']}/`: its tokenizer (load with `transformers.AutoTokenizer` or "
        "the `tokenizers` library from `tokenizer.json`).",
        "- `manifest.json`: everything below, machine-readable.",
        "",
        "## Inputs and outputs",
        "",
        *[f"- Input `{t['name']}`: {t['dtype']} {t['shape']}" for t in manifest["inputs"][:2]],
        f"- Inputs `past_key_values.{{i}}.key` / `.value` for i = 0…{cache['layers'] - 1}: float "
        f"{cache['layout']} with {cache['kv_heads']} heads of {cache['head_dim']}: the cache so far.",
        "- Output `logits`: float [batch, new positions, vocabulary]: next-token scores at each new position.",
        f"- Outputs `present.{{i}}.key` / `.value`: the cache after this call ({cache['layout']}, "
        "past + new positions).",
        "",
        "## Generating",
        "",
        "1. Encode the prompt" + (_UNKNOWN_NOTE if manifest["tokenizer"].get("per_character") else "")
        + ". Call the model once with `input_ids` = the prompt ids, `attention_mask` = ones of the same length, and "
        "every `past_key_values.*` empty (0 positions).",
        "2. The next token is the arg-max of the last position's logits (greedy), or a sample from "
        "softmax(logits / temperature).",
        "3. Call again with `input_ids` = that one token, `attention_mask` = ones of (positions so far + 1), and "
        "each `past_key_values.{i}.*` = the previous call's `present.{i}.*`. Repeat.",
        (f"4. Stop at the end-of-text id {end} or after enough tokens" if end is not None else
         "4. Stop after enough tokens (the tokenizer has no end-of-text token)")
        + f"; the prompt plus new tokens must stay within the context of {generation['context_length']} positions.",
        "",
        "```python",
        "import numpy as np, onnxruntime as ort",
        "from transformers import AutoTokenizer",
        "",
        f"session = ort.InferenceSession(\"{manifest['model']['file']}\")",
        f"tokenizer = AutoTokenizer.from_pretrained(\"{manifest['tokenizer']['directory']}\")",
        "cache_inputs = [i for i in session.get_inputs() if i.name.startswith(\"past_key_values.\")]",
        "cache = {i.name: np.zeros((1, i.shape[1], 0, i.shape[3]), np.float32) for i in cache_inputs}",
        f"prompt = {example['prompt']!r}",
        *(_UNKNOWN_CHECK if manifest["tokenizer"].get("per_character") else []),
        "ids = np.array([tokenizer(prompt, add_special_tokens=False)[\"input_ids\"]], np.int64)",
        "new = []",
        f"for _ in range({example['new_tokens']}):",
        "    total = ids.shape[1] + next(iter(cache.values())).shape[2]",
        "    mask = np.ones((1, total), np.int64)",
        "    logits, *present = session.run(None, {\"input_ids\": ids, \"attention_mask\": mask, **cache})",
        "    cache = dict(zip((i.name for i in cache_inputs), present))",
        "    token = int(logits[0, -1].argmax())",
        *([f"    if token == {end}:  # end of text", "        break"] if end is not None else []),
        "    new.append(token)",
        "    ids = np.array([[token]], np.int64)",
        "print(tokenizer.decode(new))",
        "```",
        "",
        "## Measured",
        "",
        f"- Time to first token {latency['time_to_first_token_ms']:.3f} ms; per token p50 "
        f"{latency['per_token_p50_ms']:.3f} ms, p90 {latency['per_token_p90_ms']:.3f} ms; "
        f"{latency['tokens_per_second']:.0f} tokens/s ({latency['basis']}).",
        *([f"- Budget verdict: **{manifest['budget']['verdict']}**"] if manifest.get("budget") else []),
        *[f"- Validation {key.replace('_', ' ')}: {value:.4f}" for key, value in manifest["metrics"].items()],
        "",
    ]
    return "\n".join(lines)
