"""Families whose models edgekd cannot export to ONNX, with the reason: refused by ``edgekd validate`` before training.

The table is what ``benchmarks/family_export_sweep.py`` measured (every ``model_type`` of the installed
transformers with a sequence, token or image classifier or a causal LM, built tiny and random and run through
edgekd's own export path with its parity gate; ``--table`` prints the entries below from a run). Each entry says
for which uses the export fails: ``sequence``, ``token`` or ``image`` classification
(:func:`edgekd.export.onnx_export.export_onnx`) and ``causal_lm`` (the KV-cache graph of a generating decoder).
A family not listed exports, or was not tried
(transformers could not build it at small sizes: see the sweep's JSON); its export keeps its parity gate and its
one-line error either way. Mixture-of-experts models are refused by their expert count wherever the family is
(:data:`edgekd.export.config.EXPERT_KEYS`).
"""

from __future__ import annotations

from typing import Literal

Use = Literal["sequence", "token", "image", "causal_lm"]

_ROUTING = "torch's ONNX exporter has no export of its expert routing (aten::histc)"
_FFT = "torch's ONNX exporter has no export of the Fourier transform it mixes tokens with (aten::fft_fftn)"
_NO_CACHE = ("its causal-LM class is an encoder with a language-model head, which returns no key/value cache to "
             "export a generating decoder with")

#: model_type → {use: why its export fails}; from benchmarks/family_export_sweep.py (transformers 5.25, torch 2.13).
NOT_EXPORTED: dict[str, dict[Use, str]] = {
    "fnet": {"sequence": _FFT, "token": _FFT},
}


def export_refusal(model_type: str | None, use: Use) -> str | None:
    """Why a ``model_type`` model used as ``use`` cannot be exported, or ``None`` when nothing is known against it."""
    return NOT_EXPORTED.get(model_type or "", {}).get(use)


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
