"""A classifier together with what it takes to rebuild, feed and export it.

Every model a stage saves is a self-describing directory::

    <role>/
      edgekd_model.json    spec it was built from, input signature, class names
      model.safetensors    weights (Hugging Face models: save_pretrained, with config.json)
      tokenizer.json ...   text models: the tokenizer their token ids come from

so a later stage (or a user) reloads it with :meth:`TaskModel.load` whatever its architecture,
including one whose shape pruning has changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.atomic import atomic_dir
from edgekd.data.examples import InputSignature
from edgekd.data.saved_tokenizer import read_tokenizer, write_tokenizer
from edgekd.errors import ConfigError, ModelError, first_line
from edgekd.models import hf
from edgekd.models.architectures import ModelSpec, build_module
from edgekd.models.builders import count_params
from edgekd.models.specs import HFSpec
from edgekd.models.weights import load_weights, save_weights
from edgekd.prune.structure import apply_low_rank, low_rank_layers

MANIFEST = "edgekd_model.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class ModelDescription:
    """A model directory's ``edgekd_model.json``: what :meth:`TaskModel.save` wrote beside the weights."""

    spec: dict[str, Any]
    signature: InputSignature
    class_names: tuple[str, ...]
    huggingface: bool
    low_rank: dict[str, Any]


def read_description(directory: Path) -> ModelDescription:
    """The ``edgekd_model.json`` of the model directory ``directory``; :class:`ModelError` naming the directory when
    it is missing, unreadable or not of this form (not a directory a run saved)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
        return ModelDescription(spec=manifest["spec"], signature=InputSignature.from_json(manifest["signature"]),
                                class_names=tuple(manifest["class_names"]), huggingface=bool(manifest["huggingface"]),
                                low_rank=manifest.get("low_rank", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{directory}: not an edgekd model directory ({MANIFEST} missing or unreadable: "
                         f"{first_line(exc)})") from None


@dataclass
class TaskModel:
    """A classifier module plus its spec, input signature, class names and (text) tokenizer."""

    module: nn.Module
    spec: dict[str, Any]
    signature: InputSignature
    class_names: tuple[str, ...]
    tokenizer: Any | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        hf.dense_attention(self.module)

    @property
    def params(self) -> int:
        """Number of parameters."""
        return count_params(self.module)

    @property
    def is_hf(self) -> bool:
        return hf.is_hf_model(self.module)

    def save(self, directory: Path) -> Path:
        """Write the model directory atomically (see the module docstring)."""
        with atomic_dir(Path(directory)) as tmp:
            if self.is_hf:
                self.module.save_pretrained(tmp, safe_serialization=True)
            else:
                save_weights(self.module, tmp / WEIGHTS)
            if self.tokenizer is not None:
                write_tokenizer(self.tokenizer, tmp)
            manifest = {"format": 1, "spec": self.spec, "signature": self.signature.to_json(),
                        "class_names": list(self.class_names), "huggingface": self.is_hf}
            low_rank = {} if self.is_hf else low_rank_layers(self.module)  # HF: in config.json
            if low_rank:
                manifest["low_rank"] = low_rank
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: Path) -> TaskModel:
        """Reload a directory written by :meth:`save` (weights as safetensors only)."""
        directory = Path(directory)
        described = read_description(directory)
        signature, class_names = described.signature, described.class_names
        if described.huggingface:
            module = _load_hf(directory, signature.per_token)
        else:
            from pydantic import TypeAdapter

            spec = TypeAdapter(ModelSpec).validate_python(described.spec)
            module = build_module(spec, signature, class_names)
            module = load_weights(apply_low_rank(module, described.low_rank), directory / WEIGHTS)
        # text given as token ids in Python (edgekd.data.memory) has no tokenizer to save
        saved = signature.kind == "text" and (directory / "tokenizer_config.json").is_file()
        tokenizer = _load_tokenizer(directory) if saved else None
        return cls(module=module.eval(), spec=described.spec, signature=signature, class_names=class_names,
                   tokenizer=tokenizer)

    def example_inputs(self, batch: int = 2, sequence: int = 16) -> dict[str, torch.Tensor]:
        """Placeholder inputs of the right names, dtypes and shapes (for tracing and smoke tests). Text rows are
        laid out as the model's tokenizer (when it has one) lays out a sentence: its special tokens where it puts
        them (BART's and T5's classifiers pool the hidden state at the end-of-text token and refuse rows without
        one)."""
        if self.signature.kind == "image":
            return {"input": torch.zeros(batch, *self.signature.image_shape)}
        ids = torch.full((batch, sequence), min(5, self.signature.vocab_size - 1), dtype=torch.long)
        if self.tokenizer is not None:
            words = " ".join(["a"] * sequence)
            row = self.tokenizer(words, truncation=True, max_length=sequence, add_special_tokens=True)["input_ids"]
            ids[:, :len(row)] = torch.tensor(row[:sequence], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def build_task_model(
    spec: ModelSpec,
    signature: InputSignature,
    class_names: tuple[str, ...],
    *,
    tokenizer: Any | None = None,
    teacher: TaskModel | None = None,
) -> TaskModel:
    """A freshly initialised model for ``spec`` (seed torch first for determinism).

    ``drop_layers`` students are built from ``teacher`` (weights copied).
    """
    if signature.per_token and not spec.tags_tokens:
        from edgekd.token_rules import TOKEN_ARCHS

        raise ConfigError(f"model arch '{spec.arch}' classifies whole inputs, but the data is token classification "
                          f"(a tag per token); use one that tags tokens ({', '.join(TOKEN_ARCHS)})")
    if isinstance(spec, HFSpec) and spec.modality != signature.kind:
        raise ConfigError(f"model {spec.label} takes {spec.modality}, but the recipe's data is {signature.kind}")
    if spec.modality is not None and spec.modality != signature.kind:
        data = "text" if signature.kind == "text" else "images"
        raise ConfigError(f"model arch '{spec.arch}' takes {'images' if spec.modality == 'image' else 'text'}, "
                          f"but the recipe's data is {data}")
    module = build_module(spec, signature, class_names, teacher.module if teacher is not None else None)
    model = TaskModel(module=module, spec=spec.model_dump(mode="json"), signature=signature,
                      class_names=class_names, tokenizer=tokenizer)
    if isinstance(spec, HFSpec):
        failure = run_failure(model, spec.label)
        if failure is not None:
            raise ModelError(failure)
    return model


def run_failure(model: TaskModel, label: str, sequence: int = 16) -> str | None:
    """Why one forward pass on placeholder inputs of the data's shape (text: ``sequence`` tokens) fails, in one line
    naming the model ``label`` (a family that cannot take them: an image too small for its downsampling, say); None
    when it runs. Refused when the model is built and, on an untrained twin, by ``edgekd validate``
    (:mod:`edgekd.models.data_fit`)."""
    from edgekd.models.call import call_logits, eval_mode

    try:
        with eval_mode(model.module), torch.no_grad():
            call_logits(model.module, model.example_inputs(batch=1, sequence=sequence))
    except Exception as exc:  # noqa: BLE001 - whatever a foreign forward raises, it does not run on these inputs
        unset = _unset_config_key(exc)
        if unset is not None:
            return (f"model {label} reads '{unset}' from its config, which does not set it (its config class has no "
                    f"default for it); set {unset} in the model's config")
        shape = model.signature.image_shape if model.signature.kind == "image" else "token ids"
        return f"model {label} does not run on the data's inputs ({shape}): {first_line(exc)}"
    return None


def _unset_config_key(exc: BaseException) -> str | None:
    """The key a model read from its transformers config that the config does not have (T5's classifier reads
    ``decoder_start_token_id``, which ``T5Config`` does not define: an ``AttributeError`` on the config), or None
    when ``exc`` is another failure."""
    from transformers import PretrainedConfig

    if isinstance(exc, AttributeError) and isinstance(getattr(exc, "obj", None), PretrainedConfig):
        return exc.name
    return None


def _load_hf(directory: Path, per_token: bool = False) -> nn.Module:
    """A Hugging Face classifier (``per_token``: a token classifier); a pruned/factorized one through its reshaping
    subclass (see edgekd.prune)."""
    from transformers import AutoConfig

    from edgekd.models.families import family

    hf.quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
        modality = family(config.model_type).modality
        return hf.frozen_as_built(hf.checkpoint_class(config, modality, per_token).from_pretrained(
            directory, attn_implementation=hf.ATTENTION, use_safetensors=True, trust_remote_code=False,
            dtype=hf.LOAD_DTYPE,
        ))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: cannot load the Hugging Face model ({str(exc).splitlines()[0]})") from exc


def _load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved beside the model, read as it was saved (:func:`read_tokenizer`)."""
    try:
        return read_tokenizer(directory)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: cannot load the tokenizer ({str(exc).splitlines()[0]})") from exc
