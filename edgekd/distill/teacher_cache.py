"""Teacher outputs for a whole transfer set, computed once and memory-mapped from disk.

Distillation epochs then read the teacher's logits — and the hidden states, attention maps or
query/key/value projections the losses compare — instead of re-running the teacher on every batch.
Only what the losses read is stored: the logits, and for each output kind just the teacher layers
the losses' layer maps name (see :meth:`edgekd.distill.losses.DistillationLoss.teacher_layers`).

Layout of a cache directory (``float16`` for the intermediate tensors, which only enter MSE/KL/cosine
losses; ``float32`` logits):

- ``logits.npy`` ``[N, C]`` — for an ensemble, the members' weighted average probabilities as log
  probabilities (which softmax-based losses treat exactly like logits); a per-token model's ``[N, T, C]``,
  zero-padded to the set's longest example;
- ``tokens.npy`` ``[N + 1]`` — offsets of each example's real (unpadded) tokens;
- ``hidden_states-<i>.npy`` / ``qkv-<i>.npy`` ``[total_tokens, D]`` — per real token;
- ``attentions-<i>.npy`` ``[sum(H · L²)]`` with ``attention_offsets.npy`` — each example's
  ``[H, L, L]`` map over its real tokens;
- ``cache.json`` — the key, the shapes and every file's size and SHA-256; written last, so a directory holding
  it is complete, and checked when read: a damaged or changed cache is built again (with a warning).

Padding never changes a real token's outputs (attention masks keep padded keys out), so a batch
rebuilt from the cache at any padded length equals a live teacher pass on the real tokens, which
are the only positions the losses read.

The directory's name is a digest of everything the values depend on (the teachers' weight files,
ensemble weights, the transfer set's token ids, the stored layers), so a cache directory shared by
several runs (``distill.teacher_cache_dir``) is reused exactly when it is valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_dir, write_json
from edgekd.data.examples import Examples
from edgekd.distill.outputs import ModelOutputs, forward_outputs
from edgekd.distill.trainer import EVAL_BATCH
from edgekd.rundir import FILES_KEY, files_problem, inventory, read_json
from edgekd.version import __version__

#: Output kinds stored per real token (``[T, D]`` each) rather than per attention map.
_PER_TOKEN = ("hidden_states", "qkv")
_META = "cache.json"

log = logging.getLogger(__name__)


class TeacherOutputCache:
    """Memory-mapped teacher outputs for every example of one transfer set (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        meta = json.loads((directory / _META).read_text())
        self.counts: dict[str, int] = meta["counts"]
        self.layers: dict[str, list[int]] = meta["layers"]
        self.heads: int = meta["heads"]
        self.logits = np.load(directory / "logits.npy", mmap_mode="r")
        self.tokens = np.load(directory / "tokens.npy")
        self.attention_offsets = np.load(directory / "attention_offsets.npy") if "attentions" in self.layers else None
        self.arrays = {(kind, i): np.load(directory / f"{kind}-{i}.npy", mmap_mode="r")
                       for kind, indices in self.layers.items() for i in indices}

    @classmethod
    def open_or_build(
        cls,
        teachers: Sequence[nn.Module],
        weights: Sequence[float],
        examples: Examples,
        layers: Mapping[str, set[int]],
        root: Path,
    ) -> TeacherOutputCache:
        """The cache under ``root`` for these teachers and examples, built first if it is not there yet.

        ``layers`` maps an output kind (``hidden_states``, ``attentions``, ``qkv``) to the teacher
        indices to store; an ensemble stores logits only.
        """
        layers = {kind: sorted(indices) for kind, indices in layers.items() if indices}
        if len(teachers) > 1 and layers:
            raise ValueError("an ensemble's cache holds averaged logits only")
        directory = root / _key(teachers, weights, examples, layers)
        if (directory / _META).is_file():
            problem = _cache_problem(directory)
            if problem is None:
                return cls(directory)
            log.warning("%s: not reused (%s); running the teacher over the transfer set again", directory, problem)
        with atomic_dir(directory) as tmp:
            _build(tmp, teachers, weights, examples, layers)
        return cls(directory)

    def lookup(self, idx: np.ndarray, mask: Tensor | None) -> ModelOutputs:
        """The teacher's outputs for examples ``idx``, padded like a batch with attention ``mask`` ``[B, T]``."""
        idx = np.asarray(idx)
        logits = torch.from_numpy(np.asarray(self.logits[idx], dtype=np.float32))
        if logits.ndim == 3 and mask is not None:  # per-token logits, cut to the batch's padded width
            logits = logits[:, : mask.shape[1]]
        if not self.layers:
            return ModelOutputs(logits=logits)
        assert mask is not None, "intermediate teacher outputs are cached for text batches only"
        real = mask.bool()
        fields: dict[str, tuple[Tensor | None, ...]] = {}
        for kind, count in self.counts.items():
            stored = self.layers.get(kind, [])
            fields[kind] = tuple(self._padded(kind, i, idx, real) if i in stored else None for i in range(count))
        return ModelOutputs(logits=logits, **fields)

    def _padded(self, kind: str, layer: int, idx: np.ndarray, real: Tensor) -> Tensor:
        values = self.arrays[(kind, layer)]
        if kind in _PER_TOKEN:
            out = torch.zeros(*real.shape, values.shape[-1])
            for row, example in enumerate(idx):
                out[row, real[row]] = torch.from_numpy(
                    np.asarray(values[self.tokens[example]:self.tokens[example + 1]], dtype=np.float32))
            return out
        heads = self.heads
        out = torch.zeros(real.shape[0], heads, real.shape[1], real.shape[1])
        for row, example in enumerate(idx):
            length = int(self.tokens[example + 1] - self.tokens[example])
            flat = values[self.attention_offsets[example]:self.attention_offsets[example + 1]]
            positions = real[row].nonzero().squeeze(1)
            out[row][:, positions[:, None], positions[None, :]] = torch.from_numpy(
                np.asarray(flat, dtype=np.float32).reshape(heads, length, length))
        return out


def _cache_problem(directory: Path) -> str | None:
    """Why the cache in ``directory`` cannot be trusted (``cache.json`` unreadable, a file missing, truncated or
    changed since it was written: a cache shared by runs, or left by a killed stage, is read by the next run);
    None when it can."""
    meta = read_json(directory / _META)
    if not isinstance(meta, dict) or not {"counts", "layers", "heads"} <= meta.keys():
        return f"{_META} is unreadable or incomplete"
    return files_problem(directory, meta.get(FILES_KEY))


def _key(teachers: Sequence[nn.Module], weights: Sequence[float], examples: Examples,
         layers: Mapping[str, list[int]]) -> str:
    digest = hashlib.sha256()
    digest.update(json.dumps({"edgekd": __version__, "weights": list(weights), "layers": layers},
                             sort_keys=True).encode())
    for teacher in teachers:
        for name, tensor in teacher.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for _idx, inputs, labels in examples.batches(EVAL_BATCH, shuffle=False):
        for value in (*inputs.values(), labels):
            digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:32]


def _build(directory: Path, teachers: Sequence[nn.Module], weights: Sequence[float], examples: Examples,
           layers: Mapping[str, list[int]]) -> None:
    """Run the teachers once over ``examples`` and write every array of the cache into ``directory``."""
    for teacher in teachers:
        teacher.eval()
    lengths = _real_lengths(examples) if layers else np.zeros(len(examples), dtype=np.int64)
    tokens = np.concatenate([[0], np.cumsum(lengths)])
    np.save(directory / "tokens.npy", tokens)
    arrays: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}  # stored layer → (array, example offsets)
    logits: np.ndarray | None = None
    counts: dict[str, int] = {}
    heads = 0
    with torch.no_grad():
        for idx, inputs, _labels in examples.batches(EVAL_BATCH, shuffle=False):
            rows = np.asarray(idx)
            outputs = [forward_outputs(t, inputs, frozenset(layers)) for t in teachers]
            batch_logits = _averaged_logits([o.logits for o in outputs], weights)
            if logits is None:
                width = examples.labels.shape[1:2] if batch_logits.ndim == 3 else ()
                logits = _open(directory / "logits.npy", np.float32, (len(examples), *width, batch_logits.shape[-1]))
            logits[rows, : batch_logits.shape[1]] = batch_logits.numpy()
            if not layers:
                continue
            out, real = outputs[0], inputs["attention_mask"].bool()
            if not arrays:
                counts = {kind: len(out.require(kind)) for kind in layers}
                offsets = {kind: tokens for kind in _PER_TOKEN}
                if "attentions" in layers:
                    heads = out.require("attentions")[0].shape[1]
                    offsets["attentions"] = np.concatenate([[0], np.cumsum(heads * lengths**2)])
                    np.save(directory / "attention_offsets.npy", offsets["attentions"])
                arrays = {
                    (kind, i): (_open_layer(directory, kind, i, out.require(kind)[i], offsets[kind]), offsets[kind])
                    for kind, indices in layers.items() for i in indices
                }
            for (kind, i), (array, starts) in arrays.items():
                batch = out.require(kind)[i]
                for row, example in enumerate(rows):
                    part = _real_part(kind, batch[row], real[row]).half().numpy()
                    array[starts[example]:starts[example + 1]] = part.reshape(-1, *array.shape[1:])
    if logits is None:
        raise ValueError("an empty transfer set has nothing to cache")
    for array in (logits, *(array for array, _ in arrays.values())):
        array.flush()
    write_json(directory / _META, {"counts": counts, "layers": dict(layers), "heads": heads, "examples": len(examples),
                                   "teachers": len(teachers), FILES_KEY: inventory(directory, hash_below=math.inf)})


def _real_lengths(examples: Examples) -> np.ndarray:
    """Each example's number of real (unpadded) tokens, from the attention masks of its batches."""
    lengths = np.zeros(len(examples), dtype=np.int64)
    for idx, inputs, _labels in examples.batches(EVAL_BATCH, shuffle=False):
        lengths[np.asarray(idx)] = inputs["attention_mask"].sum(-1).numpy()
    return lengths


def _open(path: Path, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """A new memory-mapped ``.npy`` array whose blocks are allocated on disk before anything is stored in it.

    ``open_memmap`` creates a sparse file: on a full disk the first store into an unallocated page
    kills the process with SIGBUS. Reserving every block first turns a full disk into ENOSPC here,
    which the atomic directory write reports as one line.
    """
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    with open(path, "rb+") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size:
            os.posix_fallocate(handle.fileno(), 0, size)
    return array


def _open_layer(directory: Path, kind: str, index: int, like: Tensor, offsets: np.ndarray) -> np.ndarray:
    """The memory-mapped array for one stored layer: ``[total_tokens, D]`` or flat attention maps, sized by
    the example ``offsets`` of its kind."""
    path = directory / f"{kind}-{index}.npy"
    shape = (int(offsets[-1]), like.shape[-1]) if kind in _PER_TOKEN else (int(offsets[-1]),)
    return _open(path, np.float16, shape)


def _averaged_logits(logits: list[Tensor], weights: Sequence[float]) -> Tensor:
    """A single teacher's logits, or an ensemble's weighted average probabilities as log-probabilities."""
    if len(logits) == 1:
        return logits[0].float()
    probs = sum(w * t.float().softmax(-1) for t, w in zip(logits, weights, strict=True))
    return torch.log(probs.clamp_min(1e-12))


def _real_part(kind: str, value: Tensor, keep: Tensor) -> Tensor:
    """One example's output restricted to its real tokens: ``[L, D]`` states or ``[H, L, L]`` maps."""
    if kind in _PER_TOKEN:
        return value[keep]
    return value[:, keep][:, :, keep]
