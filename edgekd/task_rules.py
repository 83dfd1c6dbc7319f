"""``edgekd validate``'s rules for multi-label, regression, token classification and causal-LM recipes: what
does not apply is refused by key.

Losses are checked against the task first: generation losses (``token_kl``...) for a causal language
model (``data.source: corpus``, always ``arch: hf`` models), classifier losses for everything else; a
corpus's tokenizer is ``char``, ``bpe`` or pretrained.

The task is the recipe's ``data.task``, or the one local data's labels read as (a TSV/CSV/JSON/Parquet training
file, a ``save_to_disk`` directory, an ``.npz`` set; :mod:`edgekd.data.label_kind`); a hub dataset's
is known only when the run loads it. For a multi-label or regression task these are
refused before anything trains, each with its key path:

- ``dataset_distill`` (it learns images per class).
  ``prune``/``factorize``/``hybrid`` judge each step by the task's own metric (:mod:`edgekd.prune.measure`;
  a causal LM's by validation loss, :mod:`edgekd.prune.causal_lm`), ``search`` chooses by it
  (:mod:`edgekd.search.select`; a causal LM's by validation loss within a per-token budget,
  :mod:`edgekd.search.causal_lm`), and ``quantize`` gates on it and a task-fit agreement
  (:mod:`edgekd.quantize.quality`): they run for every task; a causal LM's quantize is dynamic INT8 of its
  KV-cache decoder (``modes`` ``auto`` or ``dynamic``);
- ``teacher.ensemble`` (members averaged as class probabilities), a distill stage's ``augment`` (its
  sentences are unlabelled, which only single-label cross-entropy can skip), and ``data.eval_data``
  (scikit-learn's digits are single-label).

Token classification (:mod:`edgekd.token_rules`) also needs TSV/CSV/JSON/Parquet data, Hugging Face transformer models
(one output per token) and logit-level distillation losses.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from edgekd.data.config import HFDiskData, NpzData, TaskKind, TextFileData, is_corpus
from edgekd.data.corpus import CorpusSplit, training_tokens_needed
from edgekd.errors import ConfigError, DataError
from edgekd.stage_kind import PlanState
from edgekd.token_rules import check_token_classification

if TYPE_CHECKING:
    from edgekd.config.device import DeviceProfile
    from edgekd.config.recipe import Recipe
    from edgekd.models.specs import HFSpec

log = logging.getLogger(__name__)

#: Stages refused for every task but single-label classification, with why.
CLASS_ONLY_STAGES = {
    "dataset_distill": "it learns images per class",
}
#: The compression stages a causal LM runs (judged by validation loss and per-token generation time).
LM_COMPRESS_STAGES = ("prune", "factorize", "hybrid", "search")

#: The quantize modes of a causal LM (its KV-cache decoder is quantized dynamically: no calibration caches).
LM_QUANTIZE_MODES = ("auto", "dynamic")


def check_task(state: PlanState) -> None:
    """Refuse, by key path, what a multi-label, regression or causal-LM recipe cannot run (see the module docstring)."""
    recipe = state.recipe
    _check_losses_and_tokenizer(state)
    if is_corpus(recipe.data):
        _check_causal_lm(state)
    task = recipe_task(recipe.data)
    if task in (None, "single_label"):
        return
    told = f"data.task is {task}" if getattr(recipe.data, "task", None) else f"the labels read as {task}"
    if getattr(recipe.data, "eval_data", None) is not None:
        raise state.fail("data.eval_data", f"eval_data's classes are single-label but {told}; leave it unset")
    if recipe.teacher.ensemble is not None:
        raise state.fail("teacher.ensemble", f"an ensemble averages class probabilities, but {told}; leave it unset")
    for index, stage in enumerate(recipe.stages):
        if stage.stage in CLASS_ONLY_STAGES:
            raise state.fail(f"stages[{index}].stage", f"'{stage.stage}' is for single-label classifiers "
                             f"({CLASS_ONLY_STAGES[stage.stage]}), but {told}")
        if getattr(stage, "augment", None) is not None:
            raise state.fail(f"stages[{index}].augment", f"augmented sentences are unlabelled, which only "
                             f"single-label training can skip, but {told}; leave it unset")
    if task == "token_classification":
        check_token_classification(state)


def _check_losses_and_tokenizer(state: PlanState) -> None:
    """Generation losses and corpus tokenizers for causal LMs only; classifier losses for classifiers only."""
    from edgekd.distill.losses.registry import GENERATION_LOSSES

    recipe = state.recipe
    generative = is_corpus(recipe.data)
    for index, stage in enumerate(recipe.stages):
        for key, loss in stage_losses(stage):
            if (loss.kind in GENERATION_LOSSES) != generative:
                expected = ", ".join(GENERATION_LOSSES) if generative else "a classifier loss (hinton, ...)"
                what = "a causal language model" if generative else f"data.source '{recipe.data.source}' (a classifier)"
                raise state.fail(f"stages[{index}].{key}.kind", f"loss '{loss.kind}' does not apply "
                                 f"to {what}; expected {expected}")
    kind = recipe.tokenizer.kind if recipe.tokenizer is not None else None
    if generative and kind == "wordpiece":
        raise state.fail("tokenizer.kind", "WordPiece does not reproduce a corpus's text (spaces, case); "
                         "expected char or bpe")
    if not generative and kind in ("char", "bpe"):
        raise state.fail("tokenizer.kind", f"'{kind}' tokenizers are trained for a corpus (data.source: corpus); "
                         "labelled text uses wordpiece or a pretrained tokenizer")


def _check_causal_lm(state: PlanState) -> None:
    """A causal LM is a Hugging Face model (a checkpoint or a config); its teacher trains or comes pretrained."""
    recipe = state.recipe
    for role in ("teacher", "assistant", "student"):
        holder = getattr(recipe, role)
        if holder is not None and holder.model.arch != "hf":
            raise state.fail(f"{role}.model.arch", f"a causal language model is arch: hf (a pretrained checkpoint "
                             f"or a transformers config with model_type), not '{holder.model.arch}'")
    for role in ("teacher", "assistant", "student"):
        context = declared_context(recipe, role)
        if context is not None and context < recipe.data.context:
            raise state.fail(f"{role}.model", f"it takes {context} positions, fewer than data.context "
                             f"{recipe.data.context} (the training windows); lower data.context")
    for index, stage in enumerate(recipe.stages):
        for key, loss in stage_losses(stage):
            if getattr(loss, "batches", "corpus") == "corpus":
                continue
            # a recovery distils the changed model from its own unpruned copy
            teacher, student = (stage.teacher, stage.student) if stage.stage == "distill" else (stage.role,) * 2
            roles = (teacher,) if loss.batches == "teacher_outputs" else (teacher, student)
            for role in roles:  # the teacher generates (sequence_kd); on-policy, both models read the samples
                context = declared_context(recipe, role)
                if context is not None and loss.prompt_tokens + loss.new_tokens > context:
                    raise state.fail(f"stages[{index}].{key}", f"prompt_tokens {loss.prompt_tokens} + "
                                     f"new_tokens {loss.new_tokens} exceed the {role}'s context of {context} "
                                     "positions; lower them")
    for index, stage in enumerate(recipe.stages):
        for number, mode in enumerate(getattr(stage, "modes", None) if stage.stage == "quantize" else ()):
            if mode not in LM_QUANTIZE_MODES:
                raise state.fail(f"stages[{index}].modes[{number}]", f"a causal LM's KV-cache decoder is quantized "
                                 f"as dynamic INT8, not '{mode}'; expected {' or '.join(LM_QUANTIZE_MODES)}")


def stage_losses(stage: object) -> list[tuple[str, Any]]:
    """A stage's distillation losses with their key paths within it: a distill stage's ``losses[i]``, and the
    ``recovery.losses[i]`` a prune/factorize/hybrid stage names (its default depends on the task, so only
    losses the recipe gives are listed)."""
    recovery = getattr(stage, "recovery", None)
    given = recovery.losses if recovery is not None and "losses" in recovery.model_fields_set else ()
    return ([(f"losses[{i}]", loss) for i, loss in enumerate(getattr(stage, "losses", None) or ())]
            + [(f"recovery.losses[{i}]", loss) for i, loss in enumerate(given)])


def check_generation_fits(recipe: Recipe, device: DeviceProfile, source: str) -> None:
    """A causal-LM recipe that profiles, quantizes or compresses (all time generation): the device's prompt plus
    new tokens fit each model's context (``max_position_embeddings``: the config's, the checkpoint's, or
    ``data.context`` for a model built from sizes)."""
    if not is_corpus(recipe.data) or not {"profile", "quantize", *LM_COMPRESS_STAGES} & set(recipe.stage_names()):
        return
    needed = device.generation.prompt_tokens + device.generation.new_tokens
    for role in ("teacher", "assistant", "student"):
        context = declared_context(recipe, role)
        if context is not None and needed > context:
            config = role_config(recipe, role) or {}
            own = "max_position_embeddings" in config or "n_positions" in config
            raise ConfigError(f"{source}: {role}.model: it takes {context} positions"
                              f"{'' if own else ' (data.context: a model built from sizes gets that many)'}, but "
                              f"device '{device.name}' generates {device.generation.prompt_tokens} prompt + "
                              f"{device.generation.new_tokens} new tokens; lower generation.prompt_tokens or "
                              f"new_tokens, or {'give a model of a longer context' if own else 'raise data.context'}")


def validation_needs(recipe: Recipe, device: DeviceProfile) -> list[tuple[int, str]]:
    """The tokens later stages take from a causal LM's validation text, each with the setting asking for them:
    every stage that times generation prompts it with the device's ``prompt_tokens``, and the quantize stage
    compares INT8 with FP32 on ``data.context + 1``-token windows."""
    names = set(recipe.stage_names())
    needs = []
    if {"profile", "quantize", *LM_COMPRESS_STAGES} & names:
        needs.append((device.generation.prompt_tokens, f"device '{device.name}' generation.prompt_tokens"))
    if "quantize" in names:
        needs.append((recipe.data.context + 1, "the quantize stage's validation windows (data.context + 1)"))
    return needs


def corpus_reader(recipe: Recipe) -> Callable[[], CorpusSplit]:
    """The text of a corpus recipe's ``data.path``, read by the first call and given again by later ones: the corpus
    checks of one validation share a reader, so the corpus is read once, when a check first needs it."""

    @functools.cache
    def read() -> CorpusSplit:
        from edgekd.data.lm_data import load_corpus

        return load_corpus(recipe.data)

    return read


def check_corpus_lengths(recipe: Recipe, device: DeviceProfile, source: str,
                         corpus: Callable[[], CorpusSplit]) -> None:
    """Before anything trains, refuse a corpus whose training text is too short for two ``data.context`` windows
    (what the training stages take) or whose validation text is too short for the stages after training, and warn
    when the validation text is shorter than one window (its loss would rest on a handful of tokens).

    With edgekd's character tokenizer the tokens are the characters. Another tokenizer spends one UTF-8 byte at
    least on each token but a leading word-boundary marker (SentencePiece's ``▁``), so the bytes plus one bound its
    tokens, and only a text too short even at that bound is refused here; the stages themselves check the exact
    count (:class:`edgekd.data.lm_data.TokenWindows`, :func:`edgekd.data.lm_data.device_prompt`). ``corpus`` reads
    the text (:func:`corpus_reader`)."""
    if not is_corpus(recipe.data):
        return
    exact = _char_tokenized(recipe)
    at_most = "" if exact else "at most "
    where = f"{source}: {recipe.data.path} (data.path)"
    train, validation = (len(text) if exact else len(text.encode("utf-8")) + 1
                         for text in (corpus().train, corpus().validation))
    windows = training_tokens_needed(recipe.data.context)
    if train < windows:
        raise DataError(f"{where}: the training text is {at_most}{train} token(s), too few for two windows of "
                        f"data.context {recipe.data.context} ({windows} tokens); lower data.context or give more text")
    for needed, why in validation_needs(recipe, device):
        if validation < needed:
            raise DataError(f"{where}: the validation text is {at_most}{validation} token(s), fewer than the {needed} "
                            f"{why} takes; give a longer validation text (data.train_fraction or "
                            "data.validation_split) or lower that setting")
    if validation <= recipe.data.context:
        log.warning("%s: the validation text is %s%d token(s), less than one data.context window of %d: its loss "
                    "rests on few tokens and will be noisy; give a longer validation text", where, at_most,
                    validation, recipe.data.context)


def check_corpus_vocabulary(recipe: Recipe, source: str, corpus: Callable[[], CorpusSplit]) -> None:
    """Before anything trains, refuse a causal LM whose vocabulary (``vocab_size`` of its config or checkpoint) has
    fewer rows than the recipe's tokenizer has tokens: its embeddings have no row for the last ids, and the model
    was refused only when its stage built it (a student's after the teacher had trained). Checked when the
    tokenizer's size is known without training one: edgekd's character tokenizer (the corpus's characters plus the
    end-of-text token) or a local ``tokenizer.pretrained`` / pretrained teacher's own tokenizer; a tokenizer that
    cannot load is refused here too. More rows than tokens is fine (checkpoints pad their vocabulary). ``corpus``
    reads the text (:func:`corpus_reader`)."""
    if not is_corpus(recipe.data):
        return
    known = _corpus_tokenizer_size(recipe, source, corpus)
    if known is None:
        return
    size, what = known
    for role in ("teacher", "assistant", "student"):
        rows = (role_config(recipe, role) or {}).get("vocab_size")
        if isinstance(rows, int) and rows < size:
            raise ConfigError(f"{source}: {role}.model: its vocabulary has {rows} tokens, fewer than the {size} of "
                              f"{what}; give the model vocab_size {size} or more, or use its own tokenizer")


def _corpus_tokenizer_size(recipe: Recipe, source: str,
                           corpus: Callable[[], CorpusSplit]) -> tuple[int, str] | None:
    """How many tokens a corpus recipe's tokenizer has, and which tokenizer it is, when known before training."""
    from pathlib import Path

    if _char_tokenized(recipe):
        split = corpus()
        return len(set(split.train + split.validation)) + 1, "the character tokenizer of data.path (its " \
            "characters and the end-of-text token)"
    given = recipe.tokenizer.pretrained if recipe.tokenizer is not None else None
    key = "tokenizer.pretrained"
    if given is None and recipe.tokenizer is None and recipe.teacher is not None:  # a pretrained teacher's own
        given, key = getattr(recipe.teacher.model, "pretrained", None), "teacher.model.pretrained"
    if given is None or not Path(given).expanduser().is_dir():  # a hub id: validate downloads nothing
        return None
    from edgekd.data.tokenizer import load_pretrained_tokenizer

    try:
        tokenizer = load_pretrained_tokenizer(given, trust_remote_code=False, padded=False)
    except ConfigError as exc:
        if key == "tokenizer.pretrained":
            raise
        raise ConfigError(f"{source}: teacher.model.pretrained: with no tokenizer section the corpus is read with the "
                          f"teacher's own tokenizer, which {str(exc).removeprefix('tokenizer.pretrained: ')}; save it "
                          "beside the checkpoint or set tokenizer (kind: char, kind: bpe or pretrained)") from None
    return len(tokenizer), f"{key} '{given}'"


def _char_tokenized(recipe: Recipe) -> bool:
    """Whether a corpus recipe's models read edgekd's character tokenizer (its default, as the teacher stage picks)."""
    if recipe.tokenizer is not None:
        return recipe.tokenizer.pretrained is None and recipe.tokenizer.kind in (None, "char")
    teacher = recipe.teacher
    return teacher is not None and getattr(teacher.model, "pretrained", None) is None


def declared_context(recipe: Recipe, role: str) -> int | None:
    """The positions a causal LM role takes, as far as the recipe says: its config's (or checkpoint's)
    ``max_position_embeddings``, else ``data.context`` (a model built from sizes gets it); None when unknown."""
    config = role_config(recipe, role)
    if config is None:
        return None
    context = config.get("max_position_embeddings", config.get("n_positions", recipe.data.context))
    return context if isinstance(context, int) else None


def role_config(recipe: Recipe, role: str) -> dict[str, Any] | None:
    """The transformers config (as a mapping) of an ``arch: hf`` role: the recipe's ``config``, else its
    checkpoint's ``config.json``; None for another architecture, a missing role or an unreadable checkpoint
    (reported, with its key, when it loads)."""
    holder = getattr(recipe, role, None)
    if holder is None or getattr(holder.model, "arch", None) != "hf":
        return None
    return hf_config(holder.model)


def hf_config(spec: HFSpec) -> dict[str, Any] | None:
    """The transformers config (as a mapping) of an ``arch: hf`` spec: its ``config``, else its checkpoint's
    ``config.json``; None for an unreadable checkpoint (reported, with its key, when it loads)."""
    from edgekd.models.families import read_config

    try:
        return spec.config or read_config(spec.pretrained, trust_remote_code=spec.trust_remote_code)
    except ValueError:
        return None


def recipe_task(data: object) -> TaskKind | None:
    """The recipe's task: ``data.task``, else inferred from a local training file; None when not knowable now."""
    task = getattr(data, "task", None)
    if task is not None:
        return task
    try:
        if isinstance(data, TextFileData) and data.train.is_file():
            from edgekd.data.text import text_file_task

            return text_file_task(data)
        if isinstance(data, HFDiskData) and data.path.is_dir():
            from edgekd.data.text import load_text_dataset

            return load_text_dataset(data, 0).task  # cached: the run reads it again for free
        if isinstance(data, NpzData) and data.path.is_file():
            from edgekd.data.npz import load_npz, npz_task

            return npz_task(load_npz(data.path, None).labels)
    except DataError:
        return None  # a broken file is reported, with its line, when the data is loaded
    return None
