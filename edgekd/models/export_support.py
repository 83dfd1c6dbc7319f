"""Families whose models edgekd cannot export to ONNX, with the reason: refused by ``edgekd validate`` before training.

The table is what ``benchmarks/family_export_sweep.py`` measured (every ``model_type`` of the installed
transformers with a sequence, token or image classifier or a causal LM, built tiny and random and run through
edgekd's own export path with its parity gate; ``--table`` prints the entries below from a run). Each entry says
for which uses the export fails: ``sequence``, ``token`` or ``image`` classification
(:func:`edgekd.export.onnx_export.export_onnx`) and ``causal_lm`` (the KV-cache graph of a generating decoder).
A family not listed exports, or was not tried
(transformers could not build it at small sizes: see the sweep's JSON); its export keeps its parity gate and its
one-line error either way. The sweep tries both of edgekd's exporters (:mod:`edgekd.export.backends`); the entries
whose reason names only torch's exporter are the families it has not re-run since transformers' exporter came in
(Kolibri-1's causal LM timed out in transformers' exporter at 300 s on the loaded machine and keeps its old entry).
Mixture-of-experts models are refused by their expert count wherever the family is
(:data:`edgekd.export.config.EXPERT_KEYS`) only when transformers' exporter cannot run (onnxscript missing).
"""

from __future__ import annotations

from typing import Literal

Use = Literal["sequence", "token", "image", "causal_lm"]

_ROUTING = "torch's ONNX exporter has no export of its mixture-of-experts routing (aten::histc)"
_NO_CACHE = ("its model returns no attention key/value cache (an encoder's language-model head, or a recurrent or "
             "linear-attention state), which the KV-cache graph carries")
_CUSTOM_CACHE = ("its attention needs a cache of its own kind (indexer keys, convolution state, compression weights) "
                 "where the exported graph carries plain keys and values")
_TRACER_BUG = "torch's TorchScript exporter fails inside its own graph passes on it (an internal assertion)"
_TRACED_SHAPE = "its traced graph fails in onnxruntime on other batch sizes or lengths (a shape fixed while tracing)"

#: model_type → {use: why its export fails}; from benchmarks/family_export_sweep.py (transformers 5.25, torch 2.13;
#: regenerate with ``python benchmarks/family_export_sweep.py --table``).
NOT_EXPORTED: dict[str, dict[Use, str]] = {
    "afmoe": {"causal_lm": "transformers' exporter's graph misses the parity gate over cached steps (max difference "
                           "0.14), and " + _ROUTING},
    "axk2": {"causal_lm": _CUSTOM_CACHE},
    "bert": {"causal_lm": _NO_CACHE},
    "bert-generation": {"causal_lm": _NO_CACHE},
    "big_bird": {"causal_lm": _NO_CACHE},
    "camembert": {"causal_lm": _NO_CACHE},
    "cpmant": {"causal_lm": "torch's ONNX exporter has no bitwise OR of integers, used by its mask"},
    "data2vec-text": {"causal_lm": _NO_CACHE},
    "deepseek_v4": {"causal_lm": _CUSTOM_CACHE},
    "electra": {"causal_lm": _NO_CACHE},
    "ernie": {"causal_lm": _NO_CACHE},
    "falcon_h1": {"causal_lm": _CUSTOM_CACHE},
    "falcon_mamba": {"causal_lm": _NO_CACHE},
    # measured by a pipeline run (trained at one length, profiled at the device's): the sweep checks one length
    "funnel": {"sequence": _TRACED_SHAPE, "token": _TRACED_SHAPE},
    "hy_v4": {"causal_lm": _CUSTOM_CACHE},
    "inkling2_loop_text": {"causal_lm": _CUSTOM_CACHE},
    "inkling2_text": {"causal_lm": _CUSTOM_CACHE},
    "kolibri1": {"causal_lm": _ROUTING},
    "lara_mini": {"causal_lm": _NO_CACHE},
    "lfm3": {"causal_lm": _NO_CACHE},
    "llama4_text": {"causal_lm": "torch's ONNX exporter has no export of aten::polar, and transformers' exporter "
                                 "fails on it (DispatchError: no ONNX function for a complex aten.unsqueeze)"},
    "longformer": {"sequence": _TRACED_SHAPE, "token": _TRACED_SHAPE},
    "mamba": {"causal_lm": _NO_CACHE},
    "megatron-bert": {"causal_lm": _NO_CACHE},
    "minimax": {"causal_lm": _CUSTOM_CACHE},
    "nemotron_h": {"causal_lm": _NO_CACHE},
    "openai-gpt": {"causal_lm": _NO_CACHE},
    "openai_privacy_filter": {"token": "transformers' exporter fails on a data-dependent shape "
                                       "(GuardOnDataDependentSymNode), and torch's TorchScript graph fails in "
                                       "onnxruntime on other batch sizes or lengths"},
    "prophetnet": {"causal_lm": "its decoder takes one new token per cached call only"},
    "reformer": {"sequence": "torch's exporter fails on its hashing attention (unordered_map::at), and transformers' "
                             "exporter's graph fails in onnxruntime on other batch sizes or lengths"},
    "rembert": {"causal_lm": _NO_CACHE},
    "roberta": {"causal_lm": _NO_CACHE},
    "roberta-prelayernorm": {"causal_lm": _NO_CACHE},
    "roc_bert": {"causal_lm": _NO_CACHE},
    "roformer": {"causal_lm": _NO_CACHE},
    "rwkv": {"causal_lm": _NO_CACHE},
    "xlm": {"causal_lm": _NO_CACHE},
    "xlm-roberta": {"causal_lm": _NO_CACHE},
    "xlm-roberta-xl": {"causal_lm": _NO_CACHE},
    "zaya": {"causal_lm": _CUSTOM_CACHE},
}

def export_refusal(model_type: str | None, use: Use) -> str | None:
    """Why a ``model_type`` model used as ``use`` cannot be exported, or ``None`` when nothing is known against it."""
    return NOT_EXPORTED.get(model_type or "", {}).get(use)


def refusal_message(model_type: str, reason: str) -> str:
    """How ``edgekd validate`` and ``edgekd export`` both say that ``model_type`` models cannot be exported
    (``reason``: :func:`export_refusal`'s)."""
    return f"'{model_type}' models cannot be exported to ONNX: {reason}"


def recipe_use(recipe: object, model_type: str) -> Use:
    """How a recipe uses a ``model_type`` model: a causal LM on a text corpus, else an image classifier for an image
    family, a token classifier for ``token_classification`` data, a sequence classifier otherwise."""
    from edgekd.data.config import is_corpus
    from edgekd.models.families import family
    from edgekd.task_rules import recipe_task

    data = getattr(recipe, "data", None)
    if is_corpus(data):
        return "causal_lm"
    if family(model_type).modality == "image":
        return "image"
    return "token" if recipe_task(data) == "token_classification" else "sequence"
