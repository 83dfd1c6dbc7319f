"""Whether a Hugging Face classifier can take the recipe's data: one rule, run where the model is built and by
``edgekd validate`` (and :func:`check_image_spec`, the same question for the image classifiers edgekd builds from
sizes).

A model is built by the stage that trains it: a pretrained student by the distill stage, after the teacher
trained for minutes or hours. So what makes a checkpoint (or a transformers ``config``) unable to serve the data
is asked twice, by the same functions: when the model is built (:func:`edgekd.models.hf.build_hf`,
:func:`edgekd.models.task_model.build_task_model`), and at ``edgekd validate`` and the pipeline's start on an
untrained twin of it (same class and config, random weights: the checkpoint's weights are not read), through the
architecture's validate-time ``check`` (:mod:`edgekd.models.architectures`). Refused:

- token ids beyond its embeddings: the tokenizer (``tokenizer.pretrained``, a WordPiece trained on the data, or
  token ids given in Python) has more tokens than its vocabulary (:func:`vocabulary_misfit`);
- images of other channels than its ``num_channels`` (:func:`channel_misfit`);
- a family transformers has no classifier of the data's kind for (a causal LM without a sequence classifier:
  :func:`edgekd.models.hf.missing_classifier`);
- whatever else its forward pass cannot take: one pass on placeholder inputs of the data's shape (an image size
  its position table or downsampling cannot take, a classifier whose head or task its config cannot serve;
  :func:`edgekd.models.task_model.run_failure`).

A checkpoint whose weights have other shapes than its config.json gives them is refused for any data (a corpus
too), as its load refuses it (:func:`edgekd.models.hf.checkpoint_misfit`: its safetensors headers against the class
that loads it built on the meta device, no weights read). Too few positions for ``tokenizer.max_length`` or the
device's sequence length has its own rule (:func:`edgekd.input_rules.check_sequence_fits`). Data only the run can
load (a hub dataset), a hub checkpoint (validate downloads nothing) and a checkpoint bringing its own code
(``trust_remote_code``) are tried when built.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import EdgekdError, first_line

if TYPE_CHECKING:
    from torch import nn

    from edgekd.data.examples import InputSignature
    from edgekd.models.specs import BertSpec, HFSpec
    from edgekd.stage_kind import PlanState

#: Tokens of the placeholder sentence a model is tried on (fewer when it takes fewer positions).
TRIAL_TOKENS = 16


def vocabulary_misfit(module: nn.Module, vocab_size: int) -> str | None:
    """Why a text model cannot take token ids of a tokenizer of ``vocab_size`` tokens (its embeddings have fewer
    rows); None when it can."""
    rows = module.get_input_embeddings().num_embeddings
    if rows < vocab_size:
        return (f"its vocabulary has {rows} tokens, fewer than the tokenizer's {vocab_size}; use the model's own "
                "tokenizer (tokenizer.pretrained) or a smaller vocab_size (if that is its own tokenizer, tokens were "
                "added to it without resizing the model's embeddings: resize_token_embeddings and save it again)")
    return None


def channel_misfit(config: Any, channels: int) -> str | None:
    """Why an image model of transformers ``config`` cannot take images of ``channels`` channels; None when it can
    (a config without ``num_channels`` takes any)."""
    own = getattr(config, "num_channels", channels)
    if own != channels:
        return f"takes {own}-channel images, the data has {channels}"
    return None


def check_spec(spec: HFSpec | BertSpec, state: PlanState, key: str) -> None:
    """``check_recipe``'s rule for a Hugging Face model (``arch: hf``, ``arch: bert`` from a checkpoint): a checkpoint's
    weights fit the class that loads it, and its untrained twin takes the recipe's data (see the module docstring),
    else ``state.fail`` naming ``key.pretrained`` or ``key.config``."""
    from edgekd.data.config import is_corpus

    recipe = state.recipe
    if not _triable(spec):
        return
    corpus = is_corpus(recipe.data)
    facts = None if corpus else data_facts(recipe)
    _check_weights_fit(spec, state, key, per_token=facts is not None and facts[0].per_token, causal=corpus)
    if facts is None:
        return
    signature, class_names = facts
    key_of_try = _facts_key(recipe)
    if key_of_try is None:
        message = _misfit(spec, recipe, signature, class_names)
    else:  # a search checks each candidate's recipe, with the same teacher: tried once
        key_of_try += f"|{spec.model_dump_json()}"
        if key_of_try not in _TRIED:
            if len(_TRIED) >= 64:  # a long process (a notebook, a test session) keeps only recent ones
                _TRIED.clear()
            _TRIED[key_of_try] = _misfit(spec, recipe, signature, class_names)
        message = _TRIED[key_of_try]
    if message is not None and spec.pretrained is not None:
        raise state.fail(f"{key}.pretrained", f"'{spec.pretrained}': {message}")
    if message is not None:
        raise state.fail(f"{key}.config", message)


def _check_weights_fit(spec: HFSpec | BertSpec, state: PlanState, key: str, *, per_token: bool, causal: bool
                       ) -> None:
    """``state.fail`` naming ``key.pretrained`` when the checkpoint's weights do not fit the class that loads it, in
    the words its load refuses it in (:func:`edgekd.models.hf.checkpoint_misfit`: from its files' headers, no
    weights read), for any data: the model is built by the stage that trains it."""
    from edgekd.models.hf import checkpoint_misfit

    if spec.pretrained is None:
        return
    misfit = checkpoint_misfit(spec, per_token=per_token, causal=causal)
    if misfit is not None:
        raise state.fail(f"{key}.pretrained", f"'{spec.pretrained}': {misfit}")


def check_image_spec(spec: Any, state: PlanState, key: str) -> None:
    """``check_recipe``'s rule for an image classifier edgekd builds from sizes (``cnn``, ``mlp``, ``resnet``,
    ``mobilenet_v2``): built for the recipe's images (random weights: milliseconds), it runs one pass on them; else
    ``state.fail`` naming ``key`` (more pooling blocks than the images have pixels, say), before any stage trains."""
    import torch

    from edgekd.models.architectures import build_module

    facts = data_facts(state.recipe)
    if facts is None or facts[0].kind != "image":
        return  # text data: the spec's modality check names it
    signature, class_names = facts
    with torch.random.fork_rng(), torch.no_grad():  # building initialises weights: the run's stream must not move
        try:
            module = build_module(spec, signature, class_names).eval()
            module(torch.zeros(2, *signature.image_shape))
        except EdgekdError as exc:
            raise state.fail(key, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - whatever the layers raise, they cannot take these images
            raise state.fail(key, f"does not run on the data's images {list(signature.image_shape)}: "
                                  f"{first_line(exc)}") from None


def _triable(spec: Any) -> bool:
    """Whether validate tries the model: built from a config, or from a local checkpoint without code of its own."""
    from edgekd.models.packaged import resolve_pretrained

    if getattr(spec, "trust_remote_code", False):
        return False
    if spec.pretrained is None:
        return spec.arch == "hf"
    try:
        return Path(resolve_pretrained(spec.pretrained)).is_dir()
    except EdgekdError:
        return False  # the packaged checkpoint's own check names the key


def _misfit(spec: Any, recipe: Any, signature: InputSignature, class_names: tuple[str, ...]) -> str | None:
    """Why the untrained twin of ``spec`` cannot take data of ``signature``; None when it can, or cannot be built
    here (transformers' refusal is reported when the model is built, or by the spec's own checks)."""
    import torch

    from edgekd.models.hf import missing_classifier, untrained_classifier, usable_positions
    from edgekd.models.task_model import TaskModel, run_failure

    model_type = getattr(spec, "model_type", "bert")
    missing = missing_classifier(model_type, signature.kind, signature.per_token)
    if missing is not None:
        return missing
    with torch.random.fork_rng():  # building initialises weights: the run's random stream must not move
        torch.manual_seed(0)
        try:
            module = untrained_classifier(spec, signature, class_names)
        except Exception:  # noqa: BLE001 - any refusal of transformers' is reported where the model is built
            return None
        if signature.kind == "image":
            misfit = channel_misfit(module.config, signature.image_shape[0])
        else:
            misfit = vocabulary_misfit(module, _tokenizer_size(recipe, signature, module))
        if misfit is not None:
            return misfit
        tokenizer = _trial_tokenizer(recipe) if signature.kind == "text" else None
        model = TaskModel(module=module, spec=spec.model_dump(mode="json"), signature=signature,
                          class_names=class_names, tokenizer=tokenizer)
        sequence = min(TRIAL_TOKENS, usable_positions(module) or TRIAL_TOKENS) if signature.kind == "text" else 1
        return run_failure(model, spec.label, sequence=max(sequence, 1))


#: What each model was found unable to take (None: it takes the data), by spec and the data's facts.
_TRIED: dict[str, str | None] = {}
#: The data's facts by data config and seed (a recipe's teacher and student are tried on one load).
_FACTS: dict[str, tuple[InputSignature, tuple[str, ...]] | None] = {}


def data_facts(recipe: Any) -> tuple[InputSignature, tuple[str, ...]] | None:
    """The recipe's input signature and class names as the run will have them (text: the tokenizer's padding id and
    size, a trained WordPiece's as its ``vocab_size`` bound, see :func:`_tokenizer_size`); None for data only the
    run loads, or data whose own checks fail."""
    key = _facts_key(recipe)
    if key is not None and key in _FACTS:
        return _FACTS[key]
    facts = _read_facts(recipe)
    if key is not None:
        _FACTS.clear()  # one recipe's data at a time
        _FACTS[key] = facts
    return facts


def _facts_key(recipe: Any) -> str | None:
    """The recipe's data, seed and tokenizer as a cache key; None for data given as Python objects (not cached)."""
    try:
        return f"{recipe.data.model_dump_json()}|{recipe.seed}|{recipe.tokenizer}"
    except Exception:  # noqa: BLE001 - pydantic cannot write objects held in memory as JSON
        return None


def _read_facts(recipe: Any) -> tuple[InputSignature, tuple[str, ...]] | None:
    from edgekd.data.config import HubData, MemoryData
    from edgekd.data.datasets import load_dataset
    from edgekd.data.task_data import prepare_task_data

    data = recipe.data
    if isinstance(data, HubData):
        return None  # needs the network: tried when the model is built
    seed = data.split_seed if data.split_seed is not None else recipe.seed
    try:
        if data.modality == "image" or isinstance(data, MemoryData):
            prepared = prepare_task_data(data, recipe.seed)
            return prepared.signature, prepared.class_names
        texts = load_dataset(data, seed)
        signature = text_signature(recipe, per_token=texts.task == "token_classification")
    except EdgekdError:
        return None  # the data's (or tokenizer's) own checks report it
    return None if signature is None else (signature, texts.class_names)


def text_signature(recipe: Any, *, per_token: bool) -> InputSignature | None:
    """The text inputs the recipe's tokenizer gives, without training it: a local pretrained tokenizer's size and
    padding id; a WordPiece trained on the data has at most ``vocab_size`` tokens, ``[PAD]`` first (its exact size:
    :func:`trained_tokenizer_size`); None for a hub tokenizer (validate downloads nothing). ``ConfigError`` when
    the pretrained tokenizer cannot load."""
    from edgekd.data.config import run_tokenizer
    from edgekd.data.examples import InputSignature
    from edgekd.data.tokenizer import TRAINED_END_ID, end_token_id, load_pretrained_tokenizer

    config = run_tokenizer(recipe)
    if config.pretrained is None:
        return InputSignature(kind="text", vocab_size=config.vocab_size, pad_id=0, max_length=config.max_length,
                              per_token=per_token, end_id=TRAINED_END_ID)
    if not Path(config.pretrained).is_dir():
        return None
    tokenizer = load_pretrained_tokenizer(config.pretrained, trust_remote_code=False)
    return InputSignature(kind="text", vocab_size=len(tokenizer), pad_id=int(tokenizer.pad_token_id),
                          max_length=config.max_length, per_token=per_token, end_id=end_token_id(tokenizer))


def trained_tokenizer_size(recipe: Any) -> int | None:
    """The exact size of the WordPiece the run trains on the recipe's training texts (trained here as the run
    will: seconds to a minute on a large set); None when the recipe names a pretrained tokenizer or gives token
    ids in Python."""
    from edgekd.data.config import MemoryData, run_tokenizer
    from edgekd.data.datasets import load_dataset
    from edgekd.data.tokenizer import load_or_train_tokenizer

    config = run_tokenizer(recipe)
    if config.pretrained is not None or isinstance(recipe.data, MemoryData):
        return None
    data = recipe.data
    texts = load_dataset(data, data.split_seed if data.split_seed is not None else recipe.seed)
    return len(load_or_train_tokenizer(config, texts.train.texts))


def _trial_tokenizer(recipe: Any) -> Any | None:
    """A tokenizer laying out a sentence as the run's will (its special tokens, where it puts them), for the trial
    pass: a local pretrained one itself; for a WordPiece the run trains on the data, one trained on a single
    sentence (the same special tokens at the same ids, in milliseconds); None when it cannot be had here."""
    from edgekd.data.config import MemoryData, run_tokenizer
    from edgekd.data.tokenizer import load_or_train_tokenizer, load_pretrained_tokenizer

    config = run_tokenizer(recipe)
    if isinstance(recipe.data, MemoryData):
        return None  # token ids given in Python: no tokenizer
    try:
        if config.pretrained is None:
            return load_or_train_tokenizer(config, ["a sentence"])
        return load_pretrained_tokenizer(config.pretrained, trust_remote_code=False) \
            if Path(config.pretrained).is_dir() else None
    except EdgekdError:
        return None  # the tokenizer's own check names it


def _tokenizer_size(recipe: Any, signature: InputSignature, module: nn.Module) -> int:
    """The size of the tokenizer the run will have. A WordPiece trained on the data has at most ``vocab_size``
    tokens (``signature.vocab_size`` here); only when the model has fewer rows is it trained, as the run will."""
    if module.get_input_embeddings().num_embeddings >= signature.vocab_size:
        return signature.vocab_size
    return trained_tokenizer_size(recipe) or signature.vocab_size
