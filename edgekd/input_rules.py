"""The tokenizer's lengths, and the device's text inputs (and image size), fit every classifier of a recipe.

Training and evaluation feed up to ``tokenizer.max_length`` tokens, so a Hugging Face model with fewer positions
is refused before anything trains (it was refused when its stage built it, after the stages before had trained).

Stages that time a model (profile, quantize, bundle, prune, factorize, hybrid, search) feed it
``device.inputs.sequence_length`` tokens; a model that takes fewer cannot run them: a Hugging Face model
(``arch: hf``, and ``arch: bert`` from a checkpoint or from sizes) with fewer positions
(``max_position_embeddings``, less the positions RoBERTa-style embeddings skip) would fail in onnxruntime on an
out-of-range index after every stage before it had trained, and an ONNX teacher exported with a fixed, shorter
sequence length would be timed at its own length, not the device's (a dynamic one with too short a position
table fails like a Hugging Face model). Each architecture says what its models take
(:attr:`edgekd.models.architectures.Architecture.positions`). Refused by
``edgekd validate`` and before the first stage instead, naming the role and both numbers. Causal LMs
have their own check on the device's generation lengths (:func:`edgekd.task_rules.check_generation_fits`).

A local checkpoint that comes with its own tokenizer files, while the recipe's token ids come from another
tokenizer (a WordPiece trained on the data, or another ``tokenizer.pretrained``), would read its embedding
rows for other tokens: :func:`warn_foreign_tokenizers` says so in one warning per model, naming the fix.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.data.config import MemoryData, is_corpus, run_tokenizer
from edgekd.errors import ConfigError
from edgekd.models.checkpoint_files import VOCABULARY_FILES, check_tokenizer_files
from edgekd.task_rules import hf_config

if TYPE_CHECKING:
    from edgekd.config.device import DeviceProfile
    from edgekd.config.recipe import Recipe
    from edgekd.models.specs import BertSpec, HFSpec

log = logging.getLogger(__name__)

#: Stages that run a model at the device's input shapes.
TIMING_STAGES = frozenset({"profile", "quantize", "bundle", "prune", "factorize", "hybrid", "search"})


def check_sequence_fits(recipe: Recipe, device: DeviceProfile, source: str) -> None:
    """Raise ``ConfigError`` when a text classifier role takes fewer tokens than ``tokenizer.max_length`` (training
    and evaluation feed that many) or, in a recipe with a timing stage, than the device's
    ``inputs.sequence_length``."""
    if recipe.data.modality != "text" or is_corpus(recipe.data):
        return
    max_length = None if isinstance(recipe.data, MemoryData) else run_tokenizer(recipe).max_length
    timed = bool(TIMING_STAGES & set(recipe.stage_names()))
    length = device.inputs.sequence_length
    asked = max(length if timed else 0, max_length or 0)  # the most tokens any stage feeds
    if not asked:
        return
    for role in ("teacher", "assistant", "student"):
        positions = _role_positions(recipe, role, asked)
        if positions is None:
            continue
        if max_length is not None and positions < max_length:
            pretrained = getattr(getattr(getattr(recipe, role, None), "model", None), "pretrained", None)
            named = f"{role}.model" + (f" ('{pretrained}')" if pretrained is not None else "")
            raise ConfigError(f"{source}: {named}: it takes at most {positions} tokens, fewer than the "
                              f"tokenizer's max_length {max_length}; lower tokenizer.max_length")
        if timed and positions < length:
            raise ConfigError(f"{source}: {role}.model: it takes at most {positions} tokens, but device "
                              f"'{device.name}' feeds inputs.sequence_length {length}; give a device profile with "
                              f"a shorter sequence_length (--device my-device.yaml) or a model with more positions")


def check_image_fits(recipe: Recipe, device: DeviceProfile, source: str) -> None:
    """Raise ``ConfigError`` when the device sets ``inputs.image_size`` to another size than the recipe's images, in
    a recipe that exports or times its models: they are exported at the data's size, which the exporter's parity
    check and the profiler would feed at the device's (it failed in the export stage, after training)."""
    from edgekd.models.data_fit import data_facts

    side = device.inputs.image_size
    stages = set(recipe.stage_names())
    if side is None or recipe.data.modality != "image" or not (TIMING_STAGES | {"export"}) & stages:
        return
    facts = data_facts(recipe)
    if facts is None:
        return  # data only the run loads (the hub)
    height, width = facts[0].image_shape[-2:]
    if (height, width) != (side, side):
        raise ConfigError(f"{source}: device '{device.name}' sets inputs.image_size {side}, but the recipe's models "
                          f"take the data's {height}×{width} images and are exported at that size; give a device "
                          "profile with image_size: null (each model's own size) or the data's size")


def _role_positions(recipe: Recipe, role: str, length: int) -> int | None:
    """The tokens the model of ``role`` takes (where it cannot take ``length``), from its architecture's
    ``positions`` (a ``drop_layers`` student keeps its teacher's); None for a missing role or a model without a
    limit known before it is built (BiLSTM, TextCNN, a user's module)."""
    from edgekd.models.architectures import ARCHITECTURES
    from edgekd.models.specs import spec_of

    try:
        spec = spec_of(recipe, role)
    except ValueError:  # the recipe has no such role
        return None
    positions = ARCHITECTURES[spec.arch].position_limit()
    return positions(spec, recipe, length) if positions is not None else None


def hf_positions(spec: HFSpec, recipe: Recipe, length: int) -> int | None:
    """The tokens an ``arch: hf`` model takes, from its config (the recipe's or its checkpoint's); ``length`` unused."""
    config = hf_config(spec)
    return _usable_positions(config) if config is not None else None


def bert_positions(spec: BertSpec, recipe: Recipe, length: int) -> int | None:
    """The tokens an ``arch: bert`` model takes: its checkpoint's config's, or, built from sizes, the position
    table it is given (the recipe's ``tokenizer.max_length``, at least :data:`edgekd.models.hf.MIN_POSITIONS`)."""
    from edgekd.models.families import read_config
    from edgekd.models.hf import MIN_POSITIONS

    if spec.pretrained is not None:
        try:
            return _usable_positions(read_config(spec.pretrained))
        except ValueError:  # no readable checkpoint: the teacher stage names the key
            return None
    tokenizer = getattr(recipe, "tokenizer", None)
    return max(tokenizer.max_length, MIN_POSITIONS) if tokenizer is not None else None


def _usable_positions(config: dict[str, Any]) -> int | None:
    """The tokens the model of a transformers config mapping takes (built on the meta device, nothing allocated);
    None when the config gives no limit or cannot be built (reported with its key when the model builds)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from edgekd.models.hf import quiet_transformers, usable_positions

    quiet_transformers()
    try:
        built = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModel.from_config(built)
    except Exception:  # an unknown family or a config transformers refuses: its own check names the key
        return None
    return usable_positions(model)


def check_tokenizer_present(recipe: Recipe, source: str) -> None:
    """Raise ``ConfigError`` when text data's ``tokenizer.pretrained`` is a local directory without tokenizer files
    (a model saved without its tokenizer: transformers would make one up of its special tokens only)."""
    given = getattr(getattr(recipe, "tokenizer", None), "pretrained", None)
    if recipe.data.modality != "text" or given is None:
        return
    try:
        check_tokenizer_files(given)
    except ValueError as exc:
        raise ConfigError(f"{source}: tokenizer.pretrained: {exc}") from None


def warn_foreign_tokenizers(recipe: Recipe, source: str) -> None:
    """One warning per text model whose local checkpoint directory has a tokenizer other than the one the run
    takes its token ids from (:func:`_token_ids_source`)."""
    if recipe.data.modality != "text":
        return
    source_name, ids = _token_ids_source(recipe)
    recipe_vocabulary = _vocabulary_digest(source_name) if source_name is not None else None
    for role in ("teacher", "assistant", "student"):
        pretrained = getattr(getattr(getattr(recipe, role, None), "model", None), "pretrained", None)
        own = _vocabulary_digest(pretrained) if pretrained is not None else None
        if own is None or own == recipe_vocabulary:
            continue
        log.warning("%s: %s.model.pretrained '%s' comes with its own tokenizer, but the token ids come from %s: its "
                    "embeddings would read other tokens' rows; set tokenizer.pretrained: %s", source, role, pretrained,
                    ids, pretrained)


#: How warnings name a tokenizer trained on the data, by ``tokenizer.kind``.
TRAINED_KINDS = {"wordpiece": "a WordPiece vocabulary", "char": "a character vocabulary",
                 "bpe": "a byte-level BPE vocabulary"}


def _token_ids_source(recipe: Recipe) -> tuple[str | None, str]:
    """Where a text recipe's token ids come from: the checkpoint or tokenizer directory (None: a vocabulary trained
    on the data) and how a warning names it. A recipe without a tokenizer section takes its pretrained teacher's."""
    tokenizer = getattr(recipe, "tokenizer", None)
    given = getattr(tokenizer, "pretrained", None)
    if given is not None:
        return given, f"tokenizer.pretrained '{given}'"
    teacher = getattr(recipe.teacher.model, "pretrained", None)
    if tokenizer is None and teacher is not None:  # as the teacher stage (run_tokenizer)
        return teacher, f"the teacher's tokenizer ('{teacher}')"
    kind = getattr(tokenizer, "kind", None) or ("char" if is_corpus(recipe.data) else "wordpiece")
    return None, f"{TRAINED_KINDS[kind]} trained on the data (tokenizer.pretrained is unset)"


def _vocabulary_digest(name: str) -> str | None:
    """SHA-256 of a local directory's vocabulary file (the first of :data:`VOCABULARY_FILES` there); None for a
    hub id, a packaged checkpoint or a directory without one."""
    directory = Path(name)
    if not directory.is_dir():
        return None
    for file_name in VOCABULARY_FILES:
        path = directory / file_name
        if path.is_file():
            return hashlib.sha256(file_name.encode() + b"\0" + path.read_bytes()).hexdigest()
    return None
