"""The causal-LM bundle README's Python loop on prompts a JSON string literal would get wrong or a character
vocabulary does not hold: characters outside the BMP (emoji), quotes, backslashes and control characters reach
the tokenizer as they are, and a character the model never saw stops the loop with one line instead of being
encoded as the unknown (end-of-text) token."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgekd.data.corpus import build_char_tokenizer, per_character
from edgekd.export.causal_lm_bundle import render_readme
from edgekd.export.causal_lm_onnx import export_causal_lm
from edgekd.export.manifest import tensor_specs
from tests.causal_lms import spread_causal_lm
from tests.test_quantize_tasks import assert_readme_generates_as_edgekd

TEXT = 'a "quoted" \\ path 😀 and 🎉\ttab\x00nul\nline 2\n'


def _bundle(folder: Path, prompt: str, *, end_of_text: bool = True) -> Path:
    """A bundle of a tiny random GPT-2 over TEXT's characters: the graph, its tokenizer, a manifest and README."""
    tokenizer = build_char_tokenizer(TEXT)
    model = spread_causal_lm("gpt2", 1, 16, 2, vocab=len(tokenizer), context=32)
    export_causal_lm(model, folder / "model.onnx")
    tokenizer.save_pretrained(folder / "tokenizer")
    inputs, outputs = tensor_specs(folder / "model.onnx")
    manifest = {
        "name": "emoji-lm", "edgekd_version": "test", "device": {"name": "host-cpu"},
        "model": {"file": "model.onnx", "format": "onnx", "opset": 17, "onnxruntime": "1"},
        "inputs": inputs, "outputs": outputs,
        "tokenizer": {"directory": "tokenizer", "per_character": per_character(tokenizer)},
        "generation": {"context_length": 32, "end_of_text_id": tokenizer.eos_token_id if end_of_text else None,
                       "example": {"prompt": prompt, "prompt_tokens": len(prompt), "new_tokens": 12},
                       "cache": {"layers": 1, "kv_heads": 2, "head_dim": 8, "layout": "[batch, kv_heads, positions, "
                                                                                   "head_dim]"}},
        "latency": {"time_to_first_token_ms": 1.0, "per_token_p50_ms": 1.0, "per_token_p90_ms": 1.0,
                    "tokens_per_second": 1000.0, "basis": "test"},
        "metrics": {},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "README.md").write_text(render_readme(manifest))
    return folder


def test_the_readme_loop_reads_the_prompt_as_written(tmp_path: Path) -> None:
    prompt = '😀 "and" \\🎉\tnul\x00\nl'
    prompt_ids, _, _ = assert_readme_generates_as_edgekd(_bundle(tmp_path, prompt))
    assert len(prompt_ids) == len(prompt)  # one id per character: the prompt reached the tokenizer unchanged


def test_a_character_the_model_never_saw_stops_the_readme_loop(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path, "a 🚀 path")
    readme = (bundle / "README.md").read_text()
    assert "any other character would encode as its unknown token" in readme
    code = readme.split("```python\n", 1)[1].split("```", 1)[0]
    done = subprocess.run([sys.executable, "-c", code], cwd=bundle, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == "the prompt has characters the model does not know: ['🚀']"


def test_a_tokenizer_without_an_end_of_text_token_gets_a_loop_that_does_not_look_for_one(tmp_path: Path) -> None:
    """A tokenizer.json without a tokenizer config names no end-of-text token: the README compared each token
    with None and said to stop at "the end-of-text id None"."""
    bundle = _bundle(tmp_path, "a path", end_of_text=False)
    readme = (bundle / "README.md").read_text()
    assert "== None" not in readme and "id None" not in readme and "the tokenizer has no end-of-text token" in readme
    assert_readme_generates_as_edgekd(bundle)
