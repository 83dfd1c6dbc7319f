"""What a local checkpoint directory must hold before anything trains: a readable source to load.

A truncated download, weights in a format edgekd does not read or a path that does not exist would
otherwise fail after the stages before it have run. Weights are safetensors, or PyTorch's
``pytorch_model.bin`` (single or sharded, as checkpoints saved before safetensors are): those are read
only by torch's restricted ``weights_only`` loader, which builds tensors and plain containers and refuses
any other object, so a file that would run code is refused here before anything trains. These checks
read file names, safetensors headers and the ``.bin`` files through that loader (memory-mapped).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from edgekd.errors import first_line

#: Weight files edgekd refuses to load (other names and other frameworks' formats), named in the message.
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
#: Files holding a tokenizer's vocabulary, as save_pretrained writes them (fast, WordPiece, BPE, SentencePiece).
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                    "sentencepiece.bpe.model")
#: PyTorch weights as transformers saves them without safetensors: one file, or shards and their index.
TORCH_WEIGHTS, TORCH_INDEX = "pytorch_model.bin", "pytorch_model.bin.index.json"


def looks_local(name: str) -> bool:
    """Whether ``name`` is written as a filesystem path (``/…``, ``./…``, ``../…``, ``~…``), never a hub id."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


def check_local_path(name: str) -> None:
    """Raise ``ValueError`` when ``name`` is written as a path and is not a directory."""
    if looks_local(name) and not Path(name).is_dir():
        raise ValueError(f"'{name}' is not a directory (a path was given, so it is not read as a hub id)")


def check_tokenizer_files(name: str) -> None:
    """Raise ``ValueError`` when ``name`` is a local directory holding none of :data:`VOCABULARY_FILES` (a model
    directory saved without its tokenizer): transformers would make up a tokenizer of its special tokens only,
    and every word would be the unknown token."""
    directory = Path(name)
    if not directory.is_dir():
        return
    present = [file for file in VOCABULARY_FILES if (directory / file).is_file()]
    if not present:
        raise ValueError(f"'{name}' has no tokenizer files (expected tokenizer.json, or vocab.txt / vocab.json and "
                         "merges.txt, or a SentencePiece model, as save_pretrained writes them)")
    if all(file.endswith(".model") for file in present) and importlib.util.find_spec("sentencepiece") is None:
        raise ValueError(f"'{name}' has only a SentencePiece model ({', '.join(present)}), which needs the "
                         "sentencepiece package (pip install sentencepiece); or save the tokenizer with "
                         "save_pretrained where it is installed, which writes tokenizer.json")


def check_weights(directory: Path) -> None:
    """Raise ``ValueError`` (one line naming the file) unless ``directory`` holds weights edgekd reads: safetensors
    whose headers parse (``model.safetensors``, or every shard ``model.safetensors.index.json`` names), else
    PyTorch weights (``pytorch_model.bin`` or the shards of its index) that torch's ``weights_only`` loader reads."""
    if files := safetensors_files(directory):
        for path in files:
            _check_header(path)
    elif pytorch_files := torch_weights(directory):
        for path in pytorch_files:
            _torch_state(path)
    else:
        others = sorted(path.name for path in directory.iterdir() if path.suffix in _OTHER_WEIGHTS)
        hint = (f"; it has {', '.join(others)}, which edgekd does not read: save the model with save_pretrained "
                f"(safetensors) or name PyTorch weights {TORCH_WEIGHTS}") if others else ""
        raise ValueError(f"'{directory}' has no model.safetensors nor {TORCH_WEIGHTS}{hint}")


def saved_shapes(directory: Path) -> dict[str, list[int]]:
    """The shape of every tensor the checkpoint ``directory`` holds (the weights :func:`check_weights` accepts), by
    name, without reading any tensor's values: from the safetensors headers (of every shard, for a sharded
    checkpoint), or from PyTorch weights memory-mapped by torch's ``weights_only`` loader."""
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    if files := safetensors_files(directory):
        for path in files:
            with safe_open(str(path), framework="pt") as handle:
                names = handle.keys()  # a safetensors handle is not iterable
                shapes.update({name: list(handle.get_slice(name).get_shape()) for name in names})
        return shapes
    for path in torch_weights(directory):
        shapes.update({name: list(tensor.shape) for name, tensor in _torch_state(path).items()})
    return shapes


def safetensors_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint ``directory``: ``model.safetensors``, or the shards
    ``model.safetensors.index.json`` names; empty when it has neither."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        return [directory / name for name in sorted(set(_index_map(index).values()))]
    return []


def torch_weights(directory: Path) -> list[Path]:
    """The PyTorch weight files of a checkpoint ``directory`` without safetensors (``pytorch_model.bin``, or the
    shards ``pytorch_model.bin.index.json`` names); empty when it has none."""
    if (directory / TORCH_WEIGHTS).is_file():
        return [directory / TORCH_WEIGHTS]
    if (directory / TORCH_INDEX).is_file():
        return [directory / name for name in sorted(set(_index_map(directory / TORCH_INDEX).values()))]
    return []


def load_options(source: str) -> dict[str, Any]:
    """``from_pretrained`` keywords for checkpoint ``source``: safetensors, or for a local directory holding only
    PyTorch weights, those through torch's restricted loader (``weights_only``)."""
    local = Path(source)
    if local.is_dir() and not safetensors_files(local) and torch_weights(local):
        return {"use_safetensors": False, "weights_only": True}
    return {"use_safetensors": True}


def _index_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"'{index}' is unreadable: expected JSON with a 'weight_map' ({type(exc).__name__})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise ValueError(f"'{index}': 'weight_map' must map tensor names to shard file names")
    return weight_map


def _check_header(path: Path) -> None:
    from safetensors import safe_open

    if not path.is_file():
        raise ValueError(f"'{path}' is missing (named by the checkpoint's safetensors index)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # SafetensorError, OSError, … : the header does not parse or the file is short
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"'{path}' is not a readable safetensors file ({reason}); re-download or re-save it") \
            from None


def _torch_state(path: Path) -> dict[str, Any]:
    """The tensors of PyTorch weights file ``path``, memory-mapped (their values are read when used) through torch's
    ``weights_only`` loader; ``ValueError`` (one line naming the file) when it is missing or not plain tensors."""
    import torch

    if not path.is_file():
        raise ValueError(f"'{path}' is missing (named by the checkpoint's {TORCH_INDEX})")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # UnpicklingError (an object the restricted loader refuses), RuntimeError (not torch's)
        raise ValueError(f"'{path}' is not PyTorch weights torch's weights_only loader reads ({first_line(exc)}); "
                         "re-download it or re-save the model with save_pretrained") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"'{path}' is not a state dict (a mapping of names to tensors)")
    return state
