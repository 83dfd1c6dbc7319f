"""``edgekd export SOURCE`` for a PyTorch model: ONNX with the parity gate, ``.ort`` when the target says, a profile.

``SOURCE`` is a Hugging Face model directory (``save_pretrained``; weights read as safetensors only), a
hub id read from the local cache only (nothing is downloaded), or ``package.module:factory`` (only that
factory is imported and called, with ``kwargs``). Like ``optimum-cli export onnx``, plus the parity check
and a profile on the device:

- Hugging Face classifiers are loaded with their auto class (sequence or image classification by family)
  and exported from synthetic inputs: text as a padded batch of :data:`SAMPLE_ROWS` rows of different
  lengths (so the attention mask is not all ones: parity covers padding), the sequence axis dynamic;
  images at the shape an edgekd run trained a model directory on (its ``edgekd_model.json``), else the config's
  ``image_size`` (else the device profile's, else 224). The config and, when the
  directory has one, the tokenizer are saved beside ``model.onnx``, as optimum does.
- A factory's module is fed what it is given: ``input_shape`` (one float input per example, e.g.
  ``(1, 8, 8)``; seeded random values) or a ``sample`` ``.npz`` (arrays named as the inputs; ``input_ids``
  with an ``attention_mask`` for token ids), as :mod:`edgekd.models.user_module` feeds it in a run.

The parity gate is :func:`edgekd.export.onnx_export.export_onnx`'s (batches of 1 and 7 rows and the
whole sample, then the device profile's input shapes and, for text, a second length); an ``ort`` target also
converts and checks the ``.ort`` (:func:`convert_to_ort`). The deployed file is then profiled on the device
(:func:`edgekd.profile.runner.profile_onnx`).
"""

from __future__ import annotations

import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from edgekd.config.device import DeviceProfile
from edgekd.data.saved_tokenizer import read_tokenizer, write_tokenizer
from edgekd.errors import ConfigError, DataError, ExportError, ModelError, first_line
from edgekd.export.beside_files import SOURCE_RECORD, write_record
from edgekd.export.config import ExportTarget
from edgekd.export.onnx_export import ExportResult, export_onnx
from edgekd.export.ort_format import OrtModel, convert_to_ort, numpy_feeds
from edgekd.models.export_support import Use, export_refusal, refusal_message
from edgekd.models.hf import dense_attention, unloaded_weights, usable_positions, weights_misfit
from edgekd.models.specs import IMPORT_PATH
from edgekd.models.task_model import read_description
from edgekd.profile.runner import ProfileResult, profile_onnx
from edgekd.rundir import check_claimable, claimed

#: Rows of the synthetic batch a Hugging Face model is exported and parity-checked on.
SAMPLE_ROWS = 4
#: Image side when neither the config nor the device profile gives one.
DEFAULT_IMAGE_SIZE = 224
#: The exported file's stem (``model.onnx``, ``model.ort``), as optimum names it.
STEM = "model"
#: A hub id: ``name`` or ``owner/name``.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
SourceKind = Literal["onnx", "huggingface", "factory"]


@dataclass(frozen=True)
class ExportedModel:
    """A PyTorch source exported: the ONNX result, the ``.ort`` (ort targets), the deployed file's profile."""

    source: str
    kind: SourceKind
    onnx: ExportResult
    ort: OrtModel | None
    profile: ProfileResult
    notes: tuple[str, ...] = ()

    @property
    def path(self) -> Path:
        """The deployed file: the ``.ort`` for an ort target, else the ONNX file."""
        return self.ort.path if self.ort is not None else self.onnx.path

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready record of the export, its parity and its profile."""
        return {"source": self.source, "kind": self.kind, "path": str(self.path), "onnx": self.onnx.to_json(),
                "ort": self.ort.to_json() if self.ort is not None else None, "profile": self.profile.to_json(),
                "notes": list(self.notes)}


@dataclass
class _Loaded:
    """A module ready to export: its sample batch, extra dynamic axes and files to save beside it."""

    module: nn.Module
    sample: dict[str, torch.Tensor]
    dynamic_axes: dict[str, dict[int, str]] = field(default_factory=dict)
    extras: list[Any] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    device: DeviceProfile | None = None
    """The device profile to time it with, when the model cannot take the given one's inputs."""


def source_kind(source: str | Path) -> SourceKind:
    """What ``source`` names: a model file (``onnx``), a Hugging Face directory or hub id, or a factory."""
    path = Path(source)
    if path.is_file() or path.suffix.lower() in (".onnx", ".ort"):
        return "onnx"
    if path.is_dir() or not re.match(IMPORT_PATH, str(source)):
        return "huggingface"
    return "factory"


def default_out(source: str | Path) -> Path:
    """Where ``edgekd export SOURCE`` writes by default: beside a model file, else ``runs/export/<name>``."""
    kind = source_kind(source)
    if kind == "onnx":
        return Path(source).parent
    text = str(source).rstrip("/")
    if kind == "factory":
        name = text.split(":")[-1].split(".")[-1]  # the factory's own name
    else:
        name = Path(text).resolve().name if Path(text).is_dir() else text.replace("/", "--")  # hub: owner--name
    return Path("runs") / "export" / (name or STEM)


def input_shape_of(value: str | Sequence[int] | None, option: str) -> tuple[int, ...] | None:
    """A factory's input shape per example from ``option``: positive sizes, as a sequence of ints or as text
    separated by commas (``1,8,8``, the CLI's form); anything else is a one-line :class:`ConfigError`."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [part.strip() for part in value.split(",")]
        sizes = [int(part) for part in parts] if all(part.isdigit() for part in parts) else None
    elif isinstance(value, Sequence) and all(isinstance(size, int) and not isinstance(size, bool) for size in value):
        sizes = list(value)
    else:
        sizes = None
    if not sizes or min(sizes) <= 0:
        raise ConfigError(f"{option}: {value!r}; expected positive sizes separated by commas, e.g. 1,8,8")
    return tuple(sizes)


def export_source(source: str, target: ExportTarget, device: DeviceProfile, out: Path, *,
                  kwargs: dict[str, Any] | None = None, input_shape: tuple[int, ...] | None = None,
                  sample: Path | None = None, warmup: int = 20, runs: int = 200) -> ExportedModel:
    """Export the PyTorch model ``source`` names into ``out`` and profile it on ``device`` (see the module)."""
    kind = source_kind(source)
    onnx_path = Path(out) / f"{STEM}.onnx"
    record = Path(out) / SOURCE_RECORD
    check_claimable(Path(out), record.name)  # before the model loads; claimed() below holds it while writing
    if kind == "huggingface":
        if kwargs is not None or input_shape is not None or sample is not None:
            raise ConfigError(f"{source}: kwargs, input shape and sample apply to a 'package.module:factory'; a "
                              "Hugging Face model's inputs come from its config")
        loaded = _load_huggingface(str(source), device)
    else:
        loaded = _load_factory(str(source), kwargs or {}, input_shape, sample)
    with claimed(Path(out), record=record.name):  # its own directory: new, empty or an earlier export's
        with torch.random.fork_rng():
            result = export_onnx(loaded.module, loaded.sample, onnx_path, target,
                                 extra_dynamic_axes=loaded.dynamic_axes, shape=(loaded.device or device).inputs)
        extras = _save_extras(loaded.extras, Path(out))
        ort_model = convert_to_ort(onnx_path, target, numpy_feeds(loaded.sample)) if target.format == "ort" else None
        deployed = ort_model.path if ort_model is not None else onnx_path
        profile = profile_onnx(deployed, loaded.device or device, warmup=warmup, runs=runs)
        exported = ExportedModel(source=str(source), kind=kind, onnx=result, ort=ort_model, profile=profile,
                                 notes=tuple(loaded.notes))
        written = [onnx_path, *extras, *([ort_model.path] if ort_model else []),
                   *([ort_model.operators_config] if ort_model and ort_model.operators_config else [])]
        timing = {key: value for key, value in profile.to_json().items() if key != "times_ms"}
        write_record(record, written, {**exported.to_json(), "profile": timing, "target": target.name})
    return exported


def _save_extras(extras: list[Any], out: Path) -> list[Path]:
    """Save the config and tokenizer beside the model (``save_pretrained``, the tokenizer as it reads back exactly:
    :func:`write_tokenizer`; into a scratch folder, each file then renamed into ``out``: atomic, and the names
    written are known); returns the files."""
    from transformers import PreTrainedTokenizerBase

    with tempfile.TemporaryDirectory(prefix=".extras-", suffix=".tmp", dir=out) as scratch:
        for extra in extras:
            if isinstance(extra, PreTrainedTokenizerBase):
                write_tokenizer(extra, Path(scratch))
            else:
                extra.save_pretrained(scratch)
        return [path.replace(out / path.name) for path in sorted(Path(scratch).iterdir()) if path.is_file()]


def _load_huggingface(source: str, device: DeviceProfile) -> _Loaded:
    """A Hugging Face classifier from a directory or the local hub cache, with a synthetic sample."""
    from transformers import AutoConfig

    from edgekd.models.checkpoint_files import check_weights, load_options
    from edgekd.models.families import family
    from edgekd.models.hf import ATTENTION, LOAD_DTYPE, checkpoint_class, quiet_transformers

    quiet_transformers()
    if not Path(source).is_dir() and not HUB_ID.match(source):
        raise ModelError(f"{source}: not a model file, a Hugging Face directory, a hub id or 'package.module:factory'")
    where = "directory" if Path(source).is_dir() else "hub id (read from the local cache only)"
    try:
        config = AutoConfig.from_pretrained(source, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: cannot read a Hugging Face config as a {where} ({first_line(exc)}); expected a "
                         "save_pretrained directory, a hub id in the local cache, an .onnx file or "
                         "'package.module:factory'") from None
    modality = family(config.model_type).modality
    architectures = getattr(config, "architectures", None) or ()
    if architectures and all(name.endswith(("ForCausalLM", "LMHeadModel")) for name in architectures):
        raise ModelError(f"{source}: a causal language model ({', '.join(architectures)}); edgekd export takes "
                         "classifiers: a causal LM is exported with its KV cache by a corpus recipe's export stage "
                         "(docs/generation.md)")
    per_token = any(name.endswith("ForTokenClassification") for name in architectures)
    _refuse_unexportable(source, config.model_type, "image" if modality == "image" else
                         "token" if per_token else "sequence")
    if Path(source).is_dir():
        try:  # what a recipe's pretrained checkpoint is checked for: readable weights, plain tensors only
            check_weights(Path(source))
        except ValueError as exc:
            raise ModelError(str(exc)) from None
    loader = checkpoint_class(config, modality, per_token)  # pruned or factorized by edgekd: rebuilt to that
    options = {"local_files_only": True, "trust_remote_code": False, **load_options(str(source)),
               "attn_implementation": ATTENTION, "output_loading_info": True, "dtype": LOAD_DTYPE}
    try:
        module, info = loader.from_pretrained(source, **options)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{source}: cannot load the model ({first_line(exc)}); edgekd reads weights as "
                         "safetensors or pytorch_model.bin through torch's weights_only loader") from None
    except RuntimeError as exc:  # weights of other shapes than config.json states: transformers prints a table
        raise ModelError(f"{source}: cannot load the model ({_mismatch(loader, source, options) or first_line(exc)})"
                         ) from None
    unloaded = unloaded_weights(module, info)
    if unloaded is not None:
        raise ModelError(f"{source}: {unloaded}; exported, those layers would be random or missing: save the model "
                         "again with save_pretrained from the model that has these weights")
    dense_attention(module)
    loaded = _Loaded(module=module.eval(), sample={}, extras=[config])
    if info.get("missing_keys"):
        loaded.notes.append(f"the checkpoint has no weights for {', '.join(sorted(info['missing_keys'])[:3])}"
                            f"{' ...' if len(info['missing_keys']) > 3 else ''}: they are randomly initialised "
                            "(e.g. a new classification head); fine-tune before deploying")
    generator = torch.Generator().manual_seed(0)
    if modality == "image":
        size = getattr(config, "image_size", None)
        side = size if isinstance(size, int) else device.inputs.image_size or DEFAULT_IMAGE_SIZE
        shape = _trained_image_shape(Path(source)) or (getattr(config, "num_channels", 3), side, side)
        loaded.sample = {"pixel_values": torch.randn(SAMPLE_ROWS, *shape, generator=generator)}
        return loaded
    length = min(device.inputs.sequence_length, usable_positions(module) or sys.maxsize)
    if length < device.inputs.sequence_length:
        loaded.notes.append(f"the model takes at most {length} tokens: exported and profiled at {length}, not the "
                            f"device profile's sequence_length {device.inputs.sequence_length}")
        loaded.device = device.model_copy(update={"inputs": device.inputs.model_copy(
            update={"sequence_length": length})})
    tokenizer = _tokenizer(source)
    if tokenizer is not None:
        loaded.extras.append(tokenizer)
    if config.pad_token_id is None:  # decoder classifiers find each row's last token by it; batches need it
        pad, whose = _pad_id(config, tokenizer)
        config.pad_token_id = module.config.pad_token_id = pad
        loaded.notes.append(f"the config has no pad_token_id: rows are padded with {whose} {pad}, saved as the "
                            "config's pad_token_id beside the model")
    loaded.sample = _padded_text(config, length, generator)
    loaded.dynamic_axes = {name: {1: "sequence"} for name in (*loaded.sample, *(("logits",) if per_token else ()))}
    return loaded


def _refuse_unexportable(source: str, model_type: str, use: Use) -> None:
    """Refuse, before tracing, a family the export sweep found unexportable as ``use``
    (:mod:`edgekd.models.export_support`), in the words ``edgekd validate`` refuses it in: its trace fails after a
    while, in onnxruntime's words or after torch.export's dump of the traced graph."""
    reason = export_refusal(model_type, use)
    if reason is not None:
        raise ExportError(f"{source}: {refusal_message(model_type, reason)}; choose another family")


def _trained_image_shape(directory: Path) -> tuple[int, ...] | None:
    """The ``[channels, height, width]`` an edgekd run trained the model directory's images at (its
    ``edgekd_model.json``): a ResNet trained on 8×8 digits has no image size in its config, and 224 is not its."""
    try:
        shape = read_description(directory).signature.image_shape
    except ModelError:  # not a run's model directory
        return None
    return tuple(shape) if len(shape) == 3 else None


def _pad_id(config: Any, tokenizer: Any | None) -> tuple[int, str]:
    """The id to pad with when the config names none: the tokenizer's padding or end-of-text token, else the
    config's end-of-text id, else 0; with what it is."""
    for owner, name, whose in ((tokenizer, "pad_token_id", "the tokenizer's padding token"),
                               (tokenizer, "eos_token_id", "the tokenizer's end-of-text token"),
                               (config, "eos_token_id", "the config's end-of-text id")):
        value = getattr(owner, name, None) if owner is not None else None
        if isinstance(value, int) and 0 <= value < int(config.vocab_size):
            return value, whose
    return 0, "id"


def _padded_text(config: Any, length: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A batch of :data:`SAMPLE_ROWS` token-id rows of decreasing length, right-padded with the pad id."""
    width = max(4, length)
    vocab = int(config.vocab_size)
    pad = config.pad_token_id
    ids = torch.randint(min(5, vocab - 1), vocab, (SAMPLE_ROWS, width), generator=generator)
    lengths = torch.tensor([width, max(2, width // 2), max(2, width // 4), 2])[:SAMPLE_ROWS]
    mask = (torch.arange(width)[None] < lengths[:, None]).long()
    ids[mask == 0] = pad
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _mismatch(loader: Any, source: str, options: dict[str, Any]) -> str | None:
    """Which weights of the checkpoint at ``source`` have other shapes than its ``config.json`` gives them, in one
    line; None when a load that tolerates them fails too."""
    try:
        _, info = loader.from_pretrained(source, **options, ignore_mismatched_sizes=True)
    except Exception:  # noqa: BLE001 - only the first failure is reported
        return None
    mismatched = sorted(info.get("mismatched_keys") or ())
    if not mismatched:
        return None
    return (f"{weights_misfit(mismatched)}; a config without num_labels, or edited after save_pretrained? Save the "
            "model again with save_pretrained")


def _tokenizer(source: str) -> Any | None:
    """The source's tokenizer, when it has one (saved beside the ONNX file), read as :func:`read_tokenizer` reads it
    (one an edgekd run saved: exactly as saved); None otherwise."""
    from transformers.utils import cached_file

    if cached_file(source, "tokenizer_config.json", local_files_only=True, _raise_exceptions_for_missing_entries=False,
                   _raise_exceptions_for_connection_errors=False) is None:
        return None  # transformers would otherwise make an empty tokenizer up
    try:
        return read_tokenizer(source, local_files_only=True)
    except (OSError, ValueError, TypeError):
        return None


def _load_factory(source: str, kwargs: dict[str, Any], input_shape: tuple[int, ...] | None,
                  sample: Path | None) -> _Loaded:
    """The factory's module, wrapped as a run feeds it, and its sample (``input_shape`` or a ``.npz``)."""
    from edgekd.models.user_module import Refused, check_traceable, plain_float32, resolve_factory, wrap

    if (input_shape is None) == (sample is None):
        raise ConfigError(f"{source}: give the input as --input-shape (one float input per example, e.g. 1,8,8) or "
                          "--sample FILE.npz (arrays named as the inputs), exactly one of them")
    try:
        factory = resolve_factory(source)
    except Refused as exc:
        raise ConfigError(f"{source}: {exc.message}") from None
    try:
        module = factory(**kwargs)
    except Exception as exc:  # the user's factory failed
        raise ConfigError(f"{source}(**{kwargs}) raised {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"{source}: returned {type(module).__name__}; expected a torch.nn.Module")
    try:
        module = plain_float32(module)  # exported as a run exports it: unwrapped, in float32
        check_traceable(module)
    except Refused as exc:
        raise ConfigError(f"{source}: {exc.message}") from None
    if input_shape is not None:
        generator = torch.Generator().manual_seed(0)
        batch = {"input": torch.rand(SAMPLE_ROWS, *input_shape, generator=generator)}
    else:
        batch = _npz_sample(sample)  # type: ignore[arg-type]
    text = "input_ids" in batch
    loaded = _Loaded(module=wrap(module.eval(), "text" if text else "image").eval(), sample=batch)
    if text:
        loaded.dynamic_axes = {name: {1: "sequence"} for name in batch}
    with torch.no_grad():
        try:
            loaded.module(**batch)
        except Exception as exc:  # the user's module does not take this input
            shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in batch.items())
            raise ConfigError(f"{source}: the module fails on the given input ({shapes}): {type(exc).__name__}: "
                              f"{first_line(exc)}") from None
    return loaded


def _npz_sample(path: Path) -> dict[str, torch.Tensor]:
    """A sample batch from ``.npz``: one float array ``input``, or ``input_ids`` (and ``attention_mask``)."""
    from edgekd.quantize.npz_feeds import read_arrays

    arrays = read_arrays(Path(path), "one float input batch, or 'input_ids' (and 'attention_mask')")
    text = "input_ids" in arrays
    allowed = {"input_ids", "attention_mask"} if text else set(arrays) if len(arrays) == 1 else set()
    if not arrays or set(arrays) - allowed:
        raise DataError(f"{path}: arrays {', '.join(sorted(arrays)) or 'none'}; expected one float array (the "
                        "input batch) or 'input_ids' with an optional 'attention_mask'")
    batch = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in arrays.items()}
    if text:
        ids = batch["input_ids"]
        mask = batch.get("attention_mask", torch.ones_like(ids))
        if ids.ndim != 2 or ids.is_floating_point() or mask.shape != ids.shape:
            raise DataError(f"{path}: 'input_ids' {list(ids.shape)} ({ids.dtype}); expected integer token ids "
                            "[batch, tokens] and an attention_mask of the same shape")
        return {"input_ids": ids.long(), "attention_mask": mask.long()}
    (name, value), = batch.items()
    if not value.is_floating_point() or value.ndim < 2:
        raise DataError(f"{path}: '{name}' is {value.dtype} of shape {list(value.shape)}; expected a float batch "
                        "[batch, ...]")
    return {"input": value.float()}
