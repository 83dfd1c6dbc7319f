"""``edgekd validate``'s rules for token classification: what must hold beyond the other tasks' rules.

- the data is text with tagged tokens: TSV/CSV/JSON/Parquet files or ``datasets`` tables (``hf_disk``, ``hub``);
- every model (teacher, assistant, student) answers per token: an architecture whose spec ``tags_tokens`` (a
  Hugging Face transformer, built as its family's token classifier; the BiLSTM and TextCNN students, built as
  taggers; an ONNX teacher returning ``[batch, sequence, tags]``); a user module gives one answer a sentence;
- distillation losses compare logits (:data:`TOKEN_LOSSES`, each per tagged token); the intermediate-state
  losses' layer maps and caches are not written for token classifiers yet.
"""

from __future__ import annotations

from edgekd.models.architectures import ARCHITECTURES
from edgekd.models.specs import HFSpec
from edgekd.stage_kind import PlanState

#: Model architectures that answer per token when the data is token classification.
TOKEN_ARCHS = tuple(arch for arch, entry in ARCHITECTURES.items() if entry.spec.tags_tokens)
#: Distillation losses that apply per token.
TOKEN_LOSSES = ("hinton", "logit_mse")
#: Data sources token classification is read from.
TOKEN_SOURCES = ("tsv", "csv", "json", "parquet", "hf_disk", "hub")


def check_token_classification(state: PlanState) -> None:
    """Refuse, by key path, what a token classification recipe cannot run (see the module docstring)."""
    from edgekd.models.hf import has_token_classifier

    recipe = state.recipe
    if recipe.data.source not in TOKEN_SOURCES:
        raise state.fail("data.source", f"token classification reads a tokens and a tags column from text data "
                         f"({', '.join(TOKEN_SOURCES)}), not '{recipe.data.source}'")
    for role in ("teacher", "assistant", "student"):
        spec = getattr(getattr(recipe, role, None), "model", None)
        arch = getattr(spec, "arch", None)
        if arch is not None and arch not in TOKEN_ARCHS:
            raise state.fail(f"{role}.model.arch", f"'{arch}' gives one answer per input; token classification "
                             f"needs one per token: use {', '.join(TOKEN_ARCHS)}")
        if isinstance(spec, HFSpec) and not has_token_classifier(spec.model_type):
            raise state.fail(f"{role}.model", f"transformers has no token classifier for model_type "
                             f"'{spec.model_type}'")
    for index, stage in enumerate(recipe.stages):
        for number, loss in enumerate(getattr(stage, "losses", None) or ()):
            if loss.kind not in TOKEN_LOSSES:
                raise state.fail(f"stages[{index}].losses[{number}].kind", f"'{loss.kind}' is not applied per "
                                 f"token; token classification distils with {' or '.join(TOKEN_LOSSES)}")
