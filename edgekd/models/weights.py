"""Saving and loading weights as safetensors: plain tensors, so loading a file never runs code."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from edgekd.atomic import write_with
from edgekd.errors import ModelError

log = logging.getLogger(__name__)


def save_weights(model: nn.Module, path: Path) -> Path:
    """Atomically write ``model``'s state dict (parameters and buffers) to ``path``.

    A tied tensor (one parameter under two names, such as a head sharing its embedding's weight) is written once,
    under its first name, as ``save_pretrained`` does: safetensors refuses tensors that share memory, and
    :func:`load_weights` takes the missing copy from the model, which ties it again.
    """
    state: dict[str, torch.Tensor] = {}
    written: set[tuple[int, int, tuple[int, ...], tuple[int, ...]]] = set()
    storages: set[int] = set()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        storage = tensor.untyped_storage().data_ptr()
        view = (storage, tensor.storage_offset(), tuple(tensor.shape), tuple(tensor.stride()))
        if tensor.numel() and view in written:
            continue
        written.add(view)
        # a view overlapping another tensor without being it (a slice of a shared weight) gets its own copy
        state[name] = tensor.contiguous().clone() if tensor.numel() and storage in storages else tensor.contiguous()
        storages.add(storage)
    return write_with(Path(path), lambda tmp: save_file(state, str(tmp)))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load a safetensors file into ``model``: names and shapes must match, except that a tied tensor's copy
    (which ``save_pretrained`` leaves out) may be missing, and a Hugging Face model also reads a file in the layout
    ``save_pretrained`` stores (:mod:`edgekd.models.hf_weights`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable safetensors file ({exc})") from exc
    bad = non_finite(state.items())
    if bad is not None:
        raise ModelError(f"{path}: {bad}; a model with such weights computes nothing useful (retrain or re-export it)")
    state = _unwrapped(model, state, path)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # torch's first line only says "Error(s) in loading state_dict for ..."
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("size mismatch")), lines[0] if lines else "")
        raise ModelError(f"{path}: weights do not fit the recipe's model ({reason.rstrip('.')})") from exc
    missing = sorted(set(missing) - _tied_copies(model, state))
    if missing or unexpected:
        from edgekd.models.hf_weights import converted_state

        converted = converted_state(model, path)
        if converted is not None:  # a save_pretrained file of a family transformers renames on load
            log.info("%s: tensor names as save_pretrained stores them; read as transformers reads them", path)
            model.load_state_dict(converted)
            return model
        told = [f"{len(names)} {what} (first: '{names[0]}')" for what, names in
                (("missing", missing), ("unexpected", sorted(unexpected))) if names]
        raise ModelError(f"{path}: weights do not fit the recipe's model ({' and '.join(told)} tensor names)")
    return model


def _unwrapped(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """``state`` without the one leading name component a training wrapper puts before every tensor name
    (``module.`` of DistributedDataParallel, ``_orig_mod.`` of torch.compile, ``model.`` of a Lightning module),
    when none of its names is the model's and every stripped one is (said in one log line); else as it is."""
    names = set(model.state_dict())
    if not state or names & set(state):
        return state
    prefixes = {name.split(".", 1)[0] for name in state}
    if len(prefixes) != 1 or not all("." in name for name in state):
        return state
    stripped = {name.split(".", 1)[1]: tensor for name, tensor in state.items()}
    if not set(stripped) <= names:
        return state
    log.info("%s: tensor names start with '%s.' (a training wrapper's); loaded without it", path, prefixes.pop())
    return stripped


def _tied_copies(model: nn.Module, given: dict[str, torch.Tensor]) -> set[str]:
    """Names of ``model``'s state that share storage with a tensor ``given`` names (tied weights, such as a
    language model's output layer and input embeddings: ``save_pretrained`` writes one of each pair)."""
    state = model.state_dict(keep_vars=True)
    given_storage = {state[name].data_ptr() for name in given if name in state}
    return {name for name, tensor in state.items()
            if name not in given and tensor.numel() and tensor.data_ptr() in given_storage}


def non_finite(tensors: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """Which floating-point tensor holds NaN or infinite values, and how many (None when all are finite)."""
    for name, tensor in tensors:
        if tensor.is_floating_point() or tensor.is_complex():
            count = int((~torch.isfinite(tensor)).sum())
            if count:
                return f"tensor '{name}' holds {count} NaN or infinite value(s) of {tensor.numel()}"
    return None
