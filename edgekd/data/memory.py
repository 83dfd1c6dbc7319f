"""Datasets and DataLoaders given to ``Pipeline(data={"train": ..., "test": ..., "val": ...})`` in Python.

Each set is a Dataset or DataLoader, a ``datasets.Dataset``, whole columns (an ``(inputs, labels)`` pair of
arrays, or a mapping of arrays holding ``labels``), or a plain list or generator of examples (read once, in
order; examples edgekd batches itself may hold token ids of different lengths, padded as they are read).
What they may yield: ``(inputs, label)`` pairs, where ``inputs`` is a tensor (an image, or any float
features) or a dict of tensors, or dicts holding ``labels`` (or ``label``) next to the inputs, e.g.
``{"pixel_values": ..., "labels": ...}`` or ``{"input_ids": ..., "attention_mask": ..., "labels": ...}``.
A dict's metadata (a ``datasets`` row's ``sentence`` text or ``idx``: anything that is not a tensor, or one
value per example) is left out, said in one log line.
Labels are class indices. Data holding ``input_ids`` is text (token ids, already tokenized by the
user); anything else must hold one float tensor, fed to the model as its one positional input.

How they are materialized: each set is read once, in order, through a DataLoader (a Dataset is wrapped
in one reading :data:`READ_BATCH` examples at a time; a DataLoader that shuffles or samples is re-read
in order over the examples its sampler reads, with its own ``collate_fn`` and batch size, as is one with
``drop_last``: every example counts. A sampler of a subset (``SubsetRandomSampler``, a
``DistributedSampler``'s shard, any sampler or batch sampler that reads some indices) gives those examples,
each once; one that draws with replacement (``WeightedRandomSampler``) gives the whole dataset, with a
warning that its weights are not applied), and the batches become tensors:
images one float32 tensor ``[N, ...]``, text one int64 array per example with the padding dropped (by
``attention_mask``; the id found under the mask is the pad id, 0 when nothing is padded). edgekd's
training loop then batches, pads and shuffles (seeded) as it does for every other source, so the
loader's order and batch size do not matter. Memory: the tensors of every set (which training holds
anyway) and, while one set is read, its batches once more before they are joined.

Fingerprint: the SHA-256 of every set's tensors (bytes, dtypes, shapes, labels), computed in the same
single pass, independent of the loader's batch size. It is the data config's ``digest``, part of every
stage's fingerprint: a re-run with changed data re-runs the stages, with the same data resumes. The
tensors stay in this process under that digest; a run directory made from them opens anywhere
(:func:`edgekd.open_run`), but running it again in a new process needs the data given again.

Without a ``val`` set, ``val_fraction`` of ``train`` (default 15%) is held out by a permutation seeded
with the recipe's seed (or ``split_seed``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from edgekd.data.config import MemoryData
from edgekd.digest import update_with_tensor
from edgekd.errors import ConfigError, DataError, first_line

log = logging.getLogger(__name__)

#: Examples read at a time from a Dataset given without a DataLoader.
READ_BATCH = 256
#: The sets ``Pipeline(data=...)`` takes (``val`` optional).
SPLITS = ("train", "val", "test")
LABEL_KEYS = ("labels", "label")
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
Kind = Literal["image", "text"]


@dataclass(frozen=True)
class MemorySplit:
    """One materialized set: images ``[N, ...]`` (float32) or token-id rows, and labels ``[N]`` (int64)."""

    inputs: torch.Tensor | tuple[np.ndarray, ...]
    labels: torch.Tensor

    def take(self, indices: torch.Tensor) -> MemorySplit:
        """The examples at ``indices``, in that order."""
        if isinstance(self.inputs, torch.Tensor):
            return MemorySplit(self.inputs[indices], self.labels[indices])
        return MemorySplit(tuple(self.inputs[i] for i in indices.tolist()), self.labels[indices])


@dataclass(frozen=True)
class MemorySet:
    """Every set given, materialized, with what models need to know about it."""

    kind: Kind
    splits: dict[str, MemorySplit]
    num_classes: int
    pad_id: int = 0
    vocab_size: int = 0

    def train_val(self, fraction: float, seed: int) -> tuple[MemorySplit, MemorySplit]:
        """The train and validation sets: the given ``val``, or ``fraction`` of train held out (seeded)."""
        train = self.splits["train"]
        if "val" in self.splits:
            return train, self.splits["val"]
        count = len(train.labels)
        held = round(count * fraction)
        if held < 1 or held >= count:
            raise DataError(f"data.train: {count} examples cannot give a validation set of {fraction:g} of them "
                            "and keep training examples; give data['val'] or more training examples")
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        return train.take(order[held:].sort().values), train.take(order[:held].sort().values)


#: Sets given in this process, by digest.
_HELD: dict[str, MemorySet] = {}


def is_memory_data(data: Any) -> bool:
    """Whether ``data`` is a mapping of sets given as objects (not a data config): a Dataset or DataLoader among its
    values, or a ``train`` that is no file name (a list or a generator of examples; anything else is refused by
    :func:`register_data` naming the set)."""
    from torch.utils.data import DataLoader, Dataset

    if not isinstance(data, Mapping) or "source" in data:
        return False
    return any(isinstance(v, Dataset | DataLoader) for v in data.values()) or (
        "train" in data and (not isinstance(data["train"], str | Path | Mapping)
                             or _columns(data["train"]) is not None))


def _columns(source: Any) -> Any:
    """A set given as whole columns, as a Dataset of its rows: an ``(inputs, labels)`` pair of arrays or tensors
    of equal length (``(x_train, y_train)``), or a mapping of them holding ``labels`` (``{"input_ids": ...,
    "labels": ...}``); else None."""
    from torch.utils.data import Dataset, TensorDataset

    def column(value: Any) -> bool:
        return isinstance(value, np.ndarray | torch.Tensor) and value.ndim >= 1

    if isinstance(source, tuple | list) and len(source) == 2 and all(map(column, source)) \
            and len(source[0]) == len(source[1]):
        return TensorDataset(*(torch.as_tensor(value) for value in source))
    if isinstance(source, Mapping) and any(key in source for key in LABEL_KEYS) and source \
            and all(map(column, source.values())) and len({len(value) for value in source.values()}) == 1:
        rows = {key: torch.as_tensor(value) for key, value in source.items()}

        class Rows(Dataset):
            def __len__(self) -> int:
                return len(next(iter(rows.values())))

            def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
                return {key: value[index] for key, value in rows.items()}

        return Rows()
    return None


def register_data(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Materialize ``{"train", "test"[, "val"]}`` sets, keep them in this process; their data config mapping."""
    unknown = sorted(set(data) - set(SPLITS))
    missing = [name for name in ("train", "test") if name not in data]
    if unknown or missing:
        raise ConfigError(f"{where}: data: expected the sets 'train' and 'test' (and optionally 'val'), got "
                          + ", ".join(repr(k) for k in data))
    hasher = hashlib.sha256()
    readers = {name: _Reader(name) for name in SPLITS if name in data}
    for name, reader in readers.items():
        for batch in _read(_batches(data[name], name, where), name):
            reader.add(batch)
        hasher.update(reader.finish())
    kinds = {reader.kind for reader in readers.values()}
    if len(kinds) > 1:
        raise DataError(f"data: the sets disagree: {', '.join(f'{n} is {r.kind}' for n, r in readers.items())}")
    kind = kinds.pop()
    splits = {name: reader.split() for name, reader in readers.items()}
    if kind == "image":
        shapes = {name: tuple(split.inputs.shape[1:]) for name, split in splits.items()}  # type: ignore[union-attr]
        if len(set(shapes.values())) > 1:
            raise DataError("data: the sets' inputs have different shapes: "
                            + ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items()))
    digest = f"sha256:{hasher.hexdigest()}"
    if digest not in _HELD:
        pads = [r.pad_id for r in readers.values() if r.pad_id is not None]
        vocab = max((int(row.max()) + 1 for r in readers.values() for row in r.rows if len(row)), default=0)
        _HELD[digest] = MemorySet(kind=kind, splits=splits, pad_id=pads[0] if pads else 0, vocab_size=vocab,
                                  num_classes=max(int(s.labels.max()) for s in splits.values()) + 1)
        log.info("data given in Python: %s (%s)", ", ".join(f"{n} {len(s.labels)}" for n, s in splits.items()),
                 digest[:19])
    return {"source": "memory", "kind": kind, "digest": digest}


def held(config: MemoryData) -> MemorySet:
    """The sets of ``config`` (a :class:`DataError` when they were given in another process)."""
    found = _HELD.get(config.digest)
    if found is None:
        raise DataError(f"data: the Dataset/DataLoader objects given to Pipeline(...) ({config.digest[:19]}…) are "
                        "not in this process; give them again (Pipeline(data=...)), or save them as .npz "
                        "(source: npz) to run from YAML")
    return found


def _batches(source: Any, split: str, where: str) -> Iterator[Any]:
    """The batches of ``source`` read in order (see the module docstring)."""
    from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

    if isinstance(source, DataLoader):
        plain = isinstance(source.sampler, SequentialSampler) and source.batch_size is not None and not source.drop_last
        if plain or isinstance(source.dataset, IterableDataset):
            return iter(source)
        return iter(DataLoader(_sampled(source, split), batch_size=source.batch_size or READ_BATCH,
                               collate_fn=source.collate_fn if source.batch_size else None))
    try:
        columns = _columns(source)
    except (TypeError, ValueError, RuntimeError) as exc:  # a column torch cannot hold (strings, objects)
        raise DataError(f"data.{split}: its columns cannot be read as tensors ({first_line(exc)}); expected numbers: "
                        "float inputs and integer class labels") from None
    if columns is not None:
        return iter(DataLoader(columns, batch_size=READ_BATCH))
    if isinstance(source, tuple | list) and len(source) == 2 and all(
            isinstance(value, np.ndarray | torch.Tensor) and value.ndim >= 1 for value in source):
        raise DataError(f"data.{split}: inputs of {len(source[0])} rows and labels of {len(source[1])}; expected "
                        "one label per input")
    if isinstance(source, Iterator):  # a generator: read once, in order
        return iter(DataLoader(_Examples(source), batch_size=READ_BATCH, collate_fn=_collate))
    if isinstance(source, Dataset | list | tuple) or _map_style(source):  # a list, a datasets.Dataset: by index
        return iter(DataLoader(source, batch_size=READ_BATCH, collate_fn=_collate))
    raise ConfigError(f"{where}: data.{split}: expected a torch Dataset or DataLoader (or a list or a generator of "
                      f"examples), got {type(source).__name__}")


def _sampled(loader: Any, split: str) -> Any:
    """The examples of ``loader``'s dataset its sampler reads, each once, in index order: the whole dataset for a
    sampler of every index (sequential or shuffled) or one drawing with replacement (said in a warning: its
    weights are not applied), else the subset of indices it reads (a ``SubsetRandomSampler``, a shard)."""
    from torch.utils.data import BatchSampler, Subset

    batches = loader.batch_sampler
    sampler = batches.sampler if isinstance(batches, BatchSampler) else batches or loader.sampler
    name = type(sampler).__name__
    if getattr(sampler, "replacement", False):
        log.warning("data.%s: the DataLoader's %s draws examples with replacement; edgekd reads each example of its "
                    "dataset once (its own training shuffles them), so the sampling weights are not applied", split,
                    name)
        return loader.dataset
    indices = sorted({int(index) for item in sampler for index in (item if isinstance(item, list | tuple) else [item])})
    total = len(loader.dataset)
    if len(indices) == total:
        return loader.dataset
    log.info("data.%s: the DataLoader's %s reads %d of its dataset's %d examples; those are the set", split, name,
             len(indices), total)
    return Subset(loader.dataset, indices)


def _read(batches: Iterator[Any], split: str) -> Iterator[Any]:
    """``batches``, an error raised while making one (the set's own ``__getitem__`` or ``collate_fn``) a one-line
    :class:`DataError` naming the set, chained to the original."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # the user's dataset or loader code: any type
            detail = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"data.{split}: reading its examples failed: {type(exc).__name__}: {detail}") from exc
        yield batch


def _map_style(source: Any) -> bool:
    """Whether ``source`` is read by index like a map-style Dataset (``__getitem__`` and ``__len__``: a
    ``datasets.Dataset``), and is no text or mapping."""
    return (hasattr(source, "__getitem__") and hasattr(source, "__len__")
            and not isinstance(source, str | bytes | Mapping))


def _collate(examples: list[Any]) -> Any:
    """torch's default collation of the examples edgekd batches itself, after making dict examples' lists of numbers
    tensors (a ``datasets`` row's ``input_ids``) and padding token ids of different lengths to the longest, with
    an ``attention_mask`` marking the real tokens (a tokenized, unpadded set failed in torch.stack)."""
    from torch.utils.data import default_collate

    if not (isinstance(examples[0], Mapping) and "input_ids" in examples[0]):
        return default_collate(examples)
    rows = [{key: torch.as_tensor(value) if _numbers(value) else value for key, value in example.items()}
            for example in examples]
    lengths = [len(row["input_ids"]) if isinstance(row["input_ids"], torch.Tensor) and row["input_ids"].ndim == 1
               else -1 for row in rows]
    if -1 not in lengths and len(set(lengths)) > 1:
        longest = max(lengths)
        for row, length in zip(rows, lengths, strict=True):
            row.setdefault("attention_mask", torch.ones(length, dtype=torch.int64))
            for key in TEXT_KEYS:
                if isinstance(row.get(key), torch.Tensor) and len(row[key]) == length:
                    row[key] = torch.nn.functional.pad(row[key], (0, longest - length))
    return default_collate(rows)


def _numbers(value: Any) -> bool:
    """Whether ``value`` is a non-empty list of numbers (how a ``datasets`` row holds token ids)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(item, int | float) and not isinstance(item, bool) for item in value)


class _Examples(torch.utils.data.IterableDataset):
    """An iterator of examples (a generator) as the IterableDataset a DataLoader batches."""

    def __init__(self, examples: Iterator[Any]) -> None:
        self.examples = examples

    def __iter__(self) -> Iterator[Any]:
        return self.examples


@dataclass
class _Reader:
    """One set's batches, checked, hashed and collected as they are read."""

    name: str
    kind: Kind | None = None
    chunks: list[torch.Tensor] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)
    labels: list[torch.Tensor] = field(default_factory=list)
    pad_id: int | None = None
    hasher: Any = field(default_factory=hashlib.sha256)
    label_hasher: Any = field(default_factory=hashlib.sha256)
    dropped: list[str] = field(default_factory=list)
    """The metadata fields left out of the last dict batch (see :meth:`_without_metadata`)."""

    def add(self, batch: Any) -> None:
        inputs, labels = self._parts(batch)
        kind: Kind = "text" if "input_ids" in inputs else "image"
        if self.kind not in (None, kind):
            raise DataError(f"data.{self.name}: batches of both {self.kind} and {kind} inputs")
        self.kind = kind
        labels = self._labels(labels)
        count = len(labels)
        if kind == "image":
            self._image(inputs, count)
        else:
            self._text(inputs, count)
        self.labels.append(labels)
        update_with_tensor(self.label_hasher, "", labels, header=False)

    def _parts(self, batch: Any) -> tuple[dict[str, torch.Tensor], Any]:
        if isinstance(batch, Mapping):
            key = next((k for k in LABEL_KEYS if k in batch), None)
            if key is None:
                raise DataError(f"data.{self.name}: a dict without 'labels' or 'label' (keys: "
                                f"{', '.join(map(str, batch))}); expected the class labels beside the inputs")
            inputs, labels = self._without_metadata({k: v for k, v in batch.items() if k != key}), batch[key]
        elif isinstance(batch, tuple | list) and len(batch) == 2:
            inputs, labels = batch
            inputs = dict(inputs) if isinstance(inputs, Mapping) else {"input": inputs}
        else:
            raise DataError(f"data.{self.name}: yields {type(batch).__name__}; expected (inputs, label) pairs or "
                            "dicts with 'labels'")
        for key, value in inputs.items():
            if not isinstance(value, torch.Tensor | np.ndarray):
                raise DataError(f"data.{self.name}: input '{key}' is {type(value).__name__}; expected a tensor")
        return {k: torch.as_tensor(v) for k, v in inputs.items()}, labels

    def _without_metadata(self, fields: dict[str, Any]) -> dict[str, Any]:
        """A dict batch's fields without its metadata, said once: values that are not tensors (a ``datasets`` row's
        text or id strings, collated as lists) and tensors of one value per example (``idx`` ``[batch]``), which no
        model input is (images, features and token ids have a dimension after the batch). Kept as they are when
        nothing else is left, so the refusal names them."""
        inputs = {key: value for key, value in fields.items()
                  if isinstance(value, torch.Tensor | np.ndarray) and value.ndim >= 2}
        dropped = sorted(set(fields) - set(inputs))
        if not inputs or not dropped:
            return fields
        if dropped != self.dropped:
            self.dropped = dropped
            log.info("data.%s: fields %s left out (not model inputs: no tensor, or one value per example)",
                     self.name, ", ".join(map(str, dropped)))
        return inputs

    def _labels(self, labels: Any) -> torch.Tensor:
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError) as exc:  # strings, a label wrapped in a tuple or list per example
            shown = repr(labels[0]) if isinstance(labels, list | tuple) and labels else type(labels).__name__
            raise DataError(f"data.{self.name}: labels such as {shown[:60]} are not class indices ({first_line(exc)}); "
                            "expected one integer ≥ 0 per example (class names: number them first, e.g. "
                            "{name: i for i, name in enumerate(sorted(set(names)))})") from None
        if labels.ndim != 1 or labels.is_floating_point() or labels.dtype == torch.bool or bool((labels < 0).any()):
            raise DataError(f"data.{self.name}: labels of dtype {labels.dtype} and shape {list(labels.shape)} per "
                            "batch; expected one class index (an integer ≥ 0) per example")
        return labels.to(torch.int64)

    def _image(self, inputs: dict[str, torch.Tensor], count: int) -> None:
        if len(inputs) != 1:
            raise DataError(f"data.{self.name}: inputs {', '.join(inputs)}; expected one input tensor (or "
                            "'input_ids' with 'attention_mask' for token ids)")
        (key, value), = inputs.items()
        if not value.is_floating_point() or len(value) != count:
            raise DataError(f"data.{self.name}: input '{key}' is {value.dtype} of shape {list(value.shape)} for "
                            f"{count} labels; expected float inputs [batch, ...] (token ids go in a dict as "
                            "'input_ids')")
        if value.ndim < 2:
            raise DataError(f"data.{self.name}: input '{key}' is {list(value.shape)} for {count} labels: one value per "
                            "example; expected features [batch, features] or images [batch, C, H, W] (one feature: "
                            "x[:, None])")
        value = value.detach().to(torch.float32).contiguous()
        if not bool(torch.isfinite(value).all()):
            bad = sum(map(len, self.chunks)) + int((~torch.isfinite(value)).flatten(1).any(1).nonzero()[0])
            raise DataError(f"data.{self.name}: input '{key}' holds NaN or infinity (example {bad}); expected finite "
                            "numbers")
        if self.chunks and value.shape[1:] != self.chunks[0].shape[1:]:
            raise DataError(f"data.{self.name}: input '{key}' is {list(value.shape[1:])} per example in one batch and "
                            f"{list(self.chunks[0].shape[1:])} in another; expected one shape")
        self.chunks.append(value)
        update_with_tensor(self.hasher, "", value, header=False)

    def _text(self, inputs: dict[str, torch.Tensor], count: int) -> None:
        unknown = sorted(set(inputs) - set(TEXT_KEYS))
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(ids))
        types = inputs.get("token_type_ids")
        if unknown or ids.ndim != 2 or ids.is_floating_point() or mask.shape != ids.shape or len(ids) != count:
            given = ", ".join(f"{key} {list(value.shape)}" for key, value in inputs.items())
            raise DataError(f"data.{self.name}: text inputs {given} for {count} labels; expected integer "
                            "input_ids [batch, tokens] and optionally an attention_mask of the same shape")
        if types is not None and bool(types.any()):
            raise DataError(f"data.{self.name}: token_type_ids are not all 0; sentence pairs are not supported "
                            "(edgekd feeds single sequences)")
        keep = mask.to(torch.bool)
        if self.pad_id is None and not bool(keep.all()):
            self.pad_id = int(ids[~keep][0])
        for row, kept in zip(ids.to(torch.int64), keep, strict=True):
            tokens = row[kept].numpy().copy()
            self.rows.append(tokens)
            self.hasher.update(len(tokens).to_bytes(8, "little"))
            self.hasher.update(tokens.tobytes())

    def finish(self) -> bytes:
        """The set's digest (name, inputs, shapes, labels), after its last batch."""
        if not self.labels:
            raise DataError(f"data.{self.name}: no examples")
        count = sum(len(labels) for labels in self.labels)
        shape = [count, *self.chunks[0].shape[1:]] if self.chunks else [count]
        return f"{self.name}:{self.kind}:{shape}:{self.hasher.hexdigest()}:{self.label_hasher.hexdigest()};".encode()

    def split(self) -> MemorySplit:
        """The set as one :class:`MemorySplit`."""
        labels = torch.cat(self.labels)
        inputs = torch.cat(self.chunks) if self.kind == "image" else tuple(self.rows)
        self.chunks = []
        return MemorySplit(inputs, labels)
