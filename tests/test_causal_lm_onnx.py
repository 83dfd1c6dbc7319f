"""Causal LMs exported with a KV cache: logits equal PyTorch's on a prefix and on every cached step,
and greedy generation over onnxruntime equals transformers' greedy ``generate``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from edgekd.export.causal_lm_onnx import export_causal_lm, past_names, present_names, probed_layout
from edgekd.profile.generate import CachedGenerator, generation_figures
from tests.causal_lms import spread_causal_lm

VOCAB = 23
FAMILIES = [("gpt2", 2, 32, 2), ("llama", 2, 32, 4), ("qwen2", 1, 48, 4)]


def _model(family, layers, width, heads, seed=0):
    return spread_causal_lm(family, layers, width, heads, seed=seed, vocab=VOCAB)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def exported(request, tmp_path_factory):
    model = _model(*request.param)
    path = export_causal_lm(model, tmp_path_factory.mktemp("onnx") / "model.onnx")
    return model, path


def test_graph_has_optimums_cache_names(exported):
    model, path = exported
    layers = len(probed_layout(model))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", *past_names(layers)]
    assert [o.name for o in graph.output] == ["logits", *present_names(layers)]


@pytest.mark.parametrize("prefix, steps", [(7, 5), (1, 8), (12, 3)])
def test_prefix_and_cached_steps_match_pytorch(exported, prefix, steps):
    model, path = exported
    generator = CachedGenerator(path)
    ids = torch.randint(VOCAB, (2, prefix + steps), generator=torch.Generator().manual_seed(prefix))
    with torch.no_grad():
        reference = model(input_ids=ids).logits.numpy()
    logits, cache = generator.step(ids[:, :prefix].numpy(), generator.empty_cache(2))
    np.testing.assert_allclose(logits, reference[:, :prefix], atol=1e-4, rtol=1e-4)
    for k in range(prefix, prefix + steps):
        logits, cache = generator.step(ids[:, k:k + 1].numpy(), cache)
        np.testing.assert_allclose(logits[:, 0], reference[:, k], atol=1e-4, rtol=1e-4)
    assert next(iter(cache.values())).shape[2] == prefix + steps


@pytest.mark.parametrize("prompt", [[1, 2, 3], [5], [9, 4, 4, 17, 2, 0, 8]])
def test_greedy_over_ort_equals_transformers_generate(exported, prompt):
    model, path = exported
    new = 12
    with torch.no_grad():
        expected = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                  max_new_tokens=new, do_sample=False, pad_token_id=0)
    expected = expected[0, len(prompt):].tolist()
    result = CachedGenerator(path).generate(prompt, new)
    assert result.tokens[:len(expected)] == expected  # generate stops after end-of-text (id 0); ours does not
    assert len(expected) == new or expected[-1] == 0
    assert len(set(result.tokens)) > 1  # the comparison is not between two constant sequences
    figures = generation_figures([result])
    assert figures["time_to_first_token_ms"] > 0 and figures["per_token_p90_ms"] >= figures["per_token_p50_ms"] > 0
    assert figures["tokens_per_second"] > 0


def test_sampling_is_seeded_and_follows_temperature(exported):
    _, path = exported
    generator = CachedGenerator(path)
    runs = [generator.generate([1, 2], 20, temperature=1.0, seed=s).tokens for s in (0, 0, 1)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert all(0 <= t < VOCAB for t in runs[2])
    cold = generator.generate([1, 2], 20, temperature=1e-4, seed=3).tokens
    assert cold == generator.generate([1, 2], 20).tokens


def test_export_leaves_the_model_unchanged(tmp_path):
    model = _model("gpt2", 1, 32, 2)
    ids = torch.randint(VOCAB, (1, 6), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        export_causal_lm(model, tmp_path / "model.onnx")
        torch.testing.assert_close(model(input_ids=ids).logits, before)


def test_a_graph_torch_cannot_export_is_one_line_and_prints_nothing(tmp_path, capfd):
    """Mixtral's expert routing (``aten::histc``) has no ONNX export; torch would print its whole IR graph."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekd.errors import ExportError

    config = AutoConfig.for_model("mixtral", vocab_size=VOCAB, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                                  num_local_experts=2, num_experts_per_tok=1)
    with pytest.raises(ExportError, match=r"exporting MixtralForCausalLM with a KV cache failed: .*aten::histc"):
        export_causal_lm(AutoModelForCausalLM.from_config(config), tmp_path / "model.onnx")
    printed = capfd.readouterr()
    assert "Torch IR graph" not in printed.out + printed.err and not (tmp_path / "model.onnx").exists()


def test_one_stalled_call_does_not_set_the_token_rate():
    """Tokens per second follow the median per-token latency: a call stalled by another process (200 ms among
    1 ms calls) would otherwise report a fifth of the model's rate."""
    from edgekd.profile.generate import Generation

    runs = [Generation(tokens=list(range(11)), seconds=[0.005] + [0.001] * 9 + [0.2]) for _ in range(2)]
    figures = generation_figures(runs)
    assert figures["per_token_p50_ms"] == pytest.approx(1.0)
    assert figures["tokens_per_second"] == pytest.approx(1000.0)
    assert figures["time_to_first_token_ms"] == pytest.approx(5.0) and figures["tokens_timed"] == 20
